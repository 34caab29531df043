package local

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/trainyard/trainyard"
	"github.com/trainyard/trainyard/slurm"
)

// nodeInfo is what the backend records of a node (nodes/NAME/node.json): what it applied, so
// that every operation can tell whether it already took effect.
type nodeInfo struct {
	Name           string                `json:"name"`
	Role           string                `json:"role"`
	Index          int                   `json:"index"`
	Address        string                `json:"address"`
	HolderPID      int                   `json:"holder_pid"`
	ImageVersionID int64                 `json:"image_version_id"`
	ImageVersion   string                `json:"image_version"`
	ImageDir       string                `json:"image_dir"`
	RestartGen     int64                 `json:"restart_gen"`
	Network        trainyard.NetworkSpec `json:"network"`
	LifecycleDone  bool                  `json:"lifecycle_done"`
}

func (b *Backend) nodeDir(id int64, name string) string {
	return filepath.Join(b.clusterDir(id), "nodes", safeName(name))
}

func (b *Backend) netns(name string) string {
	return fmt.Sprintf("ty%s-%s", b.opts.Tag, safeName(name))
}

func (b *Backend) netnsPath(name string) string { return "/run/netns/" + b.netns(name) }

func (b *Backend) hostVeth(id int64, index int) string {
	return fmt.Sprintf("ty%sv%dx%d", b.opts.Tag, id, index)
}

func (b *Backend) node(ref trainyard.NodeRef) (nodeInfo, error) {
	var n nodeInfo
	err := readJSON(filepath.Join(b.nodeDir(ref.ClusterID, ref.Name), "node.json"), &n)
	if errors.Is(err, os.ErrNotExist) {
		return n, fmt.Errorf("local: node %s of cluster %d does not exist", ref.Name, ref.ClusterID)
	}
	return n, err
}

func (b *Backend) saveNode(ref trainyard.NodeRef, n nodeInfo) error {
	return writeJSON(filepath.Join(b.nodeDir(ref.ClusterID, ref.Name), "node.json"), n)
}

// holderAlive reports whether the node's namespace holder runs, in the node's network namespace.
func (b *Backend) holderAlive(n nodeInfo) bool {
	if !pidAlive(n.HolderPID, "sleep") {
		return false
	}
	want, ok1 := nsInode(b.netnsPath(n.Name))
	got, ok2 := nsInode(fmt.Sprintf("/proc/%d/ns/net", n.HolderPID))
	return ok1 && ok2 && want == got
}

// inNode runs a command inside the node's namespaces.
func (b *Backend) inNode(ctx context.Context, n nodeInfo, name string, args ...string) (string, error) {
	full := append([]string{"-t", strconv.Itoa(n.HolderPID), "--net", "--uts", "--mount", "--", name}, args...)
	return b.run(ctx, "nsenter", full...)
}

// EnsureNode creates the node's sandbox and starts its daemons, unless it exists.
func (b *Backend) EnsureNode(ctx context.Context, spec trainyard.NodeSpec) error {
	c, err := b.cluster(spec.ClusterID)
	if err != nil {
		return err
	}
	unlock := b.lock("node-" + b.netns(spec.Name))
	defer unlock()
	if n, err := b.node(spec.NodeRef); err == nil && b.holderAlive(n) {
		// A node half started before a crash is finished: daemons, then the script if it had
		// not completed.
		if err := b.ensureDaemons(ctx, c, n); err != nil {
			return err
		}
		return b.ensureLifecycle(ctx, c, n, spec)
	}
	index := nodeIndex(spec.Name, spec.Role)
	if index < 0 || index > 250 {
		return fmt.Errorf("local: cannot place node %s", spec.Name)
	}
	dir := b.nodeDir(spec.ClusterID, spec.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	n := nodeInfo{Name: spec.Name, Role: spec.Role, Index: index, Address: c.address(index).String(),
		RestartGen: spec.RestartGen, ImageVersionID: spec.Image.ID, ImageVersion: spec.Image.Version, ImageDir: b.imageDir(spec.Image)}
	if err := b.writeImage(spec.Image); err != nil {
		return err
	}
	if err := b.ensureNetns(ctx, c, n); err != nil {
		return err
	}
	// Processes left in the namespace by an attempt that died before it recorded the node
	// (a holder among them) go first: a node has one holder.
	for _, pid := range processesInNetns(b.netnsPath(n.Name)) {
		stopPID(pid)
	}
	if n.HolderPID, err = b.startHolder(ctx, n); err != nil {
		return err
	}
	// Inside the node: its hostname, the cluster's Slurm configuration at the usual path, and
	// the image layer.
	if _, err := b.run(ctx, "nsenter", "-t", strconv.Itoa(n.HolderPID), "--uts", "--", "hostname", n.Name); err != nil {
		return err
	}
	if _, err := b.inNode(ctx, n, "mount", "--bind", filepath.Join(b.clusterDir(c.ID), "etc"), "/etc/slurm"); err != nil {
		return err
	}
	if _, err := b.inNode(ctx, n, "mount", "--bind", "-o", "ro", n.ImageDir, "/etc/trainyard"); err != nil {
		return err
	}
	if err := b.writeKeys(spec.NodeRef, spec.SSHKeys); err != nil {
		return err
	}
	if err := b.applyNetwork(ctx, c, &n, spec.Network); err != nil {
		return err
	}
	if err := b.saveNode(spec.NodeRef, n); err != nil {
		return err
	}
	if err := b.ensureDaemons(ctx, c, n); err != nil {
		return err
	}
	return b.ensureLifecycle(ctx, c, n, spec)
}

// ensureLifecycle runs the node's lifecycle script once, after its daemons started.
func (b *Backend) ensureLifecycle(ctx context.Context, c clusterInfo, n nodeInfo, spec trainyard.NodeSpec) error {
	if n.LifecycleDone || strings.TrimSpace(spec.LifecycleScript) == "" {
		return nil
	}
	if err := b.runLifecycle(ctx, c, n, spec.LifecycleScript); err != nil {
		return err
	}
	n.LifecycleDone = true
	return b.saveNode(spec.NodeRef, n)
}

// nodeIndex is the node's place in the cluster's subnet: 0 for the controller, k for worker k
// (names end in -wK).
func nodeIndex(name, role string) int {
	if role == trainyard.RoleController {
		return 0
	}
	i := strings.LastIndex(name, "-w")
	if i < 0 {
		return -1
	}
	k, err := strconv.Atoi(name[i+2:])
	if err != nil || k < 1 {
		return -1
	}
	return k
}

// ensureNetns makes the node's network namespace and its link to the cluster's bridge.
func (b *Backend) ensureNetns(ctx context.Context, c clusterInfo, n nodeInfo) error {
	ns := b.netns(n.Name)
	if _, err := os.Stat(b.netnsPath(n.Name)); err != nil {
		if _, err := b.run(ctx, "ip", "netns", "add", ns); err != nil {
			return err
		}
	}
	veth := b.hostVeth(c.ID, n.Index)
	if _, err := b.run(ctx, "ip", "-n", ns, "link", "show", "eth0"); err != nil {
		b.run(ctx, "ip", "link", "del", veth) // a half-made pair from before a crash
		peer := veth + "p"
		if _, err := b.run(ctx, "ip", "link", "add", veth, "type", "veth", "peer", "name", peer); err != nil {
			return err
		}
		if _, err := b.run(ctx, "ip", "link", "set", peer, "netns", ns); err != nil {
			return err
		}
		if _, err := b.run(ctx, "ip", "-n", ns, "link", "set", peer, "name", "eth0"); err != nil {
			return err
		}
	}
	steps := [][]string{
		{"ip", "link", "set", veth, "master", b.bridge(c.ID)},
		{"ip", "link", "set", veth, "up"},
		{"ip", "-n", ns, "addr", "replace", n.Address + "/24", "dev", "eth0"},
		{"ip", "-n", ns, "link", "set", "eth0", "up"},
		{"ip", "-n", ns, "link", "set", "lo", "up"},
		{"ip", "-n", ns, "route", "replace", "default", "via", c.gateway().String()},
	}
	for _, s := range steps {
		if _, err := b.run(ctx, s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// startHolder starts the process that holds the node's UTS and mount namespaces (inside its
// network namespace). Its PID is the handle to the node.
func (b *Backend) startHolder(ctx context.Context, n nodeInfo) (int, error) {
	cmd := exec.Command("nsenter", "--net="+b.netnsPath(n.Name), "--",
		"unshare", "--uts", "--mount", "--propagation", "private", "--", "sleep", "infinity")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	go cmd.Wait() // reap it if it ends while we run
	pid := cmd.Process.Pid
	for range 100 {
		if pidAlive(pid, "sleep") {
			return pid, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0, fmt.Errorf("local: the namespace holder of %s did not start", n.Name)
}

// daemon is one of a node's daemons.
type daemon struct {
	comm    string // process name
	pidFile string
	args    []string
}

func (b *Backend) daemons(c clusterInfo, n nodeInfo) []daemon {
	dir := b.clusterDir(c.ID)
	sshd := daemon{comm: "sshd", pidFile: filepath.Join(b.nodeDir(c.ID, n.Name), "sshd.pid"),
		args: []string{"/usr/sbin/sshd", "-f", filepath.Join(b.nodeDir(c.ID, n.Name), "sshd_config"), "-E", filepath.Join(dir, "log", "sshd-"+n.Name+".log")}}
	if n.Role == trainyard.RoleController {
		return []daemon{
			{comm: "slurmctld", pidFile: filepath.Join(dir, "run", "slurmctld.pid"), args: []string{"slurmctld"}},
			sshd,
		}
	}
	conf := fmt.Sprintf("CPUs=%d RealMemory=%d", b.opts.CPUs, b.opts.MemoryMB)
	return []daemon{
		{comm: "slurmd", pidFile: filepath.Join(dir, "run", "slurmd-"+n.Name+".pid"), args: []string{"slurmd", "-Z", "--conf", conf}},
		sshd,
	}
}

// ensureDaemons starts each daemon of the node that does not run.
func (b *Backend) ensureDaemons(ctx context.Context, c clusterInfo, n nodeInfo) error {
	if err := b.writeSSHDConfig(c, n); err != nil {
		return err
	}
	for _, d := range b.daemons(c, n) {
		if b.daemonPID(n, d) > 0 {
			continue
		}
		os.MkdirAll(filepath.Join(b.clusterDir(c.ID), "spool", n.Name), 0o755)
		if _, err := b.inNode(ctx, n, d.args[0], d.args[1:]...); err != nil {
			return err
		}
		if err := waitFor(10*time.Second, func() bool { return b.daemonPID(n, d) > 0 }); err != nil {
			return fmt.Errorf("local: %s on %s did not start", d.comm, n.Name)
		}
	}
	return nil
}

// daemonPID returns the PID of a daemon of the node when it runs (in the node's network
// namespace), else 0.
func (b *Backend) daemonPID(n nodeInfo, d daemon) int {
	pid := readPID(d.pidFile)
	if !pidAlive(pid, d.comm) {
		return 0
	}
	want, ok1 := nsInode(b.netnsPath(n.Name))
	got, ok2 := nsInode(fmt.Sprintf("/proc/%d/ns/net", pid))
	if !ok1 || !ok2 || want != got {
		return 0
	}
	return pid
}

// restartDaemons stops the node's daemons and starts them again.
func (b *Backend) restartDaemons(ctx context.Context, c clusterInfo, n nodeInfo) error {
	for _, d := range b.daemons(c, n) {
		if pid := b.daemonPID(n, d); pid > 0 {
			stopPID(pid)
		}
	}
	return b.ensureDaemons(ctx, c, n)
}

func waitFor(d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

func (b *Backend) writeSSHDConfig(c clusterInfo, n nodeInfo) error {
	dir := b.nodeDir(c.ID, n.Name)
	conf := strings.Join([]string{
		"# Written by trainyard.",
		"ListenAddress 0.0.0.0:22",
		"HostKey " + filepath.Join(b.clusterDir(c.ID), "ssh", "host_ed25519"),
		"PidFile " + filepath.Join(dir, "sshd.pid"),
		"AuthorizedKeysFile " + filepath.Join(dir, "authorized_keys"),
		"PermitRootLogin prohibit-password",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"UsePAM no",
		"StrictModes no",
		"PrintMotd no",
		"Subsystem sftp internal-sftp",
		"",
	}, "\n")
	return writeFileAtomic(filepath.Join(dir, "sshd_config"), []byte(conf), 0o644)
}

// writeKeys replaces the node's authorized keys. Keys were validated by the control plane; each
// is still checked to be one line.
func (b *Backend) writeKeys(ref trainyard.NodeRef, keys []string) error {
	var sb strings.Builder
	for _, k := range keys {
		if strings.ContainsAny(k, "\r\n\x00") {
			return fmt.Errorf("local: an SSH key of %s spans lines", ref.Name)
		}
		sb.WriteString(k + "\n")
	}
	return writeFileAtomic(filepath.Join(b.nodeDir(ref.ClusterID, ref.Name), "authorized_keys"), []byte(sb.String()), 0o600)
}

// runLifecycle runs the script inside the node, its output to the node's lifecycle log. What
// the script leaves running in the background is the node's business: the call returns when
// the script itself ends (or after LifecycleTimeout).
func (b *Backend) runLifecycle(ctx context.Context, c clusterInfo, n nodeInfo, script string) error {
	path := filepath.Join(b.nodeDir(c.ID, n.Name), "lifecycle.sh")
	if err := writeFileAtomic(path, []byte(script), 0o700); err != nil {
		return err
	}
	logPath := filepath.Join(b.clusterDir(c.ID), "log", "lifecycle-"+n.Name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	ctx, cancel := context.WithTimeout(ctx, b.opts.LifecycleTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", "-t", strconv.Itoa(n.HolderPID), "--net", "--uts", "--mount", "--", "/bin/sh", path)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Run(); err != nil {
		tail, _ := os.ReadFile(logPath)
		return fmt.Errorf("lifecycle script on %s failed: %v: %s", n.Name, err, lastLines(string(tail), 3))
	}
	return nil
}

// RemoveNode stops the node, deletes it from Slurm and removes its sandbox.
func (b *Backend) RemoveNode(ctx context.Context, ref trainyard.NodeRef) error {
	if _, err := os.Stat(b.nodeDir(ref.ClusterID, ref.Name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := b.stopNode(ctx, ref.ClusterID, ref.Name); err != nil {
		return err
	}
	// Slurm must forget the node before its files go, so that a failed delete is retried (the
	// node stays down in Slurm and counts against MaxNodeCount otherwise).
	if out, err := b.scontrol(ctx, ref.ClusterID, "delete", "nodename="+ref.Name); err != nil &&
		!strings.Contains(out, "Invalid node name") {
		return fmt.Errorf("local: slurmctld would not delete %s: %w", ref.Name, err)
	}
	return os.RemoveAll(b.nodeDir(ref.ClusterID, ref.Name))
}

// teardownNode stops the node and removes its files.
func (b *Backend) teardownNode(ctx context.Context, clusterID int64, name string) error {
	if err := b.stopNode(ctx, clusterID, name); err != nil {
		return err
	}
	return os.RemoveAll(b.nodeDir(clusterID, name))
}

// stopNode ends every process in the node's network namespace and removes the namespace, its
// link and its reserved-IP route; its files stay.
func (b *Backend) stopNode(ctx context.Context, clusterID int64, name string) error {
	unlock := b.lock("node-" + b.netns(name))
	defer unlock()
	ns := b.netnsPath(name)
	for attempt := 0; attempt < 3; attempt++ {
		pids := processesInNetns(ns)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			stopPID(pid)
		}
	}
	if left := processesInNetns(ns); len(left) > 0 {
		return fmt.Errorf("local: processes %v of node %s would not end", left, name)
	}
	if _, err := os.Stat(ns); err == nil {
		if _, err := b.run(ctx, "ip", "netns", "del", b.netns(name)); err != nil {
			return err
		}
	}
	var n nodeInfo
	if readJSON(filepath.Join(b.nodeDir(clusterID, name), "node.json"), &n) == nil {
		veth := b.hostVeth(clusterID, n.Index)
		if _, err := os.Stat("/sys/class/net/" + veth); err == nil {
			b.run(ctx, "ip", "link", "del", veth)
		}
		if n.Network.ReservedIP != "" {
			b.run(ctx, "ip", "route", "del", n.Network.ReservedIP+"/32", "proto", routeProto)
		}
	}
	return nil
}

// SetSSHKeys replaces the keys that may log in as root.
func (b *Backend) SetSSHKeys(ctx context.Context, ref trainyard.NodeRef, keys []string) error {
	if _, err := b.node(ref); err != nil {
		return err
	}
	return b.writeKeys(ref, keys)
}

// SetImage bind-mounts the image's layer in the node and restarts its daemons, unless the node
// runs that image already.
func (b *Backend) SetImage(ctx context.Context, ref trainyard.NodeRef, image trainyard.ImageVersion) error {
	unlock := b.lock("node-" + b.netns(ref.Name))
	defer unlock()
	n, err := b.node(ref)
	if err != nil {
		return err
	}
	c, err := b.cluster(ref.ClusterID)
	if err != nil {
		return err
	}
	if n.ImageVersionID == image.ID && b.marker(ctx, n) == image.Version {
		return nil
	}
	if err := b.writeImage(image); err != nil {
		return err
	}
	n.ImageDir = b.imageDir(image)
	b.inNode(ctx, n, "umount", "/etc/trainyard")
	if _, err := b.inNode(ctx, n, "mount", "--bind", "-o", "ro", n.ImageDir, "/etc/trainyard"); err != nil {
		return err
	}
	if err := b.restartDaemons(ctx, c, n); err != nil {
		return err
	}
	n.ImageVersionID, n.ImageVersion = image.ID, image.Version
	return b.saveNode(ref, n)
}

// marker reads the image version marker inside the node.
func (b *Backend) marker(ctx context.Context, n nodeInfo) string {
	out, err := b.run(ctx, "nsenter", "-t", strconv.Itoa(n.HolderPID), "--mount", "--", "cat", "/etc/trainyard/image-version")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// Restart restarts the node's daemons unless it was restarted at gen or later.
func (b *Backend) Restart(ctx context.Context, ref trainyard.NodeRef, gen int64) error {
	unlock := b.lock("node-" + b.netns(ref.Name))
	defer unlock()
	n, err := b.node(ref)
	if err != nil {
		return err
	}
	if n.RestartGen >= gen {
		return nil
	}
	c, err := b.cluster(ref.ClusterID)
	if err != nil {
		return err
	}
	if err := b.restartDaemons(ctx, c, n); err != nil {
		return err
	}
	n.RestartGen = gen
	return b.saveNode(ref, n)
}

// SetNetwork applies a network spec unless the node has that generation or a newer one.
func (b *Backend) SetNetwork(ctx context.Context, ref trainyard.NodeRef, spec trainyard.NetworkSpec) error {
	unlock := b.lock("node-" + b.netns(ref.Name))
	defer unlock()
	n, err := b.node(ref)
	if err != nil {
		return err
	}
	if n.Network.Generation >= spec.Generation {
		return nil
	}
	c, err := b.cluster(ref.ClusterID)
	if err != nil {
		return err
	}
	if err := b.applyNetwork(ctx, c, &n, spec); err != nil {
		return err
	}
	return b.saveNode(ref, n)
}

// Observe reports the cluster's nodes as they are.
func (b *Backend) Observe(ctx context.Context, clusterID int64) ([]trainyard.ObservedNode, error) {
	if _, err := os.Stat(filepath.Join(b.clusterDir(clusterID), "cluster.json")); errors.Is(err, os.ErrNotExist) {
		return nil, nil // no cluster here: no nodes
	}
	c, err := b.cluster(clusterID)
	if err != nil {
		return nil, err // unreadable is not absent
	}
	entries, err := os.ReadDir(filepath.Join(b.clusterDir(clusterID), "nodes"))
	if err != nil {
		return nil, err
	}
	var slurmNodes map[string]slurm.Node
	var out []trainyard.ObservedNode
	for _, e := range entries {
		var n nodeInfo
		if err := readJSON(filepath.Join(b.clusterDir(clusterID), "nodes", e.Name(), "node.json"), &n); errors.Is(err, os.ErrNotExist) {
			continue // being created
		} else if err != nil {
			return nil, fmt.Errorf("local: reading node %s: %w", e.Name(), err)
		}
		o := trainyard.ObservedNode{Name: n.Name, Role: n.Role, Address: n.Address, RestartGen: n.RestartGen, Network: n.Network}
		keys, _ := os.ReadFile(filepath.Join(b.nodeDir(clusterID, n.Name), "authorized_keys"))
		for _, k := range strings.Split(strings.TrimSpace(string(keys)), "\n") {
			if k != "" {
				o.SSHKeys = append(o.SSHKeys, k)
			}
		}
		if !b.holderAlive(n) {
			o.State = trainyard.NodeDown
			out = append(out, o)
			continue
		}
		o.ImageVersion = b.marker(ctx, n)
		main := b.daemons(c, n)[0]
		pid := b.daemonPID(n, main)
		if pid > 0 {
			if t, ok := startTime(pid); ok {
				o.BootID = fmt.Sprintf("%s-%d-%d", main.comm, pid, t)
				o.StartedAt = processStarted(t)
			}
		}
		switch {
		case pid == 0:
			o.State = trainyard.NodeBooting
		case n.Role == trainyard.RoleController:
			if out, err := b.scontrol(ctx, clusterID, "ping"); err == nil && strings.Contains(out, "is UP") {
				o.State = trainyard.NodeUp
			} else {
				o.State = trainyard.NodeBooting
			}
		default:
			if slurmNodes == nil {
				slurmNodes = b.slurmNodes(ctx, clusterID)
			}
			sn, ok := slurmNodes[n.Name]
			switch {
			case !ok:
				o.State = trainyard.NodeBooting // slurmd runs but has not registered yet
			default:
				o.State, o.DrainReason = sn.State, drainReason(sn)
				if o.State == trainyard.NodeAllocated || o.State == trainyard.NodeMixed || o.State == trainyard.NodeDraining {
					o.Jobs = 1 // at least one; trainyard only needs to know whether any runs
				}
			}
		}
		out = append(out, o)
	}
	sortObserved(out)
	return out, nil
}

// drainReason is the node's reason when Slurm says it is drained or draining.
func drainReason(n slurm.Node) string {
	if n.State == trainyard.NodeDrained || n.State == trainyard.NodeDraining || strings.Contains(n.Raw, "DRAIN") {
		return n.Reason
	}
	return ""
}

// sortObserved orders nodes as the other backends do: the controller, then workers by index.
func sortObserved(out []trainyard.ObservedNode) {
	slices.SortFunc(out, func(a, b trainyard.ObservedNode) int {
		if (a.Role == trainyard.RoleController) != (b.Role == trainyard.RoleController) {
			if a.Role == trainyard.RoleController {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(nodeIndex(a.Name, a.Role), nodeIndex(b.Name, b.Role)); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
}

// slurmNodes asks slurmctld for every node; an error yields none (every worker then reads as
// booting or down: unknown is never available).
func (b *Backend) slurmNodes(ctx context.Context, clusterID int64) map[string]slurm.Node {
	out, err := b.scontrol(ctx, clusterID, "show", "node", "--oneliner")
	m := map[string]slurm.Node{}
	if err != nil {
		return m
	}
	for _, n := range slurm.ParseNodes(out) {
		m[n.Name] = n
	}
	return m
}

// Drain drains a worker with reason unless someone else drained it already.
func (b *Backend) Drain(ctx context.Context, ref trainyard.NodeRef, reason string) error {
	n, err := b.node(ref)
	if err != nil {
		return err
	}
	if n.Role == trainyard.RoleController {
		return fmt.Errorf("local: the controller %s is not a Slurm node", ref.Name)
	}
	if sn, ok := b.slurmNodes(ctx, ref.ClusterID)[ref.Name]; ok && drainReason(sn) != "" {
		return nil // drained already, ours or someone else's: never overwrite a reason
	}
	_, err = b.scontrol(ctx, ref.ClusterID, "update", "nodename="+ref.Name, "state=drain", "reason="+reason)
	return err
}

// Resume returns a worker to service if it is drained with exactly reason.
func (b *Backend) Resume(ctx context.Context, ref trainyard.NodeRef, reason string) error {
	sn, ok := b.slurmNodes(ctx, ref.ClusterID)[ref.Name]
	if !ok {
		return fmt.Errorf("local: slurmctld does not know %s", ref.Name)
	}
	if drainReason(sn) != reason {
		return nil
	}
	_, err := b.scontrol(ctx, ref.ClusterID, "update", "nodename="+ref.Name, "state=resume")
	return err
}

// RequeueJobs requeues the jobs running on a worker.
func (b *Backend) RequeueJobs(ctx context.Context, ref trainyard.NodeRef) error {
	out, err := b.runEnv(ctx, b.slurmEnv(ref.ClusterID), "squeue", "-h", "-t", "RUNNING,CONFIGURING", "-w", ref.Name, "-o", "%i")
	if err != nil {
		return err
	}
	for _, id := range strings.Fields(out) {
		if _, err := strconv.ParseUint(id, 10, 64); err != nil {
			continue
		}
		if _, err := b.scontrol(ctx, ref.ClusterID, "requeue", id); err != nil {
			return err
		}
	}
	return nil
}

// Logs returns the last lines of a daemon's log on a node: slurmctld (controller), slurmd
// (worker), sshd, munged or lifecycle.
func (b *Backend) Logs(ctx context.Context, ref trainyard.NodeRef, daemonName string, lines int) (string, error) {
	n, err := b.node(ref)
	if err != nil {
		return "", err
	}
	var file string
	switch daemonName {
	case "slurmctld":
		if n.Role != trainyard.RoleController {
			return "", fmt.Errorf("slurmctld runs on the controller only")
		}
		file = "slurmctld.log"
	case "slurmd":
		if n.Role != trainyard.RoleWorker {
			return "", fmt.Errorf("slurmd runs on workers only")
		}
		file = "slurmd-" + n.Name + ".log"
	case "sshd":
		file = "sshd-" + n.Name + ".log"
	case "lifecycle":
		file = "lifecycle-" + n.Name + ".log"
	case "munged":
		file = filepath.Join("..", "munge", "munged.log")
	default:
		return "", fmt.Errorf("no daemon %q: slurmctld, slurmd, sshd, munged or lifecycle", daemonName)
	}
	data, err := os.ReadFile(filepath.Join(b.clusterDir(ref.ClusterID), "log", file))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if lines > 0 && len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n") + "\n", nil
}

var _ trainyard.Backend = (*Backend)(nil)
