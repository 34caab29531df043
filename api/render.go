package api

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/trainyard/trainyard"
	"github.com/trainyard/trainyard/config"
	"github.com/trainyard/trainyard/service"
)

// The JSON shapes of the API. Field names and types follow the hosted TIR API where it documents
// them (note no_of_gpu, no_of_cpu and node_memory are strings there); the rest are trainyard's.

func jsonTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func jsonTimePtr(t *time.Time) *string {
	if t == nil {
		return nil
	}
	s := jsonTime(*t)
	return &s
}

type userJSON struct {
	ID               int64  `json:"id"`
	Name             string `json:"name"`
	Email            string `json:"email"`
	Username         string `json:"username"`
	IsPrimaryContact bool   `json:"is_primary_contact"`
	Currency         string `json:"currency"`
	IsSuspended      bool   `json:"is_suspended"`
}

func renderUser(u trainyard.User) userJSON {
	return userJSON{ID: u.ID, Name: u.Name, Email: u.Email, Username: u.Email, IsPrimaryContact: true, Currency: "INR"}
}

type imageVersionJSON struct {
	ID          int64    `json:"id"`
	Version     string   `json:"version"`
	Description string   `json:"description"`
	Tags        []string `json:"tags"`
	Name        string   `json:"name"`
	SlugName    string   `json:"slug_name"`
	Framework   string   `json:"framework"`
	IsInternal  bool     `json:"is_internal"`
}

func renderImageVersion(v trainyard.ImageVersion) imageVersionJSON {
	tags := v.Tags
	if tags == nil {
		tags = []string{}
	}
	return imageVersionJSON{ID: v.ID, Version: v.Version, Description: v.Description, Tags: tags, Name: v.Name,
		SlugName: v.SlugName, Framework: v.Framework, IsInternal: v.IsInternal}
}

type specsJSON struct {
	SKUID            int64  `json:"sku_id"`
	Name             string `json:"name"`
	Series           string `json:"series"`
	CPU              int    `json:"cpu"`
	GPU              int    `json:"gpu"`
	Memory           int    `json:"memory"`
	EphemeralStorage int    `json:"ephemeral_storage"`
	GPUMemory        int    `json:"gpu_memory"`
	IsFree           bool   `json:"is_free"`
	IsActive         bool   `json:"is_active"`
	LocalStorageInGB int    `json:"local_storage_in_gb"`
	SKUType          string `json:"sku_type"`
	GPUCardType      string `json:"gpu_card_type"`
	Category         string `json:"category"`
	Variant          string `json:"variant"`
	NoOfNodes        int    `json:"no_of_nodes"`
}

type planJSON struct {
	SKUItemPriceID int64   `json:"sku_item_price_id"`
	SKUType        string  `json:"sku_type"`
	CommittedDays  int     `json:"committed_days"`
	UnitPrice      float64 `json:"unit_price"`
	Currency       string  `json:"currency"`
	IsActive       bool    `json:"is_active"`
	Description    string  `json:"description"`
	Location       string  `json:"location"`
}

func renderPlan(p trainyard.Plan) planJSON {
	return planJSON{SKUItemPriceID: p.ID, SKUType: p.SKUType, CommittedDays: p.CommittedDays, UnitPrice: p.UnitPrice,
		Currency: p.Currency, IsActive: p.IsActive, Description: p.Description, Location: p.Location}
}

type skuDetailsJSON struct {
	Specs specsJSON `json:"specs"`
	Plan  planJSON  `json:"plan"`
}

type clusterKeyJSON struct {
	PK          int64  `json:"pk"`
	Label       string `json:"label"`
	SSHKey      string `json:"ssh_key"`
	Fingerprint string `json:"fingerprint"`
}

type groupRefJSON struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
}

type actionRefJSON struct {
	ID       int64              `json:"id"`
	Type     string             `json:"type"`
	Status   string             `json:"status"`
	Progress trainyard.Progress `json:"progress"`
}

func renderActionRef(a *trainyard.Action) *actionRefJSON {
	if a == nil {
		return nil
	}
	return &actionRefJSON{ID: a.ID, Type: a.Type, Status: a.Status, Progress: a.Progress()}
}

type nodesSummaryJSON struct {
	Total         int            `json:"total"`
	Workers       int            `json:"workers"`
	Controller    string         `json:"controller"`
	States        map[string]int `json:"states"`
	ImageVersions map[string]int `json:"image_versions"`
}

type clusterJSON struct {
	ID               int64             `json:"id"`
	Name             string            `json:"name"`
	CreatedBy        userJSON          `json:"created_by"`
	NoOfNodes        int               `json:"no_of_nodes"`
	NoOfGPU          string            `json:"no_of_gpu"`
	NoOfCPU          string            `json:"no_of_cpu"`
	NodeMemory       string            `json:"node_memory"`
	CreatedAt        string            `json:"created_at"`
	AvailableGPU     int               `json:"available_gpu"`
	AvailableCPU     int               `json:"available_cpu"`
	AvailableMemory  string            `json:"available_memory"`
	Status           string            `json:"status"`
	SKUDetails       skuDetailsJSON    `json:"sku_details"`
	PrivateCloudName *string           `json:"private_cloud_name"`
	PrivateCloudID   *int64            `json:"private_cloud_id"`
	HasLocalStorage  bool              `json:"has_local_storage"`
	ImageVersion     imageVersionJSON  `json:"image_version"`
	UpdatedAt        string            `json:"updated_at"`
	ProjectID        int64             `json:"project_id"`
	Location         string            `json:"location"`
	SSHKeys          []clusterKeyJSON  `json:"ssh_keys"`
	SecurityGroups   []groupRefJSON    `json:"security_groups"`
	ReservedIP       *reservedIPJSON   `json:"reserved_ip"`
	NodesSummary     nodesSummaryJSON  `json:"nodes_summary"`
	CurrentAction    *actionRefJSON    `json:"current_action"`
	LastAction       *actionRefJSON    `json:"last_action"`
	ScriptAdded      bool              `json:"script_added"`
	LifecycleScript  string            `json:"lifecycle_script"`
	SFSMountList     []trainyard.Mount `json:"sfs_mount_list"`
	PFSMountList     []trainyard.Mount `json:"pfs_mount_list"`
	DatasetMountList []trainyard.Mount `json:"dataset_mount_list"`
}

func renderCluster(d *service.ClusterDetail) clusterJSON {
	c := d.Cluster
	sum := nodesSummaryJSON{Total: c.Workers + 1, Workers: c.Workers, Controller: trainyard.NodeMissing,
		States: map[string]int{}, ImageVersions: map[string]int{}}
	idle := 0
	for _, o := range d.Observed {
		if o.ImageVersion != "" {
			sum.ImageVersions[o.ImageVersion]++
		}
		if o.Role == trainyard.RoleController {
			sum.Controller = o.State
			continue
		}
		sum.States[o.State]++
		if o.State == trainyard.NodeIdle && o.DrainReason == "" {
			idle++
		}
	}
	if len(d.Observed) == 0 {
		sum.Controller = "unknown"
	}
	out := clusterJSON{
		ID: c.ID, Name: c.Name, CreatedBy: renderUser(c.CreatedBy), NoOfNodes: c.Workers,
		NoOfGPU:    strconv.Itoa(d.SKU.GPU * c.Workers),
		NoOfCPU:    strconv.Itoa(d.SKU.CPU * c.Workers),
		NodeMemory: fmt.Sprintf("%dGB", d.SKU.MemoryGB),
		CreatedAt:  jsonTime(c.CreatedAt), AvailableGPU: idle * d.SKU.GPU, AvailableCPU: idle * d.SKU.CPU,
		AvailableMemory: fmt.Sprintf("%dGB", idle*d.SKU.MemoryGB), Status: c.Status,
		SKUDetails: skuDetailsJSON{
			Specs: specsJSON{SKUID: d.SKU.ID, Name: d.SKU.Name, Series: d.SKU.Series, CPU: d.SKU.CPU, GPU: d.SKU.GPU,
				Memory: d.SKU.MemoryGB, GPUMemory: d.SKU.GPUMemoryGB, IsFree: d.SKU.IsFree, IsActive: d.SKU.IsActive,
				SKUType: d.SKU.SKUType, GPUCardType: d.SKU.GPUCardType, Category: "distributed_job", Variant: "e2e", NoOfNodes: c.Workers},
			Plan: renderPlan(d.Plan),
		},
		ImageVersion: renderImageVersion(d.Image), UpdatedAt: jsonTime(c.UpdatedAt), ProjectID: c.ProjectID,
		Location: c.Location, SSHKeys: []clusterKeyJSON{}, SecurityGroups: []groupRefJSON{}, NodesSummary: sum,
		CurrentAction: renderActionRef(d.CurrentAction), LastAction: renderActionRef(d.LastAction),
		ScriptAdded: c.ScriptAdded, LifecycleScript: c.LifecycleScript,
		SFSMountList: mounts(c.SFSMounts), PFSMountList: mounts(c.PFSMounts), DatasetMountList: mounts(c.DatasetMounts),
	}
	if out.ImageVersion.ID == 0 {
		out.ImageVersion.ID = c.ImageVersionID
	}
	for _, k := range c.SSHKeys {
		out.SSHKeys = append(out.SSHKeys, clusterKeyJSON{PK: k.KeyID, Label: k.Label, SSHKey: k.PublicKey, Fingerprint: k.Fingerprint})
	}
	for _, g := range d.Groups {
		out.SecurityGroups = append(out.SecurityGroups, groupRefJSON{ID: g.ID, Name: g.Name})
	}
	if d.ReservedIP != nil {
		ip := renderReservedIP(*d.ReservedIP, c)
		out.ReservedIP = &ip
	}
	return out
}

func mounts(ms []trainyard.Mount) []trainyard.Mount {
	if ms == nil {
		return []trainyard.Mount{}
	}
	return ms
}

type stepJSON struct {
	Node       string  `json:"node"`
	Batch      int     `json:"batch"`
	Status     string  `json:"status"`
	Error      string  `json:"error"`
	StartedAt  *string `json:"started_at"`
	FinishedAt *string `json:"finished_at"`
}

type eventJSON struct {
	Time    string `json:"time"`
	Node    string `json:"node"`
	Message string `json:"message"`
}

type actionJSON struct {
	ID              int64                  `json:"id"`
	ClusterID       int64                  `json:"cluster_id"`
	Type            string                 `json:"type"`
	Status          string                 `json:"status"`
	RequestedBy     userRefJSON            `json:"requested_by"`
	ActiveIAM       int64                  `json:"active_iam"`
	Params          trainyard.ActionParams `json:"params"`
	Plan            trainyard.ActionPlan   `json:"plan"`
	Progress        trainyard.Progress     `json:"progress"`
	Steps           []stepJSON             `json:"steps"`
	Events          []eventJSON            `json:"events"`
	Error           string                 `json:"error"`
	CancelRequested bool                   `json:"cancel_requested"`
	CreatedAt       string                 `json:"created_at"`
	StartedAt       *string                `json:"started_at"`
	FinishedAt      *string                `json:"finished_at"`
}

type userRefJSON struct {
	ID    int64  `json:"id"`
	Name  string `json:"name"`
	Email string `json:"email"`
}

func renderAction(a *trainyard.Action) actionJSON {
	out := actionJSON{
		ID: a.ID, ClusterID: a.ClusterID, Type: a.Type, Status: a.Status,
		RequestedBy: userRefJSON{ID: a.RequestedBy.ID, Name: a.RequestedBy.Name, Email: a.RequestedBy.Email},
		ActiveIAM:   a.ActiveIAM, Params: a.Params, Plan: a.Plan, Progress: a.Progress(),
		Steps: []stepJSON{}, Events: []eventJSON{}, Error: a.Error, CancelRequested: a.CancelRequested,
		CreatedAt: jsonTime(a.CreatedAt), StartedAt: jsonTimePtr(a.StartedAt), FinishedAt: jsonTimePtr(a.FinishedAt),
	}
	if out.Plan.Batches == nil {
		out.Plan.Batches = [][]string{}
	}
	for _, s := range a.Steps {
		out.Steps = append(out.Steps, stepJSON{Node: s.Node, Batch: s.Batch, Status: s.Status, Error: s.Error,
			StartedAt: jsonTimePtr(s.StartedAt), FinishedAt: jsonTimePtr(s.FinishedAt)})
	}
	for _, e := range a.Events {
		out.Events = append(out.Events, eventJSON{Time: e.Time.UTC().Format(time.RFC3339Nano), Node: e.Node, Message: e.Message})
	}
	return out
}

type sshKeyJSON struct {
	PK          int64  `json:"pk"`
	Label       string `json:"label"`
	SSHKey      string `json:"ssh_key"`
	Fingerprint string `json:"fingerprint"`
	Timestamp   string `json:"timestamp"`
}

func renderSSHKey(k trainyard.SSHKey) sshKeyJSON {
	return sshKeyJSON{PK: k.ID, Label: k.Label, SSHKey: k.PublicKey, Fingerprint: k.Fingerprint, Timestamp: jsonTime(k.CreatedAt)}
}

type reservedIPJSON struct {
	ID                 int64          `json:"id"`
	IPAddress          string         `json:"ip_address"`
	ServiceName        *string        `json:"service_name"`
	CreatedAt          string         `json:"created_at"`
	Status             string         `json:"status"`
	ReservedBy         userRefJSON    `json:"reserved_by"`
	ServiceType        *string        `json:"service_type"`
	ServiceID          *int64         `json:"service_id"`
	Location           string         `json:"location"`
	EgressIP           bool           `json:"egress_ip"`
	MyaccountProjectID int64          `json:"myaccount_project_id"`
	VPCDetails         map[string]any `json:"vpc_details"`
	ConnectionStatus   string         `json:"connection_status"`
}

// renderReservedIP renders ip; c, when not nil, is the cluster it is attached to.
func renderReservedIP(ip trainyard.ReservedIP, c *trainyard.Cluster) reservedIPJSON {
	out := reservedIPJSON{
		ID: ip.ID, IPAddress: ip.Address, CreatedAt: jsonTime(ip.CreatedAt), Status: ip.Status,
		ReservedBy: userRefJSON{ID: ip.ReservedBy.ID, Name: ip.ReservedBy.Name, Email: ip.ReservedBy.Email},
		Location:   ip.Location, MyaccountProjectID: ip.ProjectID, VPCDetails: map[string]any{}, ConnectionStatus: "Disconnected",
	}
	if ip.Status == trainyard.IPAttached {
		st := "distributed_job"
		id := ip.ClusterID
		out.ServiceType, out.ServiceID, out.ConnectionStatus = &st, &id, "Connected"
		if c != nil && c.ID == ip.ClusterID {
			name := c.Name
			out.ServiceName = &name
		}
	}
	return out
}

type securityGroupJSON struct {
	ID          int64                    `json:"id"`
	Name        string                   `json:"name"`
	Description string                   `json:"description"`
	Rules       []trainyard.SecurityRule `json:"rules"`
	ProjectID   int64                    `json:"project_id"`
	Location    string                   `json:"location"`
	CreatedAt   string                   `json:"created_at"`
}

func renderSecurityGroup(g trainyard.SecurityGroup) securityGroupJSON {
	rules := g.Rules
	if rules == nil {
		rules = []trainyard.SecurityRule{}
	}
	return securityGroupJSON{ID: g.ID, Name: g.Name, Description: g.Description, Rules: rules, ProjectID: g.ProjectID,
		Location: g.Location, CreatedAt: jsonTime(g.CreatedAt)}
}

type iamOwnerJSON struct {
	ID               int64  `json:"id"`
	Name             string `json:"name"`
	Email            string `json:"email"`
	Username         string `json:"username"`
	Phone            string `json:"phone"`
	IsPrimaryContact bool   `json:"is_primary_contact"`
	PrimaryEmail     string `json:"primary_email"`
	Currency         string `json:"currency"`
	IsSuspended      bool   `json:"is_suspended"`
}

type iamAccountJSON struct {
	ID              int64        `json:"id"`
	AccountID       int64        `json:"account_id"`
	Owner           iamOwnerJSON `json:"owner"`
	Role            string       `json:"role"`
	HasAILabsAccess bool         `json:"has_ai_labs_access"`
	HasTIRAccess    bool         `json:"has_tir_access"`
}

func renderIAM(m trainyard.Membership) iamAccountJSON {
	o := m.Account.Owner
	return iamAccountJSON{ID: m.ID, AccountID: m.AccountID, Role: m.Role, HasAILabsAccess: true, HasTIRAccess: true,
		Owner: iamOwnerJSON{ID: o.ID, Name: o.Name, Email: o.Email, Username: o.Email, Phone: "", IsPrimaryContact: m.Role == trainyard.RoleOwner,
			PrimaryEmail: o.Email, Currency: m.Account.Currency}}
}

type projectJSON struct {
	ID        int64  `json:"id"`
	ProjectID int64  `json:"project_id"`
	Name      string `json:"name"`
	IsDefault bool   `json:"is_default"`
	CreatedAt string `json:"created_at"`
}

func renderProject(p trainyard.Project) projectJSON {
	return projectJSON{ID: p.ID, ProjectID: p.ID, Name: p.Name, IsDefault: p.IsDefault, CreatedAt: jsonTime(p.CreatedAt)}
}

type imageJSON struct {
	Name      string             `json:"name"`
	ImageID   int64              `json:"image_id"`
	SlugName  string             `json:"slug_name"`
	Framework string             `json:"framework"`
	Versions  []imageVersionItem `json:"versions"`
}

type imageVersionItem struct {
	ImageVersionID int64    `json:"image_version_id"`
	Version        string   `json:"version"`
	Description    string   `json:"description"`
	Tags           []string `json:"tags"`
}

func renderImages(cfg *config.Config) []imageJSON {
	out := []imageJSON{}
	for _, img := range cfg.Images {
		ij := imageJSON{Name: img.Name, ImageID: img.ID, Versions: []imageVersionItem{}}
		for _, v := range img.Versions {
			ij.SlugName, ij.Framework = v.SlugName, v.Framework
			ij.Versions = append(ij.Versions, imageVersionItem{ImageVersionID: v.ID, Version: v.Version, Description: v.Description, Tags: v.Tags})
		}
		out = append(out, ij)
	}
	return out
}

type skuJSON struct {
	SKUID                int64      `json:"sku_id"`
	Name                 string     `json:"name"`
	Series               string     `json:"series"`
	CPU                  int        `json:"cpu"`
	GPU                  int        `json:"gpu"`
	Memory               int        `json:"memory"`
	GPUMemory            int        `json:"gpu_memory"`
	GPUCardType          string     `json:"gpu_card_type"`
	SKUType              string     `json:"sku_type"`
	Category             string     `json:"category"`
	IsFree               bool       `json:"is_free"`
	IsActive             bool       `json:"is_active"`
	IsInventoryAvailable bool       `json:"is_inventory_available"`
	Plans                []planJSON `json:"plans"`
}

// renderSKUs groups SKUs by series; location, when not empty, keeps only its plans.
func renderSKUs(cfg *config.Config, location string) map[string][]skuJSON {
	out := map[string][]skuJSON{"CPU": {}, "GPU": {}}
	for _, s := range cfg.SKUs {
		sj := skuJSON{SKUID: s.ID, Name: s.Name, Series: s.Series, CPU: s.CPU, GPU: s.GPU, Memory: s.MemoryGB,
			GPUMemory: s.GPUMemoryGB, GPUCardType: s.GPUCardType, SKUType: s.SKUType, Category: s.Category,
			IsFree: s.IsFree, IsActive: s.IsActive, IsInventoryAvailable: s.InventoryAvailable, Plans: []planJSON{}}
		for _, p := range s.Plans {
			if location == "" || p.Location == location {
				sj.Plans = append(sj.Plans, renderPlan(p))
			}
		}
		series := strings.ToUpper(s.Series)
		out[series] = append(out[series], sj)
	}
	return out
}

type nodeJSON struct {
	Name          string   `json:"name"`
	Hostname      string   `json:"hostname"`
	Role          string   `json:"role"`
	Address       string   `json:"address"`
	Status        string   `json:"status"`
	DrainReason   string   `json:"drain_reason"`
	ImageVersion  string   `json:"image_version"`
	RestartGen    int64    `json:"restart_generation"`
	BootID        string   `json:"boot_id"`
	StartedAt     *string  `json:"started_at"`
	Jobs          int      `json:"jobs"`
	NetworkGen    int64    `json:"network_generation"`
	ReservedIP    string   `json:"reserved_ip"`
	SSHKeyCount   int      `json:"ssh_key_count"`
	SecurityRules int      `json:"security_rules"`
	JoinedAt      string   `json:"created_at"`
	Warnings      []string `json:"warnings"`
}

// renderNodes joins the nodes the store knows with what the backend observed; a node the backend
// does not have is "missing", one the store does not know is reported with a warning.
func renderNodes(nodes []trainyard.Node, obs []trainyard.ObservedNode) []nodeJSON {
	byName := map[string]trainyard.ObservedNode{}
	for _, o := range obs {
		byName[o.Name] = o
	}
	out := []nodeJSON{}
	known := map[string]bool{}
	for _, n := range nodes {
		known[n.Name] = true
		nj := nodeJSON{Name: n.Name, Hostname: n.Name, Role: n.Role, Status: trainyard.NodeMissing, JoinedAt: jsonTime(n.CreatedAt), Warnings: []string{}}
		if o, ok := byName[n.Name]; ok {
			fillObserved(&nj, o)
		}
		out = append(out, nj)
	}
	var extra []string
	for name := range byName {
		if !known[name] {
			extra = append(extra, name)
		}
	}
	sort.Strings(extra)
	for _, name := range extra {
		nj := nodeJSON{Name: name, Hostname: name, Warnings: []string{"the backend has this node but the control plane does not know it"}}
		fillObserved(&nj, byName[name])
		out = append(out, nj)
	}
	return out
}

func fillObserved(nj *nodeJSON, o trainyard.ObservedNode) {
	nj.Role, nj.Address, nj.Status, nj.DrainReason = o.Role, o.Address, o.State, o.DrainReason
	nj.ImageVersion, nj.RestartGen, nj.BootID, nj.Jobs = o.ImageVersion, o.RestartGen, o.BootID, o.Jobs
	nj.NetworkGen, nj.ReservedIP, nj.SSHKeyCount, nj.SecurityRules = o.Network.Generation, o.Network.ReservedIP, len(o.SSHKeys), len(o.Network.Rules)
	if !o.StartedAt.IsZero() {
		s := jsonTime(o.StartedAt)
		nj.StartedAt = &s
	}
	if nj.Warnings == nil {
		nj.Warnings = []string{}
	}
}

// renderAll renders every item; an empty list renders as [], never null.
func renderAll[T, J any](items []T, render func(T) J) []J {
	out := make([]J, 0, len(items))
	for _, it := range items {
		out = append(out, render(it))
	}
	return out
}
