package sim

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/trainyard/trainyard"
)

// state is the whole model, saved as one JSON document. Everything time-dependent is derived
// from timestamps against Clock, the instant the model was last brought to, so that the model
// is a pure function of its state and the time: reloading it later gives what keeping it in
// memory would have.
type state struct {
	Format     int
	Clock      time.Time
	NextJobID  int64
	NextBootID int64
	Ops        map[string]int
	Clusters   map[int64]*cluster
}

// cluster is a cluster: its spec, its nodes by name and its job queue.
type cluster struct {
	Spec     trainyard.ClusterSpec
	Nodes    map[string]*node
	NextHost int    // numbers node addresses in creation order
	Jobs     []*job // in ID order, which is also the queue's priority order
}

// node is a machine of a cluster with what runs on it. Its Slurm state is not stored but
// derived (node.state) from these fields, its jobs and the time.
type node struct {
	Name            string
	Role            string
	Address         string
	Image           trainyard.ImageVersion
	SSHKeys         []string
	RestartGen      int64
	Network         trainyard.NetworkSpec
	LifecycleScript string
	Boots           int
	BootID          string
	StartedAt       time.Time
	BootUntil       time.Time // booting until then
	DrainReason     string
	Down            bool // an outage by hand (SetDown)
	Lost            bool // did not come back from a restart (NeverReturn)
}

func newState() *state {
	return &state{Format: stateFormat, Ops: map[string]int{}, Clusters: map[int64]*cluster{}}
}

func (s *state) lookup(ref trainyard.NodeRef) (*cluster, *node, error) {
	c, ok := s.Clusters[ref.ClusterID]
	if !ok {
		return nil, nil, fmt.Errorf("%w %s: cluster %d does not exist", ErrUnknownNode, ref.Name, ref.ClusterID)
	}
	n, ok := c.Nodes[ref.Name]
	if !ok {
		return nil, nil, fmt.Errorf("%w %s in cluster %d", ErrUnknownNode, ref.Name, ref.ClusterID)
	}
	return c, n, nil
}

// boot (re)starts the node's daemons at now: a new boot id, and out of service for latency.
func (s *state) boot(n *node, now time.Time, latency time.Duration) {
	s.NextBootID++
	n.Boots++
	n.BootID = fmt.Sprintf("boot-%d", s.NextBootID)
	n.StartedAt = now
	n.BootUntil = now.Add(latency)
}

func (n *node) down() bool { return n.Down || n.Lost }

// serving reports whether the worker may be given a job at t (if it has none).
func (n *node) serving(t time.Time) bool {
	return n.Role == trainyard.RoleWorker && !n.down() && !t.Before(n.BootUntil) && n.DrainReason == ""
}

// state is the Slurm-like state of the node at t with jobs running on it. Down beats booting
// beats drained: that is the order in which they keep the node from serving.
func (n *node) state(t time.Time, jobs int) string {
	switch {
	case n.down():
		return trainyard.NodeDown
	case t.Before(n.BootUntil):
		return trainyard.NodeBooting
	case n.Role == trainyard.RoleController:
		return trainyard.NodeUp
	case n.DrainReason != "" && jobs > 0:
		return trainyard.NodeDraining
	case n.DrainReason != "":
		return trainyard.NodeDrained
	case jobs > 0:
		// A worker runs one job at a time here, so it is never "mixed".
		return trainyard.NodeAllocated
	}
	return trainyard.NodeIdle
}

// sortedNodeNames returns the cluster's node names, controllers first, then by name: the order
// of Observe.
func (c *cluster) sortedNodeNames() []string {
	names := make([]string, 0, len(c.Nodes))
	for name := range c.Nodes {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool {
		ci := c.Nodes[names[i]].Role == trainyard.RoleController
		cj := c.Nodes[names[j]].Role == trainyard.RoleController
		if ci != cj {
			return ci
		}
		return strings.Compare(names[i], names[j]) < 0
	})
	return names
}
