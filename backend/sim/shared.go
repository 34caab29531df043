package sim

import (
	"context"
	"fmt"
	"os"
	"sync"
	"syscall"

	"github.com/trainyard/trainyard"
)

// Shared is a sim backend whose nodes several processes share through one state file, as
// replicas of the control plane share real nodes. Every call takes an exclusive lock on the file,
// reloads the model from it, and saves it before the lock is released, so each process sees what
// the others did. Calls are serialised, across processes and within one: it is for tests of
// replicas, not for speed.
type Shared struct {
	mu   sync.Mutex
	b    *Backend
	lock string
}

var _ trainyard.Backend = (*Shared)(nil)

// NewShared returns a shared sim backend on opts.StatePath (required).
func NewShared(opts Options) (*Shared, error) {
	if opts.StatePath == "" {
		return nil, fmt.Errorf("sim: a shared backend needs a state file")
	}
	b, err := New(opts)
	if err != nil {
		return nil, err
	}
	return &Shared{b: b, lock: opts.StatePath + ".lock"}, nil
}

// Backend is the process's view of the model, for tests' inspection; reload it with Do.
func (s *Shared) Backend() *Backend { return s.b }

// Do runs fn with the model locked and fresh from the file.
func (s *Shared) Do(fn func(b *Backend) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := os.OpenFile(s.lock, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	st, err := loadState(s.b.opts.StatePath)
	if err != nil {
		return err
	}
	if st != nil {
		s.b.mu.Lock()
		s.b.st = st
		s.b.mu.Unlock()
	}
	return fn(s.b)
}

func (s *Shared) Name() string { return "sim" }

func (s *Shared) EnsureCluster(ctx context.Context, c trainyard.ClusterSpec) error {
	return s.Do(func(b *Backend) error { return b.EnsureCluster(ctx, c) })
}

func (s *Shared) DeleteCluster(ctx context.Context, id int64) error {
	return s.Do(func(b *Backend) error { return b.DeleteCluster(ctx, id) })
}

func (s *Shared) EnsureNode(ctx context.Context, spec trainyard.NodeSpec) error {
	return s.Do(func(b *Backend) error { return b.EnsureNode(ctx, spec) })
}

func (s *Shared) RemoveNode(ctx context.Context, n trainyard.NodeRef) error {
	return s.Do(func(b *Backend) error { return b.RemoveNode(ctx, n) })
}

func (s *Shared) SetSSHKeys(ctx context.Context, n trainyard.NodeRef, keys []string) error {
	return s.Do(func(b *Backend) error { return b.SetSSHKeys(ctx, n, keys) })
}

func (s *Shared) SetImage(ctx context.Context, n trainyard.NodeRef, image trainyard.ImageVersion) error {
	return s.Do(func(b *Backend) error { return b.SetImage(ctx, n, image) })
}

func (s *Shared) Restart(ctx context.Context, n trainyard.NodeRef, gen int64) error {
	return s.Do(func(b *Backend) error { return b.Restart(ctx, n, gen) })
}

func (s *Shared) SetNetwork(ctx context.Context, n trainyard.NodeRef, spec trainyard.NetworkSpec) error {
	return s.Do(func(b *Backend) error { return b.SetNetwork(ctx, n, spec) })
}

func (s *Shared) Observe(ctx context.Context, id int64) ([]trainyard.ObservedNode, error) {
	var out []trainyard.ObservedNode
	err := s.Do(func(b *Backend) error {
		var err error
		out, err = b.Observe(ctx, id)
		return err
	})
	return out, err
}

func (s *Shared) Drain(ctx context.Context, n trainyard.NodeRef, reason string) error {
	return s.Do(func(b *Backend) error { return b.Drain(ctx, n, reason) })
}

func (s *Shared) Resume(ctx context.Context, n trainyard.NodeRef, reason string) error {
	return s.Do(func(b *Backend) error { return b.Resume(ctx, n, reason) })
}

func (s *Shared) RequeueJobs(ctx context.Context, n trainyard.NodeRef) error {
	return s.Do(func(b *Backend) error { return b.RequeueJobs(ctx, n) })
}
