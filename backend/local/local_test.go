package local_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/trainyard/trainyard"
	"github.com/trainyard/trainyard/backend/local"
	"github.com/trainyard/trainyard/config"
	"github.com/trainyard/trainyard/internal/testenv"
	"github.com/trainyard/trainyard/reconcile"
)

// These tests run real daemons (munged, slurmctld, slurmd, sshd) in network namespaces and talk
// to them with real clients (ssh, srun, sbatch, TCP). They need root and the packages .ci/run
// installs; elsewhere they are skipped with the reason.

const tag = "t"

var nodeRange = netip.MustParsePrefix("198.19.0.0/16")

type realEnv struct {
	*testenv.Env
	B       *local.Backend
	Dir     string
	DataDir string
}

func requireLocal(t *testing.T) {
	t.Helper()
	if err := local.Check(); err != nil {
		t.Skipf("the local backend cannot run here: %v", err)
	}
}

// newRealEnv starts trainyard on the local backend. dir and dataDir, when not empty, are reused
// (a restart of the control plane).
func newRealEnv(t *testing.T, dir, dataDir string, cleanup bool) *realEnv {
	t.Helper()
	requireLocal(t)
	ctx := context.Background()
	if dir == "" {
		var err error
		// Under /var/tmp, not t.TempDir(): munged runs as the munge user and must reach its files.
		if dir, err = os.MkdirTemp("/var/tmp", "trainyard-test-"); err != nil {
			t.Fatal(err)
		}
		os.Chmod(dir, 0o755)
	}
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	cfg := config.Default()
	var images []trainyard.ImageVersion
	for _, img := range cfg.Images {
		images = append(images, img.Versions...)
	}
	var pools []netip.Prefix
	for _, p := range cfg.ReservedIPPools {
		pools = append(pools, p)
	}
	b, err := local.New(ctx, local.Options{Dir: dir, NodeRange: nodeRange, IPPools: pools, Images: images, Tag: tag})
	if err != nil {
		t.Fatal(err)
	}
	e := testenv.New(t, testenv.Options{Backend: b, Config: cfg, DataDir: dataDir, Reconcile: reconcile.Options{
		PollInterval: 200 * time.Millisecond, ResyncInterval: 500 * time.Millisecond, BootTimeout: 90 * time.Second, BlockedTimeout: 90 * time.Second}})
	r := &realEnv{Env: e, B: b, Dir: dir, DataDir: dataDir}
	if cleanup {
		t.Cleanup(func() {
			e.Close()
			for id := int64(1); id <= 10; id++ {
				if err := b.DeleteCluster(ctx, id); err != nil {
					t.Errorf("cleanup of cluster %d: %v", id, err)
				}
			}
			b.Teardown(ctx)
			os.RemoveAll(dir)
		})
	}
	return r
}

// keyPair writes a new private key for ssh -i and returns its path and public line.
func keyPair(t *testing.T, name string) (string, string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, name)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, _ := ssh.NewPublicKey(pub)
	return path, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " " + name
}

// sshRun runs a command on a node as root with the real OpenSSH client.
func sshRun(key, addr, command string) (string, error) {
	out, err := exec.Command("ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", "root@"+addr, command).CombinedOutput()
	return string(out), err
}

func mustSSH(t *testing.T, key, addr, command string) string {
	t.Helper()
	out, err := sshRun(key, addr, command)
	if err != nil {
		t.Fatalf("ssh %s %q: %v: %s", addr, command, err, out)
	}
	return out
}

type nodeView struct {
	Name         string `json:"name"`
	Role         string `json:"role"`
	Address      string `json:"address"`
	Status       string `json:"status"`
	ImageVersion string `json:"image_version"`
	BootID       string `json:"boot_id"`
}

func (r *realEnv) nodes(t *testing.T, id int64) map[string]nodeView {
	t.Helper()
	var ns []nodeView
	r.Must(http.StatusOK, r.Owner, "GET", testenv.ClusterPath(id)+"nodes/", nil, nil).Into(t, &ns)
	out := map[string]nodeView{}
	for _, n := range ns {
		out[n.Name] = n
	}
	return out
}

func (r *realEnv) addKey(t *testing.T, label, pub string) int64 {
	t.Helper()
	var k struct {
		PK int64 `json:"pk"`
	}
	r.Must(http.StatusOK, r.Owner, "POST", "/ssh_keys/", nil, map[string]any{"label": label, "ssh_key": pub}).Into(t, &k)
	return k.PK
}

func (r *realEnv) createCluster(t *testing.T, name string, workers int, keyID int64, extra map[string]any) testenv.Cluster {
	t.Helper()
	g := r.AddGroup(r.Owner, name+"-ssh", 22)
	var c testenv.Cluster
	body := testenv.ClusterBody(name, workers, keyID, g)
	for k, v := range extra {
		body[k] = v
	}
	r.Must(http.StatusCreated, r.Owner, "POST", "/distributed_jobs_v2/cluster/", nil, body).Into(t, &c)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		c = r.GetCluster(r.Owner, c.ID)
		if c.Status == "Running" {
			return c
		}
		if c.Status == "Failed" || time.Now().After(deadline) {
			a := r.GetAction(r.Owner, c.ID, c.LastAction.ID)
			t.Fatalf("cluster %s: %s: %+v", name, c.Status, a)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func (r *realEnv) act(t *testing.T, id int64, body map[string]any) testenv.Action {
	t.Helper()
	a := r.ActOK(r.Owner, id, body)
	if a.Status != "succeeded" {
		t.Fatalf("%v: %s: %s %+v", body["action"], a.Status, a.Error, a.Steps)
	}
	return a
}

var jobIDRE = regexp.MustCompile(`Submitted batch job (\d+)`)

func submit(t *testing.T, key, ctl, args string) string {
	t.Helper()
	out := mustSSH(t, key, ctl, "sbatch "+args)
	m := jobIDRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("sbatch %s: %s", args, out)
	}
	return m[1]
}

func jobField(t *testing.T, key, ctl, job, field string) string {
	t.Helper()
	out := mustSSH(t, key, ctl, "scontrol show job "+job)
	m := regexp.MustCompile(`\b` + field + `=(\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("job %s has no %s: %s", job, field, out)
	}
	return m[1]
}

func waitJob(t *testing.T, key, ctl, job, state string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for jobField(t, key, ctl, job, "JobState") != state {
		if time.Now().After(deadline) {
			t.Fatalf("job %s never %s (is %s)", job, state, jobField(t, key, ctl, job, "JobState"))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func workersOf(ns map[string]nodeView) []nodeView {
	var out []nodeView
	for _, n := range ns {
		if n.Role == trainyard.RoleWorker {
			out = append(out, n)
		}
	}
	slices.SortFunc(out, func(a, b nodeView) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func controllerOf(ns map[string]nodeView) nodeView {
	for _, n := range ns {
		if n.Role == trainyard.RoleController {
			return n
		}
	}
	return nodeView{}
}

// listenIn opens a TCP listener inside a node's network namespace, as a service on the node
// would, and answers every connection with "ok".
func listenIn(t *testing.T, netns string, port int) {
	t.Helper()
	ln := func() net.Listener {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		defer self.Close()
		target, err := os.Open(netns)
		if err != nil {
			t.Fatal(err)
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			t.Fatal(err)
		}
		defer unix.Setns(int(self.Fd()), unix.CLONE_NEWNET)
		l, err := net.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}()
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("ok\n"))
			c.Close()
		}
	}()
}

func reachable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	buf := make([]byte, 3)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _ := c.Read(buf)
	return string(buf[:n]) == "ok\n"
}

// TestEveryActionOnRealNodes takes one real cluster through every action and checks each
// action's effect with real clients.
func TestEveryActionOnRealNodes(t *testing.T) {
	r := newRealEnv(t, "", "", true)
	k1, pub1 := keyPair(t, "k1")
	k2, pub2 := keyPair(t, "k2")
	id1 := r.addKey(t, "k1", pub1)
	id2 := r.addKey(t, "k2", pub2)

	// create: Running only once every worker is idle; ssh and srun work.
	// The script leaves a process behind, as agents do: the node must not wait for it, and
	// delete must end it.
	script := fmt.Sprintf("#!/bin/sh\nhostname > %s/lifecycle-$(hostname)\nsleep 600 &\n", r.Dir)
	c := r.createCluster(t, "real", 2, id1, map[string]any{"script_added": true, "lifecycle_script": script})
	ns := r.nodes(t, c.ID)
	ctl := controllerOf(ns).Address
	for name := range ns {
		if got, err := os.ReadFile(filepath.Join(r.Dir, "lifecycle-"+name)); err != nil || strings.TrimSpace(string(got)) != name {
			t.Errorf("the lifecycle script did not run on %s: %v %q", name, err, got)
		}
	}
	out := mustSSH(t, k1, ctl, "sinfo -h -N -o '%N %t'")
	for _, w := range workersOf(ns) {
		if !strings.Contains(out, w.Name+" idle") {
			t.Errorf("sinfo on the controller does not show %s idle: %s", w.Name, out)
		}
	}
	if got := strings.Fields(mustSSH(t, k1, ctl, "srun -N2 hostname")); !sameSet(got, names(workersOf(ns))) {
		t.Errorf("srun -N2 hostname printed %v, want every worker", got)
	}

	// update_ssh_keys: the new key logs in everywhere, the removed one nowhere.
	r.act(t, c.ID, map[string]any{"action": "update_ssh_keys", "ssh_key_ids": []int64{id2}})
	for _, n := range ns {
		if _, err := sshRun(k2, n.Address, "true"); err != nil {
			t.Errorf("new key refused on %s", n.Name)
		}
		if _, err := sshRun(k1, n.Address, "true"); err == nil {
			t.Errorf("removed key still logs in on %s", n.Name)
		}
	}

	// restart_workers, drain=wait: new slurmd processes, the same slurmctld, a running job finishes.
	before := r.nodes(t, c.ID)
	job := submit(t, k2, ctl, "-N1 --wrap 'sleep 6'")
	waitJob(t, k2, ctl, job, "RUNNING")
	r.act(t, c.ID, map[string]any{"action": "restart_workers", "drain": "wait", "max_unavailable": 1})
	after := r.nodes(t, c.ID)
	if controllerOf(after).BootID != controllerOf(before).BootID {
		t.Errorf("restart_workers restarted slurmctld: %s -> %s", controllerOf(before).BootID, controllerOf(after).BootID)
	}
	for _, w := range workersOf(after) {
		if w.BootID == before[w.Name].BootID || w.BootID == "" {
			t.Errorf("slurmd of %s is the same process (%s)", w.Name, w.BootID)
		}
	}
	if st := jobField(t, k2, ctl, job, "JobState"); st != "COMPLETED" {
		t.Errorf("the job running during restart_workers (drain=wait) ended %s", st)
	}

	// restart_workers, drain=requeue: the running job is requeued, not lost.
	job = submit(t, k2, ctl, "-N1 --wrap 'sleep 300'")
	waitJob(t, k2, ctl, job, "RUNNING")
	r.act(t, c.ID, map[string]any{"action": "restart_workers", "drain": "requeue", "max_unavailable": 1})
	if restarts := jobField(t, k2, ctl, job, "Restarts"); restarts == "0" {
		t.Errorf("the job was not requeued (Restarts=%s)", restarts)
	}
	mustSSH(t, k2, ctl, "scancel "+job)

	// update_image, drain=wait: every node on the new version, a running job finishes, jobs read the marker.
	job = submit(t, k2, ctl, "-N1 --wrap 'sleep 5'")
	waitJob(t, k2, ctl, job, "RUNNING")
	// The workers roll first under the same slurmctld, which restarts only in its own, last batch:
	// while the controller's step has not started, slurmctld is the process it was.
	ctlBoot := controllerOf(r.nodes(t, c.ID)).BootID
	resp := r.Must(http.StatusOK, r.Owner, "PUT", testenv.ClusterPath(c.ID), nil,
		map[string]any{"action": "update_image", "image_version_id": 2, "drain": "wait", "max_unavailable": 1})
	imageAction := resp.ActionID()
	for polls := 0; ; polls++ {
		boot := controllerOf(r.nodes(t, c.ID)).BootID // read before the step's status: see below
		a := r.GetAction(r.Owner, c.ID, imageAction)
		ctlStep := ""
		for _, st := range a.Steps {
			if st.Node == controllerOf(ns).Name {
				ctlStep = st.Status
			}
		}
		if ctlStep != "pending" {
			if polls == 0 {
				t.Log("the workers rolled before the first look")
			}
			break
		}
		if boot != ctlBoot {
			t.Errorf("slurmctld changed (%s -> %s) while only workers were rolling", ctlBoot, boot)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if a := r.WaitAction(r.Owner, c.ID, imageAction); a.Status != "succeeded" {
		t.Fatalf("update_image: %+v", a)
	}
	for _, n := range r.nodes(t, c.ID) {
		if n.ImageVersion != "v2-slurm22.05-debian12" {
			t.Errorf("%s runs %q after update_image", n.Name, n.ImageVersion)
		}
	}
	if st := jobField(t, k2, ctl, job, "JobState"); st != "COMPLETED" {
		t.Errorf("the job running during update_image ended %s", st)
	}
	if got := mustSSH(t, k2, ctl, "srun -N2 cat /etc/trainyard/image-version"); strings.Count(got, "v2-slurm22.05-debian12") != 2 {
		t.Errorf("jobs read the image marker as %q", got)
	}

	// scale_cluster: new nodes join without a slurmctld restart; a running job is undisturbed.
	before = r.nodes(t, c.ID)
	job = submit(t, k2, ctl, "-N2 --wrap 'sleep 8'")
	waitJob(t, k2, ctl, job, "RUNNING")
	r.act(t, c.ID, map[string]any{"action": "scale_cluster", "additional_nodes": 1})
	after = r.nodes(t, c.ID)
	if controllerOf(after).BootID != controllerOf(before).BootID {
		t.Errorf("scale_cluster restarted slurmctld")
	}
	if st := jobField(t, k2, ctl, job, "JobState"); st != "RUNNING" && st != "COMPLETED" {
		t.Errorf("the job on the old nodes is %s after the scale", st)
	}
	waitJob(t, k2, ctl, job, "COMPLETED")
	if got := strings.Fields(mustSSH(t, k2, ctl, "srun -N3 hostname")); !sameSet(got, names(workersOf(after))) || len(got) != 3 {
		t.Errorf("srun -N3 hostname printed %v", got)
	}

	// restart_cluster: slurmctld and every slurmd restarted; a queued job is still queued.
	before = after
	held := submit(t, k2, ctl, "--hold -N1 --wrap 'true'")
	r.act(t, c.ID, map[string]any{"action": "restart_cluster", "max_unavailable": "50%"})
	after = r.nodes(t, c.ID)
	for name, n := range after {
		if n.BootID == before[name].BootID {
			t.Errorf("%s was not restarted by restart_cluster", name)
		}
	}
	if st := jobField(t, k2, ctl, held, "JobState"); st != "PENDING" {
		t.Errorf("the queued job is %s after restart_cluster", st)
	}

	// attach_ip / detach_ip: ssh through the reserved IP works only while attached.
	var ip struct {
		ID        int64  `json:"id"`
		IPAddress string `json:"ip_address"`
	}
	r.Must(http.StatusOK, r.Owner, "POST", "/reserved_ips/", nil, nil).Into(t, &ip)
	r.act(t, c.ID, map[string]any{"action": "attach_ip", "reserved_ip_id": ip.ID})
	if out, err := sshRun(k2, ip.IPAddress, "hostname"); err != nil || strings.TrimSpace(out) != controllerOf(after).Name {
		t.Errorf("ssh root@%s after attach: %v %q", ip.IPAddress, err, out)
	}
	r.act(t, c.ID, map[string]any{"action": "detach_ip", "reserved_ip_id": ip.ID, "ip_type": "reserved"})
	if _, err := sshRun(k2, ip.IPAddress, "hostname"); err == nil {
		t.Errorf("ssh root@%s still works after detach", ip.IPAddress)
	}

	// Security groups filter traffic from outside; traffic inside the cluster is never blocked.
	w1 := workersOf(after)[0]
	listenIn(t, "/run/netns/ty"+tag+"-"+w1.Name, 8080)
	target := w1.Address + ":8080"
	if reachable(target) {
		t.Errorf("port 8080 open before any group opens it")
	}
	g := r.AddGroup(r.Owner, "web", 8080)
	r.act(t, c.ID, map[string]any{"action": "add_security_group", "security_groups_ids": []int64{g}})
	if !reachable(target) {
		t.Errorf("port 8080 not reachable from the host after add_security_group")
	}
	r.act(t, c.ID, map[string]any{"action": "remove_security_group", "security_group_id": g})
	if reachable(target) {
		t.Errorf("port 8080 still reachable after remove_security_group")
	}
	if out, err := sshRun(k2, ctl, fmt.Sprintf("timeout 3 bash -c 'cat </dev/tcp/%s/8080'", w1.Address)); err != nil || strings.TrimSpace(out) != "ok" {
		t.Errorf("the controller cannot reach a worker's port inside the cluster: %v %q", err, out)
	}
	if got := strings.Fields(mustSSH(t, k2, ctl, "srun -N3 hostname")); len(got) != 3 {
		t.Errorf("srun after the group changes: %v", got)
	}

	// Logs of each node's daemons are kept and shown.
	var logs string
	r.Must(http.StatusOK, r.Owner, "GET", testenv.ClusterPath(c.ID)+"nodes/"+w1.Name+"/logs/", map[string][]string{"daemon": {"slurmd"}}, nil).Into(t, &logs)
	if !strings.Contains(logs, "slurmd") {
		t.Errorf("slurmd log of %s: %q", w1.Name, logs)
	}

	// delete: nothing of the cluster is left.
	r.deleteAndCheckClean(t, c.ID)
}

func names(ns []nodeView) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.Name)
	}
	return out
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// deleteAndCheckClean deletes a cluster through the API and checks that no process, namespace,
// interface, mount, route or file of it is left.
func (r *realEnv) deleteAndCheckClean(t *testing.T, id int64) {
	t.Helper()
	ns := r.nodes(t, id)
	resp := r.Must(http.StatusOK, r.Owner, "DELETE", testenv.ClusterPath(id), nil, nil)
	aid := resp.ActionID()
	if a := r.WaitAction(r.Owner, id, aid); a.Status != "succeeded" {
		t.Fatalf("delete: %+v", a)
	}
	clusterDir := filepath.Join(r.Dir, "clusters", fmt.Sprintf("c%d", id))
	if _, err := os.Stat(clusterDir); err == nil {
		t.Errorf("%s is left", clusterDir)
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		cmdline, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), clusterDir) {
			t.Errorf("process %s is left: %s", p.Name(), strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	netnsList, _ := exec.Command("ip", "netns", "list").Output()
	links, _ := exec.Command("ip", "-o", "link").Output()
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	routes, _ := exec.Command("ip", "route", "show", "table", "all").Output()
	for name := range ns {
		if strings.Contains(string(netnsList), "ty"+tag+"-"+name) {
			t.Errorf("network namespace of %s is left", name)
		}
		if strings.Contains(string(mounts), "ty"+tag+"-"+name) {
			t.Errorf("a mount of %s is left", name)
		}
	}
	for _, prefix := range []string{fmt.Sprintf("ty%sb%d", tag, id), fmt.Sprintf("ty%sv%dx", tag, id)} {
		if strings.Contains(string(links), prefix) {
			t.Errorf("interface %s* is left", prefix)
		}
		if strings.Contains(string(routes), prefix) {
			t.Errorf("a route through %s* is left", prefix)
		}
	}
	if strings.Contains(string(mounts), clusterDir) {
		t.Errorf("a mount of %s is left", clusterDir)
	}
}

// TestRestartReadoptsRunningClusters stops the control plane in the middle of an action, starts
// a new one on the same store and host, and checks that the action completes and that every
// daemon runs exactly once.
func TestRestartReadoptsRunningClusters(t *testing.T) {
	first := newRealEnv(t, "", "", false)
	key, pub := keyPair(t, "k")
	c := first.createCluster(t, "readopt", 2, first.addKey(t, "k", pub), nil)
	ctl := controllerOf(first.nodes(t, c.ID)).Address
	job := submit(t, key, ctl, "-N1 --wrap 'sleep 4'")
	waitJob(t, key, ctl, job, "RUNNING")
	r := first.Must(http.StatusOK, first.Owner, "PUT", testenv.ClusterPath(c.ID), nil, map[string]any{"action": "restart_workers", "max_unavailable": 1})
	aid := r.ActionID()
	time.Sleep(time.Second) // the action waits for the job's node to drain
	first.Close()

	second := newRealEnv(t, first.Dir, first.DataDir, true)
	second.Owner.APIKey, second.Owner.AuthToken = first.Owner.APIKey, first.Owner.AuthToken
	if a := second.WaitAction(second.Owner, c.ID, aid); a.Status != "succeeded" {
		t.Fatalf("action after the restart: %+v", a)
	}
	if st := jobField(t, key, ctl, job, "JobState"); st != "COMPLETED" {
		t.Errorf("job ended %s", st)
	}
	// Exactly one of each daemon: nothing orphaned, nothing started twice.
	clusterDir := filepath.Join(first.Dir, "clusters", fmt.Sprintf("c%d", c.ID))
	counts := map[string]int{}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		comm, err := os.ReadFile(filepath.Join("/proc", p.Name(), "comm"))
		if err != nil {
			continue
		}
		name := strings.TrimSpace(string(comm))
		switch name {
		case "slurmctld", "slurmd", "munged", "sshd":
			cmdline, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
			if strings.Contains(string(cmdline), clusterDir) || name == "slurmctld" || name == "slurmd" {
				if inCluster(p.Name(), c.ID) || strings.Contains(string(cmdline), clusterDir) {
					counts[name]++
				}
			}
		}
	}
	want := map[string]int{"slurmctld": 1, "slurmd": 2, "munged": 1, "sshd": 3}
	for d, n := range want {
		if counts[d] != n {
			t.Errorf("%d %s processes of the cluster, want %d (all: %v)", counts[d], d, n, counts)
		}
	}
}

// inCluster reports whether a process runs in the network namespace of one of the cluster's nodes.
func inCluster(pid string, clusterID int64) bool {
	self, err := os.Readlink(filepath.Join("/proc", pid, "ns", "net"))
	if err != nil {
		return false
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), fmt.Sprintf("ty%s-c%d-", tag, clusterID)) {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(filepath.Join("/run/netns", e.Name()), &st) == nil && self == fmt.Sprintf("net:[%d]", st.Ino) {
			return true
		}
	}
	return false
}

// TestRangesThatWouldLeaveTheMachineAreRefused: a node range or pool that overlaps a route of the
// machine, or holds its nameserver, is refused before anything is changed.
func TestRangesThatWouldLeaveTheMachineAreRefused(t *testing.T) {
	requireLocal(t)
	ctx := context.Background()
	out, err := exec.Command("ip", "-j", "-4", "route", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`"dst":"(\d+\.\d+\.\d+\.\d+/\d+)"`).FindStringSubmatch(string(out))
	if m == nil {
		t.Skip("this machine has no route but the default one to overlap")
	}
	own := netip.MustParsePrefix(m[1])
	wide := netip.PrefixFrom(own.Addr(), 16).Masked()
	dir := t.TempDir()
	if _, err := local.New(ctx, local.Options{Dir: dir, NodeRange: wide, Tag: tag}); err == nil || !strings.Contains(err.Error(), "overlaps") {
		t.Errorf("node range %s over the machine's %s: %v", wide, own, err)
	}
	if _, err := local.New(ctx, local.Options{Dir: dir, NodeRange: nodeRange, IPPools: []netip.Prefix{own}, Tag: tag}); err == nil {
		t.Errorf("pool %s, the machine's own network, was accepted", own)
	}
	routes, _ := exec.Command("ip", "route", "show", "proto", "77").Output()
	if strings.Contains(string(routes), wide.String()) || strings.Contains(string(routes), own.String()) {
		t.Errorf("a refused range was routed: %s", routes)
	}
}
