package main_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/trainyard/trainyard"
	"github.com/trainyard/trainyard/backend/sim"
	"github.com/trainyard/trainyard/internal/pgtest"
	"github.com/trainyard/trainyard/store"
)

// TestReplicasShareWorkAndSurviveKillDashNine runs three replicas on one PostgreSQL database,
// kills the one driving an action with SIGKILL, and checks that another finishes the action
// within a bounded time, with every node changed exactly once.
func TestReplicasShareWorkAndSurviveKillDashNine(t *testing.T) {
	url := pgtest.URL(t)
	shared := filepath.Join(t.TempDir(), "nodes.json")
	owner := command(t, "bootstrap", "--db", url, "--email", "owner@example.com")
	const ttl = time.Second
	replicas := map[string]*server{}
	for _, name := range []string{"r1", "r2", "r3"} {
		s := &server{t: t, addr: freeAddr(t), log: &bytes.Buffer{}}
		s.cmd = exec.Command(binary, "serve", "--db", url, "--backend", "sim", "--data", t.TempDir(), "--sim-state", shared,
			"--sim-op-latency", "20ms", "--replica", name, "--lease-ttl", ttl.String(), "--listen", s.addr)
		s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
		if err := s.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.kill)
		waitReady(t, s)
		replicas[name] = s
	}
	c1 := newClient(t, "http://"+replicas["r1"].addr, owner)
	const workers = 4
	id := newCluster(c1, "replicated", workers)

	// Every replica serves the API.
	for name, s := range replicas {
		c := newClient(t, "http://"+s.addr, owner)
		var cl struct {
			Status string `json:"status"`
		}
		c.must(http.StatusOK, "GET", fmt.Sprintf("/distributed_jobs_v2/cluster/%d/", id), nil, &cl)
		if cl.Status != "Running" {
			t.Errorf("replica %s shows the cluster %s", name, cl.Status)
		}
	}

	db, err := store.Open(url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	holder := func() string {
		var h string
		var until time.Time
		db.Read(context.Background(), func(ctx context.Context, tx *store.Tx) error {
			h, until, _ = tx.LeaseHolder(ctx, id)
			return nil
		})
		if time.Now().After(until) {
			return ""
		}
		return h
	}

	h := c1.must(http.StatusOK, "PUT", fmt.Sprintf("/distributed_jobs_v2/cluster/%d/", id), map[string]any{"action": "restart_workers", "max_unavailable": 1}, nil)
	aid := actionID(t, h)
	var first string
	deadline := time.Now().Add(10 * time.Second)
	for first = holder(); first == ""; first = holder() {
		if time.Now().After(deadline) {
			t.Fatal("no replica took the cluster's lease")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(150 * time.Millisecond) // mid-action
	killed := time.Now()
	replicas[first].kill()
	var second string
	for second = holder(); second == "" || second == first; second = holder() {
		if time.Since(killed) > 3*ttl+5*time.Second {
			t.Fatalf("nobody took over from %s within %s (holder %q)", first, time.Since(killed), second)
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(killed)
	t.Logf("replica %s killed; %s took over after %s", first, second, took)

	var survivor *client
	for name, s := range replicas {
		if name != first {
			survivor = newClient(t, "http://"+s.addr, owner)
			break
		}
	}
	if a := survivor.waitAction(id, aid, 60*time.Second); a.Status != "succeeded" {
		t.Fatalf("action after the kill: %+v", a)
	}
	for _, s := range replicas {
		s.kill()
	}
	b, err := sim.New(sim.Options{StatePath: shared})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= workers; i++ {
		n, ok := b.Node(trainyard.NodeRef{ClusterID: id, Name: fmt.Sprintf("c%d-w%d", id, i)})
		if !ok || n.Boots != 2 || n.DrainReason != "" {
			t.Errorf("worker %d: boots %d (want 2: restarted exactly once) drain %q", i, n.Boots, n.DrainReason)
		}
	}
}

func waitReady(t *testing.T, s *server) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + s.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready: %v\n%s", err, s.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
