package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/trainyard/trainyard"
	"github.com/trainyard/trainyard/store"
)

// run is one execution of one action.
type run struct {
	r     *Reconciler
	a     *trainyard.Action
	c     *trainyard.Cluster
	log   *slog.Logger
	roles map[string]string // node name -> role, from the store
	ctl   string            // the controller's name

	// controllerOp and controllerDone, when set, are what a rolling action does to the
	// controller instead of the workers' operation (restart_cluster: its own generation).
	controllerOp   func(ctx context.Context, node string) error
	controllerDone func(trainyard.ObservedNode) bool

	mu   sync.Mutex
	done map[string]bool // nodes whose step succeeded (also before a restart)
}

func (x *run) ref(node string) trainyard.NodeRef {
	return trainyard.NodeRef{ClusterID: x.a.ClusterID, Name: node}
}

func (x *run) succeeded(node string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.done[node]
}

func (x *run) event(ctx context.Context, node, format string, args ...any) {
	x.r.event(ctx, x.a.ID, node, fmt.Sprintf(format, args...))
}

// step runs fn as node's step of the action, unless it already succeeded, and records the outcome.
func (x *run) step(ctx context.Context, node string, fn func(ctx context.Context) error) error {
	if x.succeeded(node) {
		return nil
	}
	if err := x.r.db.Write(ctx, func(ctx context.Context, tx *store.Tx) error {
		return tx.SetStep(ctx, x.a.ID, node, trainyard.StepRunning, "")
	}); err != nil {
		return err
	}
	err := fn(ctx)
	if ctx.Err() != nil {
		return ctx.Err() // shutting down: the step stays running and is redone after the restart
	}
	status, msg := trainyard.StepSucceeded, ""
	switch {
	case errors.Is(err, errCanceled):
		status = trainyard.StepCanceled
	case err != nil:
		status, msg = trainyard.StepFailed, err.Error()
	}
	if werr := x.r.db.Write(ctx, func(ctx context.Context, tx *store.Tx) error {
		if err := tx.SetStep(ctx, x.a.ID, node, status, msg); err != nil {
			return err
		}
		if msg != "" {
			return tx.AddEvent(ctx, x.a.ID, node, "failed: "+msg)
		}
		return nil
	}); werr != nil {
		return werr
	}
	if err == nil {
		x.mu.Lock()
		x.done[node] = true
		x.mu.Unlock()
	}
	return err
}

// canceled returns errCanceled when someone asked to cancel the action.
func (x *run) canceled(ctx context.Context) error {
	var yes bool
	err := x.r.db.Read(ctx, func(ctx context.Context, tx *store.Tx) error {
		var err error
		yes, err = tx.CancelRequested(ctx, x.a.ID)
		return err
	})
	if err != nil {
		return err
	}
	if yes {
		return errCanceled
	}
	return nil
}

// parallel runs step(node) for every node, at most limit at a time, and returns the first error.
// It stops starting nodes once one fails or the action is canceled.
func (x *run) parallel(ctx context.Context, nodes []string, limit int, fn func(ctx context.Context, node string) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	sem := make(chan struct{}, limit)
	for _, n := range nodes {
		mu.Lock()
		stop := first != nil
		mu.Unlock()
		if stop {
			break
		}
		if err := x.canceled(ctx); err != nil {
			mu.Lock()
			first = err
			mu.Unlock()
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := x.step(ctx, n, func(ctx context.Context) error { return fn(ctx, n) }); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

// waitNode polls the backend until cond holds for node, timeout passes (0: none) or the action
// is canceled. A failed observation never satisfies cond: unknown is not ready.
func (x *run) waitNode(ctx context.Context, node string, timeout time.Duration, what string, cond func(trainyard.ObservedNode) bool) error {
	start := time.Now()
	var missingSince time.Time
	last := "not observed"
	for polls := 0; ; polls++ {
		obs, err := x.r.backend.Observe(ctx, x.a.ClusterID)
		if err == nil {
			last = trainyard.NodeMissing
			for _, o := range obs {
				if o.Name == node {
					if cond(o) {
						return nil
					}
					last = o.State
				}
			}
		} else {
			last = "observe failed: " + err.Error()
		}
		// A node that is gone does not come back by waiting: even an untimed wait ends then.
		if last == trainyard.NodeMissing {
			if missingSince.IsZero() {
				missingSince = time.Now()
			}
			if time.Since(missingSince) > x.r.opts.BootTimeout {
				return fmt.Errorf("node %s disappeared while waiting for it to become %s", node, what)
			}
		} else {
			missingSince = time.Time{}
		}
		if timeout > 0 && time.Since(start) > timeout {
			return fmt.Errorf("node %s did not become %s within %s (last seen: %s)", node, what, timeout, last)
		}
		if polls%10 == 9 {
			if err := x.canceled(ctx); err != nil {
				return err
			}
		}
		if err := sleep(ctx, x.r.opts.PollInterval); err != nil {
			return err
		}
	}
}

func booted(o trainyard.ObservedNode) bool {
	return o.State != trainyard.NodeBooting && o.State != trainyard.NodeDown && o.State != trainyard.NodeMissing
}

// load reads the cluster and its nodes' roles.
func (x *run) load(ctx context.Context) error {
	return x.r.db.Read(ctx, func(ctx context.Context, tx *store.Tx) error {
		var err error
		if x.c, err = tx.Cluster(ctx, x.a.ClusterID); err != nil {
			return err
		}
		nodes, err := tx.Nodes(ctx, x.a.ClusterID)
		x.roles = map[string]string{}
		for _, n := range nodes {
			x.roles[n.Name] = n.Role
			if n.Role == trainyard.RoleController {
				x.ctl = n.Name
			}
		}
		return err
	})
}

// carryOut does the action's work.
func (x *run) carryOut(ctx context.Context) error {
	if err := x.load(ctx); err != nil {
		return err
	}
	if err := x.canceled(ctx); err != nil {
		return err
	}
	switch x.a.Type {
	case trainyard.ActionCreateCluster:
		return x.create(ctx)
	case trainyard.ActionDeleteCluster:
		return x.delete(ctx)
	case trainyard.ActionUpdateSSHKeys:
		keys := x.keys()
		return x.parallel(ctx, x.a.Plan.Nodes(), x.r.opts.Concurrency, func(ctx context.Context, node string) error {
			return x.r.backend.SetSSHKeys(ctx, x.ref(node), keys)
		})
	case trainyard.ActionUpdateImage:
		image, ok := x.r.cfg.ImageVersion(x.a.Params.ImageVersionID)
		if !ok {
			return fmt.Errorf("image version %d is no longer in the catalog", x.a.Params.ImageVersionID)
		}
		op := func(ctx context.Context, node string) error { return x.r.backend.SetImage(ctx, x.ref(node), image) }
		done := func(o trainyard.ObservedNode) bool { return o.ImageVersion == image.Version && booted(o) }
		return x.rolling(ctx, op, done)
	case trainyard.ActionRestartWorkers, trainyard.ActionRestartCluster:
		ops := func(gen int64) (func(context.Context, string) error, func(trainyard.ObservedNode) bool) {
			return func(ctx context.Context, node string) error { return x.r.backend.Restart(ctx, x.ref(node), gen) },
				func(o trainyard.ObservedNode) bool { return o.RestartGen >= gen && booted(o) }
		}
		if x.a.Type == trainyard.ActionRestartCluster {
			x.controllerOp, x.controllerDone = ops(x.a.Params.ControllerGen)
		}
		op, done := ops(x.a.Params.RestartGen)
		return x.rolling(ctx, op, done)
	case trainyard.ActionScaleCluster:
		if err := x.r.backend.EnsureCluster(ctx, x.clusterSpec()); err != nil {
			return err
		}
		return x.parallel(ctx, x.a.Params.NewNodes, x.r.opts.Concurrency, x.bringUp)
	case trainyard.ActionAttachIP, trainyard.ActionDetachIP, trainyard.ActionAddSecurityGroup, trainyard.ActionRemoveSecurityGroup:
		return x.network(ctx)
	}
	return fmt.Errorf("unknown action type %q", x.a.Type)
}

func (x *run) keys() []string {
	keys := make([]string, 0, len(x.c.SSHKeys))
	for _, k := range x.c.SSHKeys {
		keys = append(keys, k.PublicKey)
	}
	return keys
}

func (x *run) clusterSpec() trainyard.ClusterSpec {
	return trainyard.ClusterSpec{ID: x.c.ID, Name: x.c.Name, Controller: x.ctl, MaxNodes: x.r.cfg.MaxNodesPerCluster + 1}
}

func (x *run) nodeSpec(ctx context.Context, node, role string) (trainyard.NodeSpec, error) {
	image, ok := x.r.cfg.ImageVersion(x.c.ImageVersionID)
	if !ok {
		return trainyard.NodeSpec{}, fmt.Errorf("image version %d is no longer in the catalog", x.c.ImageVersionID)
	}
	net, err := x.r.networkSpec(ctx, x.c, role)
	if err != nil {
		return trainyard.NodeSpec{}, err
	}
	gen := x.c.WorkerRestartGen
	if role == trainyard.RoleController {
		gen = x.c.ControllerRestartGen
	}
	return trainyard.NodeSpec{NodeRef: x.ref(node), Role: role, Image: image, SSHKeys: x.keys(), RestartGen: gen,
		Network: net, LifecycleScript: x.c.LifecycleScript}, nil
}

// bringUp creates a worker and waits until it can run jobs.
func (x *run) bringUp(ctx context.Context, node string) error {
	spec, err := x.nodeSpec(ctx, node, trainyard.RoleWorker)
	if err != nil {
		return err
	}
	if err := x.r.backend.EnsureNode(ctx, spec); err != nil {
		return err
	}
	if err := x.waitNode(ctx, node, x.r.opts.BootTimeout, "idle", func(o trainyard.ObservedNode) bool { return trainyard.InService(o.State) }); err != nil {
		return err
	}
	x.event(ctx, node, "joined the cluster")
	return nil
}

func (x *run) create(ctx context.Context) error {
	if err := x.r.backend.EnsureCluster(ctx, x.clusterSpec()); err != nil {
		return err
	}
	controller := x.ctl
	if err := x.step(ctx, controller, func(ctx context.Context) error {
		spec, err := x.nodeSpec(ctx, controller, trainyard.RoleController)
		if err != nil {
			return err
		}
		if err := x.r.backend.EnsureNode(ctx, spec); err != nil {
			return err
		}
		return x.waitNode(ctx, controller, x.r.opts.BootTimeout, "up", func(o trainyard.ObservedNode) bool { return o.State == trainyard.NodeUp })
	}); err != nil {
		return err
	}
	var workers []string
	for _, n := range x.a.Plan.Nodes() {
		if !x.isController(n) {
			workers = append(workers, n)
		}
	}
	return x.parallel(ctx, workers, x.r.opts.Concurrency, x.bringUp)
}

func (x *run) delete(ctx context.Context) error {
	if err := x.r.backend.DeleteCluster(ctx, x.c.ID); err != nil {
		return err
	}
	for _, n := range x.a.Plan.Nodes() {
		if err := x.step(ctx, n, func(context.Context) error { return nil }); err != nil {
			return err
		}
	}
	return nil
}

// network applies the cluster's current network (which includes this action's change and any
// later one) to the nodes of the plan.
func (x *run) network(ctx context.Context) error {
	if x.c.Status == trainyard.StatusDeleting || x.c.Status == trainyard.StatusDeleted {
		return fmt.Errorf("cluster %d is being deleted", x.c.ID)
	}
	obs, err := x.r.backend.Observe(ctx, x.a.ClusterID)
	if err != nil {
		return err
	}
	exists := map[string]bool{}
	for _, o := range obs {
		exists[o.Name] = true
	}
	return x.parallel(ctx, x.a.Plan.Nodes(), x.r.opts.Concurrency, func(ctx context.Context, node string) error {
		if !exists[node] {
			// A node still being created (by a scale running beside this action) is created
			// with the cluster's current network; there is nothing to change on it yet.
			x.event(ctx, node, "not created yet: it gets the network when it joins")
			return nil
		}
		spec, err := x.r.networkSpec(ctx, x.c, x.roles[node])
		if err != nil {
			return err
		}
		if err := x.r.backend.SetNetwork(ctx, x.ref(node), spec); err != nil {
			return err
		}
		return x.waitNode(ctx, node, x.r.opts.BootTimeout, fmt.Sprintf("on network generation %d", spec.Generation),
			func(o trainyard.ObservedNode) bool { return o.Network.Generation >= x.a.Params.NetworkGen })
	})
}

func (x *run) isController(node string) bool { return x.roles[node] == trainyard.RoleController }

// finish does what the outcome entails (release drains, remove nodes that did not join, give
// back keys), then records the outcome and the cluster's state in one transaction. Anything that
// fails here is retried at the next pass: the outcome is already decided.
func (x *run) finish(ctx context.Context, outcome, msg string) error {
	failed := outcome != trainyard.ActionSucceeded
	if failed && trainyard.Rolling(x.a.Type) {
		if err := x.releaseDrains(ctx); err != nil {
			return err
		}
	}
	if failed && x.a.Type == trainyard.ActionUpdateSSHKeys && x.a.Params.Previous != nil {
		// Nodes that took the new keys get the old ones back, so that every node has the same.
		old := make([]string, 0, len(x.a.Params.Previous.SSHKeys))
		for _, k := range x.a.Params.Previous.SSHKeys {
			old = append(old, k.PublicKey)
		}
		for _, n := range x.a.Plan.Nodes() {
			if x.succeeded(n) {
				if err := x.r.backend.SetSSHKeys(ctx, x.ref(n), old); err != nil {
					return fmt.Errorf("giving %s its previous keys back: %w", n, err)
				}
			}
		}
	}
	var removed []string
	if failed && x.a.Type == trainyard.ActionScaleCluster {
		// A scale that did not finish leaves the cluster as it was: the nodes that did not join
		// are removed, so that a retry starts clean.
		for _, n := range x.a.Params.NewNodes {
			if x.succeeded(n) {
				continue
			}
			if err := x.r.backend.RemoveNode(ctx, x.ref(n)); err != nil {
				return fmt.Errorf("removing node %s that did not join: %w", n, err)
			}
			removed = append(removed, n)
		}
	}
	return x.r.db.Write(ctx, func(ctx context.Context, tx *store.Tx) error {
		c, err := tx.Cluster(ctx, x.a.ClusterID)
		if err != nil {
			return err
		}
		nodes, err := tx.Nodes(ctx, c.ID)
		if err != nil {
			return err
		}
		for _, n := range removed {
			if !slices.ContainsFunc(nodes, func(m trainyard.Node) bool { return m.Name == n }) {
				continue // removed by an earlier try of this finish
			}
			if err := tx.DeleteNode(ctx, c.ID, n); err != nil {
				return err
			}
			c.Workers--
			if err := tx.AddEvent(ctx, x.a.ID, n, "removed: it did not join before the action ended"); err != nil {
				return err
			}
		}
		if err := settleNetwork(ctx, tx, c, x.a, failed); err != nil {
			return err
		}
		if failed {
			revert(c, x.a)
		}
		if x.a.Type == trainyard.ActionDeleteCluster && !failed {
			// A deleted cluster lets go of what it used: its reserved IP returns to the
			// project, its security groups may be deleted.
			// By cluster, not by c.ReservedIPID: an address being detached is no longer the
			// cluster's desired IP but is still attached to it.
			if err := tx.ReleaseReservedIPsOfCluster(ctx, c.ID); err != nil {
				return err
			}
			c.ReservedIPID = 0
			c.SecurityGroupIDs = nil
		}
		c.Settle(x.a, outcome)
		if err := tx.UpdateCluster(ctx, c); err != nil {
			return err
		}
		return tx.FinishAction(ctx, x.a.ID, outcome, msg)
	})
}

// settleNetwork moves a reserved IP's record to where the action left it: a detached address
// becomes Available only once the controller let go of it; a failed attach frees it again.
func settleNetwork(ctx context.Context, tx *store.Tx, c *trainyard.Cluster, a *trainyard.Action, failed bool) error {
	switch {
	case a.Type == trainyard.ActionDetachIP && !failed:
		return tx.SetReservedIPAttachment(ctx, a.Params.ReservedIPID, 0)
	case a.Type == trainyard.ActionAttachIP && failed && c.ReservedIPID == a.Params.ReservedIPID:
		return tx.SetReservedIPAttachment(ctx, a.Params.ReservedIPID, 0)
	}
	return nil
}

// revert gives the cluster back the desired state an action that did not succeed replaced, so
// that the cluster says what was asked and done, not what was asked and abandoned. A network
// change gets a new generation: the nodes converge to the restored network.
func revert(c *trainyard.Cluster, a *trainyard.Action) {
	prev := a.Params.Previous
	if prev == nil {
		return
	}
	switch a.Type {
	case trainyard.ActionUpdateImage:
		c.ImageVersionID = prev.ImageVersionID
	case trainyard.ActionUpdateSSHKeys:
		c.SSHKeys = prev.SSHKeys
	case trainyard.ActionAttachIP, trainyard.ActionDetachIP:
		c.ReservedIPID = prev.ReservedIPID
		c.NetworkGen++
	case trainyard.ActionAddSecurityGroup, trainyard.ActionRemoveSecurityGroup:
		c.SecurityGroupIDs = prev.SecurityGroupIDs
		c.NetworkGen++
	}
}

// releaseDrains resumes every worker this action drained; others' drains stay.
func (x *run) releaseDrains(ctx context.Context) error {
	reason := x.drainReason()
	obs, err := x.r.backend.Observe(ctx, x.a.ClusterID)
	if err != nil {
		return fmt.Errorf("observing the cluster to release drains: %w", err)
	}
	for _, o := range obs {
		if o.Role == trainyard.RoleWorker && o.DrainReason == reason {
			if err := x.r.backend.Resume(ctx, x.ref(o.Name), reason); err != nil {
				return fmt.Errorf("releasing the drain of %s: %w", o.Name, err)
			}
			x.event(ctx, o.Name, "drain released")
		}
	}
	return nil
}

func (x *run) drainReason() string {
	return fmt.Sprintf("%saction %d %s", DrainPrefix, x.a.ID, x.a.Type)
}
