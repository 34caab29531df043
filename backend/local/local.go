// Package local realizes trainyard clusters on one Linux host with real daemons: each node is a
// sandbox with its own network, hostname and mount namespaces, held by a small holder process,
// on a bridge of its cluster. The controller runs slurmctld and sshd, each worker slurmd (as a
// Slurm dynamic node) and sshd, and each cluster its own munged with its own key.
//
// What it promises:
//   - Every method is idempotent, and all state it needs lives in files under Options.Dir and in
//     the kernel, so a restarted control plane re-adopts running clusters: nothing is started
//     twice, nothing is orphaned.
//   - Observe reads nodes themselves: processes, `scontrol show node`, the image marker read
//     inside the node's mount namespace.
//   - No packet leaves the machine: the node range and the reserved-IP pools are routed locally
//     (bridges and unreachable routes), and New refuses ranges that overlap a route it did not make.
//   - Nothing from a request reaches a shell: commands are run with argument vectors, keys and
//     scripts are written to files.
//   - DeleteCluster leaves no process, namespace, interface, mount, route or file of the cluster.
//
// It needs root and Debian's slurm-wlm, munge, openssh-server, nftables and iproute2; Check says
// what is missing.
package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/trainyard/trainyard"
)

// Options configure a Backend.
type Options struct {
	Dir        string         // clusters' files and image layers (default /var/lib/trainyard)
	NodeRange  netip.Prefix   // node addresses; each cluster takes a /24 of it (default 198.18.0.0/16)
	IPPools    []netip.Prefix // reserved-IP pools, routed locally
	Images     []trainyard.ImageVersion
	Tag        string        // up to 2 letters or digits in host-wide names (bridges, namespaces), so that instances coexist
	CPUs       int           // CPUs each worker offers Slurm (default 1)
	MemoryMB   int           // memory each worker offers Slurm (default 1000)
	CmdTimeout time.Duration // one command (default 1m)
	// LifecycleTimeout bounds a node's lifecycle script (default 10m).
	LifecycleTimeout time.Duration
	Log              *slog.Logger
}

// Backend is the local backend.
type Backend struct {
	opts Options

	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

// routeProto marks the routes trainyard adds, so that they are told apart from the machine's own.
const routeProto = "77"

// Binaries the backend runs.
var needed = []string{"ip", "nft", "nsenter", "unshare", "sleep", "mount", "umount", "hostname", "runuser",
	"munged", "slurmctld", "slurmd", "scontrol", "squeue", "sshd", "cat"}

// Check reports why the backend cannot run here, or nil when it can.
func Check() error {
	if os.Geteuid() != 0 {
		return errors.New("the local backend needs root")
	}
	var missing []string
	for _, b := range needed {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the local backend needs %s (apt-get install slurm-wlm munge openssh-server nftables iproute2 util-linux)", strings.Join(missing, ", "))
	}
	return nil
}

// New prepares the host: checks the ranges against the routing table, routes them locally, and
// writes the image layers.
func New(ctx context.Context, opts Options) (*Backend, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	if opts.Dir == "" {
		opts.Dir = "/var/lib/trainyard"
	}
	if !opts.NodeRange.IsValid() {
		opts.NodeRange = netip.MustParsePrefix("198.18.0.0/16")
	}
	opts.NodeRange = opts.NodeRange.Masked()
	if opts.NodeRange.Bits() > 23 || !opts.NodeRange.Addr().Is4() {
		return nil, fmt.Errorf("local: node range %s must be an IPv4 prefix of /23 or larger", opts.NodeRange)
	}
	if len(opts.Tag) > 2 || strings.Trim(opts.Tag, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
		return nil, fmt.Errorf("local: tag %q must be at most 2 lower-case letters or digits", opts.Tag)
	}
	if opts.CPUs <= 0 {
		opts.CPUs = 1
	}
	if opts.MemoryMB <= 0 {
		opts.MemoryMB = 1000
	}
	if opts.CmdTimeout <= 0 {
		opts.CmdTimeout = time.Minute
	}
	if opts.LifecycleTimeout <= 0 {
		opts.LifecycleTimeout = 10 * time.Minute
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	b := &Backend{opts: opts, locks: map[string]*sync.Mutex{}}
	ranges := append([]netip.Prefix{opts.NodeRange}, opts.IPPools...)
	for i, r := range ranges {
		for _, o := range ranges[i+1:] {
			if r.Overlaps(o) {
				return nil, fmt.Errorf("local: ranges %s and %s overlap", r, o)
			}
		}
	}
	if err := b.checkRoutes(ctx, ranges); err != nil {
		return nil, err
	}
	if err := checkNameservers(ranges); err != nil {
		return nil, err
	}
	for _, r := range ranges {
		if _, err := b.run(ctx, "ip", "route", "replace", "unreachable", r.String(), "proto", routeProto); err != nil {
			return nil, err
		}
	}
	for _, dir := range []string{b.opts.Dir, filepath.Join(b.opts.Dir, "clusters"), "/etc/trainyard", "/run/sshd"} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			return nil, err
		}
	}
	for _, img := range opts.Images {
		if err := b.writeImage(img); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// Name returns "local".
func (b *Backend) Name() string { return "local" }

// checkRoutes refuses ranges that overlap a route of the machine's own (not the default route,
// not trainyard's).
func (b *Backend) checkRoutes(ctx context.Context, ranges []netip.Prefix) error {
	out, err := b.run(ctx, "ip", "-j", "-4", "route", "show", "table", "all")
	if err != nil {
		return err
	}
	var routes []struct {
		Dst      string `json:"dst"`
		Dev      string `json:"dev"`
		Protocol string `json:"protocol"`
		Table    string `json:"table"`
		Type     string `json:"type"`
	}
	if err := json.Unmarshal([]byte(out), &routes); err != nil {
		return fmt.Errorf("local: reading the routing table: %w", err)
	}
	for _, rt := range routes {
		if rt.Dst == "default" || rt.Protocol == routeProto || rt.Table == "local" || strings.HasPrefix(rt.Dev, "ty") {
			continue
		}
		dst := rt.Dst
		if !strings.Contains(dst, "/") {
			dst += "/32"
		}
		p, err := netip.ParsePrefix(dst)
		if err != nil {
			continue
		}
		for _, r := range ranges {
			if p.Overlaps(r) {
				return fmt.Errorf("local: %s overlaps the machine's route to %s (dev %s): choose a range no route covers", r, rt.Dst, rt.Dev)
			}
		}
	}
	return nil
}

// checkNameservers refuses ranges that hold a nameserver of this machine: routing them locally
// would cut the machine off from its resolver (a route check cannot see this: the resolver is
// reached through the default route).
func checkNameservers(ranges []netip.Prefix) error {
	b, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil {
			continue
		}
		for _, r := range ranges {
			if r.Contains(a) {
				return fmt.Errorf("local: %s holds this machine's nameserver %s: choose another range", r, a)
			}
		}
	}
	return nil
}

// writeImage writes the layer of an image version: what differs from the host's root
// filesystem, bind-mounted at /etc/trainyard inside each node that runs it.
func (b *Backend) writeImage(img trainyard.ImageVersion) error {
	dir := b.imageDir(img)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	files := map[string]string{
		"image-version": img.Version + "\n",
		"image":         fmt.Sprintf("NAME=%q\nVERSION=%q\nIMAGE_VERSION_ID=%d\n", img.Name, img.Version, img.ID),
	}
	for name, content := range files {
		if err := writeFileAtomic(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (b *Backend) imageDir(img trainyard.ImageVersion) string {
	return filepath.Join(b.opts.Dir, "images", safeName(img.Version))
}

// safeName keeps letters, digits, '.', '-' and '_'.
func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

// lock returns the mutex of a name (a cluster or a node).
func (b *Backend) lock(name string) func() {
	b.mu.Lock()
	m, ok := b.locks[name]
	if !ok {
		m = &sync.Mutex{}
		b.locks[name] = m
	}
	b.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// run runs a command with an argument vector (never a shell) and returns its output.
func (b *Backend) run(ctx context.Context, name string, args ...string) (string, error) {
	return b.runEnv(ctx, nil, name, args...)
}

func (b *Backend) runEnv(ctx context.Context, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, b.opts.CmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	// A daemon started through a command may keep its output open; do not wait for it.
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(lastLines(string(out), 5)))
	}
	return string(out), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// writeFileAtomic replaces path with data: a temporary file of its own in the same directory
// (several writers of one path never share it), fsynced, renamed over path.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, mode)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, b, 0o600)
}

// pidAlive reports whether pid runs a program named comm (the kernel's 15-character name).
func pidAlive(pid int, comm string) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || close < open {
		return false
	}
	state := strings.Fields(s[close+1:])
	if len(state) > 0 && (state[0] == "Z" || state[0] == "X") {
		return false
	}
	return comm == "" || s[open+1:close] == comm
}

// startTime returns a process's start time in clock ticks since boot (field 22 of stat).
func startTime(pid int) (uint64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 20 {
		return 0, false
	}
	t, err := strconv.ParseUint(fields[19], 10, 64)
	return t, err == nil
}

// processStarted converts a start time in ticks to wall time.
func processStarted(ticks uint64) time.Time {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			bt, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return time.Unix(bt, 0).Add(time.Duration(ticks) * time.Second / 100).UTC()
		}
	}
	return time.Time{}
}

func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// nsInode returns the inode of a network namespace file (/run/netns/X or /proc/PID/ns/net).
func nsInode(path string) (uint64, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Ino, true
}

// processesInNetns returns every process whose network namespace is the file ns.
func processesInNetns(ns string) []int {
	ino, ok := nsInode(ns)
	if !ok {
		return nil
	}
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pi, ok := nsInode(fmt.Sprintf("/proc/%d/ns/net", pid)); ok && pi == ino {
			out = append(out, pid)
		}
	}
	sort.Ints(out)
	return out
}

// Teardown removes the routes New added for the node range and the pools. Clusters must be
// deleted first; a running trainyard keeps the routes.
func (b *Backend) Teardown(ctx context.Context) error {
	for _, r := range append([]netip.Prefix{b.opts.NodeRange}, b.opts.IPPools...) {
		if _, err := b.run(ctx, "ip", "route", "del", "unreachable", r.String(), "proto", routeProto); err != nil {
			return err
		}
	}
	return nil
}
