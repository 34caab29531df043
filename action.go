package trainyard

import (
	"encoding/json"
	"time"
)

// Action types: the nine Cluster Actions of the API and the two lifecycle actions.
const (
	ActionUpdateSSHKeys       = "update_ssh_keys"
	ActionUpdateImage         = "update_image"
	ActionRestartWorkers      = "restart_workers"
	ActionRestartCluster      = "restart_cluster"
	ActionScaleCluster        = "scale_cluster"
	ActionAttachIP            = "attach_ip"
	ActionDetachIP            = "detach_ip"
	ActionAddSecurityGroup    = "add_security_group"
	ActionRemoveSecurityGroup = "remove_security_group"
	ActionCreateCluster       = "create_cluster"
	ActionDeleteCluster       = "delete_cluster"
)

// ClusterActions are the actions the PUT accepts, in the order the API documents them.
var ClusterActions = []string{
	ActionUpdateSSHKeys, ActionUpdateImage, ActionRestartWorkers, ActionRestartCluster,
	ActionScaleCluster, ActionAttachIP, ActionDetachIP, ActionAddSecurityGroup, ActionRemoveSecurityGroup,
}

// NodeChanging reports whether actions of type t change nodes (and so hold the cluster's one
// action slot) rather than only its network attachments.
func NodeChanging(t string) bool {
	switch t {
	case ActionAttachIP, ActionDetachIP, ActionAddSecurityGroup, ActionRemoveSecurityGroup:
		return false
	}
	return true
}

// Rolling reports whether actions of type t take worker nodes out of service in batches and so
// accept max_unavailable and drain.
func Rolling(t string) bool {
	return t == ActionUpdateImage || t == ActionRestartWorkers || t == ActionRestartCluster
}

// Action statuses.
const (
	ActionQueued    = "queued"
	ActionRunning   = "running"
	ActionSucceeded = "succeeded"
	ActionFailed    = "failed"
	ActionCanceled  = "canceled"
)

// Terminal reports whether an action in status s is finished.
func Terminal(s string) bool {
	return s == ActionSucceeded || s == ActionFailed || s == ActionCanceled
}

// Drain modes of rolling actions.
const (
	DrainWait    = "wait"    // drain and let running jobs finish first
	DrainRequeue = "requeue" // drain and requeue the node's jobs
	DrainForce   = "force"   // do not wait for jobs
)

// ActionParams are what an action was asked to do, resolved to the desired state it aims at.
// Stored with the action so that it can be carried out after a restart without the request.
type ActionParams struct {
	SSHKeyIDs        []int64  `json:"ssh_key_ids,omitempty"`
	ImageVersionID   int64    `json:"image_version_id,omitempty"`
	AdditionalNodes  int      `json:"additional_nodes,omitempty"`
	ReservedIPID     int64    `json:"reserved_ip_id,omitempty"`
	SecurityGroupIDs []int64  `json:"security_group_ids,omitempty"`
	MaxUnavailable   string   `json:"max_unavailable,omitempty"`
	Drain            string   `json:"drain,omitempty"`
	RestartGen       int64    `json:"restart_gen,omitempty"`            // workers' target generation
	ControllerGen    int64    `json:"controller_restart_gen,omitempty"` // controller's target generation
	NetworkGen       int64    `json:"network_gen,omitempty"`
	NewNodes         []string `json:"new_nodes,omitempty"` // scale_cluster: the nodes it adds

	// What the action replaced, restored if it does not succeed.
	Previous *PreviousState `json:"previous,omitempty"`
}

// PreviousState is the part of a cluster's desired state an action changes, as it was before.
type PreviousState struct {
	ImageVersionID   int64        `json:"image_version_id,omitempty"`
	SSHKeys          []ClusterKey `json:"ssh_keys,omitempty"`
	SecurityGroupIDs []int64      `json:"security_group_ids,omitempty"`
	ReservedIPID     int64        `json:"reserved_ip_id"`
}

// Plan is how an action will touch the cluster's nodes: batches run one after another, the
// nodes of a batch together.
type ActionPlan struct {
	MaxUnavailable int        `json:"max_unavailable"`
	Drain          string     `json:"drain,omitempty"`
	Batches        [][]string `json:"batches"`
}

// Nodes returns every node of the plan in order.
func (p ActionPlan) Nodes() []string {
	var out []string
	for _, b := range p.Batches {
		out = append(out, b...)
	}
	return out
}

// Step statuses: one step per node an action touches.
const (
	StepPending   = "pending"
	StepRunning   = "running"
	StepSucceeded = "succeeded"
	StepFailed    = "failed"
	StepCanceled  = "canceled"
)

// Step is an action's progress on one node.
type Step struct {
	Node       string
	Batch      int
	Status     string
	Error      string
	StartedAt  *time.Time
	FinishedAt *time.Time
}

// Event is a timestamped line of an action's history.
type Event struct {
	ID      int64
	Time    time.Time
	Node    string // empty for the whole action
	Message string
}

// Action is one request to change a cluster, kept forever.
type Action struct {
	ID              int64
	ClusterID       int64
	AccountID       int64
	Type            string
	Status          string
	Params          ActionParams
	Plan            ActionPlan
	RequestedBy     User
	ActiveIAM       int64
	Error           string
	Outcome         string // decided outcome while the action is being finished
	CancelRequested bool
	CreatedAt       time.Time
	StartedAt       *time.Time
	FinishedAt      *time.Time
	Steps           []Step
	Events          []Event
}

// Progress counts the action's node steps.
type Progress struct {
	Total  int `json:"total"`
	Done   int `json:"done"`
	Failed int `json:"failed"`
}

// Progress counts a's steps by outcome.
func (a *Action) Progress() Progress {
	p := Progress{Total: len(a.Steps)}
	for _, s := range a.Steps {
		switch s.Status {
		case StepSucceeded:
			p.Done++
		case StepFailed:
			p.Failed++
		}
	}
	return p
}

// ParamsJSON and PlanJSON are helpers for stores.
func (a *Action) ParamsJSON() []byte { b, _ := json.Marshal(a.Params); return b }

// PlanJSON returns the plan as JSON.
func (a *Action) PlanJSON() []byte { b, _ := json.Marshal(a.Plan); return b }

// Settle sets what cluster c becomes when action a ends with outcome (an action status): the
// action's slot is released and the status follows from what the action was.
func (c *Cluster) Settle(a *Action, outcome string) {
	if !NodeChanging(a.Type) || c.CurrentActionID != a.ID {
		return
	}
	c.CurrentActionID = 0
	switch {
	case a.Type == ActionCreateCluster && outcome != ActionSucceeded:
		c.Status = StatusFailed
	case a.Type == ActionDeleteCluster && outcome == ActionSucceeded:
		c.Status = StatusDeleted
	case a.Type == ActionDeleteCluster:
		c.Status = StatusFailed
	default:
		c.Status = StatusRunning
	}
}
