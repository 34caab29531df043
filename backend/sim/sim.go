// Package sim is an in-process simulated node backend: it implements trainyard.Backend without
// machines, root or goroutines, so that planners, drains and failures can be tested and
// benchmarked.
//
// What it promises:
//
//   - Every mutating Backend method waits Options.OpLatency first (returning ctx.Err() and
//     changing nothing if ctx ends meanwhile), then applies its change atomically. Observe does
//     not wait.
//   - Every method is idempotent as trainyard.Backend requires: Restart below the node's
//     generation, SetImage to the image the node runs, SetNetwork with an older or equal
//     generation, EnsureNode of an existing node, Drain with the same reason and DeleteCluster
//     of a deleted cluster change nothing.
//   - A node that (re)starts is NodeBooting for OpLatency after the call returns, then serves.
//   - A Slurm-like job queue (SubmitJob, Jobs) runs on the workers. Time is computed lazily from
//     Options.Now at each public call, so nothing runs in the background and the model is the
//     same whether or not anyone looked at it in between.
//   - With Options.StatePath the whole model is saved atomically after every change and loaded
//     again by New: like real machines, the nodes outlive a control plane killed with kill -9.
//   - Someone else's drain (one with another reason) is never overwritten nor lifted.
//   - Fault injection (FailNext, NeverReturn, SetDown, SetDrain) lets tests break nodes on
//     purpose; the armed faults live in memory only, their effects on nodes are saved.
//   - Operations that need the node's own OS (SetSSHKeys, SetImage, Restart) fail with
//     ErrNodeDown on a down node unless they are no-ops; the others go through the provider
//     or slurmctld and work on a down node too.
//
// All methods are safe for concurrent use. A state file belongs to one Backend at a time, as
// real nodes belong to one control plane: two live Backends on the same file overwrite each
// other's changes.
package sim

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/trainyard/trainyard"
)

// Names of the mutating operations, as FailNext and OpCount take them.
const (
	OpEnsureCluster = "EnsureCluster"
	OpDeleteCluster = "DeleteCluster"
	OpEnsureNode    = "EnsureNode"
	OpRemoveNode    = "RemoveNode"
	OpSetSSHKeys    = "SetSSHKeys"
	OpSetImage      = "SetImage"
	OpRestart       = "Restart"
	OpSetNetwork    = "SetNetwork"
	OpDrain         = "Drain"
	OpResume        = "Resume"
	OpRequeueJobs   = "RequeueJobs"
)

var knownOps = []string{
	OpEnsureCluster, OpDeleteCluster, OpEnsureNode, OpRemoveNode, OpSetSSHKeys, OpSetImage, OpRestart,
	OpSetNetwork, OpDrain, OpResume, OpRequeueJobs,
}

// Errors the backend returns, wrapped with the node or cluster they are about; test them with
// errors.Is.
var (
	ErrUnknownCluster = errors.New("sim: unknown cluster")
	ErrUnknownNode    = errors.New("sim: unknown node")
	ErrInjected       = errors.New("sim: injected failure")
	ErrNodeDown       = errors.New("sim: node is down")
	ErrController     = errors.New("sim: operation not allowed on the controller")
)

// stateFormat versions the state file so that a file of another layout is refused rather than
// half read.
const stateFormat = 1

// Options configure a Backend.
type Options struct {
	// OpLatency is how long every mutating operation takes, and how long a node boots after it.
	OpLatency time.Duration
	// StatePath is the file the model is saved to after every change and loaded from by New.
	// Empty: memory only.
	StatePath string
	// Now is the clock of the model (jobs, boots). Nil: time.Now. A test may pass a fake clock
	// to run hours of jobs instantly; OpLatency is still slept in real time.
	Now func() time.Time
}

// Backend is the simulated backend. The zero value is not usable; call New.
type Backend struct {
	opts Options

	// saveMu serialises writes of the state file and guards savedSeq. It is taken before mu,
	// never while holding it.
	saveMu   sync.Mutex
	savedSeq uint64 // the snapshot on disk

	mu          sync.Mutex // guards everything below
	st          *state
	failNext    map[faultKey]int
	neverReturn map[trainyard.NodeRef]bool
	peak        map[int64]int // per cluster, the most workers seen out of service after any change
	snapshotSeq uint64        // numbers snapshots so that an older one never replaces a newer on disk
	latest      snapshot      // the newest snapshot, which a save writes in place of older ones
}

type faultKey struct {
	ref trainyard.NodeRef
	op  string
}

var _ trainyard.Backend = (*Backend)(nil)

// New returns a Backend. When opts.StatePath names an existing file the model is loaded from
// it; an unreadable or corrupt file is an error rather than a fresh start, because starting
// empty would silently "lose" every node.
func New(opts Options) (*Backend, error) {
	if opts.OpLatency < 0 {
		return nil, fmt.Errorf("sim: negative OpLatency %v", opts.OpLatency)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	b := &Backend{
		opts:        opts,
		failNext:    map[faultKey]int{},
		neverReturn: map[trainyard.NodeRef]bool{},
		peak:        map[int64]int{},
	}
	if opts.StatePath != "" {
		st, err := loadState(opts.StatePath)
		if err != nil {
			return nil, err
		}
		b.st = st
	}
	if b.st == nil {
		b.st = newState()
		b.st.Clock = modelTime(opts.Now())
	}
	return b, nil
}

// Name returns "sim".
func (b *Backend) Name() string { return "sim" }

// ---- Backend operations ----

// EnsureCluster records the cluster; an existing one gets spec as its new spec.
func (b *Backend) EnsureCluster(ctx context.Context, spec trainyard.ClusterSpec) error {
	return b.apply(ctx, OpEnsureCluster, trainyard.NodeRef{ClusterID: spec.ID}, func(now time.Time) (bool, error) {
		if c, ok := b.st.Clusters[spec.ID]; ok {
			if c.Spec == spec {
				return false, nil
			}
			c.Spec = spec
			return true, nil
		}
		b.st.Clusters[spec.ID] = &cluster{Spec: spec, Nodes: map[string]*node{}}
		return true, nil
	})
}

// DeleteCluster removes the cluster, its nodes and its jobs. Deleting an unknown cluster is a
// no-op. Faults armed on the cluster's nodes are disarmed, so that a cluster created again with
// the same id starts healthy.
func (b *Backend) DeleteCluster(ctx context.Context, clusterID int64) error {
	return b.apply(ctx, OpDeleteCluster, trainyard.NodeRef{ClusterID: clusterID}, func(now time.Time) (bool, error) {
		if _, ok := b.st.Clusters[clusterID]; !ok {
			return false, nil
		}
		delete(b.st.Clusters, clusterID)
		for k := range b.failNext {
			if k.ref.ClusterID == clusterID {
				delete(b.failNext, k)
			}
		}
		for ref := range b.neverReturn {
			if ref.ClusterID == clusterID {
				delete(b.neverReturn, ref)
			}
		}
		return true, nil
	})
}

// RemoveNode kills the node's jobs and removes it; a missing node or cluster is no error.
func (b *Backend) RemoveNode(ctx context.Context, ref trainyard.NodeRef) error {
	return b.apply(ctx, OpRemoveNode, ref, func(now time.Time) (bool, error) {
		c, ok := b.st.Clusters[ref.ClusterID]
		if !ok {
			return false, nil
		}
		if _, ok := c.Nodes[ref.Name]; !ok {
			return false, nil
		}
		c.killJobsOn(ref.Name, now)
		delete(c.Nodes, ref.Name)
		return true, nil
	})
}

// EnsureNode creates and boots the node if it does not exist; an existing node is left as it
// is, even if spec differs. The cluster must have been ensured first.
func (b *Backend) EnsureNode(ctx context.Context, spec trainyard.NodeSpec) error {
	return b.apply(ctx, OpEnsureNode, spec.NodeRef, func(now time.Time) (bool, error) {
		c, ok := b.st.Clusters[spec.ClusterID]
		if !ok {
			return false, fmt.Errorf("%w %d (ensuring node %s)", ErrUnknownCluster, spec.ClusterID, spec.Name)
		}
		if spec.Name == "" {
			return false, fmt.Errorf("sim: ensuring a node without a name in cluster %d", spec.ClusterID)
		}
		if _, ok := c.Nodes[spec.Name]; ok {
			return false, nil
		}
		if spec.Role != trainyard.RoleController && spec.Role != trainyard.RoleWorker {
			return false, fmt.Errorf("sim: node %s of cluster %d: unknown role %q", spec.Name, spec.ClusterID, spec.Role)
		}
		c.NextHost++
		n := &node{
			Name:            spec.Name,
			Role:            spec.Role,
			Address:         fmt.Sprintf("10.0.%d.%d", spec.ClusterID, c.NextHost),
			Image:           copyImage(spec.Image),
			SSHKeys:         slices.Clone(spec.SSHKeys),
			RestartGen:      spec.RestartGen,
			Network:         copyNetwork(spec.Network),
			LifecycleScript: spec.LifecycleScript,
		}
		c.Nodes[n.Name] = n
		b.st.boot(n, now, b.opts.OpLatency)
		return true, nil
	})
}

// SetSSHKeys replaces the node's keys without restarting it. It needs the node up.
func (b *Backend) SetSSHKeys(ctx context.Context, ref trainyard.NodeRef, keys []string) error {
	return b.applyNode(ctx, OpSetSSHKeys, ref, func(c *cluster, n *node, now time.Time) (bool, error) {
		if slices.Equal(n.SSHKeys, keys) {
			return false, nil
		}
		if n.down() {
			return false, nodeDownError(ref)
		}
		n.SSHKeys = slices.Clone(keys)
		return true, nil
	})
}

// SetImage makes the node run image, which restarts it (killing its running jobs); a node
// already on image.ID is left alone. It needs the node up.
func (b *Backend) SetImage(ctx context.Context, ref trainyard.NodeRef, image trainyard.ImageVersion) error {
	return b.applyNode(ctx, OpSetImage, ref, func(c *cluster, n *node, now time.Time) (bool, error) {
		if n.Image.ID == image.ID {
			return false, nil
		}
		if n.down() {
			return false, nodeDownError(ref)
		}
		c.killJobsOn(n.Name, now)
		n.Image = copyImage(image)
		b.startDaemons(ref, n, now)
		return true, nil
	})
}

// Restart restarts the node's daemons, killing its running jobs (NODE_FAIL), unless the node
// was already restarted at gen or later. It needs the node up.
func (b *Backend) Restart(ctx context.Context, ref trainyard.NodeRef, gen int64) error {
	return b.applyNode(ctx, OpRestart, ref, func(c *cluster, n *node, now time.Time) (bool, error) {
		if n.RestartGen >= gen {
			return false, nil
		}
		if n.down() {
			return false, nodeDownError(ref)
		}
		c.killJobsOn(n.Name, now)
		n.RestartGen = gen
		b.startDaemons(ref, n, now)
		return true, nil
	})
}

// SetNetwork applies spec unless the node has spec.Generation or a newer one. Unlike keys or
// images it works on a down node: the network is the provider's, not the node's.
func (b *Backend) SetNetwork(ctx context.Context, ref trainyard.NodeRef, spec trainyard.NetworkSpec) error {
	return b.applyNode(ctx, OpSetNetwork, ref, func(c *cluster, n *node, now time.Time) (bool, error) {
		if n.Network.Generation >= spec.Generation {
			return false, nil
		}
		n.Network = copyNetwork(spec)
		return true, nil
	})
}

// Drain stops new jobs from starting on a worker. A worker already drained with another reason
// keeps that reason and Drain returns nil: the drain belongs to someone else (an admin, another
// action) and overwriting it would let our Resume lift it. The caller can see it with Observe.
func (b *Backend) Drain(ctx context.Context, ref trainyard.NodeRef, reason string) error {
	return b.applyNode(ctx, OpDrain, ref, func(c *cluster, n *node, now time.Time) (bool, error) {
		if n.Role == trainyard.RoleController {
			return false, fmt.Errorf("%w: draining %s of cluster %d", ErrController, ref.Name, ref.ClusterID)
		}
		if reason == "" {
			return false, fmt.Errorf("sim: draining %s of cluster %d without a reason", ref.Name, ref.ClusterID)
		}
		if n.DrainReason != "" {
			return false, nil
		}
		n.DrainReason = reason
		return true, nil
	})
}

// Resume returns a worker drained with exactly reason to service. A worker drained for another
// reason, or not drained, is left as it is and Resume returns nil.
func (b *Backend) Resume(ctx context.Context, ref trainyard.NodeRef, reason string) error {
	return b.applyNode(ctx, OpResume, ref, func(c *cluster, n *node, now time.Time) (bool, error) {
		if n.Role == trainyard.RoleController {
			return false, fmt.Errorf("%w: resuming %s of cluster %d", ErrController, ref.Name, ref.ClusterID)
		}
		if n.DrainReason == "" || n.DrainReason != reason {
			return false, nil
		}
		n.DrainReason = ""
		return true, nil
	})
}

// RequeueJobs puts every job running on the node back in the queue (whole jobs: a multi-node
// job releases all its nodes). A requeued job becomes eligible again OpLatency later, like
// Slurm's requeue delay, so that PENDING is observable and the job does not restart on the same
// node in the same instant.
func (b *Backend) RequeueJobs(ctx context.Context, ref trainyard.NodeRef) error {
	return b.applyNode(ctx, OpRequeueJobs, ref, func(c *cluster, n *node, now time.Time) (bool, error) {
		return c.requeueJobsOn(n.Name, now.Add(b.opts.OpLatency)) > 0, nil
	})
}

// Observe reports every node of the cluster, the controller first and then by name. An unknown
// cluster has no nodes: the result is empty, not an error.
func (b *Backend) Observe(ctx context.Context, clusterID int64) ([]trainyard.ObservedNode, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.advanceLocked()
	out := []trainyard.ObservedNode{}
	c, ok := b.st.Clusters[clusterID]
	if !ok {
		return out, nil
	}
	running := c.runningJobsPerNode()
	for _, name := range c.sortedNodeNames() {
		n := c.Nodes[name]
		out = append(out, trainyard.ObservedNode{
			Name:         n.Name,
			Role:         n.Role,
			Address:      n.Address,
			State:        n.state(now, running[n.Name]),
			DrainReason:  n.DrainReason,
			ImageVersion: n.Image.Version,
			RestartGen:   n.RestartGen,
			BootID:       n.BootID,
			StartedAt:    n.StartedAt,
			Jobs:         running[n.Name],
			SSHKeys:      slices.Clone(n.SSHKeys),
			Network:      copyNetwork(n.Network),
		})
	}
	return out, nil
}

// ---- fault injection ----

// FailNext makes the next times calls of op on the node fail with ErrInjected, changing
// nothing (after the usual OpLatency). It may be armed before the node exists, e.g. for
// EnsureNode. For EnsureCluster and DeleteCluster use a ref with an empty Name. times <= 0
// disarms. An unknown op panics: a misspelt op would never fire and the test would pass
// without testing anything.
func (b *Backend) FailNext(ref trainyard.NodeRef, op string, times int) {
	if !slices.Contains(knownOps, op) {
		panic(fmt.Sprintf("sim: FailNext of unknown op %q", op))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	k := faultKey{ref, op}
	if times <= 0 {
		delete(b.failNext, k)
		return
	}
	b.failNext[k] = times
}

// NeverReturn makes the node's next restart or image change take it down for good: the
// operation returns nil and records its generation or image, but the node is NodeDown from
// then on, and later restarts or image changes fail with ErrNodeDown. Only SetDown(ref, false)
// brings it back.
func (b *Backend) NeverReturn(ref trainyard.NodeRef) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.neverReturn[ref] = true
}

// SetDown marks the node down (an outage we did not cause: its running jobs fail with
// NODE_FAIL) or up again. Coming up is not a boot: Boots and BootID do not change. It also
// clears the effect of NeverReturn.
func (b *Backend) SetDown(ref trainyard.NodeRef, down bool) error {
	return b.applyHand(ref, func(c *cluster, n *node, now time.Time) error {
		if down {
			if !n.Down {
				c.killJobsOn(n.Name, now)
			}
			n.Down = true
			return nil
		}
		n.Down, n.Lost = false, false
		return nil
	})
}

// SetDrain drains the worker by hand with reason as an admin would (scontrol update
// state=drain), overwriting any drain; an empty reason lifts any drain.
func (b *Backend) SetDrain(ref trainyard.NodeRef, reason string) error {
	return b.applyHand(ref, func(c *cluster, n *node, now time.Time) error {
		if n.Role == trainyard.RoleController {
			return fmt.Errorf("%w: draining %s of cluster %d", ErrController, ref.Name, ref.ClusterID)
		}
		n.DrainReason = reason
		return nil
	})
}

// ---- inspection ----

// NodeInfo is a copy of everything the simulator knows about a node.
type NodeInfo struct {
	Name            string
	Role            string
	Address         string
	State           string // one of the trainyard.Node* states
	DrainReason     string
	Image           trainyard.ImageVersion
	ImageVersionID  int64
	ImageVersion    string // Image.Version, what Observe reports
	SSHKeys         []string
	RestartGen      int64
	Network         trainyard.NetworkSpec
	LifecycleScript string
	Boots           int // how many times its daemons started: 1 after creation
	BootID          string
	StartedAt       time.Time
	Jobs            int  // jobs running on it
	Down            bool // down by hand (SetDown) or for good (NeverReturn)
}

// Node returns a copy of the node, false if there is no such node.
func (b *Backend) Node(ref trainyard.NodeRef) (NodeInfo, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.advanceLocked()
	c, ok := b.st.Clusters[ref.ClusterID]
	if !ok {
		return NodeInfo{}, false
	}
	n, ok := c.Nodes[ref.Name]
	if !ok {
		return NodeInfo{}, false
	}
	jobs := c.runningJobsPerNode()[n.Name]
	return NodeInfo{
		Name:            n.Name,
		Role:            n.Role,
		Address:         n.Address,
		State:           n.state(now, jobs),
		DrainReason:     n.DrainReason,
		Image:           copyImage(n.Image),
		ImageVersionID:  n.Image.ID,
		ImageVersion:    n.Image.Version,
		SSHKeys:         slices.Clone(n.SSHKeys),
		RestartGen:      n.RestartGen,
		Network:         copyNetwork(n.Network),
		LifecycleScript: n.LifecycleScript,
		Boots:           n.Boots,
		BootID:          n.BootID,
		StartedAt:       n.StartedAt,
		Jobs:            jobs,
		Down:            n.down(),
	}, true
}

// OpCount returns how many calls of op changed something. No-ops (idempotent repeats, someone
// else's drain), failures and cancelled calls are not counted. The counts are persisted.
func (b *Backend) OpCount(op string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.st.Ops[op]
}

// ---- the machinery ----

// apply runs one mutating operation: wait OpLatency outside the lock, then under the lock bring
// the model to now, consume an injected failure if one is armed, apply change, reschedule jobs
// (the change may have freed or taken nodes) and snapshot the state. The snapshot is written
// after the lock is released. change must not modify anything when it returns an error.
func (b *Backend) apply(ctx context.Context, op string, ref trainyard.NodeRef, change func(now time.Time) (bool, error)) error {
	if err := b.sleep(ctx); err != nil {
		return err
	}
	b.mu.Lock()
	now := b.advanceLocked()
	if err := b.injectedFailureLocked(op, ref); err != nil {
		b.mu.Unlock()
		return err
	}
	changed, err := change(now)
	if err != nil || !changed {
		b.mu.Unlock()
		return err
	}
	b.st.Ops[op]++
	b.st.advance(now)
	b.notePeakLocked(ref.ClusterID, now)
	snap, err := b.snapshotLocked()
	b.mu.Unlock()
	if err != nil {
		return err
	}
	return b.save(snap)
}

// applyNode is apply for an operation on one existing node.
func (b *Backend) applyNode(ctx context.Context, op string, ref trainyard.NodeRef, change func(c *cluster, n *node, now time.Time) (bool, error)) error {
	return b.apply(ctx, op, ref, func(now time.Time) (bool, error) {
		c, n, err := b.st.lookup(ref)
		if err != nil {
			return false, fmt.Errorf("%s: %w", op, err)
		}
		return change(c, n, now)
	})
}

// applyHand applies a change made by hand (a test playing admin or outage): no latency, no
// injected failure, not counted by OpCount, but saved like any other change.
func (b *Backend) applyHand(ref trainyard.NodeRef, change func(c *cluster, n *node, now time.Time) error) error {
	b.mu.Lock()
	now := b.advanceLocked()
	c, n, err := b.st.lookup(ref)
	if err == nil {
		err = change(c, n, now)
	}
	if err != nil {
		b.mu.Unlock()
		return err
	}
	b.st.advance(now)
	b.notePeakLocked(ref.ClusterID, now)
	snap, err := b.snapshotLocked()
	b.mu.Unlock()
	if err != nil {
		return err
	}
	return b.save(snap)
}

// notePeakLocked counts the cluster's workers out of service (down, booting, drained or
// draining) right after a change. Only changes take workers out of service (a boot ending only
// brings one back), so the largest count over all changes is the largest there ever was: the
// invariant max_unavailable is checked at every step, not sampled.
func (b *Backend) notePeakLocked(clusterID int64, now time.Time) {
	c, ok := b.st.Clusters[clusterID]
	if !ok {
		return
	}
	running := c.runningJobsPerNode()
	out := 0
	for _, n := range c.Nodes {
		if n.Role == trainyard.RoleWorker && (!trainyard.InService(n.state(now, running[n.Name])) || n.DrainReason != "") {
			out++
		}
	}
	b.peak[clusterID] = max(b.peak[clusterID], out)
}

// PeakUnavailable returns the most workers of the cluster that were out of service at once,
// counted after every change since the last ResetPeak.
func (b *Backend) PeakUnavailable(clusterID int64) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.peak[clusterID]
}

// ResetPeak starts counting PeakUnavailable anew from the cluster's current state.
func (b *Backend) ResetPeak(clusterID int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.peak[clusterID] = 0
	b.notePeakLocked(clusterID, b.advanceLocked())
}

// sleep waits OpLatency unless ctx ends first. It is called without the lock so that
// operations on different nodes overlap as they would on real machines.
func (b *Backend) sleep(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.opts.OpLatency > 0 {
		t := time.NewTimer(b.opts.OpLatency)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	return ctx.Err()
}

// advanceLocked brings the model to the current time and returns that time. The model's clock
// never goes back, so a clock that does (or a state file written by a machine ahead of this
// one) only pauses it.
func (b *Backend) advanceLocked() time.Time {
	now := modelTime(b.opts.Now())
	if now.Before(b.st.Clock) {
		now = b.st.Clock
	}
	b.st.advance(now)
	return now
}

// modelTime strips the monotonic reading and the location of t, so that times compare and
// print the same before and after a round trip through the state file.
func modelTime(t time.Time) time.Time { return t.Round(0).UTC() }

func (b *Backend) injectedFailureLocked(op string, ref trainyard.NodeRef) error {
	k := faultKey{ref, op}
	left := b.failNext[k]
	if left <= 0 {
		return nil
	}
	if left == 1 {
		delete(b.failNext, k)
	} else {
		b.failNext[k] = left - 1
	}
	if ref.Name == "" {
		return fmt.Errorf("%w of %s on cluster %d", ErrInjected, op, ref.ClusterID)
	}
	return fmt.Errorf("%w of %s on node %s of cluster %d", ErrInjected, op, ref.Name, ref.ClusterID)
}

// startDaemons boots the node after a restart or an image change, unless NeverReturn was armed
// on it: then it goes down for good.
func (b *Backend) startDaemons(ref trainyard.NodeRef, n *node, now time.Time) {
	if b.neverReturn[ref] {
		delete(b.neverReturn, ref)
		n.Lost = true
		return
	}
	b.st.boot(n, now, b.opts.OpLatency)
}

func nodeDownError(ref trainyard.NodeRef) error {
	return fmt.Errorf("%w: %s of cluster %d", ErrNodeDown, ref.Name, ref.ClusterID)
}

// ---- copies: nothing handed out or taken in aliases the model ----

func copyImage(im trainyard.ImageVersion) trainyard.ImageVersion {
	im.Tags = slices.Clone(im.Tags)
	return im
}

func copyNetwork(n trainyard.NetworkSpec) trainyard.NetworkSpec {
	if n.Rules != nil {
		rules := make([]trainyard.SecurityRule, len(n.Rules))
		for i, r := range n.Rules {
			r.Ports = slices.Clone(r.Ports)
			rules[i] = r
		}
		n.Rules = rules
	}
	return n
}
