package api_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/trainyard/trainyard"
	"github.com/trainyard/trainyard/internal/testenv"
)

// Every Cluster Action, through the HTTP API, with its effect checked on the sim's nodes.

func nodeOf(e *testenv.Env, clusterID int64, name string) (info struct {
	Boots      int
	Image      string
	Keys       []string
	NetGen     int64
	ReservedIP string
	Rules      int
}) {
	e.T.Helper()
	n, ok := e.Sim.Node(trainyard.NodeRef{ClusterID: clusterID, Name: name})
	if !ok {
		e.T.Fatalf("node %s of cluster %d does not exist in the backend", name, clusterID)
	}
	info.Boots, info.Image, info.Keys = n.Boots, n.ImageVersion, n.SSHKeys
	info.NetGen, info.ReservedIP, info.Rules = n.Network.Generation, n.Network.ReservedIP, len(n.Network.Rules)
	return info
}

func names(id int64, workers int) []string {
	out := []string{fmt.Sprintf("c%d-ctl", id)}
	for i := 1; i <= workers; i++ {
		out = append(out, fmt.Sprintf("c%d-w%d", id, i))
	}
	return out
}

func TestCreateClusterBringsUpEveryNode(t *testing.T) {
	e := newEnv(t)
	c := e.NewCluster(e.Owner, "train", 3)
	if c.NoOfNodes != 3 || c.LastAction == nil || c.LastAction.Type != "create_cluster" || c.LastAction.Status != "succeeded" {
		t.Fatalf("cluster after create: %+v", c)
	}
	for _, n := range names(c.ID, 3) {
		info := nodeOf(e, c.ID, n)
		if info.Boots != 1 || info.Image != "v1-slurm22.05-debian12" || len(info.Keys) != 1 || info.Keys[0] != c.SSHKeys[0].SSHKey {
			t.Errorf("node %s: %+v", n, info)
		}
	}
	if ctl := nodeOf(e, c.ID, names(c.ID, 0)[0]); ctl.Rules != 1 {
		t.Errorf("controller has %d rules, want the group's 1", ctl.Rules)
	}
}

func TestUpdateSSHKeysReplacesKeysOnEveryNode(t *testing.T) {
	e := newEnv(t)
	c := e.NewCluster(e.Owner, "keys", 2)
	k2, pub2 := e.AddKey(e.Owner, "second")
	k3, pub3 := e.AddKey(e.Owner, "third")
	a := e.ActOK(e.Owner, c.ID, map[string]any{"action": "update_ssh_keys", "ssh_key_ids": []int64{k2, k3}})
	if a.Status != "succeeded" || a.Progress.Done != 3 {
		t.Fatalf("action: %+v", a)
	}
	for _, n := range names(c.ID, 2) {
		info := nodeOf(e, c.ID, n)
		if !slices.Equal(info.Keys, []string{pub2, pub3}) {
			t.Errorf("node %s keys %q, want the two new keys only", n, info.Keys)
		}
		if info.Boots != 1 {
			t.Errorf("node %s restarted for a key update (boots %d)", n, info.Boots)
		}
	}
	got := e.GetCluster(e.Owner, c.ID)
	if len(got.SSHKeys) != 2 || got.SSHKeys[0].PK != k2 {
		t.Errorf("cluster keys: %+v", got.SSHKeys)
	}
}

func TestUpdateImageRollsEveryNode(t *testing.T) {
	e := newEnv(t)
	c := e.NewCluster(e.Owner, "img", 4)
	a := e.ActOK(e.Owner, c.ID, map[string]any{"action": "update_image", "image_version_id": 2, "max_unavailable": 2})
	if a.Status != "succeeded" {
		t.Fatalf("action: %+v", a)
	}
	if want := [][]string{{names(c.ID, 4)[1], names(c.ID, 4)[2]}, {names(c.ID, 4)[3], names(c.ID, 4)[4]}, {names(c.ID, 4)[0]}}; !equalBatches(a.Plan.Batches, want) {
		t.Errorf("batches %v, want %v", a.Plan.Batches, want)
	}
	for _, n := range names(c.ID, 4) {
		if info := nodeOf(e, c.ID, n); info.Image != "v2-slurm22.05-debian12" || info.Boots != 2 {
			t.Errorf("node %s: image %s boots %d", n, info.Image, info.Boots)
		}
	}
	if got := e.GetCluster(e.Owner, c.ID); got.ImageVersion.ID != 2 || got.Status != "Running" || got.CurrentAction != nil {
		t.Errorf("cluster after update_image: %+v", got)
	}
}

func equalBatches(a, b [][]string) bool {
	return slices.EqualFunc(a, b, func(x, y []string) bool { return slices.Equal(x, y) })
}

func TestRestartWorkersNeverTouchesController(t *testing.T) {
	e := newEnv(t)
	c := e.NewCluster(e.Owner, "rw", 3)
	a := e.ActOK(e.Owner, c.ID, map[string]any{"action": "restart_workers"})
	if a.Status != "succeeded" || a.Plan.MaxUnavailable != 1 || a.Plan.Drain != "wait" {
		t.Fatalf("action: %+v", a)
	}
	all := names(c.ID, 3)
	if info := nodeOf(e, c.ID, all[0]); info.Boots != 1 {
		t.Errorf("controller restarted by restart_workers: boots %d", info.Boots)
	}
	for _, n := range all[1:] {
		if info := nodeOf(e, c.ID, n); info.Boots != 2 {
			t.Errorf("worker %s boots %d, want 2", n, info.Boots)
		}
	}
}

func TestRestartClusterRestartsEverything(t *testing.T) {
	e := newEnv(t)
	c := e.NewCluster(e.Owner, "rc", 2)
	a := e.ActOK(e.Owner, c.ID, map[string]any{"action": "restart_cluster", "max_unavailable": "100%"})
	if a.Status != "succeeded" {
		t.Fatalf("action: %+v", a)
	}
	all := names(c.ID, 2)
	if !equalBatches(a.Plan.Batches, [][]string{{all[0]}, {all[1], all[2]}}) {
		t.Errorf("plan %v: want the controller first, then both workers", a.Plan.Batches)
	}
	for _, n := range all {
		if info := nodeOf(e, c.ID, n); info.Boots != 2 {
			t.Errorf("node %s boots %d, want 2", n, info.Boots)
		}
	}
}

func TestScaleClusterAddsNodesWithoutTouchingOthers(t *testing.T) {
	e := newEnv(t)
	c := e.NewCluster(e.Owner, "scale", 2)
	a := e.ActOK(e.Owner, c.ID, map[string]any{"action": "scale_cluster", "additional_nodes": 3})
	if a.Status != "succeeded" || a.Progress.Total != 3 {
		t.Fatalf("action: %+v", a)
	}
	all := names(c.ID, 5)
	for i, n := range all {
		info := nodeOf(e, c.ID, n)
		if info.Boots != 1 {
			t.Errorf("node %s boots %d: scale must not restart anything", n, info.Boots)
		}
		if i >= 3 && len(info.Keys) != 1 {
			t.Errorf("new node %s has keys %q", n, info.Keys)
		}
	}
	if got := e.GetCluster(e.Owner, c.ID); got.NoOfNodes != 5 {
		t.Errorf("no_of_nodes %d, want 5", got.NoOfNodes)
	}
	var nodes []struct {
		Name, Status, Role string
	}
	e.Must(http.StatusOK, e.Owner, "GET", testenv.ClusterPath(c.ID)+"nodes/", nil, nil).Into(t, &nodes)
	if len(nodes) != 6 {
		t.Fatalf("nodes endpoint lists %d nodes, want 6", len(nodes))
	}
	for _, n := range nodes[1:] {
		if n.Status != "idle" || n.Role != "worker" {
			t.Errorf("node %+v: want an idle worker", n)
		}
	}
}

func TestAttachAndDetachIP(t *testing.T) {
	e := newEnv(t)
	c := e.NewCluster(e.Owner, "ip", 1)
	var ip struct {
		ID        int64  `json:"id"`
		IPAddress string `json:"ip_address"`
		Status    string `json:"status"`
		ServiceID *int64 `json:"service_id"`
	}
	e.Must(http.StatusOK, e.Owner, "POST", "/reserved_ips/", nil, nil).Into(t, &ip)
	r := e.Act(e.Owner, c.ID, map[string]any{"action": "attach_ip", "reserved_ip_id": ip.ID})
	if r.Status != http.StatusOK {
		t.Fatalf("attach_ip: %s", r.Raw)
	}
	r.Into(t, &ip)
	if ip.Status != "Attached" || ip.ServiceID == nil || *ip.ServiceID != c.ID {
		t.Errorf("attach_ip answered %+v, want the Reserved IP object, attached to the cluster", ip)
	}
	id := r.ActionID()
	if a := e.WaitAction(e.Owner, c.ID, id); a.Status != "succeeded" {
		t.Fatalf("attach action: %+v", a)
	}
	ctl, w := names(c.ID, 1)[0], names(c.ID, 1)[1]
	if got := nodeOf(e, c.ID, ctl).ReservedIP; got != ip.IPAddress {
		t.Errorf("controller has reserved IP %q, want %s", got, ip.IPAddress)
	}
	if got := nodeOf(e, c.ID, w).ReservedIP; got != "" {
		t.Errorf("worker got reserved IP %q", got)
	}
	if cl := e.GetCluster(e.Owner, c.ID); cl.ReservedIP == nil || cl.ReservedIP.ID != ip.ID {
		t.Errorf("cluster reserved_ip %+v", cl.ReservedIP)
	}

	r = e.Act(e.Owner, c.ID, map[string]any{"action": "detach_ip", "reserved_ip_id": ip.ID, "ip_type": "reserved"})
	if r.Status != http.StatusOK || string(r.Data) != "{}" {
		t.Fatalf("detach_ip: %s", r.Raw)
	}
	id = r.ActionID()
	e.WaitAction(e.Owner, c.ID, id)
	if got := nodeOf(e, c.ID, ctl).ReservedIP; got != "" {
		t.Errorf("controller still has reserved IP %q after detach", got)
	}
	if got := reservedIPStatuses(e); !slices.Equal(got, []string{"Available"}) {
		t.Errorf("reserved IPs after detach: %v", got)
	}
}

func TestSecurityGroupsAddAndRemove(t *testing.T) {
	e := newEnv(t)
	c := e.NewCluster(e.Owner, "sg", 2)
	g2 := e.AddGroup(e.Owner, "web", 8080)
	g3 := e.AddGroup(e.Owner, "metrics", 9100)
	r := e.Act(e.Owner, c.ID, map[string]any{"action": "add_security_group", "security_groups_ids": []int64{g2, g3}})
	var msg string
	r.Into(t, &msg)
	if r.Status != http.StatusOK || msg == "" {
		t.Fatalf("add_security_group: %s", r.Raw)
	}
	id := r.ActionID()
	e.WaitAction(e.Owner, c.ID, id)
	for _, n := range names(c.ID, 2) {
		if got := nodeOf(e, c.ID, n).Rules; got != 3 {
			t.Errorf("node %s has %d rules, want 3", n, got)
		}
	}
	r = e.Act(e.Owner, c.ID, map[string]any{"action": "remove_security_group", "security_group_id": g2})
	if r.Status != http.StatusOK {
		t.Fatalf("remove_security_group: %s", r.Raw)
	}
	id = r.ActionID()
	e.WaitAction(e.Owner, c.ID, id)
	for _, n := range names(c.ID, 2) {
		if got := nodeOf(e, c.ID, n).Rules; got != 2 {
			t.Errorf("node %s has %d rules after remove, want 2", n, got)
		}
	}
	cl := e.GetCluster(e.Owner, c.ID)
	if len(cl.SecurityGroups) != 2 {
		t.Errorf("cluster groups %+v", cl.SecurityGroups)
	}

	// Changing a group's rules reaches the nodes of every cluster that uses it.
	e.Must(http.StatusOK, e.Owner, "PUT", fmt.Sprintf("/security_groups/%d/rules/", g3), nil, []map[string]any{
		{"rule_type": "inbound", "protocol_type": "CustomTCP", "network_type": "manual", "cidr_ip": "198.51.100.0/24", "ports": []any{9100, "9200-9300"}},
		{"rule_type": "inbound", "protocol_type": "CustomUDP", "network_type": "any", "ports": []int{53}},
	})
	e.Eventually(10e9, "new rules on every node", func() bool {
		for _, n := range names(c.ID, 2) {
			if nodeOf(e, c.ID, n).Rules != 3 {
				return false
			}
		}
		return true
	})
}

func TestDeleteClusterRemovesNodesAndReleasesIP(t *testing.T) {
	e := newEnv(t)
	c := e.NewCluster(e.Owner, "del", 2)
	var ip struct {
		ID int64 `json:"id"`
	}
	e.Must(http.StatusOK, e.Owner, "POST", "/reserved_ips/", nil, nil).Into(t, &ip)
	e.ActOK(e.Owner, c.ID, map[string]any{"action": "attach_ip", "reserved_ip_id": ip.ID})
	r := e.Must(http.StatusOK, e.Owner, "DELETE", testenv.ClusterPath(c.ID), nil, nil)
	var msg string
	r.Into(t, &msg)
	if msg != "Cluster deleted successfully" || r.Message != "Success" {
		t.Errorf("delete answered %s", r.Raw)
	}
	id := r.ActionID()
	if a := e.WaitAction(e.Owner, c.ID, id); a.Status != "succeeded" {
		t.Fatalf("delete action: %+v", a)
	}
	e.Must(http.StatusNotFound, e.Owner, "GET", testenv.ClusterPath(c.ID), nil, nil)
	if obs, _ := e.Sim.Observe(t.Context(), c.ID); len(obs) != 0 {
		t.Errorf("backend still has %d nodes of the deleted cluster", len(obs))
	}
	if got := reservedIPStatuses(e); !slices.Equal(got, []string{"Available"}) {
		t.Errorf("reserved IP after delete: %v", got)
	}
	// Its security group is free again.
	e.Must(http.StatusOK, e.Owner, "DELETE", fmt.Sprintf("/security_groups/%d/", c.SecurityGroups[0].ID), nil, nil)
	// The history stays readable.
	var actions []testenv.Action
	e.Must(http.StatusOK, e.Owner, "GET", testenv.ClusterPath(c.ID)+"actions/", nil, nil).Into(t, &actions)
	if len(actions) != 3 || actions[0].Type != "delete_cluster" {
		t.Errorf("actions of the deleted cluster: %+v", actions)
	}
}

func TestDryRunReturnsPlanAndChangesNothing(t *testing.T) {
	e := newEnv(t)
	c := e.NewCluster(e.Owner, "dry", 5)
	r := e.Must(http.StatusOK, e.Owner, "PUT", testenv.ClusterPath(c.ID), url.Values{"dry_run": {"true"}},
		map[string]any{"action": "restart_workers", "max_unavailable": "40%", "drain": "requeue"})
	var plan struct {
		DryRun bool `json:"dry_run"`
		Plan   struct {
			MaxUnavailable int        `json:"max_unavailable"`
			Drain          string     `json:"drain"`
			Batches        [][]string `json:"batches"`
		} `json:"plan"`
	}
	r.Into(t, &plan)
	if !plan.DryRun || plan.Plan.MaxUnavailable != 2 || plan.Plan.Drain != "requeue" || len(plan.Plan.Batches) != 3 {
		t.Errorf("dry run plan: %+v", plan)
	}
	if got := e.GetCluster(e.Owner, c.ID); got.Status != "Running" || got.LastAction.Type != "create_cluster" {
		t.Errorf("dry run changed the cluster: %+v", got)
	}
	for _, n := range names(c.ID, 5) {
		if nodeOf(e, c.ID, n).Boots != 1 {
			t.Errorf("dry run restarted %s", n)
		}
	}
}

func TestIdempotencyKeyReplaysTheFirstAnswer(t *testing.T) {
	e := newEnv(t)
	c := e.NewCluster(e.Owner, "idem", 2)
	body := map[string]any{"action": "restart_workers"}
	first := e.Act(e.Owner, c.ID, body, "Idempotency-Key", "k-1")
	second := e.Act(e.Owner, c.ID, body, "Idempotency-Key", "k-1")
	if first.Status != http.StatusOK || second.Status != http.StatusOK {
		t.Fatalf("statuses %d %d: %s %s", first.Status, second.Status, first.Raw, second.Raw)
	}
	if string(first.Raw) != string(second.Raw) || second.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay differs:\n%s\n%s", first.Raw, second.Raw)
	}
	if id := first.Header.Get("Trainyard-Action-Id"); id == "" || second.Header.Get("Trainyard-Action-Id") != id {
		t.Errorf("action id headers %q and %q: want the same, present", id, second.Header.Get("Trainyard-Action-Id"))
	}
	// A different request under the same key is refused, and changes nothing.
	other := e.Act(e.Owner, c.ID, map[string]any{"action": "restart_cluster"}, "Idempotency-Key", "k-1")
	if other.Status != http.StatusUnprocessableEntity {
		t.Errorf("reused key with another body: %d %s", other.Status, other.Raw)
	}
	var actions []testenv.Action
	e.Must(http.StatusOK, e.Owner, "GET", testenv.ClusterPath(c.ID)+"actions/", nil, nil).Into(t, &actions)
	if len(actions) != 2 {
		t.Errorf("%d actions, want create + one restart", len(actions))
	}
	// Idempotent create: the same cluster, not two.
	keyID, _ := e.AddKey(e.Owner, "ik")
	gid := e.AddGroup(e.Owner, "ig", 22)
	b := testenv.ClusterBody("idem-create", 1, keyID, gid)
	c1 := e.Call(e.Owner, "POST", "/distributed_jobs_v2/cluster/", nil, b, "Idempotency-Key", "create-1")
	c2 := e.Call(e.Owner, "POST", "/distributed_jobs_v2/cluster/", nil, b, "Idempotency-Key", "create-1")
	if c1.Status != http.StatusCreated || string(c1.Raw) != string(c2.Raw) {
		t.Errorf("idempotent create: %d %s / %s", c1.Status, c1.Raw, c2.Raw)
	}
}

func TestCancelRunningActionReleasesDrains(t *testing.T) {
	e := newEnv(t)
	c := e.NewCluster(e.Owner, "cancel", 3)
	all := names(c.ID, 3)
	// A long job keeps the first worker draining, so the action waits there.
	if _, err := e.Sim.SubmitJob(c.ID, 1, 60e9); err != nil {
		t.Fatal(err)
	}
	e.Eventually(5e9, "job running", func() bool {
		n, _ := e.Sim.Node(trainyard.NodeRef{ClusterID: c.ID, Name: all[1]})
		return n.Jobs == 1
	})
	r := e.Must(http.StatusOK, e.Owner, "PUT", testenv.ClusterPath(c.ID), nil, map[string]any{"action": "restart_workers"})
	id := r.ActionID()
	e.Eventually(5e9, "the worker drained", func() bool {
		n, _ := e.Sim.Node(trainyard.NodeRef{ClusterID: c.ID, Name: all[1]})
		return n.DrainReason != ""
	})
	e.Must(http.StatusOK, e.Owner, "POST", fmt.Sprintf("%sactions/%d/cancel/", testenv.ClusterPath(c.ID), id), nil, nil)
	a := e.WaitAction(e.Owner, c.ID, id)
	if a.Status != "canceled" {
		t.Fatalf("action after cancel: %+v", a)
	}
	for _, n := range all[1:] {
		info, _ := e.Sim.Node(trainyard.NodeRef{ClusterID: c.ID, Name: n})
		if info.DrainReason != "" {
			t.Errorf("node %s still drained (%q) after cancel", n, info.DrainReason)
		}
		if info.Boots != 1 {
			t.Errorf("node %s was restarted though the action was canceled first", n)
		}
	}
	if got := e.GetCluster(e.Owner, c.ID); got.Status != "Running" || got.CurrentAction != nil {
		t.Errorf("cluster after cancel: %+v", got)
	}
	// Canceling a finished action is a conflict.
	e.Must(http.StatusConflict, e.Owner, "POST", fmt.Sprintf("%sactions/%d/cancel/", testenv.ClusterPath(c.ID), id), nil, nil)
}

// Deleting a cluster right after a detach leaves the address free, whichever ends first.
func TestDeleteDuringDetachFreesTheAddress(t *testing.T) {
	e := newEnv(t)
	c := e.NewCluster(e.Owner, "detachdel", 1)
	var ip struct {
		ID int64 `json:"id"`
	}
	e.Must(http.StatusOK, e.Owner, "POST", "/reserved_ips/", nil, nil).Into(t, &ip)
	e.ActOK(e.Owner, c.ID, map[string]any{"action": "attach_ip", "reserved_ip_id": ip.ID})
	e.Must(http.StatusOK, e.Owner, "PUT", testenv.ClusterPath(c.ID), nil, map[string]any{"action": "detach_ip", "reserved_ip_id": ip.ID, "ip_type": "reserved"})
	r := e.Must(http.StatusOK, e.Owner, "DELETE", testenv.ClusterPath(c.ID), nil, nil)
	id := r.ActionID()
	e.WaitAction(e.Owner, c.ID, id)
	e.Eventually(10e9, "the address released", func() bool {
		return e.Call(e.Owner, "DELETE", fmt.Sprintf("/reserved_ips/%d/", ip.ID), nil, nil).Status == http.StatusOK
	})
}

// reservedIPStatuses lists the status of each of the owner's reserved IPs.
func reservedIPStatuses(e *testenv.Env) []string {
	e.T.Helper()
	var ips struct {
		ReservedIPs []struct {
			Status string `json:"status"`
		} `json:"reserved_ips"`
	}
	e.Must(http.StatusOK, e.Owner, "GET", "/reserved_ips/", nil, nil).Into(e.T, &ips)
	var out []string
	for _, ip := range ips.ReservedIPs {
		out = append(out, ip.Status)
	}
	return out
}
