package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kfault/kfault/annotations"
)

// StateFileName is the state file inside the state directory.
const StateFileName = "state.json"

// stateVersion is written into the file; a file with another version is refused.
const stateVersion = 1

// Source says which side of kfault saw a container.
type Source string

const (
	// SourceNRI: a CRI container, seen through NRI.
	SourceNRI Source = "nri"
	// SourceContainerd: a non-CRI container (nerdctl, ctr), seen on containerd's event stream.
	SourceContainerd Source = "containerd"
)

// Entry is what the state file remembers about one container with a fault.
type Entry struct {
	Source      Source             `json:"source"`
	Namespace   string             `json:"namespace"`        // Kubernetes namespace (NRI) or containerd namespace
	Pod         string             `json:"pod,omitempty"`    // empty for non-CRI containers
	Container   string             `json:"container"`        // container name (nerdctl name, or the ID)
	ContainerID string             `json:"containerID"`      // runtime container ID
	CgroupPath  string             `json:"cgroupPath"`       // the armed cgroup directory
	CgroupID    uint64             `json:"cgroupID"`         // its kernfs id
	Annotation  string             `json:"annotation"`       // the key the faults came from
	Faults      annotations.Faults `json:"faults"`           // the annotation's faults, parsed
	Injected    []uint64           `json:"injected"`         // per fault: faults injected so far
	Armed       bool               `json:"armed"`            // false once disarmed (stopped container)
	ArmedAt     time.Time          `json:"armedAt,omitzero"` // when first armed
	Mechanism   string             `json:"mechanism,omitempty"`
	// UserDisarmed: `kfault disarm KEY` turned it off; it is not re-armed (not at
	// synchronization either) while the container lives.
	UserDisarmed bool `json:"userDisarmed,omitempty"`
	// NotSelected are the annotation's faults whose select rule left this container out: they
	// are not armed, and are not in Faults. A container none of whose faults was selected has
	// an entry with no Faults, Armed false.
	NotSelected annotations.Faults `json:"notSelected,omitempty"`
	// Selection is the decision for every fault of the annotation, when one has a select rule.
	Selection []annotations.Decision `json:"selection,omitempty"`
}

// FaultIndex is the index in the annotation of Faults[i] (they differ when a select rule left
// an earlier fault out).
func (e Entry) FaultIndex(i int) int {
	if e.Selection == nil {
		return i
	}
	if sel := annotations.Selected(e.Selection); i >= 0 && i < len(sel) {
		return sel[i]
	}
	return i
}

// NotSelectedReasons says, per fault of NotSelected, why its rule left the container out.
func (e Entry) NotSelectedReasons() []string {
	var out []string
	for _, d := range e.Selection {
		if !d.Selected {
			out = append(out, fmt.Sprintf("fault %d: %s: %s", d.Fault, d.Rule, d.Reason))
		}
	}
	return out
}

// stateFile is the on-disk form.
type stateFile struct {
	Version    int               `json:"version"`
	Halted     bool              `json:"halted,omitempty"`
	Containers map[string]*Entry `json:"containers"`
}

// Store is the state file and its in-memory copy. It is safe for concurrent use.
//
// Changes are made in memory; RequestSave asks for the file to be written and returns at
// once. One writer goroutine at a time (started on demand, gone when idle) writes the latest
// snapshot: requests that arrive during a write cause exactly one more write, of the state
// as it is then, however many they are. Flush waits until a write that includes every
// change made before the call has completed. So no caller that only requests a save waits
// for JSON encoding or the disk.
//
// Writes are atomic: a temporary file in the same directory, fsync, rename, fsync of
// the directory. A crash leaves either the old or the new file, never a torn one.
type Store struct {
	mu      sync.Mutex
	dir     string
	halted  bool
	entries map[string]*Entry // a stored *Entry is never modified: Put and Update replace it
	lock    *os.File

	gen      uint64     // bumped by every change
	durable  uint64     // gen of the last successful write
	tried    uint64     // gen of the last finished write, failed or not
	tryErr   error      // its error
	finished uint64     // writes finished
	writing  bool       // a writer goroutine runs
	again    bool       // a save was requested since the writer took its snapshot
	done     *sync.Cond // on mu, broadcast after each write
	onError  func(error)
	// write replaces the file (writeFileAtomic); tests count or hold writes.
	write func(path string, data []byte) error
	// scans counts the operations that go through every entry (Snapshot, Keys): tests check
	// that a request makes none.
	scans int
}

// LockFileName is the lock that keeps two kfault instances off one state directory
// (two instances would arm every container twice).
const LockFileName = "lock"

// OpenLockedStore is OpenStore after taking the state directory's exclusive lock
// (flock on dir/lock), waiting up to timeout: a pre-registered instance that
// containerd relaunches waits for the previous one to finish exiting. The lock file
// holds the owner's pid. Unlock releases it.
func OpenLockedStore(dir string, timeout time.Duration) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	f, err := lockDir(dir, timeout)
	if err != nil {
		return nil, err
	}
	s, err := OpenStore(dir)
	if err != nil {
		f.Close()
		return nil, err
	}
	s.lock = f
	return s, nil
}

// lockDir takes the exclusive flock on dir/lock and writes the pid into it. The lock
// file is opened without following a symbolic link (a link planted there would have
// kfault, as root, create or overwrite the file it points to) and without truncating
// it: the pid replaces the previous owner's only once the lock is held.
func lockDir(dir string, timeout time.Duration) (*os.File, error) {
	path := filepath.Join(dir, LockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("state dir lock %s is a symbolic link; refusing to follow it (remove it)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("state dir lock: %w", err)
	}
	if err := checkLockFile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("state dir lock: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			owner := make([]byte, 32)
			n, _ := f.ReadAt(owner, 0)
			owner = owner[:n]
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, fmt.Errorf("state dir %s is in use by another kfault (pid %s); run one instance per node",
					dir, strings.TrimSpace(string(owner)))
			}
			return nil, fmt.Errorf("state dir lock: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return f, nil
}

// checkLockFile refuses a lock file that is not a regular file of its own: a FIFO or
// device planted at the path, or a hard link to some other file.
func checkLockFile(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file (%s)", f.Name(), st.Mode().Type())
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Nlink > 1 {
		return fmt.Errorf("%s has %d hard links; remove it", f.Name(), sys.Nlink)
	}
	return nil
}

// Unlock releases the lock taken by OpenLockedStore.
func (s *Store) Unlock() {
	s.mu.Lock()
	f := s.lock
	s.lock = nil
	s.mu.Unlock()
	if f != nil {
		f.Close() // releases the flock
	}
}

// OpenStore loads dir/state.json, creating dir (mode 0700) if needed. A missing file
// is an empty state.
func OpenStore(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	s := &Store{dir: dir, entries: map[string]*Entry{},
		write: func(path string, data []byte) error { return writeFileAtomic(path, data, 0o600) }}
	s.done = sync.NewCond(&s.mu)
	data, err := os.ReadFile(s.Path())
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state file: %w", err)
	}
	var f stateFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("state file %s: %w", s.Path(), err)
	}
	if f.Version != stateVersion {
		return nil, fmt.Errorf("state file %s: version %d, want %d", s.Path(), f.Version, stateVersion)
	}
	for k, e := range f.Containers {
		if e != nil {
			s.entries[k] = e
		}
	}
	s.halted = f.Halted
	return s, nil
}

// Path is the state file's path.
func (s *Store) Path() string { return filepath.Join(s.dir, StateFileName) }

// Get returns a copy of the entry for key.
func (s *Store) Get(key string) (Entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[key]
	if !ok {
		return Entry{}, false
	}
	return e.clone(), true
}

// Put stores a copy of e under key.
func (s *Store) Put(key string, e Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := e.clone()
	s.entries[key] = &c
	s.gen++
}

// Update applies fn to a copy of the entry for key, if there is one, stores the copy, and
// reports whether there was one.
func (s *Store) Update(key string, fn func(*Entry)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[key]
	if ok {
		c := e.clone()
		fn(&c)
		s.entries[key] = &c
		s.gen++
	}
	return ok
}

// Delete forgets key.
func (s *Store) Delete(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.entries[key]; ok {
		delete(s.entries, key)
		s.gen++
	}
}

// Keys returns the sorted keys.
func (s *Store) Keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scans++
	return slices.Sorted(maps.Keys(s.entries))
}

// Snapshot returns a copy of every entry.
func (s *Store) Snapshot() map[string]Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scans++
	out := make(map[string]Entry, len(s.entries))
	for k, e := range s.entries {
		out[k] = e.clone()
	}
	return out
}

// Halted reports whether `kfault disarm --all` stopped all arming.
func (s *Store) Halted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.halted
}

// SetHalted records the emergency stop (or its end).
func (s *Store) SetHalted(h bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.halted != h {
		s.halted = h
		s.gen++
	}
}

// OnSaveError sets what is called with the error of a failed background write.
func (s *Store) OnSaveError(f func(error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onError = f
}

// RequestSave asks for the state file to be written, and returns at once. Nothing is
// written when the file already has every change.
func (s *Store) RequestSave() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.durable < s.gen {
		s.kickLocked()
	}
}

// kickLocked starts the writer, or has it write once more after its current write.
func (s *Store) kickLocked() {
	if s.writing {
		s.again = true
		return
	}
	s.writing = true
	go s.writer()
}

// writer writes snapshots until no save was requested during its last write. The
// snapshot is a copy of the map of entries (they are never modified in place), taken
// under s.mu; encoding and I/O run without any lock.
func (s *Store) writer() {
	s.mu.Lock()
	for {
		s.again = false
		gen := s.gen
		snap := stateFile{Version: stateVersion, Halted: s.halted, Containers: maps.Clone(s.entries)}
		s.mu.Unlock()

		data, err := json.Marshal(snap)
		if err == nil {
			err = s.write(s.Path(), append(data, '\n'))
		}

		s.mu.Lock()
		s.finished++
		s.tried, s.tryErr = gen, err
		if err == nil && gen > s.durable {
			s.durable = gen
		}
		s.done.Broadcast()
		if err != nil && s.onError != nil {
			onError := s.onError
			s.mu.Unlock()
			onError(err)
			s.mu.Lock()
		}
		if !s.again {
			s.writing = false
			s.done.Broadcast()
			s.mu.Unlock()
			return
		}
	}
}

// Flush waits until the state file has every change made before the call: it returns nil
// once a write that includes them has completed, or the error of a write (started after
// the call) that included them and failed.
func (s *Store) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	target := s.gen
	if s.durable >= target {
		return nil
	}
	s.kickLocked()
	seen := s.finished
	for s.durable < target {
		if s.finished > seen && s.tried >= target && s.tryErr != nil {
			return s.tryErr
		}
		if !s.writing {
			s.kickLocked() // a write that took its snapshot before the call finished
		}
		s.done.Wait()
	}
	return nil
}

// waitIdle waits until no writer runs (none may start afterwards, if nothing asks).
func (s *Store) waitIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.writing {
		s.done.Wait()
	}
}

// Save writes the state file now (whether or not anything changed) and returns when it is
// written; it goes through the writer, so that writes never race.
func (s *Store) Save() error {
	s.mu.Lock()
	s.gen++
	s.mu.Unlock()
	return s.Flush()
}

// writeFileAtomic replaces path with data: temp file in the same directory, fsync,
// rename over path, fsync of the directory so that the rename itself is durable.
func writeFileAtomic(path string, data []byte, mode os.FileMode) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(mode); err != nil {
		return err
	}
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, derr := os.Open(dir)
	if derr != nil {
		return nil // the rename happened; durability of the directory is best effort
	}
	defer d.Close()
	_ = d.Sync()
	return nil
}

func (e Entry) clone() Entry {
	e.Injected = slices.Clone(e.Injected)
	e.Faults = slices.Clone(e.Faults)
	e.NotSelected = slices.Clone(e.NotSelected)
	e.Selection = slices.Clone(e.Selection)
	return e
}
