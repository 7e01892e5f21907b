package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestStoreRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	entries := map[string]Entry{
		"c1": {Source: SourceNRI, Namespace: "default", Pod: "web", Container: "app", ContainerID: "c1",
			CgroupPath: "/sys/fs/cgroup/a", CgroupID: 42, Annotation: "faults.kfault.dev/pod",
			Faults: mustFaults("{failtype: 0, times: 10}"), Injected: []uint64{3}, Armed: true,
			ArmedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Mechanism: "fmod_ret"},
		"default/n1": {Source: SourceContainerd, Namespace: "default", Container: "n1", ContainerID: "n1",
			Faults: mustFaults("[{failtype: 1}, {failtype: 2}]"), Injected: []uint64{0, 7}},
	}
	for k, e := range entries {
		s.Put(k, e)
	}
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", st.Mode().Perm())
	}
	if dst, _ := os.Stat(dir); dst.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v, want 0700", dst.Mode().Perm())
	}

	s2, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := s2.Snapshot(); !reflect.DeepEqual(got, entries) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, entries)
	}

	// Copies, not aliases.
	e, _ := s2.Get("c1")
	e.Injected[0] = 99
	if e2, _ := s2.Get("c1"); e2.Injected[0] != 3 {
		t.Error("Get returned an alias")
	}
}

func TestStoreAtomicSave(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.Put("k", Entry{Faults: mustFaults("{failtype: 0}"), Injected: []uint64{1}})
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	// Hold the first version open: a replacement by rename leaves it intact.
	old, err := os.Open(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	oldData, _ := os.ReadFile(s.Path())

	// Concurrent readers must always see a whole file: a replacement by rename, never
	// a truncate-and-write.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			data, err := os.ReadFile(s.Path())
			if err == nil {
				var f stateFile
				err = json.Unmarshal(data, &f)
			}
			if err != nil {
				select {
				case errs <- err:
				default:
				}
				return
			}
		}
	}()
	for i := range 200 {
		s.Put("k", Entry{Pod: strings.Repeat("y", i*50), Injected: []uint64{uint64(i)}})
		if err := s.Save(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("a reader saw a torn state file: %v", err)
	default:
	}
	if got, _ := io.ReadAll(old); string(got) != string(oldData) {
		t.Error("the state file was rewritten in place, not replaced by rename")
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".state.json.tmp-*"))
	if len(left) != 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}

func TestOpenStoreErrors(t *testing.T) {
	tests := map[string]struct {
		content string
		err     string
	}{
		"garbage":       {content: "{not json", err: "state file"},
		"wrong version": {content: `{"version": 7, "containers": {}}`, err: "version 7, want 1"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, StateFileName), []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := OpenStore(dir); err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want %q", err, tc.err)
			}
		})
	}
}

func TestStateDirLock(t *testing.T) {
	dir := t.TempDir()
	s1, err := OpenLockedStore(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("is in use by another kfault (pid %d)", os.Getpid())
	if _, err := OpenLockedStore(dir, 100*time.Millisecond); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("second instance: %v, want %q", err, want)
	}
	// A successor waits for the previous instance to let go.
	go func() {
		time.Sleep(150 * time.Millisecond)
		s1.Unlock()
	}()
	s2, err := OpenLockedStore(dir, 5*time.Second)
	if err != nil {
		t.Fatalf("successor: %v", err)
	}
	s2.Unlock()
}

func TestStateDirLockRefusesPlantedFiles(t *testing.T) {
	for name, tc := range map[string]struct {
		plant func(t *testing.T, lock, victim string)
		want  string
	}{
		"symlink to a file": {
			plant: func(t *testing.T, lock, victim string) { mustDo(t, os.Symlink(victim, lock)) },
			want:  "is a symbolic link; refusing to follow it",
		},
		"dangling symlink": {
			plant: func(t *testing.T, lock, victim string) {
				mustDo(t, os.Remove(victim))
				mustDo(t, os.Symlink(victim, lock))
			},
			want: "is a symbolic link; refusing to follow it",
		},
		"hard link": {
			plant: func(t *testing.T, lock, victim string) { mustDo(t, os.Link(victim, lock)) },
			want:  "has 2 hard links",
		},
		"fifo": {
			plant: func(t *testing.T, lock, victim string) { mustDo(t, syscall.Mkfifo(lock, 0o600)) },
			want:  "is not a regular file",
		},
		"directory": {
			plant: func(t *testing.T, lock, victim string) { mustDo(t, os.Mkdir(lock, 0o700)) },
			want:  "state dir lock",
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			victim := filepath.Join(t.TempDir(), "victim")
			mustDo(t, os.WriteFile(victim, []byte("precious\n"), 0o600))
			lock := filepath.Join(dir, LockFileName)
			tc.plant(t, lock, victim)
			s, err := OpenLockedStore(dir, 100*time.Millisecond)
			if err == nil {
				s.Unlock()
				t.Fatalf("locked through a planted %s", name)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want %q", err, tc.want)
			}
			// The file the plant points to is neither created, truncated nor written.
			data, err := os.ReadFile(victim)
			switch {
			case name == "dangling symlink":
				if err == nil {
					t.Fatalf("created the symlink's target: %q", data)
				}
			case err != nil || string(data) != "precious\n":
				t.Fatalf("victim now %q (%v)", data, err)
			}
		})
	}
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// heldWrites replaces s's file writes with ones that the test lets through one at a time:
// each write is announced on started (with the data) and waits for release.
func heldWrites(s *Store) (started chan []byte, release chan struct{}) {
	started, release = make(chan []byte), make(chan struct{})
	real := s.write
	s.mu.Lock()
	s.write = func(path string, data []byte) error {
		started <- data
		<-release
		return real(path, data)
	}
	s.mu.Unlock()
	return started, release
}

// Requests made during a write cause exactly one more write, of the latest state; a request
// never waits for the disk; Flush waits for a write with every change before it.
func TestStoreSaveCoalesces(t *testing.T) {
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	started, release := heldWrites(s)

	s.Put("a", Entry{Injected: []uint64{1}})
	s.RequestSave() // returns with the write held
	first := <-started
	for i := range 50 {
		s.Put("b", Entry{Injected: []uint64{uint64(i)}})
		s.RequestSave()
	}
	flushed := make(chan error)
	go func() { flushed <- s.Flush() }()
	release <- struct{}{}
	second := <-started // the one more write, with the last change
	release <- struct{}{}
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	var f1, f2 stateFile
	if err := json.Unmarshal(first, &f1); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(second, &f2); err != nil {
		t.Fatal(err)
	}
	if len(f1.Containers) != 1 || f2.Containers["b"] == nil || f2.Containers["b"].Injected[0] != 49 {
		t.Fatalf("writes: first %s, second %s", first, second)
	}
	if strings.Contains(string(second), "\n  ") {
		t.Errorf("state file is indented, want compact JSON: %.80s", second)
	}
	// Nothing changed since: no write (a third write would block on started).
	s.RequestSave()
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	s2, err := OpenStore(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := s2.Get("b"); len(e.Injected) != 1 || e.Injected[0] != 49 {
		t.Errorf("reopened: %+v", e)
	}
}

// A failed write: Flush returns its error, the error handler gets it, and the next Flush
// tries again.
func TestStoreFlushError(t *testing.T) {
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fail := errors.New("disk full")
	var mu sync.Mutex
	failing := true
	var reported []error
	s.OnSaveError(func(err error) { mu.Lock(); reported = append(reported, err); mu.Unlock() })
	real := s.write
	s.write = func(path string, data []byte) error {
		mu.Lock()
		defer mu.Unlock()
		if failing {
			return fail
		}
		return real(path, data)
	}
	s.SetHalted(true)
	if err := s.Flush(); !errors.Is(err, fail) {
		t.Fatalf("Flush: %v, want %v", err, fail)
	}
	mu.Lock()
	failing = false
	if len(reported) != 1 {
		t.Errorf("error handler got %v", reported)
	}
	mu.Unlock()
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if s2, err := OpenStore(s.dir); err != nil || !s2.Halted() {
		t.Fatalf("reopened: %v, halted %v", err, s2 != nil && s2.Halted())
	}
}
