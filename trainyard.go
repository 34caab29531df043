// Package trainyard is the domain of the trainyard control plane: the plain types of the TIR
// Training Cluster API (clusters, nodes, actions, SSH keys, images, SKUs, reserved IPs, security
// groups, accounts, projects, IAM), the rules that decide which requests are valid, and the
// Backend interface that node backends implement.
//
// It imports nothing of the project; every other package depends on it.
package trainyard

import (
	"time"
)

// Cluster statuses. A cluster is Creating until every node is up, Running while it serves,
// Updating while a node-changing action runs on it, Failed when creation failed, Deleting while
// it is torn down and Deleted (invisible to the API) afterwards.
const (
	StatusCreating = "Creating"
	StatusRunning  = "Running"
	StatusUpdating = "Updating"
	StatusFailed   = "Failed"
	StatusDeleting = "Deleting"
	StatusDeleted  = "Deleted"
)

// Node roles.
const (
	RoleController = "controller" // slurmctld and the login node
	RoleWorker     = "worker"     // slurmd
)

// Roles of a user in an account, from most to least powerful.
const (
	RoleOwner  = "owner"
	RoleAdmin  = "admin"
	RoleMember = "member"
	RoleViewer = "viewer"
)

// ValidIAMRole reports whether r is a role that can be granted.
func ValidIAMRole(r string) bool { return r == RoleAdmin || r == RoleMember || r == RoleViewer }

// User is a person who can hold API keys.
type User struct {
	ID        int64
	Name      string
	Email     string
	CreatedAt time.Time
}

// Account owns every resource (projects, clusters, keys, IPs, groups). Its owner is a user.
type Account struct {
	ID        int64
	Owner     User
	Name      string
	Currency  string
	CreatedAt time.Time
}

// Membership is an IAM entry: a user's access to an account with a role. A user always has one
// for their own account (role owner). Its ID is what the API calls active_iam.
type Membership struct {
	ID        int64
	AccountID int64
	UserID    int64
	Role      string
	Account   Account
	CreatedAt time.Time
}

// CanMutate reports whether the role may change resources.
func (m Membership) CanMutate() bool { return m.Role != RoleViewer }

// Caller is the authenticated identity of a request and the account it acts in.
type Caller struct {
	User       User
	Membership Membership // the active IAM entry
	APIKeyID   int64
}

// AccountID is the account the caller acts in.
func (c Caller) AccountID() int64 { return c.Membership.AccountID }

// Project groups clusters, IPs and security groups within an account.
type Project struct {
	ID        int64
	AccountID int64
	Name      string
	IsDefault bool
	CreatedAt time.Time
}

// Scope is where a project-scoped request acts: the caller's account, one of its projects and
// a location.
type Scope struct {
	Caller   Caller
	Project  Project
	Location string
}

// SSHKey is a public key in an account's key library.
type SSHKey struct {
	ID          int64
	AccountID   int64
	Label       string
	PublicKey   string // normalised "type base64 [comment]"
	Fingerprint string // SHA256:...
	CreatedAt   time.Time
}

// ClusterKey is the copy of an SSH key that a cluster holds. Deleting the key from the library
// does not remove it from clusters: nobody is locked out of a cluster by tidying their keys.
type ClusterKey struct {
	KeyID       int64  `json:"pk"`
	Label       string `json:"label"`
	PublicKey   string `json:"ssh_key"`
	Fingerprint string `json:"fingerprint"`
}

// ImageVersion is one version of a node image, from the catalog.
type ImageVersion struct {
	ID          int64 // image_version_id
	ImageID     int64
	Name        string // the image's name, e.g. "Ubuntu Slurm"
	Version     string // e.g. "v2-slurm22.05-debian12"
	Description string
	Tags        []string
	SlugName    string
	Framework   string
	IsInternal  bool
}

// Plan is a price plan of a SKU in one location; its ID is sku_item_price_id.
type Plan struct {
	ID            int64
	SKUType       string // "hourly", "committed"
	CommittedDays int
	UnitPrice     float64
	Currency      string
	Location      string
	Description   string
	IsActive      bool
}

// SKU is a machine shape for cluster nodes.
type SKU struct {
	ID                 int64
	Name               string
	Series             string // "GPU" or "CPU"
	CPU                int
	GPU                int
	MemoryGB           int
	GPUMemoryGB        int
	GPUCardType        string
	SKUType            string
	Category           string
	IsFree             bool
	IsActive           bool
	InventoryAvailable bool
	Plans              []Plan
}

// Reserved IP statuses.
const (
	IPAvailable = "Available"
	IPAttached  = "Attached"
)

// ReservedIP is a public address reserved by a project in a location.
type ReservedIP struct {
	ID         int64
	AccountID  int64
	ProjectID  int64
	Location   string
	Address    string
	Status     string
	ClusterID  int64 // when attached
	ReservedBy User
	CreatedAt  time.Time
}

// SecurityRule is one rule of a security group.
type SecurityRule struct {
	ID           int64    `json:"id"`
	RuleType     string   `json:"rule_type"`     // inbound | outbound
	Protocol     string   `json:"protocol"`      // TCP | UDP | All
	ProtocolType string   `json:"protocol_type"` // CustomTCP | CustomUDP | AllTraffic
	NetworkType  string   `json:"network_type"`  // any | manual
	Ports        []string `json:"ports"`         // "22" or "8000-8100"; empty for AllTraffic
	CIDR         string   `json:"cidr_ip"`       // required when manual
	CIDRSubnet   string   `json:"cidr_subnet"`
	Description  string   `json:"description"`
}

// SecurityGroup is a named set of rules that filter traffic to and from the nodes it is applied to.
type SecurityGroup struct {
	ID          int64
	AccountID   int64
	ProjectID   int64
	Location    string
	Name        string
	Description string
	Rules       []SecurityRule
	CreatedAt   time.Time
}

// Mount is a storage mount requested at create; kept and shown, realised by backends that can.
type Mount struct {
	ID        int64  `json:"id"`
	Name      string `json:"name"`
	MountPath string `json:"mount_path"`
}

// Cluster is a Slurm training cluster: one controller (slurmctld, login) and Workers workers.
// The fields below Status are its desired state; what the nodes really run is observed through
// the Backend.
type Cluster struct {
	ID              int64
	AccountID       int64
	ProjectID       int64
	Location        string
	Name            string
	CreatedBy       User
	SKUID           int64
	PlanID          int64
	Status          string
	CreatedAt       time.Time
	UpdatedAt       time.Time
	ScriptAdded     bool
	LifecycleScript string
	SFSMounts       []Mount
	PFSMounts       []Mount
	DatasetMounts   []Mount

	ImageVersionID       int64
	Workers              int // no_of_nodes
	SSHKeys              []ClusterKey
	SecurityGroupIDs     []int64
	ReservedIPID         int64 // 0: none
	WorkerRestartGen     int64 // bumped by restart_workers and restart_cluster
	ControllerRestartGen int64 // bumped by restart_cluster
	NetworkGen           int64 // bumped by every change to IPs or groups
	CurrentActionID      int64 // the node-changing action in progress, 0 when none
}

// Node is one machine of a cluster as the control plane knows it.
type Node struct {
	ID        int64
	ClusterID int64
	Name      string // hostname, unique in the cluster
	Role      string
	Index     int // 0 for the controller, 1.. for workers in creation order
	CreatedAt time.Time
}

// Slurm-like node states as observed.
const (
	NodeIdle      = "idle"
	NodeAllocated = "allocated"
	NodeMixed     = "mixed"
	NodeDraining  = "draining" // drained, jobs still running
	NodeDrained   = "drained"
	NodeDown      = "down"
	NodeBooting   = "booting"
	NodeMissing   = "missing" // the backend has no such node
	NodeUp        = "up"      // the controller: slurmctld answers
)

// InService reports whether a worker in state s can run jobs (or, for the controller, serves).
func InService(s string) bool {
	return s == NodeIdle || s == NodeAllocated || s == NodeMixed || s == NodeUp
}
