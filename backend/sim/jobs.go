package sim

import (
	"fmt"
	"slices"
	"time"
)

// Job states, as Slurm names them.
const (
	JobPending   = "PENDING"
	JobRunning   = "RUNNING"
	JobCompleted = "COMPLETED"
	JobNodeFail  = "NODE_FAIL" // killed by a restart, an image change or an outage of one of its nodes
	JobCancelled = "CANCELLED"
)

// Job is a copy of one job of the simulated queue.
type Job struct {
	ID        int64
	ClusterID int64
	Size      int      // how many workers it needs
	Nodes     []string // the workers it runs (or last ran) on; nil while pending
	State     string   // one of the Job* states
	Duration  time.Duration
	Submitted time.Time
	Started   time.Time // zero while pending
	Ended     time.Time // zero until it completes, fails or is cancelled
	Requeues  int
}

// job is a job as the model keeps it.
type job struct {
	ID         int64
	Size       int      // how many workers it needs
	Nodes      []string // where it runs or ran; nil while pending
	State      string
	Duration   time.Duration
	Submitted  time.Time
	Started    time.Time
	Ended      time.Time
	EligibleAt time.Time // a pending job does not start before (requeue delay)
	Requeues   int
}

// advance brings the model from Clock to now, event by event (a job ending, a node finishing
// its boot, a requeued job becoming eligible), starting pending jobs at each event, so that a
// job starts at the instant nodes became free, not when somebody happened to look.
func (s *state) advance(now time.Time) {
	if now.Before(s.Clock) {
		return
	}
	for {
		for _, c := range s.Clusters {
			c.finishJobs(s.Clock)
			c.schedule(s.Clock)
		}
		next, ok := s.nextEvent()
		if !ok || next.After(now) {
			break
		}
		s.Clock = next
	}
	s.Clock = now
}

// nextEvent returns the first instant after Clock at which something may change.
func (s *state) nextEvent() (time.Time, bool) {
	var next time.Time
	found := false
	consider := func(t time.Time) {
		if t.After(s.Clock) && (!found || t.Before(next)) {
			next, found = t, true
		}
	}
	for _, c := range s.Clusters {
		for _, n := range c.Nodes {
			consider(n.BootUntil)
		}
		for _, j := range c.Jobs {
			switch j.State {
			case JobRunning:
				consider(j.Started.Add(j.Duration))
			case JobPending:
				consider(j.EligibleAt)
			}
		}
	}
	return next, found
}

func (c *cluster) finishJobs(t time.Time) {
	for _, j := range c.Jobs {
		if j.State == JobRunning {
			if end := j.Started.Add(j.Duration); !end.After(t) {
				j.State, j.Ended = JobCompleted, end
			}
		}
	}
}

// schedule starts, in queue order, every eligible pending job for which enough workers are in
// service and idle at t, on the first idle ones by name. A job that does not fit is skipped
// and later, smaller jobs may start (first fit, no reservation for big jobs).
func (c *cluster) schedule(t time.Time) {
	var pending bool
	for _, j := range c.Jobs {
		if j.State == JobPending && !j.EligibleAt.After(t) {
			pending = true
			break
		}
	}
	if !pending {
		return
	}
	busy := c.runningJobsPerNode()
	var free []string
	for _, name := range c.sortedNodeNames() {
		if c.Nodes[name].serving(t) && busy[name] == 0 {
			free = append(free, name)
		}
	}
	for _, j := range c.Jobs {
		if len(free) == 0 {
			return
		}
		if j.State != JobPending || j.EligibleAt.After(t) || j.Size > len(free) {
			continue
		}
		j.Nodes = slices.Clone(free[:j.Size])
		free = free[j.Size:]
		j.State, j.Started = JobRunning, t
	}
}

// runningJobsPerNode counts the running jobs of each node.
func (c *cluster) runningJobsPerNode() map[string]int {
	out := map[string]int{}
	for _, j := range c.Jobs {
		if j.State == JobRunning {
			for _, name := range j.Nodes {
				out[name]++
			}
		}
	}
	return out
}

// killJobsOn fails every job running on the node at t.
func (c *cluster) killJobsOn(name string, t time.Time) {
	for _, j := range c.Jobs {
		if j.State == JobRunning && slices.Contains(j.Nodes, name) {
			j.State, j.Ended = JobNodeFail, t
		}
	}
}

// requeueJobsOn puts every job running on the node back in the queue, eligible from eligibleAt,
// and returns how many there were.
func (c *cluster) requeueJobsOn(name string, eligibleAt time.Time) int {
	n := 0
	for _, j := range c.Jobs {
		if j.State == JobRunning && slices.Contains(j.Nodes, name) {
			j.Nodes = nil
			j.State, j.Started, j.EligibleAt = JobPending, time.Time{}, eligibleAt
			j.Requeues++
			n++
		}
	}
	return n
}

// SubmitJob queues a job needing nodes workers for d and returns its id. It starts as soon as
// enough workers are in service and idle, possibly within this call. A job bigger than the
// cluster stays pending.
func (b *Backend) SubmitJob(clusterID int64, nodes int, d time.Duration) (int64, error) {
	if nodes < 1 {
		return 0, fmt.Errorf("sim: job of %d nodes", nodes)
	}
	if d <= 0 {
		// A job that ends when it starts would need the scheduler to loop within one instant.
		return 0, fmt.Errorf("sim: job of duration %v", d)
	}
	b.mu.Lock()
	now := b.advanceLocked()
	c, ok := b.st.Clusters[clusterID]
	if !ok {
		b.mu.Unlock()
		return 0, fmt.Errorf("%w %d (submitting a job)", ErrUnknownCluster, clusterID)
	}
	b.st.NextJobID++
	j := &job{
		ID:         b.st.NextJobID,
		Size:       nodes,
		State:      JobPending,
		Duration:   d,
		Submitted:  now,
		EligibleAt: now,
	}
	c.Jobs = append(c.Jobs, j)
	b.st.advance(now)
	snap, err := b.snapshotLocked()
	b.mu.Unlock()
	if err != nil {
		return j.ID, err
	}
	return j.ID, b.save(snap)
}

// CancelJob cancels a pending or running job, freeing its nodes. Cancelling a finished job is
// a no-op.
func (b *Backend) CancelJob(clusterID, jobID int64) error {
	b.mu.Lock()
	now := b.advanceLocked()
	c, ok := b.st.Clusters[clusterID]
	if !ok {
		b.mu.Unlock()
		return fmt.Errorf("%w %d (cancelling job %d)", ErrUnknownCluster, clusterID, jobID)
	}
	i := slices.IndexFunc(c.Jobs, func(j *job) bool { return j.ID == jobID })
	if i < 0 {
		b.mu.Unlock()
		return fmt.Errorf("sim: no job %d in cluster %d", jobID, clusterID)
	}
	j := c.Jobs[i]
	if j.State != JobPending && j.State != JobRunning {
		b.mu.Unlock()
		return nil
	}
	j.State, j.Ended = JobCancelled, now
	b.st.advance(now)
	snap, err := b.snapshotLocked()
	b.mu.Unlock()
	if err != nil {
		return err
	}
	return b.save(snap)
}

// Jobs returns copies of every job of the cluster in submission order, nil for an unknown
// cluster. A pending job has no Nodes.
func (b *Backend) Jobs(clusterID int64) []Job {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.advanceLocked()
	c, ok := b.st.Clusters[clusterID]
	if !ok {
		return nil
	}
	out := make([]Job, 0, len(c.Jobs))
	for _, j := range c.Jobs {
		out = append(out, Job{
			ID:        j.ID,
			ClusterID: clusterID,
			Size:      j.Size,
			Nodes:     slices.Clone(j.Nodes),
			State:     j.State,
			Duration:  j.Duration,
			Submitted: j.Submitted,
			Started:   j.Started,
			Ended:     j.Ended,
			Requeues:  j.Requeues,
		})
	}
	return out
}
