package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trainyard/trainyard"
	"github.com/trainyard/trainyard/api/openapitest"
	"github.com/trainyard/trainyard/backend/sim"
	"github.com/trainyard/trainyard/internal/testenv"
)

// End-to-end tests of the built binary: bootstrap, serve, the API over real HTTP, and kill -9.

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "trainyard-e2e")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "trainyard")
	out, err := exec.Command("go", "build", "-race", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building trainyard: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type creds struct {
	AccountID int64  `json:"account_id"`
	UserID    int64  `json:"user_id"`
	ProjectID int64  `json:"project_id"`
	APIKey    string `json:"api_key"`
	AuthToken string `json:"auth_token"`
	IAMID     int64  `json:"iam_id"`
}

func command(t *testing.T, args ...string) creds {
	t.Helper()
	out, err := exec.Command(binary, args...).Output()
	if err != nil {
		t.Fatalf("trainyard %s: %v", strings.Join(args, " "), err)
	}
	var c creds
	if err := json.Unmarshal(out, &c); err != nil || bytes.Count(bytes.TrimSpace(out), []byte("\n")) != 0 {
		t.Fatalf("trainyard %s printed %q, want one JSON object", strings.Join(args, " "), out)
	}
	return c
}

// server is one trainyard serve process.
type server struct {
	t    *testing.T
	cmd  *exec.Cmd
	addr string
	log  *bytes.Buffer
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startServer(t *testing.T, data, addr string, latency time.Duration) *server {
	t.Helper()
	s := &server{t: t, addr: addr, log: &bytes.Buffer{}}
	s.cmd = exec.Command(binary, "serve", "--backend", "sim", "--data", data, "--listen", addr, "--sim-op-latency", latency.String())
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.kill() })
	waitReady(t, s)
	return s
}

// kill ends the server with SIGKILL: no shutdown code of it runs.
func (s *server) kill() {
	if s.cmd.ProcessState != nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGKILL)
	s.cmd.Wait()
}

// client calls the API of a server; every answer is checked against the OpenAPI document.
type client struct {
	t    *testing.T
	base string
	c    creds
	http *http.Client
}

func newClient(t *testing.T, base string, c creds) *client {
	return &client{t: t, base: base, c: c, http: &http.Client{Transport: openapitest.New(t).Transport(t, nil), Timeout: 30 * time.Second}}
}

func (c *client) call(method, path string, body any) (int, json.RawMessage, http.Header) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	u := fmt.Sprintf("%s/myaccount/api/v1/gpu%s%sapikey=%s&project_id=%d&location=Delhi", c.base, path, sep, c.c.APIKey, c.c.ProjectID)
	req, _ := http.NewRequest(method, u, rd)
	req.Header.Set("Authorization", "Bearer "+c.c.AuthToken)
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var env struct {
		Code int             `json:"code"`
		Data json.RawMessage `json:"data"`
	}
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &env); err != nil || env.Code != resp.StatusCode {
		c.t.Fatalf("%s %s: not the envelope: %s", method, path, raw)
	}
	return resp.StatusCode, env.Data, resp.Header
}

func (c *client) must(want int, method, path string, body any, into any) http.Header {
	c.t.Helper()
	status, data, h := c.call(method, path, body)
	if status != want {
		c.t.Fatalf("%s %s: %d, want %d: %s", method, path, status, want, data)
	}
	if into != nil {
		if err := json.Unmarshal(data, into); err != nil {
			c.t.Fatal(err)
		}
	}
	return h
}

func (c *client) waitAction(clusterID, actionID int64, timeout time.Duration) testenv.Action {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var a testenv.Action
		status, data, _ := c.call("GET", fmt.Sprintf("/distributed_jobs_v2/cluster/%d/actions/%d/", clusterID, actionID), nil)
		if status == http.StatusOK {
			json.Unmarshal(data, &a)
			if trainyard.Terminal(a.Status) {
				return a
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("action %d not finished after %s: %s", actionID, timeout, data)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func actionID(t *testing.T, h http.Header) int64 {
	var id int64
	if _, err := fmt.Sscan(h.Get("Trainyard-Action-Id"), &id); err != nil {
		t.Fatalf("no action id: %v", h)
	}
	return id
}

func newCluster(c *client, name string, workers int) int64 {
	var key struct {
		PK int64 `json:"pk"`
	}
	c.must(200, "POST", "/ssh_keys/", map[string]any{"label": name, "ssh_key": testenv.NewPublicKey(name)}, &key)
	var g struct {
		ID int64 `json:"id"`
	}
	c.must(201, "POST", "/security_groups/", map[string]any{"name": name, "rules": []any{}}, &g)
	var cl struct {
		ID int64 `json:"id"`
	}
	h := c.must(201, "POST", "/distributed_jobs_v2/cluster/", testenv.ClusterBody(name, workers, key.PK, g.ID), &cl)
	if a := c.waitAction(cl.ID, actionID(c.t, h), 60*time.Second); a.Status != "succeeded" {
		c.t.Fatalf("create: %+v", a)
	}
	return cl.ID
}

func TestBinaryBootstrapServeAndIAM(t *testing.T) {
	data := t.TempDir()
	owner := command(t, "bootstrap", "--data", data, "--email", "owner@example.com", "--name", "Owner")
	if owner.AccountID == 0 || owner.ProjectID == 0 || !strings.HasPrefix(owner.APIKey, "tyk_") {
		t.Fatalf("bootstrap: %+v", owner)
	}
	srv := startServer(t, data, freeAddr(t), 5*time.Millisecond)
	c := newClient(t, "http://"+srv.addr, owner)
	id := newCluster(c, "e2e", 2)

	// bootstrap and iam grant work while the server runs; a second bootstrap issues a new pair.
	again := command(t, "bootstrap", "--data", data, "--email", "owner@example.com")
	if again.APIKey == owner.APIKey || again.AccountID != owner.AccountID {
		t.Errorf("second bootstrap: %+v", again)
	}
	viewer := command(t, "iam", "grant", "--data", data, "--owner", "owner@example.com", "--user", "viewer@example.com", "--role", "viewer")
	if viewer.IAMID == 0 || viewer.APIKey == "" {
		t.Fatalf("iam grant: %+v", viewer)
	}
	vc := newClient(t, c.base, viewer)
	vc.c.ProjectID = owner.ProjectID
	vc.must(200, "GET", fmt.Sprintf("/distributed_jobs_v2/cluster/%d/?active_iam=%d", id, viewer.IAMID), nil, nil)
	vc.must(403, "PUT", fmt.Sprintf("/distributed_jobs_v2/cluster/%d/?active_iam=%d", id, viewer.IAMID), map[string]any{"action": "restart_workers"}, nil)

	// keys revoke works while the server runs, and the key is refused at the next call.
	ac := newClient(t, c.base, again)
	ac.must(http.StatusOK, "GET", "/projects/", nil, nil)
	if out, err := exec.Command(binary, "keys", "revoke", "--data", data, "--api-key", again.APIKey).CombinedOutput(); err != nil {
		t.Fatalf("keys revoke: %v: %s", err, out)
	}
	ac.must(http.StatusUnauthorized, "GET", "/projects/", nil, nil)
	c.must(http.StatusOK, "GET", "/projects/", nil, nil) // the owner's other pair still works

	// Bad flags are refused with a non-zero exit.
	if err := exec.Command(binary, "iam", "grant", "--data", data, "--owner", "owner@example.com", "--user", "x@example.com", "--role", "god").Run(); err == nil {
		t.Error("iam grant with role god succeeded")
	}
	if err := exec.Command(binary, "bootstrap", "--data", data).Run(); err == nil {
		t.Error("bootstrap without --email succeeded")
	}
	// A graceful stop answers SIGTERM.
	srv.cmd.Process.Signal(syscall.SIGTERM)
	if err := srv.cmd.Wait(); err != nil {
		t.Errorf("serve after SIGTERM: %v\n%s", err, srv.log)
	}
}

// TestKillDashNineMidAction kills the server with SIGKILL at several points of node-changing
// actions, restarts it each time, and checks that every action completes with the right result:
// every worker restarted exactly once per restart action, every new node present exactly once.
func TestKillDashNineMidAction(t *testing.T) {
	data := t.TempDir()
	owner := command(t, "bootstrap", "--data", data, "--email", "owner@example.com")
	addr := freeAddr(t)
	const latency = 40 * time.Millisecond
	srv := startServer(t, data, addr, latency)
	c := newClient(t, "http://"+addr, owner)
	const workers = 4
	id := newCluster(c, "crash", workers)

	type trial struct {
		body  map[string]any
		kills []time.Duration // after the request, kill -9 at these offsets (restarting between)
	}
	trials := []trial{
		{map[string]any{"action": "restart_workers", "max_unavailable": 1}, []time.Duration{30 * time.Millisecond, 250 * time.Millisecond}},
		{map[string]any{"action": "update_image", "image_version_id": 2, "max_unavailable": 2}, []time.Duration{0, 120 * time.Millisecond}},
		{map[string]any{"action": "scale_cluster", "additional_nodes": 2}, []time.Duration{20 * time.Millisecond}},
		{map[string]any{"action": "restart_cluster", "max_unavailable": "50%"}, []time.Duration{60 * time.Millisecond, 60 * time.Millisecond}},
	}
	for _, tr := range trials {
		h := c.must(200, "PUT", fmt.Sprintf("/distributed_jobs_v2/cluster/%d/", id), tr.body, nil)
		aid := actionID(t, h)
		for _, after := range tr.kills {
			time.Sleep(after)
			srv.kill()
			srv = startServer(t, data, addr, latency)
		}
		a := c.waitAction(id, aid, 60*time.Second)
		if a.Status != "succeeded" {
			t.Fatalf("%v after kill -9: %+v\n%s", tr.body["action"], a, srv.log)
		}
	}
	srv.kill()

	// Read the nodes as the sim left them on disk.
	b, err := sim.New(sim.Options{StatePath: filepath.Join(data, "sim-nodes.json")})
	if err != nil {
		t.Fatal(err)
	}
	ctl, ok := b.Node(trainyard.NodeRef{ClusterID: id, Name: fmt.Sprintf("c%d-ctl", id)})
	// controller: created (1), update_image (2), restart_cluster (3)
	if !ok || ctl.Boots != 3 || ctl.ImageVersionID != 2 {
		t.Errorf("controller: ok %v boots %d image %d, want 3 boots on image 2", ok, ctl.Boots, ctl.ImageVersionID)
	}
	for i := 1; i <= workers+2; i++ {
		n, ok := b.Node(trainyard.NodeRef{ClusterID: id, Name: fmt.Sprintf("c%d-w%d", id, i)})
		want := 4 // created, restart_workers, update_image, restart_cluster
		if i > workers {
			want = 2 // created by the scale, on image 2 already; restart_cluster
		}
		if !ok || n.Boots != want || n.ImageVersionID != 2 || n.DrainReason != "" {
			t.Errorf("worker %d: ok %v boots %d (want %d) image %d drain %q", i, ok, n.Boots, want, n.ImageVersionID, n.DrainReason)
		}
	}
	obs, _ := b.Observe(t.Context(), id)
	if len(obs) != workers+3 {
		t.Errorf("%d nodes exist, want %d: no node lost or duplicated", len(obs), workers+3)
	}
}
