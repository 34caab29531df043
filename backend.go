package trainyard

import (
	"context"
	"time"
)

// NodeRef names one node of one cluster.
type NodeRef struct {
	ClusterID int64
	Name      string
}

// ClusterSpec is what a backend needs to set up the shared parts of a cluster (its network,
// its munge key, its Slurm configuration).
type ClusterSpec struct {
	ID         int64
	Name       string
	Controller string // the controller's node name
	MaxNodes   int    // the most nodes the cluster may ever have (for Slurm's MaxNodeCount)
}

// NetworkSpec is the network attachment of a node: the reserved IP bound on it (controller only)
// and the rules of every security group applied to the cluster. Generation orders specs: a
// backend never replaces a newer spec with an older one.
type NetworkSpec struct {
	Generation int64
	ReservedIP string // empty: none
	Rules      []SecurityRule
}

// NodeSpec is everything a node is created with.
type NodeSpec struct {
	NodeRef
	Role            string
	Image           ImageVersion
	SSHKeys         []string // authorized_keys lines
	RestartGen      int64
	Network         NetworkSpec
	LifecycleScript string
}

// ObservedNode is a node as its backend sees it, read from the node itself.
type ObservedNode struct {
	Name         string
	Role         string
	Address      string
	State        string // one of the Node* states
	DrainReason  string
	ImageVersion string // the version marker read on the node
	RestartGen   int64
	BootID       string // changes on every (re)start of the node's daemons
	StartedAt    time.Time
	Jobs         int // jobs running on the node
	SSHKeys      []string
	Network      NetworkSpec
}

// Backend realizes the nodes of clusters. Every method is idempotent: calling it again with the
// same arguments, for instance after a crash of the control plane between the call and the
// record of its result, has the same outcome as one call. Methods return when the change is
// made, not when the node is back in service: callers observe that with Observe.
type Backend interface {
	// Name is the backend's name, e.g. "sim" or "local".
	Name() string

	// EnsureCluster sets up what the cluster's nodes share.
	EnsureCluster(ctx context.Context, c ClusterSpec) error
	// DeleteCluster removes the cluster and everything of it; nothing of it is left after.
	DeleteCluster(ctx context.Context, clusterID int64) error

	// EnsureNode creates the node as spec says if it does not exist, and starts it. An existing
	// node is left as it is.
	EnsureNode(ctx context.Context, spec NodeSpec) error
	// RemoveNode stops and removes a node (its jobs fail); a missing node is no error.
	RemoveNode(ctx context.Context, n NodeRef) error
	// SetSSHKeys replaces the keys that may log in to the node.
	SetSSHKeys(ctx context.Context, n NodeRef, keys []string) error
	// SetImage makes the node run image; a node already on it is left alone.
	SetImage(ctx context.Context, n NodeRef, image ImageVersion) error
	// Restart restarts the node's daemons unless the node was already restarted at generation
	// gen or later.
	Restart(ctx context.Context, n NodeRef, gen int64) error
	// SetNetwork applies spec unless the node already has spec.Generation or a newer one.
	SetNetwork(ctx context.Context, n NodeRef, spec NetworkSpec) error

	// Observe reports every node of the cluster that exists.
	Observe(ctx context.Context, clusterID int64) ([]ObservedNode, error)

	// Drain stops the scheduler from starting jobs on a worker, with reason.
	Drain(ctx context.Context, n NodeRef, reason string) error
	// Resume returns a worker drained with exactly reason to service; a worker drained for any
	// other reason (someone else's drain) is left drained.
	Resume(ctx context.Context, n NodeRef, reason string) error
	// RequeueJobs puts the jobs running on a worker back in the queue.
	RequeueJobs(ctx context.Context, n NodeRef) error
}

// LogSource is implemented by backends that keep the logs of nodes' daemons.
type LogSource interface {
	// Logs returns the last lines of a daemon's log on a node (lines <= 0: all of it).
	Logs(ctx context.Context, n NodeRef, daemon string, lines int) (string, error)
}
