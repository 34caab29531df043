package local

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/trainyard/trainyard"
	"github.com/trainyard/trainyard/slurm"
)

// clusterInfo is what the backend records of a cluster (cluster.json).
type clusterInfo struct {
	ID         int64  `json:"id"`
	Name       string `json:"name"`
	Subnet     string `json:"subnet"` // a /24 of the node range
	Controller string `json:"controller"`
	MaxNodes   int    `json:"max_nodes"`
}

func (c clusterInfo) prefix() netip.Prefix { return netip.MustParsePrefix(c.Subnet) }

// gateway is the host's address on the cluster's bridge.
func (c clusterInfo) gateway() netip.Addr { return c.prefix().Addr().Next() }

// address of the node with index i (0: the controller): .2, .3, ...
func (c clusterInfo) address(i int) netip.Addr {
	a := c.gateway()
	for range i + 1 {
		a = a.Next()
	}
	return a
}

func (b *Backend) clusterDir(id int64) string {
	return filepath.Join(b.opts.Dir, "clusters", "c"+strconv.FormatInt(id, 10))
}

func (b *Backend) bridge(id int64) string { return fmt.Sprintf("ty%sb%d", b.opts.Tag, id) }

func (b *Backend) confPath(id int64) string {
	return filepath.Join(b.clusterDir(id), "etc", "slurm.conf")
}

func (b *Backend) slurmEnv(id int64) []string { return []string{"SLURM_CONF=" + b.confPath(id)} }

func (b *Backend) cluster(id int64) (clusterInfo, error) {
	var c clusterInfo
	err := readJSON(filepath.Join(b.clusterDir(id), "cluster.json"), &c)
	if errors.Is(err, os.ErrNotExist) {
		return c, fmt.Errorf("local: cluster %d does not exist here", id)
	}
	return c, err
}

// allocSubnet returns the lowest /24 of the node range no cluster uses. Index 0 is left out so
// that the range's first address never belongs to a node.
func (b *Backend) allocSubnet() (netip.Prefix, error) {
	used := map[string]bool{}
	entries, _ := os.ReadDir(filepath.Join(b.opts.Dir, "clusters"))
	for _, e := range entries {
		var c clusterInfo
		if readJSON(filepath.Join(b.opts.Dir, "clusters", e.Name(), "cluster.json"), &c) == nil {
			used[c.Subnet] = true
		}
	}
	base := b.opts.NodeRange.Addr().As4()
	n := 1 << (24 - b.opts.NodeRange.Bits())
	for i := 1; i < n; i++ {
		v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 + uint32(i)<<8
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), 0}), 24)
		if !used[p.String()] {
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("local: every /24 of %s is in use", b.opts.NodeRange)
}

// EnsureCluster makes the cluster's directories, munge key and munged, host key, slurm.conf and
// bridge.
func (b *Backend) EnsureCluster(ctx context.Context, spec trainyard.ClusterSpec) error {
	unlock := b.lock(fmt.Sprintf("cluster-%d", spec.ID))
	defer unlock()
	dir := b.clusterDir(spec.ID)
	c, err := b.cluster(spec.ID)
	if err != nil {
		// Replicas on this host allocate from the same directory: a file lock orders them.
		unlockFile, lerr := flockFile(filepath.Join(b.opts.Dir, "clusters", ".alloc.lock"))
		if lerr != nil {
			return lerr
		}
		defer unlockFile()
		b.mu.Lock()
		p, aerr := b.allocSubnet()
		if aerr == nil {
			c = clusterInfo{ID: spec.ID, Name: spec.Name, Subnet: p.String(), Controller: spec.Controller, MaxNodes: spec.MaxNodes}
			if err := os.MkdirAll(dir, 0o755); err == nil {
				aerr = writeJSON(filepath.Join(dir, "cluster.json"), c)
			}
		}
		b.mu.Unlock()
		if aerr != nil {
			return aerr
		}
	}
	for _, d := range []string{"etc", "state", "spool", "run", "log", "nodes", "ssh"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := b.ensureMunge(ctx, c); err != nil {
		return err
	}
	if err := b.ensureHostKey(dir); err != nil {
		return err
	}
	conf := slurm.Config{
		ClusterName: "c" + strconv.FormatInt(c.ID, 10), ControllerName: c.Controller, ControllerAddr: c.address(0).String(),
		MungeSocket: filepath.Join(dir, "munge", "munge.sock"), StateDir: filepath.Join(dir, "state"),
		SpoolDir: filepath.Join(dir, "spool"), RunDir: filepath.Join(dir, "run"), LogDir: filepath.Join(dir, "log"),
		MaxNodes: max(c.MaxNodes, 2),
	}.Render()
	if err := writeFileAtomic(b.confPath(c.ID), []byte(conf), 0o644); err != nil {
		return err
	}
	return b.ensureBridge(ctx, c)
}

func (b *Backend) ensureBridge(ctx context.Context, c clusterInfo) error {
	br := b.bridge(c.ID)
	if _, err := os.Stat("/sys/class/net/" + br); err != nil {
		if _, err := b.run(ctx, "ip", "link", "add", br, "type", "bridge"); err != nil {
			return err
		}
	}
	gw := netip.PrefixFrom(c.gateway(), 24).String()
	out, err := b.run(ctx, "ip", "-4", "addr", "show", "dev", br)
	if err != nil {
		return err
	}
	if !strings.Contains(out, " "+gw+" ") {
		if _, err := b.run(ctx, "ip", "addr", "add", gw, "dev", br); err != nil {
			return err
		}
	}
	_, err = b.run(ctx, "ip", "link", "set", br, "up")
	return err
}

// ensureMunge writes the cluster's own munge key and starts its munged.
func (b *Backend) ensureMunge(ctx context.Context, c clusterInfo) error {
	dir := filepath.Join(b.clusterDir(c.ID), "munge")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	mu, err := user.Lookup("munge")
	if err != nil {
		return fmt.Errorf("local: no munge user: %w", err)
	}
	uid, _ := strconv.Atoi(mu.Uid)
	gid, _ := strconv.Atoi(mu.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return err
	}
	key := filepath.Join(dir, "munge.key")
	if _, err := os.Stat(key); err != nil {
		buf := make([]byte, 1024)
		if _, err := rand.Read(buf); err != nil {
			return err
		}
		if err := writeFileAtomic(key, buf, 0o400); err != nil {
			return err
		}
	}
	if err := os.Chown(key, uid, gid); err != nil {
		return err
	}
	pidFile := filepath.Join(dir, "munged.pid")
	if pidAlive(readPID(pidFile), "munged") {
		return nil
	}
	_, err = b.run(ctx, "runuser", "-u", "munge", "--", "munged",
		"--socket="+filepath.Join(dir, "munge.sock"), "--key-file="+key, "--pid-file="+pidFile,
		"--log-file="+filepath.Join(dir, "munged.log"), "--seed-file="+filepath.Join(dir, "seed"), "--force")
	return err
}

// ensureHostKey writes the cluster's SSH host key (shared by its nodes).
func (b *Backend) ensureHostKey(dir string) error {
	path := filepath.Join(dir, "ssh", "host_ed25519")
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	block, err := ssh.MarshalPrivateKey(priv, "trainyard host key")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, pem.EncodeToMemory(block), 0o600)
}

// DeleteCluster stops everything of the cluster and removes it from the host.
func (b *Backend) DeleteCluster(ctx context.Context, clusterID int64) error {
	unlock := b.lock(fmt.Sprintf("cluster-%d", clusterID))
	defer unlock()
	dir := b.clusterDir(clusterID)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return b.removeBridge(ctx, clusterID)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "nodes"))
	for _, e := range entries {
		if err := b.teardownNode(ctx, clusterID, e.Name()); err != nil {
			return err
		}
	}
	if pid := readPID(filepath.Join(dir, "munge", "munged.pid")); pidAlive(pid, "munged") {
		stopPID(pid)
	}
	if err := b.removeBridge(ctx, clusterID); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

func (b *Backend) removeBridge(ctx context.Context, id int64) error {
	br := b.bridge(id)
	if _, err := os.Stat("/sys/class/net/" + br); err != nil {
		return nil
	}
	// Routes of reserved IPs go through the bridge and disappear with it.
	_, err := b.run(ctx, "ip", "link", "del", br)
	return err
}

// stopPID ends a process: SIGTERM, then SIGKILL after 10 seconds.
func stopPID(pid int) {
	p, err := os.FindProcess(pid)
	if err != nil {
		return
	}
	p.Signal(syscall.SIGTERM)
	for range 100 {
		if !pidAlive(pid, "") {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.Signal(syscall.SIGKILL)
	for range 50 {
		if !pidAlive(pid, "") {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// scontrol runs scontrol against the cluster's slurmctld from the host.
func (b *Backend) scontrol(ctx context.Context, id int64, args ...string) (string, error) {
	return b.runEnv(ctx, b.slurmEnv(id), "scontrol", args...)
}

// flockFile takes an exclusive lock on path (created if needed) and returns its release.
func flockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}
