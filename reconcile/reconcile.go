// Package reconcile carries out accepted actions against a Backend.
//
// It is level-triggered and crash-safe: everything it needs is in the store (the action, its
// plan, the desired state of the cluster, which node steps already succeeded), every backend
// call is idempotent, and each step's result is recorded before the next begins. After a crash
// Run simply reads the store again and continues every open action where it stopped; a step
// that was running is run again, which the backend turns into a no-op if it had taken effect.
//
// Several replicas may run reconcilers on one store: a replica drives a cluster only while it
// holds the cluster's lease (renewed every third of its TTL), and work under a lost lease stops,
// so a replica that dies has its work resumed by another within the lease's TTL.
//
// Rolling actions never take a worker out of service when that would make more than
// max_unavailable workers unavailable, counting workers that are down or drained for any reason;
// drains they set carry the reason prefix DrainPrefix and are released when the action ends,
// however it ends; drains of anyone else are never touched.
package reconcile

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
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
	Replica        string        // this replica's name in leases (host-pid-random)
	LeaseTTL       time.Duration // how long a lease lasts unrenewed (15s); renewed every third of it
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
	if o.Replica == "" {
		host, _ := os.Hostname()
		b := make([]byte, 3)
		rand.Read(b)
		o.Replica = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 15 * time.Second
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
	leases     map[int64]*lease
	executions sync.WaitGroup
}

// lease is this replica's hold on a cluster: work on the cluster runs under ctx, which ends
// when the lease is lost.
type lease struct {
	ctx     context.Context
	cancel  context.CancelFunc
	expires time.Time // by this replica's clock, from before the write that renewed it
	users   int
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
		leases: map[int64]*lease{},
	}
}

// Replica is this reconciler's name in leases.
func (r *Reconciler) Replica() string { return r.opts.Replica }

// hold takes (or shares) this replica's lease on a cluster; ok is false when another replica
// holds it. Work done under the returned context stops when the lease is lost.
func (r *Reconciler) hold(ctx context.Context, clusterID int64) (context.Context, bool) {
	r.mu.Lock()
	if l, ok := r.leases[clusterID]; ok && time.Now().Before(l.expires) {
		l.users++
		r.mu.Unlock()
		return l.ctx, true
	}
	r.mu.Unlock()
	start := time.Now()
	var got bool
	err := r.db.Write(ctx, func(ctx context.Context, tx *store.Tx) error {
		var err error
		got, err = tx.AcquireLease(ctx, clusterID, r.opts.Replica, r.opts.LeaseTTL)
		return err
	})
	if err != nil || !got {
		return nil, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.leases[clusterID]
	if !ok {
		lctx, cancel := context.WithCancel(ctx)
		l = &lease{ctx: lctx, cancel: cancel}
		r.leases[clusterID] = l
	}
	l.expires = start.Add(r.opts.LeaseTTL)
	l.users++
	return l.ctx, true
}

// unhold ends one use of a lease. The last use stops renewing it: the row expires by itself
// after the TTL (or is taken back at once by this replica, whose name it carries). Deleting the
// row here could race with a new hold of the same cluster; only at shutdown, when no new hold
// comes, is it deleted so that another replica need not wait.
func (r *Reconciler) unhold(clusterID int64) {
	r.mu.Lock()
	l, ok := r.leases[clusterID]
	if !ok {
		r.mu.Unlock()
		return
	}
	l.users--
	last := l.users <= 0
	if last {
		delete(r.leases, clusterID)
	}
	r.mu.Unlock()
	if !last {
		return
	}
	shuttingDown := l.ctx.Err() != nil
	l.cancel()
	if shuttingDown {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r.db.Write(ctx, func(ctx context.Context, tx *store.Tx) error {
			return tx.ReleaseLease(ctx, clusterID, r.opts.Replica)
		})
	}
}

// renewLeases keeps this replica's leases until ctx ends. A lease that cannot be renewed before
// it expires (another replica took it, or the store is unreachable) is dropped, which stops the
// work under it: two replicas never drive one cluster at once.
func (r *Reconciler) renewLeases(ctx context.Context) {
	t := time.NewTicker(r.opts.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.mu.Lock()
		ids := make([]int64, 0, len(r.leases))
		for id := range r.leases {
			ids = append(ids, id)
		}
		r.mu.Unlock()
		for _, id := range ids {
			start := time.Now()
			var got bool
			err := r.db.Write(ctx, func(ctx context.Context, tx *store.Tx) error {
				var err error
				got, err = tx.AcquireLease(ctx, id, r.opts.Replica, r.opts.LeaseTTL)
				return err
			})
			r.mu.Lock()
			l, ok := r.leases[id]
			switch {
			case !ok:
			case err == nil && got:
				l.expires = start.Add(r.opts.LeaseTTL)
			case err == nil || time.Now().Add(r.opts.LeaseTTL/3).After(l.expires):
				r.log.Warn("reconcile: lease lost; stopping work on the cluster", "cluster", id, "err", err)
				l.cancel()
				delete(r.leases, id)
			}
			r.mu.Unlock()
		}
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
	r.executions.Add(1)
	go func() { defer r.executions.Done(); r.renewLeases(ctx) }()
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
	lctx, ok := r.hold(ctx, a.ClusterID)
	if !ok {
		// Another replica drives this cluster.
		r.mu.Lock()
		delete(r.running, a.ID)
		if netLane != 0 {
			delete(r.netBusy, netLane)
		}
		r.mu.Unlock()
		return
	}
	r.executions.Add(1)
	go func() {
		defer r.executions.Done()
		r.execute(lctx, a)
		r.unhold(a.ClusterID)
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
	lctx, held := r.hold(ctx, clusterID)
	if !held {
		r.mu.Lock()
		delete(r.netBusy, clusterID)
		r.mu.Unlock()
		return
	}
	r.executions.Add(1)
	go func() {
		defer r.executions.Done()
		defer r.unhold(clusterID)
		defer func() { r.mu.Lock(); delete(r.netBusy, clusterID); r.mu.Unlock() }()
		ctx := lctx
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
