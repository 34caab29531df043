package service

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/trainyard/trainyard"
	"github.com/trainyard/trainyard/store"
)

// ClusterDetail is a cluster with everything the API shows about it.
type ClusterDetail struct {
	*trainyard.Cluster
	Image         trainyard.ImageVersion
	SKU           trainyard.SKU
	Plan          trainyard.Plan
	Groups        []trainyard.SecurityGroup
	ReservedIP    *trainyard.ReservedIP
	CurrentAction *trainyard.Action
	LastAction    *trainyard.Action
	Nodes         []trainyard.Node
	Observed      []trainyard.ObservedNode
}

func (s *Service) detail(ctx context.Context, tx *store.Tx, c *trainyard.Cluster) (*ClusterDetail, error) {
	d := &ClusterDetail{Cluster: c}
	d.Image, _ = s.Config.ImageVersion(c.ImageVersionID)
	d.SKU, _ = s.Config.SKU(c.SKUID)
	d.Plan, _ = s.Config.Plan(c.SKUID, c.PlanID)
	for _, gid := range c.SecurityGroupIDs {
		g, ok, err := tx.SecurityGroup(ctx, c.AccountID, c.ProjectID, c.Location, gid)
		if err != nil {
			return nil, err
		}
		if ok {
			d.Groups = append(d.Groups, g)
		}
	}
	if c.ReservedIPID != 0 {
		ip, ok, err := tx.ReservedIP(ctx, c.AccountID, c.ReservedIPID)
		if err != nil {
			return nil, err
		}
		if ok {
			d.ReservedIP = &ip
		}
	}
	last, err := tx.LatestAction(ctx, c.ID)
	if err != nil {
		return nil, err
	}
	d.LastAction = last
	if c.CurrentActionID != 0 {
		if last != nil && last.ID == c.CurrentActionID {
			d.CurrentAction = last
		} else if d.CurrentAction, err = tx.Action(ctx, c.CurrentActionID); err != nil {
			return nil, err
		}
	}
	if d.Nodes, err = tx.Nodes(ctx, c.ID); err != nil {
		return nil, err
	}
	if s.Observer != nil {
		d.Observed = s.Observer.Observed(c.ID)
	}
	return d, nil
}

func clusterInScope(ctx context.Context, tx *store.Tx, sc trainyard.Scope, id int64) (*trainyard.Cluster, error) {
	c, ok, err := tx.ClusterInScope(ctx, sc.Caller.AccountID(), sc.Project.ID, sc.Location, id, false)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, trainyard.Errorf(trainyard.ENOTFOUND, "no cluster %d in this project and location", id)
	}
	return c, nil
}

// Clusters lists the clusters of the project in the location.
func (s *Service) Clusters(ctx context.Context, sc trainyard.Scope, page store.Page) ([]*ClusterDetail, int, error) {
	var out []*ClusterDetail
	var total int
	err := s.DB.Read(ctx, func(ctx context.Context, tx *store.Tx) error {
		cs, n, err := tx.Clusters(ctx, sc.Caller.AccountID(), sc.Project.ID, sc.Location, page)
		if err != nil {
			return err
		}
		total = n
		for _, c := range cs {
			d, err := s.detail(ctx, tx, c)
			if err != nil {
				return err
			}
			out = append(out, d)
		}
		return nil
	})
	return out, total, err
}

// Cluster returns one cluster.
func (s *Service) Cluster(ctx context.Context, sc trainyard.Scope, id int64) (*ClusterDetail, error) {
	var d *ClusterDetail
	err := s.DB.Read(ctx, func(ctx context.Context, tx *store.Tx) error {
		c, err := clusterInScope(ctx, tx, sc, id)
		if err != nil {
			return err
		}
		d, err = s.detail(ctx, tx, c)
		return err
	})
	return d, err
}

// CreateClusterRequest is the body of a cluster create.
type CreateClusterRequest struct {
	Name            string
	ImageVersionID  int64
	SSHKeyIDs       []int64
	SecurityGroupID int64
	SKUID           int64
	NoOfNodes       int
	PlanID          int64
	ScriptAdded     bool
	LifecycleScript string
	SFSMounts       []trainyard.Mount
	PFSMounts       []trainyard.Mount
	DatasetMounts   []trainyard.Mount
}

// maxScriptLen bounds a lifecycle script.
const maxScriptLen = 64 * 1024

// NodeName is the hostname of a cluster's node: the controller is index 0.
func NodeName(clusterID int64, index int) string {
	if index == 0 {
		return fmt.Sprintf("c%d-ctl", clusterID)
	}
	return fmt.Sprintf("c%d-w%d", clusterID, index)
}

func checkMounts(field string, ms []trainyard.Mount, p *trainyard.Problems) {
	for i, m := range ms {
		at := fmt.Sprintf("%s[%d]", field, i)
		if m.ID < 1 {
			p.Add(at+".id", "must be a positive id")
		}
		if m.Name == "" || len(m.Name) > 100 || strings.ContainsRune(m.Name, 0) {
			p.Add(at+".name", "must be 1 to 100 characters")
		}
		if !path.IsAbs(m.MountPath) || path.Clean(m.MountPath) != m.MountPath || m.MountPath == "/" ||
			strings.ContainsAny(m.MountPath, " \t\r\n\x00:") {
			p.Add(at+".mount_path", "must be a clean absolute path other than / without spaces")
		}
	}
}

// resolveKeys loads the account's keys ids, naming field for each problem.
func resolveKeys(ctx context.Context, tx *store.Tx, accountID int64, ids []int64, field string, p *trainyard.Problems) ([]trainyard.ClusterKey, error) {
	if len(ids) == 0 {
		p.Add(field, "at least one SSH key id is required")
		return nil, nil
	}
	var keys []trainyard.ClusterKey
	seen := map[int64]bool{}
	for _, id := range ids {
		if seen[id] {
			p.Add(field, "key %d is listed twice", id)
			continue
		}
		seen[id] = true
		k, ok, err := tx.SSHKey(ctx, accountID, id)
		if err != nil {
			return nil, err
		}
		if !ok {
			p.Add(field, "no SSH key %d in this account", id)
			continue
		}
		keys = append(keys, trainyard.ClusterKey{KeyID: k.ID, Label: k.Label, PublicKey: k.PublicKey, Fingerprint: k.Fingerprint})
	}
	return keys, nil
}

// CreateCluster validates req and stores the cluster, its nodes and its create action.
func (s *Service) CreateCluster(ctx context.Context, sc trainyard.Scope, req CreateClusterRequest) (*ClusterDetail, error) {
	if err := mustMutate(sc.Caller); err != nil {
		return nil, err
	}
	var p trainyard.Problems
	if err := trainyard.ValidateName(req.Name); err != nil {
		p.Add("name", "%v", err)
	}
	if _, ok := s.Config.ImageVersion(req.ImageVersionID); !ok {
		p.Add("image_version_id", "no image version %d (see GET /gpu_service/image/)", req.ImageVersionID)
	}
	sku, ok := s.Config.SKU(req.SKUID)
	if !ok || !sku.IsActive {
		p.Add("sku_id", "no active SKU %d (see GET /gpu_service/sku/?service=distributed_job)", req.SKUID)
	} else if plan, ok := s.Config.Plan(req.SKUID, req.PlanID); !ok {
		p.Add("sku_item_price_id", "no plan %d for SKU %d", req.PlanID, req.SKUID)
	} else if plan.Location != sc.Location {
		p.Add("sku_item_price_id", "plan %d is for %s, not %s", req.PlanID, plan.Location, sc.Location)
	}
	if req.NoOfNodes < 1 || req.NoOfNodes > s.Config.MaxNodesPerCluster {
		p.Add("no_of_nodes", "must be 1 to %d", s.Config.MaxNodesPerCluster)
	}
	if len(req.LifecycleScript) > maxScriptLen {
		p.Add("lifecycle_script", "must be at most %d bytes", maxScriptLen)
	} else if strings.ContainsRune(req.LifecycleScript, 0) {
		p.Add("lifecycle_script", "must not contain NUL bytes")
	}
	if req.ScriptAdded && strings.TrimSpace(req.LifecycleScript) == "" {
		p.Add("lifecycle_script", "is required when script_added is true")
	}
	checkMounts("sfs_mount_list", req.SFSMounts, &p)
	checkMounts("pfs_mount_list", req.PFSMounts, &p)
	checkMounts("dataset_mount_list", req.DatasetMounts, &p)

	var d *ClusterDetail
	err := s.DB.Write(ctx, func(ctx context.Context, tx *store.Tx) error {
		keys, err := resolveKeys(ctx, tx, sc.Caller.AccountID(), req.SSHKeyIDs, "ssh_key_ids", &p)
		if err != nil {
			return err
		}
		if _, ok, err := tx.SecurityGroup(ctx, sc.Caller.AccountID(), sc.Project.ID, sc.Location, req.SecurityGroupID); err != nil {
			return err
		} else if !ok {
			p.Add("security_group_id", "no security group %d in this project and location", req.SecurityGroupID)
		}
		if !p.Has("name") {
			existing, _, err := tx.Clusters(ctx, sc.Caller.AccountID(), sc.Project.ID, sc.Location, store.Page{})
			if err != nil {
				return err
			}
			for _, c := range existing {
				if c.Name == req.Name {
					p.Add("name", "a cluster named %q already exists here (id %d)", req.Name, c.ID)
				}
			}
		}
		if err := p.Err(); err != nil {
			return err
		}
		c := &trainyard.Cluster{
			AccountID: sc.Caller.AccountID(), ProjectID: sc.Project.ID, Location: sc.Location, Name: req.Name,
			CreatedBy: sc.Caller.User, SKUID: req.SKUID, PlanID: req.PlanID, Status: trainyard.StatusCreating,
			ScriptAdded: req.ScriptAdded, LifecycleScript: req.LifecycleScript,
			SFSMounts: orEmpty(req.SFSMounts), PFSMounts: orEmpty(req.PFSMounts), DatasetMounts: orEmpty(req.DatasetMounts),
			ImageVersionID: req.ImageVersionID, Workers: req.NoOfNodes, SSHKeys: keys,
			SecurityGroupIDs: []int64{req.SecurityGroupID}, NetworkGen: 1,
		}
		if err := tx.CreateCluster(ctx, c); err != nil {
			return err
		}
		var names []string
		for i := 0; i <= req.NoOfNodes; i++ {
			role := trainyard.RoleWorker
			if i == 0 {
				role = trainyard.RoleController
			}
			n, err := tx.CreateNode(ctx, trainyard.Node{ClusterID: c.ID, Name: NodeName(c.ID, i), Role: role, Index: i})
			if err != nil {
				return err
			}
			names = append(names, n.Name)
		}
		a := &trainyard.Action{
			ClusterID: c.ID, AccountID: c.AccountID, Type: trainyard.ActionCreateCluster, Status: trainyard.ActionQueued,
			RequestedBy: sc.Caller.User, ActiveIAM: sc.Caller.Membership.ID,
			Plan: trainyard.ActionPlan{Batches: [][]string{names[:1], names[1:]}},
		}
		if err := tx.CreateAction(ctx, a); err != nil {
			return err
		}
		c.CurrentActionID = a.ID
		if err := tx.UpdateCluster(ctx, c); err != nil {
			return err
		}
		d, err = s.detail(ctx, tx, c)
		return err
	})
	if err == nil {
		s.wake()
	}
	return d, err
}

func orEmpty(ms []trainyard.Mount) []trainyard.Mount {
	if ms == nil {
		return []trainyard.Mount{}
	}
	return ms
}

// busy is the 409 for a cluster whose slot is taken or whose status forbids the request.
func busy(ctx context.Context, tx *store.Tx, c *trainyard.Cluster) error {
	if c.CurrentActionID != 0 {
		a, err := tx.Action(ctx, c.CurrentActionID)
		if err != nil {
			return err
		}
		e := trainyard.Errorf(trainyard.ECONFLICT, "cluster %d is busy with action %d (%s, %s); wait for it or cancel it",
			c.ID, a.ID, a.Type, a.Status)
		return e.With("current_action_id", "%d", a.ID)
	}
	return trainyard.Errorf(trainyard.ECONFLICT, "cluster %d is %s; this needs a Running cluster", c.ID, c.Status).
		With("status", "%s", c.Status)
}

// DeleteCluster starts tearing a cluster down. Deleting a cluster that is already being deleted
// answers the same without a second action.
func (s *Service) DeleteCluster(ctx context.Context, sc trainyard.Scope, id int64) (*trainyard.Action, error) {
	if err := mustMutate(sc.Caller); err != nil {
		return nil, err
	}
	var a *trainyard.Action
	err := s.DB.Write(ctx, func(ctx context.Context, tx *store.Tx) error {
		c, err := clusterInScope(ctx, tx, sc, id)
		if err != nil {
			return err
		}
		if c.Status == trainyard.StatusDeleting {
			a, err = tx.Action(ctx, c.CurrentActionID)
			return err
		}
		if c.Status != trainyard.StatusRunning && c.Status != trainyard.StatusFailed {
			return busy(ctx, tx, c)
		}
		nodes, err := tx.Nodes(ctx, c.ID)
		if err != nil {
			return err
		}
		var names []string
		for _, n := range nodes {
			names = append(names, n.Name)
		}
		a = &trainyard.Action{
			ClusterID: c.ID, AccountID: c.AccountID, Type: trainyard.ActionDeleteCluster, Status: trainyard.ActionQueued,
			RequestedBy: sc.Caller.User, ActiveIAM: sc.Caller.Membership.ID,
			Plan: trainyard.ActionPlan{Batches: [][]string{names}},
		}
		if err := tx.CreateAction(ctx, a); err != nil {
			return err
		}
		ok, err := tx.AcquireClusterSlot(ctx, c.ID, a.ID, trainyard.StatusDeleting, trainyard.StatusRunning, trainyard.StatusFailed)
		if err != nil {
			return err
		}
		if !ok {
			return busy(ctx, tx, c)
		}
		return nil
	})
	if err == nil {
		s.wake()
	}
	return a, err
}

// ActionRequest is the body of the Cluster Actions PUT. Given records which fields the request
// had, so that a missing field differs from a zero one.
type ActionRequest struct {
	Action           string
	SSHKeyIDs        []int64
	ImageVersionID   int64
	AdditionalNodes  int
	ReservedIPID     int64
	IPType           string
	SecurityGroupIDs []int64
	SecurityGroupID  int64
	MaxUnavailable   string
	Drain            string
	Given            map[string]bool
}

// ActionResult is what an accepted (or dry-run) action answers.
type ActionResult struct {
	Action     *trainyard.Action
	Cluster    *ClusterDetail
	ReservedIP *trainyard.ReservedIP // attach_ip
	DryRun     bool
}

// errDryRun rolls back a dry run's transaction (which wrote nothing anyway).
var errDryRun = fmt.Errorf("dry run")

// ClusterAction validates an action and, unless dryRun, records it with the desired state it
// aims at in one transaction.
func (s *Service) ClusterAction(ctx context.Context, sc trainyard.Scope, id int64, req ActionRequest, dryRun bool) (*ActionResult, error) {
	if err := mustMutate(sc.Caller); err != nil {
		return nil, err
	}
	var p trainyard.Problems
	need := func(field string) bool {
		if !req.Given[field] {
			p.Add(field, "is required for %s", req.Action)
			return false
		}
		return true
	}
	switch req.Action {
	case trainyard.ActionUpdateSSHKeys:
		need("ssh_key_ids")
	case trainyard.ActionUpdateImage:
		if need("image_version_id") {
			if _, ok := s.Config.ImageVersion(req.ImageVersionID); !ok {
				p.Add("image_version_id", "no image version %d (see GET /gpu_service/image/)", req.ImageVersionID)
			}
		}
	case trainyard.ActionRestartWorkers, trainyard.ActionRestartCluster:
	case trainyard.ActionScaleCluster:
		if need("additional_nodes") && (req.AdditionalNodes < 1 || req.AdditionalNodes > s.Config.MaxAdditionalNodes) {
			p.Add("additional_nodes", "must be 1 to %d", s.Config.MaxAdditionalNodes)
		}
	case trainyard.ActionAttachIP:
		need("reserved_ip_id")
	case trainyard.ActionDetachIP:
		need("reserved_ip_id")
		if need("ip_type") && req.IPType != "reserved" {
			p.Add("ip_type", "must be \"reserved\"")
		}
	case trainyard.ActionAddSecurityGroup:
		if need("security_groups_ids") && len(req.SecurityGroupIDs) == 0 {
			p.Add("security_groups_ids", "at least one security group id is required")
		}
	case trainyard.ActionRemoveSecurityGroup:
		need("security_group_id")
	case "":
		p.Add("action", "is required: one of %s", strings.Join(trainyard.ClusterActions, ", "))
	default:
		p.Add("action", "unknown action %q: one of %s", req.Action, strings.Join(trainyard.ClusterActions, ", "))
	}
	rolling := trainyard.Rolling(req.Action)
	if req.Given["max_unavailable"] && !rolling && req.Action != "" {
		p.Add("max_unavailable", "applies only to update_image, restart_workers and restart_cluster")
	}
	if req.Given["drain"] && !rolling && req.Action != "" {
		p.Add("drain", "applies only to update_image, restart_workers and restart_cluster")
	}
	if !trainyard.ValidDrain(req.Drain) {
		p.Add("drain", "must be wait, requeue or force")
	}
	if _, err := trainyard.ResolveMaxUnavailable(req.MaxUnavailable, 1); err != nil {
		p.Add("max_unavailable", "%v", err)
	}
	if err := p.Err(); err != nil {
		return nil, err
	}

	var res *ActionResult
	err := s.DB.Write(ctx, func(ctx context.Context, tx *store.Tx) error {
		c, err := clusterInScope(ctx, tx, sc, id)
		if err != nil {
			return err
		}
		nodes, err := tx.Nodes(ctx, c.ID)
		if err != nil {
			return err
		}
		a := &trainyard.Action{
			ClusterID: c.ID, AccountID: c.AccountID, Type: req.Action, Status: trainyard.ActionQueued,
			RequestedBy: sc.Caller.User, ActiveIAM: sc.Caller.Membership.ID,
		}
		res = &ActionResult{Action: a, DryRun: dryRun}
		var newNodes []trainyard.Node
		if err := s.plan(ctx, tx, sc, c, nodes, req, a, &p, &newNodes, res); err != nil {
			return err
		}
		if err := p.Err(); err != nil {
			return err
		}
		nodeChanging := trainyard.NodeChanging(req.Action)
		if nodeChanging && c.Status != trainyard.StatusRunning ||
			!nodeChanging && c.Status != trainyard.StatusRunning && c.Status != trainyard.StatusUpdating {
			return busy(ctx, tx, c)
		}
		if dryRun {
			for b, batch := range a.Plan.Batches {
				for _, n := range batch {
					a.Steps = append(a.Steps, trainyard.Step{Node: n, Batch: b, Status: trainyard.StepPending})
				}
			}
			res.Cluster, err = s.detail(ctx, tx, c)
			if err != nil {
				return err
			}
			return errDryRun
		}
		if err := tx.CreateAction(ctx, a); err != nil {
			return err
		}
		if nodeChanging {
			ok, err := tx.AcquireClusterSlot(ctx, c.ID, a.ID, trainyard.StatusUpdating, trainyard.StatusRunning)
			if err != nil {
				return err
			}
			if !ok {
				return busy(ctx, tx, c)
			}
			c.Status, c.CurrentActionID = trainyard.StatusUpdating, a.ID
		}
		for _, n := range newNodes {
			if _, err := tx.CreateNode(ctx, n); err != nil {
				return err
			}
		}
		if err := tx.UpdateCluster(ctx, c); err != nil {
			return err
		}
		if res.ReservedIP != nil {
			if err := tx.SetReservedIPAttachment(ctx, res.ReservedIP.ID, res.ReservedIP.ClusterID); err != nil {
				return err
			}
		}
		res.Cluster, err = s.detail(ctx, tx, c)
		return err
	})
	if err == errDryRun {
		return res, nil
	}
	if err != nil {
		return nil, err
	}
	s.wake()
	return res, nil
}

// plan checks the references of req against the cluster, computes the desired state it leads
// to (changing c in memory) and fills a's params and plan. Problems go to p.
func (s *Service) plan(ctx context.Context, tx *store.Tx, sc trainyard.Scope, c *trainyard.Cluster, nodes []trainyard.Node,
	req ActionRequest, a *trainyard.Action, p *trainyard.Problems, newNodes *[]trainyard.Node, res *ActionResult) error {
	var controller string
	var workers []string
	for _, n := range nodes {
		if n.Role == trainyard.RoleController {
			controller = n.Name
		} else {
			workers = append(workers, n.Name)
		}
	}
	all := append([]string{controller}, workers...)
	a.Params.Previous = &trainyard.PreviousState{ImageVersionID: c.ImageVersionID, SSHKeys: slices.Clone(c.SSHKeys),
		SecurityGroupIDs: slices.Clone(c.SecurityGroupIDs), ReservedIPID: c.ReservedIPID}
	rollingPlan := func() error {
		maxU, err := trainyard.ResolveMaxUnavailable(req.MaxUnavailable, len(workers))
		if err != nil {
			p.Add("max_unavailable", "%v", err)
			return nil
		}
		drain := req.Drain
		if drain == "" {
			drain = trainyard.DrainWait
		}
		a.Params.MaxUnavailable, a.Params.Drain = req.MaxUnavailable, drain
		if a.Params.MaxUnavailable == "" {
			a.Params.MaxUnavailable = trainyard.DefaultMaxUnavailable
		}
		a.Plan.MaxUnavailable, a.Plan.Drain = maxU, drain
		for b := range slices.Chunk(workers, maxU) {
			a.Plan.Batches = append(a.Plan.Batches, b)
		}
		return nil
	}
	switch req.Action {
	case trainyard.ActionUpdateSSHKeys:
		keys, err := resolveKeys(ctx, tx, sc.Caller.AccountID(), req.SSHKeyIDs, "ssh_key_ids", p)
		if err != nil {
			return err
		}
		c.SSHKeys = keys
		a.Params.SSHKeyIDs = req.SSHKeyIDs
		a.Plan.Batches = [][]string{all}
	case trainyard.ActionUpdateImage:
		c.ImageVersionID = req.ImageVersionID
		a.Params.ImageVersionID = req.ImageVersionID
		if err := rollingPlan(); err != nil {
			return err
		}
		// The controller goes last: jobs keep running through a slurmctld restart, and by then
		// every worker already proved the image works.
		a.Plan.Batches = append(a.Plan.Batches, []string{controller})
	case trainyard.ActionRestartWorkers:
		c.WorkerRestartGen++
		a.Params.RestartGen = c.WorkerRestartGen
		if err := rollingPlan(); err != nil {
			return err
		}
	case trainyard.ActionRestartCluster:
		c.WorkerRestartGen++
		c.ControllerRestartGen++
		a.Params.RestartGen, a.Params.ControllerGen = c.WorkerRestartGen, c.ControllerRestartGen
		if err := rollingPlan(); err != nil {
			return err
		}
		// The controller first, so the workers restart under a controller that tracks their drains.
		a.Plan.Batches = append([][]string{{controller}}, a.Plan.Batches...)
	case trainyard.ActionScaleCluster:
		if c.Workers+req.AdditionalNodes > s.Config.MaxNodesPerCluster {
			p.Add("additional_nodes", "the cluster has %d worker(s); at most %d are allowed in all", c.Workers, s.Config.MaxNodesPerCluster)
			return nil
		}
		next := 0
		for _, n := range nodes {
			next = max(next, n.Index)
		}
		var names []string
		for i := 1; i <= req.AdditionalNodes; i++ {
			n := trainyard.Node{ClusterID: c.ID, Name: NodeName(c.ID, next+i), Role: trainyard.RoleWorker, Index: next + i}
			*newNodes = append(*newNodes, n)
			names = append(names, n.Name)
		}
		c.Workers += req.AdditionalNodes
		a.Params.AdditionalNodes, a.Params.NewNodes = req.AdditionalNodes, names
		a.Plan.Batches = [][]string{names}
	case trainyard.ActionAttachIP, trainyard.ActionDetachIP:
		ip, ok, err := reservedIPInScope(ctx, tx, sc, req.ReservedIPID)
		if err != nil {
			return err
		}
		switch {
		case !ok:
			p.Add("reserved_ip_id", "no reserved IP %d in this project", req.ReservedIPID)
			return nil
		case req.Action == trainyard.ActionAttachIP && ip.Location != c.Location:
			p.Add("reserved_ip_id", "reserved IP %s is in %s; the cluster is in %s", ip.Address, ip.Location, c.Location)
		case req.Action == trainyard.ActionAttachIP && ip.Status == trainyard.IPAttached && ip.ClusterID == c.ID:
			p.Add("reserved_ip_id", "reserved IP %s is already attached to this cluster", ip.Address)
		case req.Action == trainyard.ActionAttachIP && ip.Status == trainyard.IPAttached:
			p.Add("reserved_ip_id", "reserved IP %s is attached to another cluster", ip.Address)
		case req.Action == trainyard.ActionAttachIP && c.ReservedIPID != 0:
			p.Add("reserved_ip_id", "the cluster already has reserved IP %d attached; detach it first", c.ReservedIPID)
		case req.Action == trainyard.ActionDetachIP && (ip.Status != trainyard.IPAttached || ip.ClusterID != c.ID):
			p.Add("reserved_ip_id", "reserved IP %s is not attached to this cluster", ip.Address)
		}
		if req.Action == trainyard.ActionAttachIP {
			c.ReservedIPID, ip.Status, ip.ClusterID = ip.ID, trainyard.IPAttached, c.ID
			res.ReservedIP = &ip
		} else {
			// The address stays Attached to the cluster until the controller has let go of
			// it (the action succeeded), so it cannot be handed to anyone else before.
			c.ReservedIPID = 0
		}
		c.NetworkGen++
		a.Params.ReservedIPID, a.Params.NetworkGen = ip.ID, c.NetworkGen
		a.Plan.Batches = [][]string{{controller}}
	case trainyard.ActionAddSecurityGroup:
		seen := map[int64]bool{}
		for _, gid := range req.SecurityGroupIDs {
			if seen[gid] {
				p.Add("security_groups_ids", "security group %d is listed twice", gid)
				continue
			}
			seen[gid] = true
			if _, ok, err := tx.SecurityGroup(ctx, sc.Caller.AccountID(), sc.Project.ID, sc.Location, gid); err != nil {
				return err
			} else if !ok {
				p.Add("security_groups_ids", "no security group %d in this project and location", gid)
			} else if slices.Contains(c.SecurityGroupIDs, gid) {
				p.Add("security_groups_ids", "security group %d is already applied to this cluster", gid)
			}
			c.SecurityGroupIDs = append(c.SecurityGroupIDs, gid)
		}
		c.NetworkGen++
		a.Params.SecurityGroupIDs, a.Params.NetworkGen = req.SecurityGroupIDs, c.NetworkGen
		a.Plan.Batches = [][]string{all}
	case trainyard.ActionRemoveSecurityGroup:
		gid := req.SecurityGroupID
		switch {
		case !slices.Contains(c.SecurityGroupIDs, gid):
			p.Add("security_group_id", "security group %d is not applied to this cluster", gid)
		case len(c.SecurityGroupIDs) == 1:
			p.Add("security_group_id", "security group %d is the cluster's last group; add another before removing it", gid)
		}
		c.SecurityGroupIDs = slices.DeleteFunc(c.SecurityGroupIDs, func(g int64) bool { return g == gid })
		c.NetworkGen++
		a.Params.SecurityGroupIDs, a.Params.NetworkGen = []int64{gid}, c.NetworkGen
		a.Plan.Batches = [][]string{all}
	}
	return nil
}

// Actions lists a cluster's actions; a deleted cluster's history stays readable.
func (s *Service) Actions(ctx context.Context, sc trainyard.Scope, clusterID int64, page store.Page) ([]*trainyard.Action, int, error) {
	var out []*trainyard.Action
	var total int
	err := s.DB.Read(ctx, func(ctx context.Context, tx *store.Tx) error {
		if _, ok, err := tx.ClusterInScope(ctx, sc.Caller.AccountID(), sc.Project.ID, sc.Location, clusterID, true); err != nil {
			return err
		} else if !ok {
			return trainyard.Errorf(trainyard.ENOTFOUND, "no cluster %d in this project and location", clusterID)
		}
		var err error
		out, total, err = tx.Actions(ctx, clusterID, page)
		return err
	})
	return out, total, err
}

func actionInScope(ctx context.Context, tx *store.Tx, sc trainyard.Scope, clusterID, actionID int64) (*trainyard.Action, error) {
	if _, ok, err := tx.ClusterInScope(ctx, sc.Caller.AccountID(), sc.Project.ID, sc.Location, clusterID, true); err != nil {
		return nil, err
	} else if !ok {
		return nil, trainyard.Errorf(trainyard.ENOTFOUND, "no cluster %d in this project and location", clusterID)
	}
	a, ok, err := tx.ActionOfCluster(ctx, clusterID, actionID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, trainyard.Errorf(trainyard.ENOTFOUND, "no action %d on cluster %d", actionID, clusterID)
	}
	return a, nil
}

// Action returns one action of a cluster.
func (s *Service) Action(ctx context.Context, sc trainyard.Scope, clusterID, actionID int64) (*trainyard.Action, error) {
	var a *trainyard.Action
	err := s.DB.Read(ctx, func(ctx context.Context, tx *store.Tx) error {
		var err error
		a, err = actionInScope(ctx, tx, sc, clusterID, actionID)
		return err
	})
	return a, err
}

// CancelAction asks an action to stop. The reconciler ends a queued action as canceled when it
// takes it up, and stops a running one at its next safe point (between node steps), releasing
// its drains and restoring what it replaced. Canceling a finished action is a conflict.
func (s *Service) CancelAction(ctx context.Context, sc trainyard.Scope, clusterID, actionID int64) (*trainyard.Action, error) {
	if err := mustMutate(sc.Caller); err != nil {
		return nil, err
	}
	var a *trainyard.Action
	err := s.DB.Write(ctx, func(ctx context.Context, tx *store.Tx) error {
		var err error
		if a, err = actionInScope(ctx, tx, sc, clusterID, actionID); err != nil {
			return err
		}
		if trainyard.Terminal(a.Status) {
			return trainyard.Errorf(trainyard.ECONFLICT, "action %d already %s", a.ID, a.Status).With("status", "%s", a.Status)
		}
		if a.Type == trainyard.ActionDeleteCluster {
			return trainyard.Errorf(trainyard.ECONFLICT, "a cluster deletion cannot be canceled")
		}
		if err := tx.RequestCancel(ctx, a.ID); err != nil {
			return err
		}
		if err := tx.AddEvent(ctx, a.ID, "", "cancel requested by "+sc.Caller.User.Email); err != nil {
			return err
		}
		a, err = tx.Action(ctx, a.ID)
		return err
	})
	if err == nil {
		s.wake()
	}
	return a, err
}

// Nodes returns the cluster's nodes as its backend observes them now.
func (s *Service) Nodes(ctx context.Context, sc trainyard.Scope, clusterID int64) ([]trainyard.Node, []trainyard.ObservedNode, error) {
	var nodes []trainyard.Node
	err := s.DB.Read(ctx, func(ctx context.Context, tx *store.Tx) error {
		c, err := clusterInScope(ctx, tx, sc, clusterID)
		if err != nil {
			return err
		}
		nodes, err = tx.Nodes(ctx, c.ID)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	obs, err := s.Backend.Observe(ctx, clusterID)
	if err != nil {
		return nil, nil, trainyard.Errorf(trainyard.EUNAVAILABLE, "the %s backend could not observe cluster %d: %v", s.Backend.Name(), clusterID, err)
	}
	return nodes, obs, nil
}

// NodeLogs returns the last lines of a daemon's log on a node of the cluster.
func (s *Service) NodeLogs(ctx context.Context, sc trainyard.Scope, clusterID int64, node, daemon string, lines int) (string, error) {
	var known bool
	err := s.DB.Read(ctx, func(ctx context.Context, tx *store.Tx) error {
		c, err := clusterInScope(ctx, tx, sc, clusterID)
		if err != nil {
			return err
		}
		nodes, err := tx.Nodes(ctx, c.ID)
		known = slices.ContainsFunc(nodes, func(n trainyard.Node) bool { return n.Name == node })
		return err
	})
	if err != nil {
		return "", err
	}
	if !known {
		return "", trainyard.Errorf(trainyard.ENOTFOUND, "no node %q in cluster %d", node, clusterID)
	}
	src, ok := s.Backend.(trainyard.LogSource)
	if !ok {
		return "", trainyard.Errorf(trainyard.EINVALID, "the %s backend keeps no daemon logs", s.Backend.Name())
	}
	out, err := src.Logs(ctx, trainyard.NodeRef{ClusterID: clusterID, Name: node}, daemon, lines)
	if err != nil {
		return "", trainyard.FieldError("daemon", "%v", err)
	}
	return out, nil
}
