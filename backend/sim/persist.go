package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// snapshot is the state file's content at one instant of the model, and its order among
// snapshots.
type snapshot struct {
	data []byte
	seq  uint64
}

// snapshotLocked serialises the state under the lock, so that the file always holds a state
// that existed, numbered so that save can drop a snapshot overtaken by a newer one.
func (b *Backend) snapshotLocked() (snapshot, error) {
	if b.opts.StatePath == "" {
		return snapshot{}, nil
	}
	data, err := json.MarshalIndent(b.st, "", "  ")
	if err != nil {
		return snapshot{}, fmt.Errorf("sim: encoding state: %w", err)
	}
	b.snapshotSeq++
	b.latest = snapshot{data: data, seq: b.snapshotSeq}
	return b.latest, nil
}

// save makes sure that the state file holds snapshot s or a newer one before the operation
// that took s returns. It writes atomically: a temporary file in the same directory, fsync,
// rename, fsync of the directory, so that a reader (or New after a crash) sees the old state
// or the new one, never a torn file. It writes the newest snapshot rather than s, which
// commits the changes of every operation queued behind it in one fsync (group commit): under
// many concurrent operations the file is written far fewer times than there are changes.
// If saving fails the change stays in memory and the error is returned; the operations are
// idempotent, so the caller can retry.
func (b *Backend) save(s snapshot) error {
	if s.data == nil {
		return nil
	}
	b.saveMu.Lock()
	defer b.saveMu.Unlock()
	if s.seq <= b.savedSeq {
		return nil
	}
	b.mu.Lock() // never held while waiting for saveMu, so this order cannot deadlock
	newest := b.latest
	b.mu.Unlock()
	if err := writeFileAtomic(b.opts.StatePath, newest.data); err != nil {
		return fmt.Errorf("sim: saving state: %w", err)
	}
	b.savedSeq = newest.seq
	return nil
}

func writeFileAtomic(path string, data []byte) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, base+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	// The rename is durable only once the directory is synced. Some filesystems refuse to sync
	// a directory; the file itself is already safe then, so that is not an error.
	if d, derr := os.Open(dir); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// loadState reads the state file; a missing file is no state (nil, nil).
func loadState(path string) (*state, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sim: loading state: %w", err)
	}
	st := newState()
	if err := json.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("sim: loading state from %s: %w", path, err)
	}
	if st.Format != stateFormat {
		return nil, fmt.Errorf("sim: state file %s has format %d, want %d", path, st.Format, stateFormat)
	}
	if st.Ops == nil {
		st.Ops = map[string]int{}
	}
	if st.Clusters == nil {
		st.Clusters = map[int64]*cluster{}
	}
	for id, c := range st.Clusters {
		if c == nil {
			return nil, fmt.Errorf("sim: state file %s: cluster %d is null", path, id)
		}
		if c.Nodes == nil {
			c.Nodes = map[string]*node{}
		}
	}
	return st, nil
}
