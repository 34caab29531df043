package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/trainyard/trainyard"
	"github.com/trainyard/trainyard/service"
	"github.com/trainyard/trainyard/store"
)

func sortStrings(s []string) { sort.Strings(s) }

// table lists every endpoint.
func (s *Server) table() []route {
	b := BasePath
	return []route{
		{pattern: "/healthz", public: true, methods: map[string]handler{http.MethodGet: s.healthz}},
		{pattern: "/readyz", public: true, methods: map[string]handler{http.MethodGet: s.readyz}},
		{pattern: b + "/distributed_jobs_v2/cluster/{$}", methods: map[string]handler{http.MethodGet: s.listClusters, http.MethodPost: s.createCluster}},
		{pattern: b + "/distributed_jobs_v2/cluster/{id}/{$}", methods: map[string]handler{
			http.MethodGet: s.getCluster, http.MethodPut: s.clusterAction, http.MethodDelete: s.deleteCluster}},
		{pattern: b + "/distributed_jobs_v2/cluster/{id}/actions/{$}", methods: map[string]handler{http.MethodGet: s.listActions}},
		{pattern: b + "/distributed_jobs_v2/cluster/{id}/actions/{action_id}/{$}", methods: map[string]handler{http.MethodGet: s.getAction}},
		{pattern: b + "/distributed_jobs_v2/cluster/{id}/actions/{action_id}/cancel/{$}", methods: map[string]handler{http.MethodPost: s.cancelAction}},
		{pattern: b + "/distributed_jobs_v2/cluster/{id}/nodes/{$}", methods: map[string]handler{http.MethodGet: s.listNodes}},
		{pattern: b + "/distributed_jobs_v2/cluster/{id}/nodes/{node}/logs/{$}", methods: map[string]handler{http.MethodGet: s.nodeLogs}},
		{pattern: b + "/ssh_keys/{$}", methods: map[string]handler{http.MethodGet: s.listSSHKeys, http.MethodPost: s.createSSHKey}},
		{pattern: b + "/ssh_keys/{id}/{$}", methods: map[string]handler{http.MethodDelete: s.deleteSSHKey}},
		{pattern: b + "/gpu_service/image/{$}", methods: map[string]handler{http.MethodGet: s.listImages}},
		{pattern: b + "/gpu_service/sku/{$}", methods: map[string]handler{http.MethodGet: s.listSKUs}},
		{pattern: b + "/reserved_ips/{$}", methods: map[string]handler{http.MethodGet: s.listReservedIPs, http.MethodPost: s.reserveIP}},
		{pattern: b + "/reserved_ips/{id}/{$}", methods: map[string]handler{http.MethodDelete: s.releaseIP}},
		{pattern: b + "/security_groups/{$}", methods: map[string]handler{http.MethodGet: s.listSecurityGroups, http.MethodPost: s.createSecurityGroup}},
		{pattern: b + "/security_groups/{id}/{$}", methods: map[string]handler{http.MethodGet: s.getSecurityGroup, http.MethodDelete: s.deleteSecurityGroup}},
		{pattern: b + "/security_groups/{id}/rules/{$}", methods: map[string]handler{http.MethodPut: s.setSecurityGroupRules}},
		{pattern: b + "/users/iam-accounts/{$}", methods: map[string]handler{http.MethodGet: s.listIAMAccounts}},
		{pattern: b + "/projects/{$}", methods: map[string]handler{http.MethodGet: s.listProjects, http.MethodPost: s.createProject}},
		{pattern: b + "/audit_log/{$}", methods: map[string]handler{http.MethodGet: s.listAudit}},
	}
}

func (s *Server) healthz(r *request) (*response, error) { return ok(http.StatusOK, "ok", "ok"), nil }

func (s *Server) readyz(r *request) (*response, error) {
	if err := s.svc.DB.Ping(r.Context()); err != nil {
		return nil, trainyard.Errorf(trainyard.EUNAVAILABLE, "store not ready: %v", err)
	}
	if s.ready != nil {
		if err := s.ready(r.Context()); err != nil {
			return nil, trainyard.Errorf(trainyard.EUNAVAILABLE, "not ready: %v", err)
		}
	}
	return ok(http.StatusOK, "ready", "ready"), nil
}

// scopedList answers a paged list of what a project has in a location.
func scopedList[T, J any](s *Server, r *request, fetch func(context.Context, trainyard.Scope, store.Page) ([]T, int, error),
	render func(T) J, wrap func([]J) any) (*response, error) {
	var p trainyard.Problems
	pg := page(r, &p)
	sc, err := s.scope(r, &p)
	if err != nil {
		return nil, err
	}
	items, total, err := fetch(r.Context(), sc, pg)
	if err != nil {
		return nil, err
	}
	out := renderAll(items, render)
	if wrap != nil {
		return list("Success", wrap(out), total, pg), nil
	}
	return list("Success", out, total, pg), nil
}

func (s *Server) listClusters(r *request) (*response, error) {
	return scopedList(s, r, s.svc.Clusters, renderCluster, nil)
}

func (s *Server) getCluster(r *request) (*response, error) {
	sc, id, err := s.clusterScope(r)
	if err != nil {
		return nil, err
	}
	d, err := s.svc.Cluster(r.Context(), sc, id)
	if err != nil {
		return nil, err
	}
	return ok(http.StatusOK, "Success", renderCluster(d)), nil
}

// clusterScope resolves the scope and the cluster id of a /cluster/{id}/ request.
func (s *Server) clusterScope(r *request) (trainyard.Scope, int64, error) {
	var p trainyard.Problems
	id, err := pathID(r, "id", "Cluster_Id")
	if err != nil {
		return trainyard.Scope{}, 0, err
	}
	sc, err := s.scope(r, &p)
	return sc, id, err
}

func mountList(f *body, name string) []trainyard.Mount {
	var ms []trainyard.Mount
	f.decode(name, &ms)
	return ms
}

func (s *Server) createCluster(r *request) (*response, error) {
	var p trainyard.Problems
	sc, err := s.scope(r, &p)
	if err != nil {
		return nil, err
	}
	f, err := parseBody(r.body)
	if err != nil {
		return nil, err
	}
	f.only("name", "image_version_id", "ssh_key_ids", "security_group_id", "sku_id", "no_of_nodes", "sku_item_price_id",
		"script_added", "lifecycle_script", "sfs_mount_list", "pfs_mount_list", "dataset_mount_list")
	for _, req := range []string{"name", "image_version_id", "ssh_key_ids", "security_group_id", "sku_id", "no_of_nodes", "sku_item_price_id"} {
		if !f.has(req) {
			f.p.Add(req, "is required")
		}
	}
	req := service.CreateClusterRequest{
		Name: f.str("name"), ImageVersionID: f.int64("image_version_id"), SSHKeyIDs: f.ints("ssh_key_ids"),
		SecurityGroupID: f.int64("security_group_id"), SKUID: f.int64("sku_id"), NoOfNodes: f.int("no_of_nodes"),
		PlanID: f.int64("sku_item_price_id"), ScriptAdded: f.bool("script_added"), LifecycleScript: f.str("lifecycle_script"),
		SFSMounts: mountList(f, "sfs_mount_list"), PFSMounts: mountList(f, "pfs_mount_list"), DatasetMounts: mountList(f, "dataset_mount_list"),
	}
	if err := f.p.Err(); err != nil {
		return nil, err
	}
	d, err := s.svc.CreateCluster(r.Context(), sc, req)
	if err != nil {
		return nil, err
	}
	resp := ok(http.StatusCreated, "Cluster created successfully", renderCluster(d))
	resp.header = actionHeader(d.CurrentAction)
	return resp, nil
}

// actionHeader points at the action a request started.
func actionHeader(a *trainyard.Action) http.Header {
	if a == nil {
		return nil
	}
	return http.Header{"Trainyard-Action-Id": {strconv.FormatInt(a.ID, 10)}}
}

func (s *Server) deleteCluster(r *request) (*response, error) {
	sc, id, err := s.clusterScope(r)
	if err != nil {
		return nil, err
	}
	a, err := s.svc.DeleteCluster(r.Context(), sc, id)
	if err != nil {
		return nil, err
	}
	resp := ok(http.StatusOK, "Success", "Cluster deleted successfully")
	resp.header = actionHeader(a)
	return resp, nil
}

// actionFields are the body fields of the Cluster Actions PUT: the documented ones and
// trainyard's two rolling options.
var actionFields = []string{"action", "ssh_key_ids", "image_version_id", "additional_nodes", "reserved_ip_id", "ip_type",
	"security_groups_ids", "security_group_id", "max_unavailable", "drain"}

func (s *Server) clusterAction(r *request) (*response, error) {
	sc, id, err := s.clusterScope(r)
	if err != nil {
		return nil, err
	}
	dryRun := false
	if v := r.URL.Query().Get("dry_run"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, trainyard.FieldError("dry_run", "must be true or false")
		}
		dryRun = b
	}
	f, err := parseBody(r.body)
	if err != nil {
		return nil, err
	}
	f.only(actionFields...)
	req := service.ActionRequest{
		Action: f.str("action"), SSHKeyIDs: f.ints("ssh_key_ids"), ImageVersionID: f.int64("image_version_id"),
		AdditionalNodes: f.int("additional_nodes"), ReservedIPID: f.int64("reserved_ip_id"), IPType: f.str("ip_type"),
		SecurityGroupIDs: f.ints("security_groups_ids"), SecurityGroupID: f.int64("security_group_id"),
		MaxUnavailable: f.countOrPercent("max_unavailable"), Drain: f.str("drain"), Given: map[string]bool{},
	}
	for _, k := range actionFields {
		req.Given[k] = f.has(k)
	}
	if err := f.p.Err(); err != nil {
		return nil, err
	}
	res, err := s.svc.ClusterAction(r.Context(), sc, id, req, dryRun)
	if err != nil {
		return nil, err
	}
	if res.DryRun {
		a := renderAction(res.Action)
		return ok(http.StatusOK, "Dry run: nothing was changed", map[string]any{
			"dry_run": true, "action": req.Action, "plan": a.Plan, "steps": a.Steps, "cluster": renderCluster(res.Cluster),
		}), nil
	}
	var resp *response
	switch req.Action {
	case trainyard.ActionAttachIP:
		resp = ok(http.StatusOK, "Reserved IP attached successfully", renderReservedIP(*res.ReservedIP, res.Cluster.Cluster))
	case trainyard.ActionDetachIP:
		resp = ok(http.StatusOK, "Reserved IP detached successfully", map[string]any{})
	case trainyard.ActionAddSecurityGroup:
		resp = ok(http.StatusOK, "Success", "Security group(s) attached successfully")
	case trainyard.ActionRemoveSecurityGroup:
		resp = ok(http.StatusOK, "Success", "Security group removed successfully")
	default:
		resp = ok(http.StatusOK, "Cluster updated successfully", renderCluster(res.Cluster))
	}
	resp.header = actionHeader(res.Action)
	return resp, nil
}

func (s *Server) listActions(r *request) (*response, error) {
	var p trainyard.Problems
	pg := page(r, &p)
	sc, id, err := s.clusterScope(r)
	if err != nil {
		return nil, err
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	as, total, err := s.svc.Actions(r.Context(), sc, id, pg)
	if err != nil {
		return nil, err
	}
	out := renderAll(as, renderAction)
	return list("Success", out, total, pg), nil
}

func (s *Server) actionIDs(r *request) (trainyard.Scope, int64, int64, error) {
	sc, id, err := s.clusterScope(r)
	if err != nil {
		return sc, 0, 0, err
	}
	aid, err := pathID(r, "action_id", "action_id")
	return sc, id, aid, err
}

func (s *Server) getAction(r *request) (*response, error) {
	sc, id, aid, err := s.actionIDs(r)
	if err != nil {
		return nil, err
	}
	a, err := s.svc.Action(r.Context(), sc, id, aid)
	if err != nil {
		return nil, err
	}
	return ok(http.StatusOK, "Success", renderAction(a)), nil
}

func (s *Server) cancelAction(r *request) (*response, error) {
	sc, id, aid, err := s.actionIDs(r)
	if err != nil {
		return nil, err
	}
	a, err := s.svc.CancelAction(r.Context(), sc, id, aid)
	if err != nil {
		return nil, err
	}
	return ok(http.StatusOK, "Cancel requested", renderAction(a)), nil
}

func (s *Server) listNodes(r *request) (*response, error) {
	sc, id, err := s.clusterScope(r)
	if err != nil {
		return nil, err
	}
	nodes, obs, err := s.svc.Nodes(r.Context(), sc, id)
	if err != nil {
		return nil, err
	}
	out := renderNodes(nodes, obs)
	return list("Success", out, len(out), pageAll(len(out))), nil
}

func (s *Server) nodeLogs(r *request) (*response, error) {
	sc, id, err := s.clusterScope(r)
	if err != nil {
		return nil, err
	}
	var p trainyard.Problems
	daemon := r.URL.Query().Get("daemon")
	if daemon == "" {
		p.Add("daemon", "is required: slurmctld, slurmd, sshd, munged or lifecycle")
	}
	lines := queryInt(r, "lines", false, &p)
	if lines == 0 {
		lines = 200
	}
	if lines > 10000 {
		p.Add("lines", "must be at most 10000")
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	out, err := s.svc.NodeLogs(r.Context(), sc, id, r.PathValue("node"), daemon, int(lines))
	if err != nil {
		return nil, err
	}
	return ok(http.StatusOK, "Success", out), nil
}

func pageAll(n int) store.Page { return store.Page{No: 1, PerPage: max(n, 1)} }

func (s *Server) locationOnly(r *request) error {
	loc := r.URL.Query().Get("location")
	if loc == "" {
		return trainyard.FieldError("location", "is required")
	}
	return s.svc.LocationOnly(loc)
}

func (s *Server) listSSHKeys(r *request) (*response, error) {
	var p trainyard.Problems
	pg := page(r, &p)
	if err := p.Err(); err != nil {
		return nil, err
	}
	if err := s.locationOnly(r); err != nil {
		return nil, err
	}
	keys, total, err := s.svc.SSHKeys(r.Context(), r.caller, pg)
	if err != nil {
		return nil, err
	}
	out := renderAll(keys, renderSSHKey)
	return list("Success", out, total, pg), nil
}

func (s *Server) createSSHKey(r *request) (*response, error) {
	if err := s.locationOnly(r); err != nil {
		return nil, err
	}
	f, err := parseBody(r.body)
	if err != nil {
		return nil, err
	}
	f.only("label", "ssh_key")
	if !f.has("label") {
		f.p.Add("label", "is required")
	}
	if !f.has("ssh_key") {
		f.p.Add("ssh_key", "is required")
	}
	label, key := f.str("label"), f.str("ssh_key")
	if err := f.p.Err(); err != nil {
		return nil, err
	}
	k, err := s.svc.CreateSSHKey(r.Context(), r.caller, label, key)
	if err != nil {
		return nil, err
	}
	return ok(http.StatusOK, "Your SSH Key has been added", renderSSHKey(k)), nil
}

func (s *Server) deleteSSHKey(r *request) (*response, error) {
	id, err := pathID(r, "id", "id")
	if err != nil {
		return nil, err
	}
	if err := s.locationOnly(r); err != nil {
		return nil, err
	}
	if err := s.svc.DeleteSSHKey(r.Context(), r.caller, id); err != nil {
		return nil, err
	}
	return ok(http.StatusOK, "Success", "SSH Key deleted successfully"), nil
}

func (s *Server) listImages(r *request) (*response, error) {
	return ok(http.StatusOK, "Success", renderImages(s.svc.Config)), nil
}

func (s *Server) listSKUs(r *request) (*response, error) {
	q := r.URL.Query()
	if svc := q.Get("service"); svc != "" && svc != "distributed_job" {
		return nil, trainyard.FieldError("service", "only distributed_job is offered")
	}
	loc := q.Get("location")
	if loc != "" {
		if err := s.svc.LocationOnly(loc); err != nil {
			return nil, err
		}
	}
	return ok(http.StatusOK, "Success", renderSKUs(s.svc.Config, loc)), nil
}

func (s *Server) listReservedIPs(r *request) (*response, error) {
	return scopedList(s, r, s.svc.ReservedIPs, func(ip trainyard.ReservedIP) reservedIPJSON { return renderReservedIP(ip, nil) },
		func(out []reservedIPJSON) any { return map[string]any{"reserved_ips": out} })
}

func (s *Server) reserveIP(r *request) (*response, error) {
	var p trainyard.Problems
	sc, err := s.scope(r, &p)
	if err != nil {
		return nil, err
	}
	f, err := parseBody(r.body)
	if err != nil {
		return nil, err
	}
	// The hosted API takes no body fields here; a client may still send an empty object.
	f.only()
	if err := f.p.Err(); err != nil {
		return nil, err
	}
	ip, err := s.svc.ReserveIP(r.Context(), sc)
	if err != nil {
		return nil, err
	}
	return ok(http.StatusOK, fmt.Sprintf("IP %s allocated successfully.", ip.Address), renderReservedIP(ip, nil)), nil
}

func (s *Server) releaseIP(r *request) (*response, error) {
	id, err := pathID(r, "id", "id")
	if err != nil {
		return nil, err
	}
	var p trainyard.Problems
	sc, err := s.scope(r, &p)
	if err != nil {
		return nil, err
	}
	if err := s.svc.ReleaseIP(r.Context(), sc, id); err != nil {
		return nil, err
	}
	return ok(http.StatusOK, "Success", "Reserved IP released successfully"), nil
}

func (s *Server) listSecurityGroups(r *request) (*response, error) {
	return scopedList(s, r, s.svc.SecurityGroups, renderSecurityGroup, nil)
}

func (s *Server) createSecurityGroup(r *request) (*response, error) {
	var p trainyard.Problems
	sc, err := s.scope(r, &p)
	if err != nil {
		return nil, err
	}
	f, err := parseBody(r.body)
	if err != nil {
		return nil, err
	}
	f.only("name", "description", "rules")
	if !f.has("name") {
		f.p.Add("name", "is required")
	}
	req := service.SecurityGroupRequest{Name: f.str("name"), Description: f.str("description")}
	if raw, ok := f.raw["rules"]; ok {
		req.Rules = decodeRules(raw, "rules", &f.p)
	}
	if err := f.p.Err(); err != nil {
		return nil, err
	}
	g, err := s.svc.CreateSecurityGroup(r.Context(), sc, req)
	if err != nil {
		return nil, err
	}
	return ok(http.StatusCreated, "Created Successfully", renderSecurityGroup(g)), nil
}

func (s *Server) groupScope(r *request) (trainyard.Scope, int64, error) {
	id, err := pathID(r, "id", "id")
	if err != nil {
		return trainyard.Scope{}, 0, err
	}
	var p trainyard.Problems
	sc, err := s.scope(r, &p)
	return sc, id, err
}

func (s *Server) getSecurityGroup(r *request) (*response, error) {
	sc, id, err := s.groupScope(r)
	if err != nil {
		return nil, err
	}
	g, err := s.svc.SecurityGroup(r.Context(), sc, id)
	if err != nil {
		return nil, err
	}
	return ok(http.StatusOK, "Success", renderSecurityGroup(g)), nil
}

func (s *Server) deleteSecurityGroup(r *request) (*response, error) {
	sc, id, err := s.groupScope(r)
	if err != nil {
		return nil, err
	}
	if err := s.svc.DeleteSecurityGroup(r.Context(), sc, id); err != nil {
		return nil, err
	}
	return ok(http.StatusOK, "Success", "Security group deleted successfully"), nil
}

func (s *Server) setSecurityGroupRules(r *request) (*response, error) {
	sc, id, err := s.groupScope(r)
	if err != nil {
		return nil, err
	}
	var p trainyard.Problems
	var raw json.RawMessage
	if err := json.Unmarshal(r.body, &raw); err != nil || len(raw) == 0 || raw[0] != '[' {
		return nil, trainyard.FieldError("body", "must be a JSON array of rules")
	}
	rules := decodeRules(raw, "", &p)
	if err := p.Err(); err != nil {
		return nil, err
	}
	g, err := s.svc.SetSecurityGroupRules(r.Context(), sc, id, rules)
	if err != nil {
		return nil, err
	}
	return ok(http.StatusOK, "Success", renderSecurityGroup(g)), nil
}

func (s *Server) listIAMAccounts(r *request) (*response, error) {
	ms, err := s.svc.IAMAccounts(r.Context(), r.caller)
	if err != nil {
		return nil, err
	}
	out := renderAll(ms, renderIAM)
	return ok(http.StatusOK, "Success", out), nil
}

func (s *Server) listProjects(r *request) (*response, error) {
	var p trainyard.Problems
	pg := page(r, &p)
	if err := p.Err(); err != nil {
		return nil, err
	}
	ps, total, err := s.svc.Projects(r.Context(), r.caller, pg)
	if err != nil {
		return nil, err
	}
	out := renderAll(ps, renderProject)
	return list("Success", out, total, pg), nil
}

func (s *Server) createProject(r *request) (*response, error) {
	f, err := parseBody(r.body)
	if err != nil {
		return nil, err
	}
	f.only("name")
	if !f.has("name") {
		f.p.Add("name", "is required")
	}
	name := f.str("name")
	if err := f.p.Err(); err != nil {
		return nil, err
	}
	pr, err := s.svc.CreateProject(r.Context(), r.caller, name)
	if err != nil {
		return nil, err
	}
	return ok(http.StatusCreated, "Project created successfully", renderProject(pr)), nil
}

// audit records a mutating call after it was answered. The record is written on its own: a
// rejected request's transaction rolled back, and its record must stay.
func (s *Server) audit(r *request, status int) {
	op := r.Method + " " + strings.TrimPrefix(r.Pattern, BasePath)
	if f, err := parseBody(r.body); err == nil && f.has("action") {
		if a := f.str("action"); len(a) <= 40 && trainyard.ValidateName(a) == nil {
			op += " " + a
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	path := strings.ToValidUTF8(strings.ReplaceAll(r.URL.Path, "\x00", ""), "?")
	op = strings.ToValidUTF8(strings.ReplaceAll(op, "\x00", ""), "?")
	if err := s.svc.Audit(ctx, r.caller, r.Method, path, op, status); err != nil {
		s.log.Error("api: audit", "err", err, "operation", op)
	}
}

type auditJSON struct {
	ID        int64  `json:"id"`
	At        string `json:"at"`
	UserID    int64  `json:"user_id"`
	UserEmail string `json:"user_email"`
	ActiveIAM int64  `json:"active_iam"`
	APIKeyID  int64  `json:"api_key_id"`
	Method    string `json:"method"`
	Path      string `json:"path"`
	Operation string `json:"operation"`
	Status    int    `json:"status"`
}

func (s *Server) listAudit(r *request) (*response, error) {
	var p trainyard.Problems
	pg := page(r, &p)
	if err := p.Err(); err != nil {
		return nil, err
	}
	entries, total, err := s.svc.AuditLog(r.Context(), r.caller, pg)
	if err != nil {
		return nil, err
	}
	out := renderAll(entries, func(e store.AuditEntry) auditJSON {
		return auditJSON{ID: e.ID, At: e.At.UTC().Format(time.RFC3339Nano), UserID: e.UserID, UserEmail: e.UserEmail, ActiveIAM: e.ActiveIAM,
			APIKeyID: e.APIKeyID, Method: e.Method, Path: e.Path, Operation: e.Operation, Status: e.Status}
	})
	return list("Success", out, total, pg), nil
}
