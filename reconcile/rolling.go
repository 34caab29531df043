package reconcile

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/trainyard/trainyard"
)

// rolling runs op over the plan's batches. Workers are taken out of service (drained as the
// action's drain mode says), changed, waited for and returned to service; the controller, in a
// batch of its own, is changed and waited for.
//
// The invariant: a worker that is in service is taken out only if that leaves at most
// max_unavailable workers out of service, counting those down or drained for any reason.
// When there is no room the action waits (up to BlockedTimeout) rather than break it.
func (x *run) rolling(ctx context.Context, op func(context.Context, string) error, done func(trainyard.ObservedNode) bool) error {
	maxU := max(x.a.Plan.MaxUnavailable, 1)
	var mu sync.Mutex
	inFlight := map[string]bool{}
	for _, batch := range x.a.Plan.Batches {
		if len(batch) == 1 && x.isController(batch[0]) {
			cop, cdone := op, done
			if x.controllerOp != nil {
				cop, cdone = x.controllerOp, x.controllerDone
			}
			node := batch[0]
			if err := x.canceled(ctx); err != nil {
				return err
			}
			if err := x.step(ctx, node, func(ctx context.Context) error {
				if err := cop(ctx, node); err != nil {
					return err
				}
				return x.waitNode(ctx, node, x.r.opts.BootTimeout, "back up", func(o trainyard.ObservedNode) bool {
					return cdone(o) && o.State == trainyard.NodeUp
				})
			}); err != nil {
				return err
			}
			continue
		}
		var wg sync.WaitGroup
		var first error
		setErr := func(err error) {
			mu.Lock()
			if first == nil {
				first = err
			}
			mu.Unlock()
		}
		for _, node := range batch {
			if x.succeeded(node) {
				continue
			}
			if err := x.canceled(ctx); err != nil {
				setErr(err)
				break
			}
			if err := x.waitForRoom(ctx, node, maxU, &mu, inFlight); err != nil {
				setErr(err)
				break
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { mu.Lock(); delete(inFlight, node); mu.Unlock() }()
				if err := x.step(ctx, node, func(ctx context.Context) error { return x.rollWorker(ctx, node, op, done) }); err != nil {
					setErr(err)
				}
			}()
		}
		wg.Wait()
		if first != nil {
			return first
		}
	}
	return nil
}

// unavailable reports whether a worker is out of service: down, booting, missing, or drained
// (by anyone, for any reason).
func unavailable(o trainyard.ObservedNode) bool {
	return !trainyard.InService(o.State) || o.DrainReason != ""
}

// waitForRoom waits until node may be taken out of service under maxU, then adds it to inFlight.
func (x *run) waitForRoom(ctx context.Context, node string, maxU int, mu *sync.Mutex, inFlight map[string]bool) error {
	deadline := time.Now().Add(x.r.opts.BlockedTimeout)
	for polls := 0; ; polls++ {
		obs, err := x.r.backend.Observe(ctx, x.a.ClusterID)
		var out []string
		self := false
		if err == nil {
			mu.Lock()
			for _, o := range obs {
				if o.Role != trainyard.RoleWorker {
					continue
				}
				if unavailable(o) || inFlight[o.Name] {
					out = append(out, o.Name)
					if o.Name == node {
						self = true
					}
				}
			}
			// Taking out a node that is already out costs nothing; otherwise there must be room.
			if self || len(out)+1 <= maxU {
				inFlight[node] = true
				mu.Unlock()
				return nil
			}
			mu.Unlock()
		}
		if time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("cannot observe the cluster to keep max_unavailable: %v", err)
			}
			slices.Sort(out)
			return fmt.Errorf("cannot take %s out of service: %s already unavailable and max_unavailable is %d",
				node, strings.Join(out, ", "), maxU)
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

// rollWorker drains one worker per the drain mode, applies op, waits for it to come back and
// returns it to service.
func (x *run) rollWorker(ctx context.Context, node string, op func(context.Context, string) error, done func(trainyard.ObservedNode) bool) error {
	reason := x.drainReason()
	ref := x.ref(node)
	if err := x.r.backend.Drain(ctx, ref, reason); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	switch x.a.Plan.Drain {
	case trainyard.DrainRequeue:
		if err := x.r.backend.RequeueJobs(ctx, ref); err != nil {
			return fmt.Errorf("requeue jobs: %w", err)
		}
		fallthrough
	case trainyard.DrainWait, "":
		x.event(ctx, node, "drained (%s); waiting for its jobs to end", x.a.Plan.Drain)
		if err := x.waitNode(ctx, node, 0, "free of jobs", func(o trainyard.ObservedNode) bool {
			return o.Jobs == 0 && o.State != trainyard.NodeMissing
		}); err != nil {
			return err
		}
	default:
		x.event(ctx, node, "drained (force): not waiting for jobs")
	}
	if err := op(ctx, node); err != nil {
		return err
	}
	if err := x.waitNode(ctx, node, x.r.opts.BootTimeout, "back up", done); err != nil {
		return err
	}
	if err := x.r.backend.Resume(ctx, ref, reason); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	if err := x.waitNode(ctx, node, x.r.opts.BootTimeout, "in service", func(o trainyard.ObservedNode) bool {
		return trainyard.InService(o.State) || (o.DrainReason != "" && o.DrainReason != reason)
	}); err != nil {
		return err
	}
	x.event(ctx, node, "back in service")
	return nil
}
