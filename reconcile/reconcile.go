// Package reconcile carries out accepted actions against a Backend.
//
// It is level-triggered and crash-safe: everything it needs is in the store (the action, its
// plan, the desired state of the cluster, which node steps already succeeded), every backend
// call is idempotent, and each step's result is recorded before the next begins. After a crash
// Run simply reads the store again and continues every open action where it stopped; a step
// that was running is run again, which the backend turns into a no-op if it had taken effect.
//
// Rolling actions never take a worker out of service when that would make more than
// max_unavailable workers unavailable, counting workers that are down or drained for any reason;
// drains they set carry the reason prefix DrainPrefix and are released when the action ends,
// however it ends; drains of anyone else are never touched.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/trainyard/trainyard"
	"github.com/trainyard/trainyard/config"
	"github.com/trainyard/trainyard/store"
)

// DrainPrefix starts the reason of every drain trainyard sets.
const DrainPrefix = "trainyard:"

// Options tune the reconciler; zero values take the defaults.
type Options struct {
	PollInterval   time.Duration // how often a waiting step observes nodes (100ms)
	ResyncInterval time.Duration // how often open actions and network drift are checked (1s)
	BootTimeout    time.Duration // how long a node may take to come back after an operation (5m)
	BlockedTimeout time.Duration // how long a rolling action waits for room under max_unavailable (10m)
	Concurrency    int           // node operations at once outside rolling batches (8)
}

func (o *Options) defaults() {
	if o.PollInterval <= 0 {
		o.PollInterval = 100 * time.Millisecond
	}
	if o.ResyncInterval <= 0 {
		o.ResyncInterval = time.Second
	}
	if o.BootTimeout <= 0 {
		o.BootTimeout = 5 * time.Minute
	}
	if o.BlockedTimeout <= 0 {
		o.BlockedTimeout = 10 * time.Minute
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 8
	}
}

// Reconciler drives clusters towards their desired state.
type Reconciler struct {
	db      *store.DB
	backend trainyard.Backend
	cfg     *config.Config
	log     *slog.Logger
	opts    Options
	wake    chan struct{}

	mu         sync.Mutex
	running    map[int64]bool // actions being executed
	netBusy    map[int64]bool // clusters whose network is being changed
	observed   map[int64][]trainyard.ObservedNode
	executions sync.WaitGroup
}

// New returns a reconciler; call Run to start it.
func New(db *store.DB, backend trainyard.Backend, cfg *config.Config, log *slog.Logger, opts Options) *Reconciler {
	opts.defaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reconciler{
		db: db, backend: backend, cfg: cfg, log: log, opts: opts,
		wake:    make(chan struct{}, 1),
		running: map[int64]bool{}, netBusy: map[int64]bool{}, observed: map[int64][]trainyard.ObservedNode{},
	}
}

// Wake makes Run look for work now rather than at its next resync.
func (r *Reconciler) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Observed returns the last observation of a cluster's nodes.
func (r *Reconciler) Observed(clusterID int64) []trainyard.ObservedNode {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.observed[clusterID]
}

// Run works until ctx ends, then waits for the actions it runs to reach a safe point and
// returns. Actions interrupted that way stay open in the store and resume at the next Run.
func (r *Reconciler) Run(ctx context.Context) {
	t := time.NewTicker(r.opts.ResyncInterval)
	defer t.Stop()
	for {
		r.pass(ctx)
		select {
		case <-ctx.Done():
			r.executions.Wait()
			return
		case <-r.wake:
		case <-t.C:
		}
	}
}

// pass starts every open action that is not running yet and converges network drift.
func (r *Reconciler) pass(ctx context.Context) {
	var open []*trainyard.Action
	var live []int64
	err := r.db.Read(ctx, func(ctx context.Context, tx *store.Tx) error {
		var err error
		if open, err = tx.OpenActions(ctx); err != nil {
			return err
		}
		live, err = tx.LiveClusterIDs(ctx)
		return err
	})
	if err != nil {
		if ctx.Err() == nil {
			r.log.Error("reconcile: reading open actions", "err", err)
		}
		return
	}
	networkQueued := map[int64]bool{}
	for _, a := range open {
		if trainyard.NodeChanging(a.Type) {
			r.start(ctx, a, 0)
			continue
		}
		// Network actions of one cluster run one at a time, oldest first.
		if networkQueued[a.ClusterID] {
			continue
		}
		networkQueued[a.ClusterID] = true
		r.start(ctx, a, a.ClusterID)
	}
	for _, id := range live {
		r.observe(ctx, id, !networkQueued[id])
	}
}

// start runs a in its own goroutine unless it already runs; netLane, when not 0, is the cluster
// whose network lane the action must hold.
func (r *Reconciler) start(ctx context.Context, a *trainyard.Action, netLane int64) {
	r.mu.Lock()
	if r.running[a.ID] || (netLane != 0 && r.netBusy[netLane]) {
		r.mu.Unlock()
		return
	}
	r.running[a.ID] = true
	if netLane != 0 {
		r.netBusy[netLane] = true
	}
	r.mu.Unlock()
	r.executions.Add(1)
	go func() {
		defer r.executions.Done()
		r.execute(ctx, a)
		r.mu.Lock()
		delete(r.running, a.ID)
		if netLane != 0 {
			delete(r.netBusy, netLane)
		}
		r.mu.Unlock()
		r.Wake()
	}()
}

// observe refreshes the observation of a cluster and, when allowed, brings nodes whose network
// lags behind the desired generation (a security group's rules changed, a node was added) up to it.
func (r *Reconciler) observe(ctx context.Context, clusterID int64, fixDrift bool) {
	obs, err := r.backend.Observe(ctx, clusterID)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("reconcile: observe", "cluster", clusterID, "err", err)
		}
		return
	}
	r.mu.Lock()
	r.observed[clusterID] = obs
	busy := r.netBusy[clusterID]
	r.mu.Unlock()
	if !fixDrift || busy {
		return
	}
	var c *trainyard.Cluster
	if err := r.db.Read(ctx, func(ctx context.Context, tx *store.Tx) error {
		var err error
		c, err = tx.Cluster(ctx, clusterID)
		return err
	}); err != nil {
		return
	}
	if c.Status != trainyard.StatusRunning && c.Status != trainyard.StatusUpdating {
		return
	}
	var behind []trainyard.ObservedNode
	for _, n := range obs {
		if n.Network.Generation < c.NetworkGen && n.State != trainyard.NodeMissing {
			behind = append(behind, n)
		}
	}
	if len(behind) == 0 {
		return
	}
	r.mu.Lock()
	if r.netBusy[clusterID] {
		r.mu.Unlock()
		return
	}
	r.netBusy[clusterID] = true
	r.mu.Unlock()
	r.executions.Add(1)
	go func() {
		defer r.executions.Done()
		defer func() { r.mu.Lock(); delete(r.netBusy, clusterID); r.mu.Unlock() }()
		for _, n := range behind {
			spec, err := r.networkSpec(ctx, c, n.Role)
			if err == nil {
				err = r.backend.SetNetwork(ctx, trainyard.NodeRef{ClusterID: clusterID, Name: n.Name}, spec)
			}
			if err != nil && ctx.Err() == nil {
				r.log.Warn("reconcile: network drift", "cluster", clusterID, "node", n.Name, "err", err)
			}
		}
	}()
}

// networkSpec is the network a node of role should have under the cluster's desired state.
func (r *Reconciler) networkSpec(ctx context.Context, c *trainyard.Cluster, role string) (trainyard.NetworkSpec, error) {
	spec := trainyard.NetworkSpec{Generation: c.NetworkGen, Rules: []trainyard.SecurityRule{}}
	err := r.db.Read(ctx, func(ctx context.Context, tx *store.Tx) error {
		for _, gid := range c.SecurityGroupIDs {
			g, ok, err := tx.SecurityGroup(ctx, c.AccountID, c.ProjectID, c.Location, gid)
			if err != nil {
				return err
			}
			if ok {
				spec.Rules = append(spec.Rules, g.Rules...)
			}
		}
		if role == trainyard.RoleController && c.ReservedIPID != 0 {
			ip, ok, err := tx.ReservedIP(ctx, c.AccountID, c.ReservedIPID)
			if err != nil {
				return err
			}
			if ok {
				spec.ReservedIP = ip.Address
			}
		}
		return nil
	})
	return spec, err
}

// errCanceled ends an action that someone canceled.
var errCanceled = errors.New("canceled")

// execute carries out one action to its end, unless ctx ends first.
func (r *Reconciler) execute(ctx context.Context, a *trainyard.Action) {
	log := r.log.With("action", a.ID, "type", a.Type, "cluster", a.ClusterID)
	if err := r.db.Read(ctx, func(ctx context.Context, tx *store.Tx) error {
		var err error
		a, err = tx.Action(ctx, a.ID) // with its steps: which nodes are done already
		return err
	}); err != nil {
		if ctx.Err() == nil {
			log.Error("reconcile: load action", "err", err)
		}
		return
	}
	if a.Status == trainyard.ActionQueued {
		if err := r.db.Write(ctx, func(ctx context.Context, tx *store.Tx) error {
			if err := tx.StartAction(ctx, a.ID); err != nil {
				return err
			}
			return tx.AddEvent(ctx, a.ID, "", "started")
		}); err != nil {
			log.Error("reconcile: start", "err", err)
			return
		}
	} else {
		log.Info("reconcile: resuming action")
		r.event(ctx, a.ID, "", "resumed after a restart of the control plane")
	}
	x := &run{r: r, a: a, log: log, done: map[string]bool{}}
	for _, s := range a.Steps {
		if s.Status == trainyard.StepSucceeded {
			x.done[s.Node] = true
		}
	}
	outcome, msg := a.Outcome, a.Error
	if outcome == "" {
		err := x.carryOut(ctx)
		if ctx.Err() != nil {
			return // shutting down: the action resumes at the next start
		}
		outcome, msg = trainyard.ActionSucceeded, ""
		switch {
		case errors.Is(err, errCanceled):
			outcome = trainyard.ActionCanceled
		case err != nil:
			outcome, msg = trainyard.ActionFailed, err.Error()
		}
		// Decided before anything is undone, so that a restart finishes the action the same way
		// rather than doing its work again.
		if err := r.db.Write(ctx, func(ctx context.Context, tx *store.Tx) error {
			return tx.DecideOutcome(ctx, a.ID, outcome, msg)
		}); err != nil {
			if ctx.Err() == nil {
				log.Error("reconcile: record outcome", "err", err)
			}
			return
		}
	} else if err := x.load(ctx); err != nil {
		return
	}
	if err := x.finish(ctx, outcome, msg); err != nil {
		if ctx.Err() == nil {
			log.Error("reconcile: finishing; will retry", "err", err)
		}
		return
	}
	log.Info("reconcile: action finished", "outcome", outcome, "error", msg)
}

func (r *Reconciler) event(ctx context.Context, actionID int64, node, msg string) {
	if err := r.db.Write(ctx, func(ctx context.Context, tx *store.Tx) error {
		return tx.AddEvent(ctx, actionID, node, msg)
	}); err != nil && ctx.Err() == nil {
		r.log.Error("reconcile: event", "action", actionID, "err", err)
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
