package reconcile_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trainyard/trainyard"
	"github.com/trainyard/trainyard/backend/sim"
	"github.com/trainyard/trainyard/internal/testenv"
	"github.com/trainyard/trainyard/reconcile"
)

func ref(clusterID int64, name string) trainyard.NodeRef {
	return trainyard.NodeRef{ClusterID: clusterID, Name: name}
}

func worker(clusterID int64, i int) string { return fmt.Sprintf("c%d-w%d", clusterID, i) }

func node(t *testing.T, e *testenv.Env, clusterID int64, name string) sim.NodeInfo {
	t.Helper()
	n, ok := e.Sim.Node(ref(clusterID, name))
	if !ok {
		t.Fatalf("node %s missing", name)
	}
	return n
}

func TestRollingNeverExceedsMaxUnavailable(t *testing.T) {
	for _, maxU := range []int{1, 2, 3} {
		t.Run(fmt.Sprint(maxU), func(t *testing.T) {
			e := testenv.New(t, testenv.Options{OpLatency: 5 * time.Millisecond})
			c := e.NewCluster(e.Owner, "roll", 6)
			e.Sim.ResetPeak(c.ID)
			a := e.ActOK(e.Owner, c.ID, map[string]any{"action": "restart_workers", "max_unavailable": maxU})
			if a.Status != "succeeded" {
				t.Fatalf("action: %+v", a)
			}
			// Checked after every change the backend made, not sampled.
			if got := e.Sim.PeakUnavailable(c.ID); got > maxU {
				t.Errorf("%d workers were unavailable at once, max_unavailable %d", got, maxU)
			} else if got < 1 {
				t.Errorf("no worker was ever out of service: the count does not work")
			}
			for i := 1; i <= 6; i++ {
				if n := node(t, e, c.ID, worker(c.ID, i)); n.Boots != 2 || n.DrainReason != "" {
					t.Errorf("worker %d: boots %d drain %q", i, n.Boots, n.DrainReason)
				}
			}
		})
	}
}

func TestDrainWaitLetsTheJobFinish(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	c := e.NewCluster(e.Owner, "wait", 2)
	job, err := e.Sim.SubmitJob(c.ID, 1, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	a := e.ActOK(e.Owner, c.ID, map[string]any{"action": "restart_workers", "drain": "wait"})
	if a.Status != "succeeded" {
		t.Fatalf("action: %+v", a)
	}
	j := findJob(t, e, c.ID, job)
	if j.State != sim.JobCompleted || j.Requeues != 0 {
		t.Fatalf("job %+v: want it COMPLETED, never requeued", j)
	}
	n := node(t, e, c.ID, j.Nodes[0])
	if n.StartedAt.Before(j.Ended) {
		t.Errorf("node %s restarted at %v, before its job ended at %v", j.Nodes[0], n.StartedAt, j.Ended)
	}
}

func findJob(t *testing.T, e *testenv.Env, clusterID, id int64) sim.Job {
	t.Helper()
	for _, j := range e.Sim.Jobs(clusterID) {
		if j.ID == id {
			return j
		}
	}
	t.Fatalf("no job %d", id)
	return sim.Job{}
}

func TestDrainRequeueAndForce(t *testing.T) {
	for _, mode := range []string{"requeue", "force"} {
		t.Run(mode, func(t *testing.T) {
			e := testenv.New(t, testenv.Options{})
			c := e.NewCluster(e.Owner, mode, 2)
			job, err := e.Sim.SubmitJob(c.ID, 1, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			e.Eventually(5*time.Second, "job running", func() bool { return findJob(t, e, c.ID, job).State == sim.JobRunning })
			a := e.ActOK(e.Owner, c.ID, map[string]any{"action": "restart_workers", "drain": mode, "max_unavailable": 1})
			if a.Status != "succeeded" {
				t.Fatalf("action: %+v", a)
			}
			j := findJob(t, e, c.ID, job)
			switch mode {
			case "requeue":
				if j.Requeues < 1 || j.State == sim.JobNodeFail {
					t.Errorf("job %+v: want it requeued, not killed", j)
				}
			case "force":
				if j.State != sim.JobNodeFail {
					t.Errorf("job %+v: a forced restart kills it", j)
				}
			}
		})
	}
}

func TestNodeFailureFailsActionAndReleasesOnlyOurDrains(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	c := e.NewCluster(e.Owner, "fail", 4)
	w1, w2, w3, w4 := worker(c.ID, 1), worker(c.ID, 2), worker(c.ID, 3), worker(c.ID, 4)
	e.Sim.SetDrain(ref(c.ID, w4), "admin: bad DIMM")
	e.Sim.FailNext(ref(c.ID, w2), sim.OpRestart, 1000)
	// max_unavailable 2: w4 (drained by an admin) counts as one, so one of ours at a time.
	a := e.ActOK(e.Owner, c.ID, map[string]any{"action": "restart_workers", "max_unavailable": 2})
	if a.Status != "failed" || !strings.Contains(a.Error, w2) {
		t.Fatalf("action: status %s error %q, want failed naming %s", a.Status, a.Error, w2)
	}
	steps := map[string]string{}
	for _, s := range a.Steps {
		steps[s.Node] = s.Status
		if s.Node == w2 && s.Error == "" {
			t.Errorf("failed step has no error")
		}
	}
	if steps[w1] != "succeeded" || steps[w2] != "failed" || steps[w3] != "canceled" {
		t.Errorf("steps %v", steps)
	}
	if n := node(t, e, c.ID, w3); n.Boots != 1 {
		t.Errorf("the action went on past the failure: %s restarted", w3)
	}
	for _, w := range []string{w1, w2, w3} {
		if n := node(t, e, c.ID, w); n.DrainReason != "" {
			t.Errorf("%s left drained: %q", w, n.DrainReason)
		}
	}
	if n := node(t, e, c.ID, w4); n.DrainReason != "admin: bad DIMM" {
		t.Errorf("someone else's drain on %s became %q", w4, n.DrainReason)
	}
	if got := e.GetCluster(e.Owner, c.ID); got.Status != "Running" || got.CurrentAction != nil {
		t.Errorf("cluster after a failed action: %+v", got)
	}
}

func TestNodeThatNeverComesBackFailsWithinBootTimeout(t *testing.T) {
	e := testenv.New(t, testenv.Options{Reconcile: reconcile.Options{BootTimeout: 300 * time.Millisecond}})
	c := e.NewCluster(e.Owner, "lost", 3)
	w1 := worker(c.ID, 1)
	e.Sim.NeverReturn(ref(c.ID, w1))
	e.Sim.ResetPeak(c.ID)
	a := e.ActOK(e.Owner, c.ID, map[string]any{"action": "update_image", "image_version_id": 2, "max_unavailable": 1})
	if a.Status != "failed" || !strings.Contains(a.Error, w1) {
		t.Fatalf("action: %+v", a)
	}
	if got := e.Sim.PeakUnavailable(c.ID); got > 1 {
		t.Errorf("%d workers unavailable at once with max_unavailable 1", got)
	}
	for i := 2; i <= 3; i++ {
		if n := node(t, e, c.ID, worker(c.ID, i)); n.ImageVersionID != 1 {
			t.Errorf("worker %d was updated after the first failure", i)
		}
	}
}

func TestUnavailableNodesCountAgainstMaxUnavailable(t *testing.T) {
	e := testenv.New(t, testenv.Options{Reconcile: reconcile.Options{BlockedTimeout: 300 * time.Millisecond}})
	c := e.NewCluster(e.Owner, "blocked", 3)
	if err := e.Sim.SetDown(ref(c.ID, worker(c.ID, 3)), true); err != nil {
		t.Fatal(err)
	}
	a := e.ActOK(e.Owner, c.ID, map[string]any{"action": "restart_workers", "max_unavailable": 1})
	if a.Status != "failed" || !strings.Contains(a.Error, "max_unavailable") {
		t.Fatalf("action: %+v: with one worker down and max_unavailable 1 nothing may be taken out", a)
	}
	for i := 1; i <= 2; i++ {
		if n := node(t, e, c.ID, worker(c.ID, i)); n.Boots != 1 || n.DrainReason != "" {
			t.Errorf("worker %d touched: boots %d drain %q", i, n.Boots, n.DrainReason)
		}
	}
}

func TestFailedScaleRemovesNodesThatDidNotJoin(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	c := e.NewCluster(e.Owner, "scale", 1)
	e.Sim.FailNext(ref(c.ID, worker(c.ID, 3)), sim.OpEnsureNode, 1)
	a := e.ActOK(e.Owner, c.ID, map[string]any{"action": "scale_cluster", "additional_nodes": 2})
	if a.Status != "failed" {
		t.Fatalf("action: %+v", a)
	}
	if _, ok := e.Sim.Node(ref(c.ID, worker(c.ID, 3))); ok {
		t.Error("the node that failed to join is still in the backend")
	}
	got := e.GetCluster(e.Owner, c.ID)
	var nodes []struct{ Name string }
	e.Must(http.StatusOK, e.Owner, "GET", testenv.ClusterPath(c.ID)+"nodes/", nil, nil).Into(t, &nodes)
	if got.NoOfNodes != 2 || len(nodes) != 3 {
		t.Errorf("after a half-failed scale: no_of_nodes %d, %d nodes; want 2 workers (the one that joined stays)", got.NoOfNodes, len(nodes))
	}
	// A retry starts clean and reuses nothing stale.
	a = e.ActOK(e.Owner, c.ID, map[string]any{"action": "scale_cluster", "additional_nodes": 1})
	if a.Status != "succeeded" {
		t.Fatalf("retry: %+v", a)
	}
}

// TestResumeAfterReconcilerStops stops the reconciler in the middle of a rolling restart (as a
// crash would) and starts a new one on the same store and nodes: the action completes, and no
// node is restarted twice.
func TestResumeAfterReconcilerStops(t *testing.T) {
	e := testenv.New(t, testenv.Options{NoRun: true, OpLatency: 20 * time.Millisecond})
	opts := reconcile.Options{PollInterval: 2 * time.Millisecond, ResyncInterval: 10 * time.Millisecond, BootTimeout: 10 * time.Second}
	start := func() (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		rec := reconcile.New(e.DB, e.Sim, e.Cfg, nil, opts)
		done := make(chan struct{})
		go func() { rec.Run(ctx); close(done) }()
		return func() { cancel(); <-done }
	}
	stop := start()
	c := e.NewCluster(e.Owner, "resume", 4)
	r := e.Must(http.StatusOK, e.Owner, "PUT", testenv.ClusterPath(c.ID), nil, map[string]any{"action": "restart_workers", "max_unavailable": 1})
	id := r.ActionID()
	e.Eventually(10*time.Second, "the second worker restarted", func() bool {
		return node(t, e, c.ID, worker(c.ID, 2)).Boots == 2
	})
	stop()
	if a := e.GetAction(e.Owner, c.ID, id); a.Status != "running" {
		t.Fatalf("action after the stop: %s, want still running", a.Status)
	}
	stop = start()
	defer stop()
	a := e.WaitAction(e.Owner, c.ID, id)
	if a.Status != "succeeded" {
		t.Fatalf("action after resume: %+v", a)
	}
	for i := 1; i <= 4; i++ {
		if n := node(t, e, c.ID, worker(c.ID, i)); n.Boots != 2 || n.DrainReason != "" {
			t.Errorf("worker %d: boots %d (want exactly 2) drain %q", i, n.Boots, n.DrainReason)
		}
	}
	resumed := false
	for _, ev := range a.Events {
		resumed = resumed || strings.Contains(ev.Message, "resumed")
	}
	if !resumed {
		t.Error("no event records the resume")
	}
}

func TestConcurrentActionsExactlyOneWins(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	c := e.NewCluster(e.Owner, "race", 2)
	// A long job on every worker holds the winner in its drain, so it is still running when
	// the last request arrives.
	if _, err := e.Sim.SubmitJob(c.ID, 2, time.Hour); err != nil {
		t.Fatal(err)
	}
	bodies := []map[string]any{
		{"action": "restart_workers"}, {"action": "restart_cluster"}, {"action": "update_image", "image_version_id": 2},
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	var winner string
	var losers []string
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Half of them with an Idempotency-Key: the idempotent path must lose the race the same way.
			var r testenv.Response
			if i%2 == 0 {
				r = e.Act(e.Owner, c.ID, bodies[i%len(bodies)], "Idempotency-Key", fmt.Sprintf("race-%d", i))
			} else {
				r = e.Act(e.Owner, c.ID, bodies[i%len(bodies)])
			}
			mu.Lock()
			defer mu.Unlock()
			statuses[r.Status]++
			if r.Status == http.StatusOK {
				winner = r.Header.Get("Trainyard-Action-Id")
			} else if len(r.Errors["current_action_id"]) > 0 {
				losers = append(losers, r.Errors["current_action_id"][0])
			}
		}()
	}
	wg.Wait()
	if statuses[http.StatusOK] != 1 || statuses[http.StatusConflict] != 19 {
		t.Fatalf("statuses %v: want exactly one 200 and 19 409", statuses)
	}
	for _, l := range losers {
		if l != winner {
			t.Errorf("a 409 named action %s, the winner is %s", l, winner)
		}
	}
}

func TestFailedActionsRestoreWhatTheyReplaced(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	c := e.NewCluster(e.Owner, "revert", 2)
	e.Sim.FailNext(ref(c.ID, worker(c.ID, 2)), sim.OpSetImage, 1)
	if a := e.ActOK(e.Owner, c.ID, map[string]any{"action": "update_image", "image_version_id": 2, "max_unavailable": 1}); a.Status != "failed" {
		t.Fatalf("update_image: %+v", a)
	}
	if got := e.GetCluster(e.Owner, c.ID); got.ImageVersion.ID != 1 {
		t.Errorf("after a failed update_image the cluster says image %d, want the previous 1", got.ImageVersion.ID)
	}
	// New nodes come up on the image the cluster says.
	e.ActOK(e.Owner, c.ID, map[string]any{"action": "scale_cluster", "additional_nodes": 1})
	if n := node(t, e, c.ID, worker(c.ID, 3)); n.ImageVersionID != 1 {
		t.Errorf("new node on image %d", n.ImageVersionID)
	}

	// A failed key update gives the nodes that took the new keys their old ones back.
	k2, _ := e.AddKey(e.Owner, "new")
	e.Sim.FailNext(ref(c.ID, worker(c.ID, 3)), sim.OpSetSSHKeys, 1)
	if a := e.ActOK(e.Owner, c.ID, map[string]any{"action": "update_ssh_keys", "ssh_key_ids": []int64{k2}}); a.Status != "failed" {
		t.Fatalf("update_ssh_keys: %+v", a)
	}
	want := c.SSHKeys[0].SSHKey
	for _, n := range []string{fmt.Sprintf("c%d-ctl", c.ID), worker(c.ID, 1), worker(c.ID, 2), worker(c.ID, 3)} {
		if keys := node(t, e, c.ID, n).SSHKeys; len(keys) != 1 || keys[0] != want {
			t.Errorf("%s keys %q after a failed update, want the old key", n, keys)
		}
	}

	// A failed attach leaves the address free and the controller without it.
	var ip struct {
		ID int64 `json:"id"`
	}
	e.Must(http.StatusOK, e.Owner, "POST", "/reserved_ips/", nil, nil).Into(t, &ip)
	// Every try fails (the drift pass may try too), until the action has failed.
	e.Sim.FailNext(ref(c.ID, fmt.Sprintf("c%d-ctl", c.ID)), sim.OpSetNetwork, 1000)
	if a := e.ActOK(e.Owner, c.ID, map[string]any{"action": "attach_ip", "reserved_ip_id": ip.ID}); a.Status != "failed" {
		t.Fatalf("attach_ip: %+v", a)
	}
	e.Sim.FailNext(ref(c.ID, fmt.Sprintf("c%d-ctl", c.ID)), sim.OpSetNetwork, 0)
	if got := e.GetCluster(e.Owner, c.ID); got.ReservedIP != nil {
		t.Errorf("cluster keeps reserved IP %+v after a failed attach", got.ReservedIP)
	}
	e.Must(http.StatusOK, e.Owner, "DELETE", fmt.Sprintf("/reserved_ips/%d/", ip.ID), nil, nil)
	e.Eventually(5*time.Second, "the controller without a reserved IP", func() bool {
		return node(t, e, c.ID, fmt.Sprintf("c%d-ctl", c.ID)).Network.ReservedIP == ""
	})
}

func TestDrainsAreReleasedEvenWhenResumeFailsAtFirst(t *testing.T) {
	e := testenv.New(t, testenv.Options{Reconcile: reconcile.Options{BootTimeout: 300 * time.Millisecond}})
	c := e.NewCluster(e.Owner, "resumefail", 2)
	w1 := worker(c.ID, 1)
	e.Sim.NeverReturn(ref(c.ID, w1))
	e.Sim.FailNext(ref(c.ID, w1), sim.OpResume, 2)
	a := e.ActOK(e.Owner, c.ID, map[string]any{"action": "restart_workers", "max_unavailable": 1})
	if a.Status != "failed" {
		t.Fatalf("action: %+v", a)
	}
	if n := node(t, e, c.ID, w1); n.DrainReason != "" {
		t.Errorf("%s left drained (%q) after the action ended", w1, n.DrainReason)
	}
}

func TestNetworkActionBesideAScale(t *testing.T) {
	e := testenv.New(t, testenv.Options{OpLatency: 20 * time.Millisecond})
	c := e.NewCluster(e.Owner, "beside", 1)
	g := e.AddGroup(e.Owner, "extra", 8080)
	r := e.Must(http.StatusOK, e.Owner, "PUT", testenv.ClusterPath(c.ID), nil, map[string]any{"action": "scale_cluster", "additional_nodes": 2})
	scaleID := r.ActionID()
	a := e.ActOK(e.Owner, c.ID, map[string]any{"action": "add_security_group", "security_groups_ids": []int64{g}})
	if a.Status != "succeeded" {
		t.Fatalf("add_security_group beside a scale: %+v", a)
	}
	if s := e.WaitAction(e.Owner, c.ID, scaleID); s.Status != "succeeded" {
		t.Fatalf("scale: %+v", s)
	}
	e.Eventually(5*time.Second, "every node with both groups' rules", func() bool {
		for _, n := range []string{fmt.Sprintf("c%d-ctl", c.ID), worker(c.ID, 1), worker(c.ID, 2), worker(c.ID, 3)} {
			if len(node(t, e, c.ID, n).Network.Rules) != 2 {
				return false
			}
		}
		return true
	})
}
