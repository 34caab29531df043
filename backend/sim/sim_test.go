package sim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trainyard/trainyard"
)

const (
	latency   = 2 * time.Millisecond
	clusterID = int64(7)
)

var (
	imageA = trainyard.ImageVersion{ID: 1, Version: "v1-slurm22.05-debian12", Tags: []string{"a"}}
	imageB = trainyard.ImageVersion{ID: 2, Version: "v2-slurm23.02-debian12"}
)

func ref(name string) trainyard.NodeRef { return trainyard.NodeRef{ClusterID: clusterID, Name: name} }

// newCluster returns a backend with cluster clusterID made of controller "ctl" and workers
// w1..wN, all booted and in service.
func newCluster(t *testing.T, opts Options, workers int) *Backend {
	t.Helper()
	b, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ensureCluster(t, b, workers)
	waitState(t, b, ref("ctl"), trainyard.NodeUp)
	for i := 1; i <= workers; i++ {
		waitState(t, b, ref(fmt.Sprintf("w%d", i)), trainyard.NodeIdle)
	}
	return b
}

func ensureCluster(t *testing.T, b *Backend, workers int) {
	t.Helper()
	ctx := t.Context()
	if err := b.EnsureCluster(ctx, trainyard.ClusterSpec{ID: clusterID, Name: "c", Controller: "ctl", MaxNodes: 16}); err != nil {
		t.Fatal(err)
	}
	specs := []trainyard.NodeSpec{{NodeRef: ref("ctl"), Role: trainyard.RoleController, Image: imageA, SSHKeys: []string{"key1"}}}
	for i := 1; i <= workers; i++ {
		specs = append(specs, trainyard.NodeSpec{NodeRef: ref(fmt.Sprintf("w%d", i)), Role: trainyard.RoleWorker, Image: imageA, SSHKeys: []string{"key1"}})
	}
	for _, s := range specs {
		if err := b.EnsureNode(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
}

// newFakeCluster is newCluster on a fake clock, for tests that check what holds at an instant:
// the model only moves when the test moves the clock, however slow the machine.
func newFakeCluster(t *testing.T, opLatency time.Duration, workers int) (*Backend, *fakeClock) {
	t.Helper()
	clock := &fakeClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	b, err := New(Options{OpLatency: opLatency, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ensureCluster(t, b, workers)
	clock.Add(opLatency) // let the nodes boot
	for _, o := range observe(t, b) {
		if !trainyard.InService(o.State) {
			t.Fatalf("node %s is %s", o.Name, o.State)
		}
	}
	return b, clock
}

func observe(t *testing.T, b *Backend) []trainyard.ObservedNode {
	t.Helper()
	obs, err := b.Observe(t.Context(), clusterID)
	if err != nil {
		t.Fatal(err)
	}
	return obs
}

func mustNode(t *testing.T, b *Backend, r trainyard.NodeRef) NodeInfo {
	t.Helper()
	n, ok := b.Node(r)
	if !ok {
		t.Fatalf("no node %v", r)
	}
	return n
}

func waitState(t *testing.T, b *Backend, r trainyard.NodeRef, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := mustNode(t, b, r)
		if n.State == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s: state %s, want %s", r.Name, n.State, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func mustJob(t *testing.T, b *Backend, id int64) Job {
	t.Helper()
	for _, j := range b.Jobs(clusterID) {
		if j.ID == id {
			return j
		}
	}
	t.Fatalf("no job %d", id)
	return Job{}
}

func waitJob(t *testing.T, b *Backend, id int64, want string) Job {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		j := mustJob(t, b, id)
		if j.State == want {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d: state %s, want %s", id, j.State, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func submit(t *testing.T, b *Backend, nodes int, d time.Duration) int64 {
	t.Helper()
	id, err := b.SubmitJob(clusterID, nodes, d)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// fakeClock is a clock tests move by hand, to run hours of jobs in no time.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestNewNodeBootsThenServes(t *testing.T) {
	b, clock := newFakeCluster(t, latency, 0)
	if b.Name() != "sim" {
		t.Errorf("Name() = %q", b.Name())
	}
	ctx := t.Context()
	if err := b.EnsureNode(ctx, trainyard.NodeSpec{NodeRef: ref("w1"), Role: trainyard.RoleWorker, Image: imageA}); err != nil {
		t.Fatal(err)
	}
	n := mustNode(t, b, ref("w1"))
	if n.State != trainyard.NodeBooting || n.Boots != 1 || n.BootID == "" || n.ImageVersion != imageA.Version {
		t.Fatalf("fresh node: %+v", n)
	}
	clock.Add(latency - 1)
	if n := mustNode(t, b, ref("w1")); n.State != trainyard.NodeBooting {
		t.Fatalf("node booted early: %+v", n)
	}
	clock.Add(1)
	if n := mustNode(t, b, ref("w1")); n.State != trainyard.NodeIdle {
		t.Fatalf("node still booting after OpLatency: %+v", n)
	}

	// Ensuring it again leaves it alone: no second boot.
	if err := b.EnsureNode(ctx, trainyard.NodeSpec{NodeRef: ref("w1"), Role: trainyard.RoleWorker, Image: imageB}); err != nil {
		t.Fatal(err)
	}
	if n2 := mustNode(t, b, ref("w1")); n2.Boots != 1 || n2.BootID != n.BootID || n2.ImageVersionID != imageA.ID || n2.State != trainyard.NodeIdle {
		t.Fatalf("EnsureNode of an existing node changed it: %+v", n2)
	}
	if got := b.OpCount(OpEnsureNode); got != 2 { // ctl and w1
		t.Errorf("OpCount(EnsureNode) = %d, want 2", got)
	}
}

func TestObserveOrderAndUnknownCluster(t *testing.T) {
	b := newCluster(t, Options{OpLatency: latency}, 3)
	obs, err := b.Observe(t.Context(), clusterID)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range obs {
		names = append(names, o.Name)
	}
	if want := []string{"ctl", "w1", "w2", "w3"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("Observe order %v, want %v", names, want)
	}
	if obs[0].State != trainyard.NodeUp || obs[1].State != trainyard.NodeIdle || obs[0].Address == obs[1].Address {
		t.Errorf("observed %+v", obs[:2])
	}
	obs, err = b.Observe(t.Context(), 999)
	if err != nil || obs == nil || len(obs) != 0 {
		t.Fatalf("Observe(unknown) = %v, %v; want empty, nil", obs, err)
	}
}

func TestRestartIdempotent(t *testing.T) {
	b := newCluster(t, Options{OpLatency: latency}, 1)
	ctx := t.Context()
	before := mustNode(t, b, ref("w1"))
	if err := b.Restart(ctx, ref("w1"), 1); err != nil {
		t.Fatal(err)
	}
	after := mustNode(t, b, ref("w1"))
	if after.Boots != 2 || after.RestartGen != 1 || after.BootID == before.BootID {
		t.Fatalf("after restart: %+v", after)
	}
	for _, gen := range []int64{1, 0} {
		if err := b.Restart(ctx, ref("w1"), gen); err != nil {
			t.Fatal(err)
		}
	}
	if again := mustNode(t, b, ref("w1")); again.Boots != 2 || again.BootID != after.BootID {
		t.Fatalf("repeated restart booted again: %+v", again)
	}
	if got := b.OpCount(OpRestart); got != 1 {
		t.Errorf("OpCount(Restart) = %d, want 1", got)
	}
}

func TestSetImageIdempotent(t *testing.T) {
	b := newCluster(t, Options{OpLatency: latency}, 1)
	ctx := t.Context()
	for range 2 {
		if err := b.SetImage(ctx, ref("w1"), imageB); err != nil {
			t.Fatal(err)
		}
	}
	n := mustNode(t, b, ref("w1"))
	if n.Boots != 2 || n.ImageVersionID != imageB.ID || n.ImageVersion != imageB.Version {
		t.Fatalf("after two SetImage: %+v", n)
	}
	obs, _ := b.Observe(ctx, clusterID)
	if obs[1].ImageVersion != imageB.Version {
		t.Errorf("observed image %q", obs[1].ImageVersion)
	}
	if got := b.OpCount(OpSetImage); got != 1 {
		t.Errorf("OpCount(SetImage) = %d, want 1", got)
	}
}

func TestSetNetworkAndKeys(t *testing.T) {
	b := newCluster(t, Options{OpLatency: latency}, 1)
	ctx := t.Context()
	rules := []trainyard.SecurityRule{{RuleType: "inbound", Protocol: "TCP", Ports: []string{"22"}}}
	if err := b.SetNetwork(ctx, ref("ctl"), trainyard.NetworkSpec{Generation: 2, ReservedIP: "1.2.3.4", Rules: rules}); err != nil {
		t.Fatal(err)
	}
	rules[0].Ports[0] = "23" // the backend keeps its own copy
	for _, gen := range []int64{2, 1} {
		if err := b.SetNetwork(ctx, ref("ctl"), trainyard.NetworkSpec{Generation: gen}); err != nil {
			t.Fatal(err)
		}
	}
	n := mustNode(t, b, ref("ctl"))
	if n.Network.Generation != 2 || n.Network.ReservedIP != "1.2.3.4" || n.Network.Rules[0].Ports[0] != "22" {
		t.Fatalf("network %+v", n.Network)
	}
	if n.Boots != 1 || b.OpCount(OpSetNetwork) != 1 {
		t.Errorf("boots %d, OpCount(SetNetwork) %d", n.Boots, b.OpCount(OpSetNetwork))
	}

	if err := b.SetSSHKeys(ctx, ref("w1"), []string{"key2", "key3"}); err != nil {
		t.Fatal(err)
	}
	n = mustNode(t, b, ref("w1"))
	if !reflect.DeepEqual(n.SSHKeys, []string{"key2", "key3"}) || n.Boots != 1 {
		t.Fatalf("after SetSSHKeys: %+v", n)
	}
}

func TestDrainWaitsForJobs(t *testing.T) {
	b, clock := newFakeCluster(t, latency, 1)
	ctx := t.Context()
	id := submit(t, b, 1, time.Hour)
	if j := mustJob(t, b, id); j.State != JobRunning || !reflect.DeepEqual(j.Nodes, []string{"w1"}) {
		t.Fatalf("job %+v", j)
	}
	if n := mustNode(t, b, ref("w1")); n.State != trainyard.NodeAllocated || n.Jobs != 1 {
		t.Fatalf("w1 %+v", n)
	}
	if err := b.Drain(ctx, ref("w1"), "trainyard action 1"); err != nil {
		t.Fatal(err)
	}
	if n := mustNode(t, b, ref("w1")); n.State != trainyard.NodeDraining || n.DrainReason != "trainyard action 1" {
		t.Fatalf("w1 after drain: %+v", n)
	}
	if obs := observe(t, b); obs[1].State != trainyard.NodeDraining || obs[1].Jobs != 1 {
		t.Fatalf("observed %+v", obs[1])
	}
	// A job submitted now must not start on the draining node.
	id2 := submit(t, b, 1, time.Minute)
	clock.Add(time.Hour)
	if n := mustNode(t, b, ref("w1")); n.State != trainyard.NodeDrained || n.Jobs != 0 {
		t.Fatalf("w1 after its job ended: %+v", n)
	}
	if j := mustJob(t, b, id); j.State != JobCompleted || j.Ended.Sub(j.Started) != time.Hour {
		t.Fatalf("first job %+v", j)
	}
	if j := mustJob(t, b, id2); j.State != JobPending {
		t.Fatalf("second job %+v on a drained cluster", j)
	}
	if err := b.Resume(ctx, ref("w1"), "trainyard action 1"); err != nil {
		t.Fatal(err)
	}
	if j := mustJob(t, b, id2); j.State != JobRunning {
		t.Fatalf("second job %+v after resume", j)
	}
}

func TestResumeOnlyWithSameReason(t *testing.T) {
	b := newCluster(t, Options{OpLatency: latency}, 1)
	ctx := t.Context()
	if err := b.Drain(ctx, ref("w1"), "mine"); err != nil {
		t.Fatal(err)
	}
	if err := b.Resume(ctx, ref("w1"), "other"); err != nil {
		t.Fatal(err)
	}
	if n := mustNode(t, b, ref("w1")); n.DrainReason != "mine" || n.State != trainyard.NodeDrained {
		t.Fatalf("resumed with another reason: %+v", n)
	}
	if err := b.Resume(ctx, ref("w1"), "mine"); err != nil {
		t.Fatal(err)
	}
	if n := mustNode(t, b, ref("w1")); n.DrainReason != "" || n.State != trainyard.NodeIdle {
		t.Fatalf("not resumed: %+v", n)
	}
	if err := b.Resume(ctx, ref("w1"), "mine"); err != nil { // not drained: no-op
		t.Fatal(err)
	}
	if got := b.OpCount(OpResume); got != 1 {
		t.Errorf("OpCount(Resume) = %d, want 1", got)
	}
}

func TestSomeoneElsesDrainIsKept(t *testing.T) {
	b := newCluster(t, Options{OpLatency: latency}, 1)
	ctx := t.Context()
	if err := b.SetDrain(ref("w1"), "admin: bad DIMM"); err != nil {
		t.Fatal(err)
	}
	if err := b.Drain(ctx, ref("w1"), "trainyard"); err != nil {
		t.Fatal(err)
	}
	if err := b.Resume(ctx, ref("w1"), "trainyard"); err != nil {
		t.Fatal(err)
	}
	if n := mustNode(t, b, ref("w1")); n.DrainReason != "admin: bad DIMM" || n.State != trainyard.NodeDrained {
		t.Fatalf("someone else's drain lost: %+v", n)
	}
	if b.OpCount(OpDrain) != 0 || b.OpCount(OpResume) != 0 {
		t.Errorf("no-ops counted: drain %d resume %d", b.OpCount(OpDrain), b.OpCount(OpResume))
	}
}

func TestControllerCannotBeDrained(t *testing.T) {
	b := newCluster(t, Options{OpLatency: latency}, 0)
	ctx := t.Context()
	if err := b.Drain(ctx, ref("ctl"), "x"); !errors.Is(err, ErrController) {
		t.Errorf("Drain(controller) = %v", err)
	}
	if err := b.Resume(ctx, ref("ctl"), "x"); !errors.Is(err, ErrController) {
		t.Errorf("Resume(controller) = %v", err)
	}
}

func TestRequeueJobsRerunsElsewhere(t *testing.T) {
	b, clock := newFakeCluster(t, latency, 1)
	ctx := t.Context()
	id := submit(t, b, 1, time.Hour)
	if j := mustJob(t, b, id); j.State != JobRunning || j.Nodes[0] != "w1" {
		t.Fatalf("job %+v", j)
	}
	// w2 joins; it is still booting when the job is requeued.
	if err := b.EnsureNode(ctx, trainyard.NodeSpec{NodeRef: ref("w2"), Role: trainyard.RoleWorker, Image: imageA}); err != nil {
		t.Fatal(err)
	}
	if err := b.Drain(ctx, ref("w1"), "upd"); err != nil {
		t.Fatal(err)
	}
	if err := b.RequeueJobs(ctx, ref("w1")); err != nil {
		t.Fatal(err)
	}
	if j := mustJob(t, b, id); j.State != JobPending || j.Requeues != 1 || j.Nodes != nil {
		t.Fatalf("requeued job %+v", j)
	}
	if n := mustNode(t, b, ref("w1")); n.State != trainyard.NodeDrained || n.Jobs != 0 {
		t.Fatalf("w1 after requeue %+v", n)
	}
	clock.Add(latency)
	j := mustJob(t, b, id)
	if j.State != JobRunning || !reflect.DeepEqual(j.Nodes, []string{"w2"}) || j.Requeues != 1 {
		t.Fatalf("rerun %+v", j)
	}
	if got := b.OpCount(OpRequeueJobs); got != 1 {
		t.Errorf("OpCount(RequeueJobs) = %d", got)
	}
	if err := b.RequeueJobs(ctx, ref("w1")); err != nil { // nothing left on w1
		t.Fatal(err)
	}
	if got := b.OpCount(OpRequeueJobs); got != 1 {
		t.Errorf("OpCount(RequeueJobs) = %d after a no-op", got)
	}
}

func TestForceRestartKillsRunningJob(t *testing.T) {
	b := newCluster(t, Options{OpLatency: latency}, 1)
	ctx := t.Context()
	id := submit(t, b, 1, time.Hour)
	if err := b.Restart(ctx, ref("w1"), 1); err != nil {
		t.Fatal(err)
	}
	j := mustJob(t, b, id)
	if j.State != JobNodeFail || j.Ended.IsZero() {
		t.Fatalf("job after restart %+v", j)
	}
	waitState(t, b, ref("w1"), trainyard.NodeIdle) // and the failed job does not come back
	if j := mustJob(t, b, id); j.State != JobNodeFail {
		t.Fatalf("job %+v", j)
	}
}

func TestImageChangeAfterRequeueKeepsJob(t *testing.T) {
	b := newCluster(t, Options{OpLatency: latency}, 1)
	ctx := t.Context()
	id := submit(t, b, 1, time.Hour)
	if err := b.Drain(ctx, ref("w1"), "upd"); err != nil {
		t.Fatal(err)
	}
	if err := b.RequeueJobs(ctx, ref("w1")); err != nil {
		t.Fatal(err)
	}
	if err := b.SetImage(ctx, ref("w1"), imageB); err != nil {
		t.Fatal(err)
	}
	waitState(t, b, ref("w1"), trainyard.NodeDrained) // a drain survives the restart
	if err := b.Resume(ctx, ref("w1"), "upd"); err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, b, id, JobRunning)
	if j.Requeues != 1 || j.Nodes[0] != "w1" {
		t.Fatalf("job %+v", j)
	}
}

func TestJobTimelineWithFakeClock(t *testing.T) {
	b, clock := newFakeCluster(t, 0, 2)
	start := clock.Now()
	// Three one-hour jobs on two workers, then a job bigger than the cluster.
	a, c, d := submit(t, b, 1, time.Hour), submit(t, b, 2, time.Hour), submit(t, b, 1, time.Hour)
	huge := submit(t, b, 3, time.Minute)
	clock.Add(150 * time.Minute)
	// a runs on w1 from 0 to 1h; c needs both workers, so d takes w2 at 0 (first fit) and
	// c runs from 1h to 2h; at 2h30 c is done.
	want := map[int64][2]time.Duration{a: {0, time.Hour}, d: {0, time.Hour}, c: {time.Hour, 2 * time.Hour}}
	for id, w := range want {
		j := mustJob(t, b, id)
		if j.State != JobCompleted || !j.Started.Equal(start.Add(w[0])) || !j.Ended.Equal(start.Add(w[1])) {
			t.Errorf("job %d: %s %v..%v, want completed %v..%v", id, j.State, j.Started.Sub(start), j.Ended.Sub(start), w[0], w[1])
		}
	}
	if j := mustJob(t, b, huge); j.State != JobPending {
		t.Errorf("job bigger than the cluster: %+v", j)
	}
	if err := b.CancelJob(clusterID, huge); err != nil {
		t.Fatal(err)
	}
	if j := mustJob(t, b, huge); j.State != JobCancelled {
		t.Errorf("cancelled job: %+v", j)
	}
	if _, err := b.SubmitJob(clusterID, 0, time.Hour); err == nil {
		t.Error("job of 0 nodes accepted")
	}
	if _, err := b.SubmitJob(999, 1, time.Hour); !errors.Is(err, ErrUnknownCluster) {
		t.Errorf("job on an unknown cluster: %v", err)
	}
}

func TestPersistenceRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sim.json")
	opts := Options{OpLatency: latency, StatePath: path}
	b := newCluster(t, opts, 2)
	ctx := t.Context()
	if err := b.Restart(ctx, ref("w1"), 3); err != nil {
		t.Fatal(err)
	}
	if err := b.SetImage(ctx, ref("w2"), imageB); err != nil {
		t.Fatal(err)
	}
	if err := b.SetSSHKeys(ctx, ref("w2"), []string{"k9"}); err != nil {
		t.Fatal(err)
	}
	if err := b.SetDrain(ref("w1"), "admin"); err != nil {
		t.Fatal(err)
	}
	waitState(t, b, ref("w2"), trainyard.NodeIdle)
	id := submit(t, b, 1, time.Hour)
	obsBefore, _ := b.Observe(ctx, clusterID)

	// As after kill -9: a new backend from the file finds the nodes as they were.
	b2, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	obsAfter, _ := b2.Observe(ctx, clusterID)
	if !reflect.DeepEqual(obsBefore, obsAfter) {
		t.Fatalf("observed differently after reload:\nbefore %+v\nafter  %+v", obsBefore, obsAfter)
	}
	for _, name := range []string{"ctl", "w1", "w2"} {
		n1, n2 := mustNode(t, b, ref(name)), mustNode(t, b2, ref(name))
		if !reflect.DeepEqual(n1, n2) {
			t.Errorf("%s: before %+v\nafter %+v", name, n1, n2)
		}
	}
	if n := mustNode(t, b2, ref("w1")); n.Boots != 2 || n.RestartGen != 3 || n.DrainReason != "admin" {
		t.Errorf("w1 after reload %+v", n)
	}
	if n := mustNode(t, b2, ref("w2")); n.Boots != 2 || n.ImageVersionID != imageB.ID || !reflect.DeepEqual(n.SSHKeys, []string{"k9"}) {
		t.Errorf("w2 after reload %+v", n)
	}
	if j := mustJob(t, b2, id); j.State != JobRunning || j.Nodes[0] != "w2" {
		t.Errorf("job after reload %+v", j)
	}
	if b2.OpCount(OpRestart) != 1 || b2.OpCount(OpSetImage) != 1 {
		t.Errorf("counters after reload: restart %d image %d", b2.OpCount(OpRestart), b2.OpCount(OpSetImage))
	}
	// Boot ids stay unique across the reload.
	if err := b2.Restart(ctx, ref("w2"), 1); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, name := range []string{"ctl", "w1", "w2"} {
		id := mustNode(t, b2, ref(name)).BootID
		if seen[id] {
			t.Errorf("boot id %s reused", id)
		}
		seen[id] = true
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("files left in the state dir: %v", entries)
	}

	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(opts); err == nil {
		t.Error("New accepted a corrupt state file")
	}
}

func TestFailNext(t *testing.T) {
	b := newCluster(t, Options{OpLatency: latency}, 1)
	ctx := t.Context()
	b.FailNext(ref("w1"), OpRestart, 2)
	for range 2 {
		if err := b.Restart(ctx, ref("w1"), 1); !errors.Is(err, ErrInjected) || !strings.Contains(err.Error(), "w1") {
			t.Fatalf("Restart = %v, want injected failure", err)
		}
	}
	if n := mustNode(t, b, ref("w1")); n.Boots != 1 || n.RestartGen != 0 {
		t.Fatalf("failed restart changed the node: %+v", n)
	}
	if err := b.Restart(ctx, ref("w1"), 1); err != nil {
		t.Fatal(err)
	}
	if n := mustNode(t, b, ref("w1")); n.Boots != 2 {
		t.Fatalf("third restart did not happen: %+v", n)
	}

	// Armed before the node exists.
	b.FailNext(ref("w2"), OpEnsureNode, 1)
	spec := trainyard.NodeSpec{NodeRef: ref("w2"), Role: trainyard.RoleWorker, Image: imageA}
	if err := b.EnsureNode(ctx, spec); !errors.Is(err, ErrInjected) {
		t.Fatalf("EnsureNode = %v", err)
	}
	if _, ok := b.Node(ref("w2")); ok {
		t.Fatal("failed EnsureNode created the node")
	}
	if err := b.EnsureNode(ctx, spec); err != nil {
		t.Fatal(err)
	}

	defer func() {
		if recover() == nil {
			t.Error("FailNext of a misspelt op did not panic")
		}
	}()
	b.FailNext(ref("w1"), "restart", 1)
}

func TestNeverReturn(t *testing.T) {
	b := newCluster(t, Options{OpLatency: latency}, 1)
	ctx := t.Context()
	id := submit(t, b, 1, time.Hour)
	b.NeverReturn(ref("w1"))
	if err := b.SetImage(ctx, ref("w1"), imageB); err != nil {
		t.Fatalf("SetImage of a node that never returns = %v, want nil", err)
	}
	time.Sleep(3 * latency)
	n := mustNode(t, b, ref("w1"))
	if n.State != trainyard.NodeDown || !n.Down || n.ImageVersionID != imageB.ID || n.Boots != 1 {
		t.Fatalf("w1 %+v", n)
	}
	if j := mustJob(t, b, id); j.State != JobNodeFail {
		t.Errorf("job on the lost node %+v", j)
	}
	// Repeating the op is still a no-op; a new restart cannot reach the node.
	if err := b.SetImage(ctx, ref("w1"), imageB); err != nil {
		t.Fatal(err)
	}
	if err := b.Restart(ctx, ref("w1"), 5); !errors.Is(err, ErrNodeDown) {
		t.Fatalf("Restart of a lost node = %v", err)
	}
	if err := b.SetDown(ref("w1"), false); err != nil {
		t.Fatal(err)
	}
	if n := mustNode(t, b, ref("w1")); n.State != trainyard.NodeIdle {
		t.Fatalf("w1 after SetDown(false) %+v", n)
	}
}

func TestSetDown(t *testing.T) {
	b := newCluster(t, Options{OpLatency: latency}, 2)
	id := submit(t, b, 2, time.Hour)
	if err := b.SetDown(ref("w2"), true); err != nil {
		t.Fatal(err)
	}
	if n := mustNode(t, b, ref("w2")); n.State != trainyard.NodeDown {
		t.Fatalf("w2 %+v", n)
	}
	if j := mustJob(t, b, id); j.State != JobNodeFail {
		t.Fatalf("job on a node that went down %+v", j)
	}
	if n := mustNode(t, b, ref("w1")); n.State != trainyard.NodeIdle {
		t.Fatalf("w1 not freed by the failed job: %+v", n)
	}
	if err := b.SetDown(ref("nope"), true); !errors.Is(err, ErrUnknownNode) {
		t.Errorf("SetDown(unknown) = %v", err)
	}
}

func TestCancelledContextChangesNothing(t *testing.T) {
	b := newCluster(t, Options{OpLatency: 20 * time.Millisecond}, 1)
	before := mustNode(t, b, ref("w1"))
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	midway, cancel2 := context.WithTimeout(t.Context(), time.Millisecond) // ends during the sleep
	defer cancel2()
	for _, ctx := range []context.Context{cancelled, midway} {
		errs := []error{
			b.Restart(ctx, ref("w1"), 9),
			b.SetImage(ctx, ref("w1"), imageB),
			b.SetSSHKeys(ctx, ref("w1"), nil),
			b.SetNetwork(ctx, ref("w1"), trainyard.NetworkSpec{Generation: 9}),
			b.Drain(ctx, ref("w1"), "x"),
			b.RequeueJobs(ctx, ref("w1")),
			b.EnsureNode(ctx, trainyard.NodeSpec{NodeRef: ref("w9"), Role: trainyard.RoleWorker}),
			b.DeleteCluster(ctx, clusterID),
		}
		for i, err := range errs {
			if !errors.Is(err, ctx.Err()) || err == nil {
				t.Errorf("op %d: %v, want %v", i, err, ctx.Err())
			}
		}
	}
	if after := mustNode(t, b, ref("w1")); !reflect.DeepEqual(before, after) {
		t.Fatalf("cancelled ops changed the node:\n%+v\n%+v", before, after)
	}
	if _, ok := b.Node(ref("w9")); ok {
		t.Fatal("cancelled EnsureNode created a node")
	}
}

func TestUnknownNodesAndClusters(t *testing.T) {
	b := newCluster(t, Options{OpLatency: latency}, 0)
	ctx := t.Context()
	err := b.Restart(ctx, ref("ghost"), 1)
	if !errors.Is(err, ErrUnknownNode) || !strings.Contains(err.Error(), "ghost") {
		t.Errorf("Restart(unknown) = %v", err)
	}
	spec := trainyard.NodeSpec{NodeRef: trainyard.NodeRef{ClusterID: 999, Name: "w1"}, Role: trainyard.RoleWorker}
	if err := b.EnsureNode(ctx, spec); !errors.Is(err, ErrUnknownCluster) {
		t.Errorf("EnsureNode in an unknown cluster = %v", err)
	}
	for range 2 {
		if err := b.DeleteCluster(ctx, clusterID); err != nil {
			t.Fatal(err)
		}
	}
	if obs, _ := b.Observe(ctx, clusterID); len(obs) != 0 {
		t.Errorf("deleted cluster observed: %+v", obs)
	}
	if b.OpCount(OpDeleteCluster) != 1 {
		t.Errorf("OpCount(DeleteCluster) = %d", b.OpCount(OpDeleteCluster))
	}
}

// TestConcurrentOps runs operations on different nodes at once, with persistence, for -race
// and for the sums: every restart on its own node is applied exactly once.
func TestConcurrentOps(t *testing.T) {
	const workers = 8
	opts := Options{OpLatency: time.Millisecond, StatePath: filepath.Join(t.TempDir(), "state.json")}
	b := newCluster(t, opts, workers)
	ctx := t.Context()
	var wg sync.WaitGroup
	for i := 1; i <= workers; i++ {
		r := ref(fmt.Sprintf("w%d", i))
		wg.Go(func() {
			for gen := int64(1); gen <= 4; gen++ {
				check := func(err error) {
					if err != nil {
						t.Error(err)
					}
				}
				check(b.Drain(ctx, r, "roll"))
				check(b.RequeueJobs(ctx, r))
				check(b.Restart(ctx, r, gen))
				check(b.Restart(ctx, r, gen))
				check(b.SetSSHKeys(ctx, r, []string{fmt.Sprint(gen)}))
				check(b.SetNetwork(ctx, r, trainyard.NetworkSpec{Generation: gen}))
				check(b.Resume(ctx, r, "roll"))
				if _, err := b.SubmitJob(clusterID, 1, time.Millisecond); err != nil {
					t.Error(err)
				}
			}
		})
		wg.Go(func() {
			for range 20 {
				if _, err := b.Observe(ctx, clusterID); err != nil {
					t.Error(err)
				}
				b.Jobs(clusterID)
			}
		})
	}
	wg.Wait()
	if got := b.OpCount(OpRestart); got != workers*4 {
		t.Errorf("OpCount(Restart) = %d, want %d", got, workers*4)
	}
	b2, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= workers; i++ {
		n := mustNode(t, b2, ref(fmt.Sprintf("w%d", i)))
		if n.Boots != 5 || n.RestartGen != 4 || n.DrainReason != "" || n.SSHKeys[0] != "4" {
			t.Errorf("reloaded %s: %+v", n.Name, n)
		}
	}
}
