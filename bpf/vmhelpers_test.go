package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kfault/kfault/annotations"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if testRootOnce.path != "" {
		removeCgroup(testRootOnce.path)
	}
	os.Exit(code)
}

// requireVM skips unless the test runs inside the test VM (test/vm/run sets KFAULT_E2E=1), as
// root, on a kernel that lets us load BPF tracing programs.
func requireVM(t testing.TB) {
	t.Helper()
	if os.Getenv("KFAULT_E2E") != "1" {
		t.Skip("run inside the test VM: make test (needs KFAULT_E2E=1, root and a kernel with BPF override)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	requireBPF(t)
}

// requireBPF skips when the kernel denies BPF tracing programs altogether.
func requireBPF(t testing.TB) {
	t.Helper()
	fmodErr := HaveFmodRet()
	kpErr := HaveKprobeOverride()
	if fmodErr != nil && kpErr != nil {
		// Skip only for a kernel that lacks the option, not for a probe that broke.
		if c := KernelConfig("CONFIG_FUNCTION_ERROR_INJECTION"); c == "y" {
			t.Fatalf("CONFIG_FUNCTION_ERROR_INJECTION=y, yet no override mechanism works: fmod_ret: %v; kprobe: %v", fmodErr, kpErr)
		}
		t.Skipf("no override mechanism on this kernel (CONFIG_FUNCTION_ERROR_INJECTION=%q; kfault check says: fmod_ret: %v; kprobe: %v)",
			KernelConfig("CONFIG_FUNCTION_ERROR_INJECTION"), fmodErr, kpErr)
	}
}

// newTestEngine creates an engine with a forced mechanism. It skips when the mechanism is not
// built into this kernel variant (e.g. no CONFIG_BPF_KPROBE_OVERRIDE), fails otherwise.
func newTestEngine(t testing.TB, m Mechanism) *Engine {
	t.Helper()
	return newTestEngineWith(t, Options{Mechanism: m})
}

// newTestEngineWith is newTestEngine with other options.
func newTestEngineWith(t testing.TB, o Options) *Engine {
	t.Helper()
	m := o.Mechanism
	e, err := NewEngine(o)
	if err != nil {
		if m == MechanismKprobe && errors.Is(err, ErrMechanismUnavailable) && KernelConfig("CONFIG_BPF_KPROBE_OVERRIDE") != "y" {
			t.Skipf("kprobe override not in this kernel (CONFIG_BPF_KPROBE_OVERRIDE=%q): %v", KernelConfig("CONFIG_BPF_KPROBE_OVERRIDE"), err)
		}
		t.Fatalf("NewEngine(%s): %v", m, err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return e
}

// cgroup is a test cgroup, removed at the end of the test.
type cgroup struct {
	path   string
	target Target
	// newMountNS: processes start in a mount namespace of their own, as a container's
	// program does (the exec boundary of a cgroup armed as it was made tells them apart).
	newMountNS bool
}

var cgroupSeq int

var testRootOnce struct {
	sync.Once
	path string
	err  error
}

// testCgroupRoot is /sys/fs/cgroup/kfault-test-<pid>, shared by the tests of this process.
func testCgroupRoot(t testing.TB) string {
	testRootOnce.Do(func() {
		p := filepath.Join(Cgroup2Mount(), fmt.Sprintf("kfault-test-%d", os.Getpid()))
		testRootOnce.path, testRootOnce.err = p, os.Mkdir(p, 0o755)
	})
	if testRootOnce.err != nil && !errors.Is(testRootOnce.err, os.ErrExist) {
		t.Fatalf("create test cgroup root: %v", testRootOnce.err)
	}
	return testRootOnce.path
}

func newCgroup(t testing.TB, parent, name string) *cgroup {
	t.Helper()
	if parent == "" {
		parent = testCgroupRoot(t)
	}
	cgroupSeq++
	p := filepath.Join(parent, fmt.Sprintf("%s-%d", name, cgroupSeq))
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatalf("mkdir cgroup: %v", err)
	}
	t.Cleanup(func() { removeCgroup(p) })
	tg, err := TargetFromPath(p)
	if err != nil {
		t.Fatal(err)
	}
	return &cgroup{path: p, target: tg}
}

// removeCgroup kills what is left in a cgroup tree and removes it, deepest first.
func removeCgroup(p string) {
	_ = os.WriteFile(filepath.Join(p, "cgroup.kill"), []byte("1"), 0)
	ents, _ := os.ReadDir(p)
	for _, e := range ents {
		if e.IsDir() {
			removeCgroup(filepath.Join(p, e.Name()))
		}
	}
	for i := 0; i < 50; i++ {
		if err := os.Remove(p); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// victimPath finds (or builds) the kfault-victim helper (test/progs/kfault-victim.c).
func victimPath(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("KFAULT_VICTIM"); p != "" {
		return p
	}
	_, file, _, _ := runtime.Caller(0)
	repo := filepath.Dir(filepath.Dir(file))
	if r := os.Getenv("KFAULT_REPO"); r != "" {
		repo = r
	}
	bin := filepath.Join(repo, "out", "progs", "kfault-victim")
	victimBuild.Do(func() {
		// Run it from a private copy on tmpfs: a victim that exits under 100% slab faults
		// cannot release its executable cleanly when that lives on the VM's 9p root, and the
		// next exec of the same file fails (EINVAL).
		out := filepath.Join(os.TempDir(), fmt.Sprintf("kfault-victim-%d", os.Getpid()))
		src := filepath.Join(repo, "test", "progs", "kfault-victim.c")
		// A prebuilt binary older than the source may lack an operation: build it then.
		stale := false
		if bi, err := os.Stat(bin); err == nil {
			if si, err := os.Stat(src); err == nil && si.ModTime().After(bi.ModTime()) {
				stale = true
			}
		}
		if data, err := os.ReadFile(bin); err == nil && !stale {
			if err := os.WriteFile(out, data, 0o755); err != nil {
				victimBuild.err = err
				return
			}
			victimBuild.path = out
			return
		}
		cmd := exec.Command("gcc", "-static", "-O2", "-o", out, src)
		if b, err := cmd.CombinedOutput(); err != nil {
			victimBuild.err = fmt.Errorf("%s missing and building it failed: %v\n%s\n(build it on the host: gcc -static -O2 -o %s %s)", bin, err, b, bin, src)
			return
		}
		victimBuild.path = out
	})
	if victimBuild.err != nil {
		t.Fatal(victimBuild.err)
	}
	return victimBuild.path
}

var victimBuild struct {
	sync.Once
	path string
	err  error
}

// victim is one kfault-victim process, set up and waiting for its go signal.
type victim struct {
	t    testing.TB
	cmd  *exec.Cmd
	goW  *os.File
	mem  *os.File
	n    int
	done chan error
	out  *strings.Builder
}

type victimResult struct {
	n, ok, fail int
	firstErrno  syscall.Errno
	extra       uint32 // per operation: tcp: the listener's drops (kfault-victim.c)
	elapsed     time.Duration
	seq         []syscall.Errno // per operation: 0 or the errno
}

func (r victimResult) String() string {
	return fmt.Sprintf("%d ops: %d ok, %d failed (first: %v), %v", r.n, r.ok, r.fail, r.firstErrno, r.elapsed)
}

// startInCgroup starts cmd directly in cg (clone3 CLONE_INTO_CGROUP), so that it never runs
// a single instruction anywhere else.
func startInCgroup(cg *cgroup, cmd *exec.Cmd) error {
	fd, err := unix.Open(cg.path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	if cg.newMountNS {
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWNS
	}
	return cmd.Start()
}

// startVictim starts kfault-victim OP N [args] directly in cg and waits until it is set up.
func startVictim(t testing.TB, cg *cgroup, op string, n int, args ...string) *victim {
	t.Helper()
	memfd, err := unix.MemfdCreate("kfault-victim", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	mem := os.NewFile(uintptr(memfd), "memfd")
	if err := mem.Truncate(int64(32 + n)); err != nil {
		t.Fatal(err)
	}
	goR, goW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	v := &victim{t: t, goW: goW, mem: mem, n: n, done: make(chan error, 1), out: &strings.Builder{}}
	v.cmd = exec.Command(victimPath(t), append([]string{op, fmt.Sprint(n)}, args...)...)
	v.cmd.ExtraFiles = []*os.File{goR, mem, readyW} // fds 3, 4, 5
	v.cmd.Stdout, v.cmd.Stderr = v.out, v.out
	if err := startInCgroup(cg, v.cmd); err != nil {
		t.Fatalf("start victim in %s: %v", cg.path, err)
	}
	goR.Close()
	readyW.Close()
	go func() { v.done <- v.cmd.Wait() }()
	t.Cleanup(func() {
		goW.Close()
		if v.cmd.ProcessState == nil {
			v.cmd.Process.Kill()
		}
		mem.Close()
	})
	buf := make([]byte, 1)
	if _, err := readyR.Read(buf); err != nil {
		readyR.Close()
		err := <-v.done
		t.Fatalf("victim %s did not get ready: %v: %s", op, err, v.out)
	}
	readyR.Close()
	return v
}

// run sends the go signal, waits for the victim to finish and reads its results.
func (v *victim) run() victimResult {
	v.t.Helper()
	if _, err := v.goW.Write([]byte{1}); err != nil {
		v.t.Fatal(err)
	}
	v.goW.Close()
	select {
	case err := <-v.done:
		if err != nil {
			v.t.Fatalf("victim: %v: %s", err, v.out)
		}
	case <-time.After(5 * time.Minute):
		v.cmd.Process.Kill()
		v.t.Fatalf("victim timed out: %s", v.out)
	}
	raw, err := io.ReadAll(io.NewSectionReader(v.mem, 0, int64(32+v.n)))
	if err != nil {
		v.t.Fatal(err)
	}
	le := binary.LittleEndian
	if le.Uint32(raw[0:]) != 0x6b666c74 {
		v.t.Fatalf("victim left no results: %s", v.out)
	}
	r := victimResult{
		n:          int(le.Uint32(raw[4:])),
		ok:         int(le.Uint32(raw[8:])),
		fail:       int(le.Uint32(raw[12:])),
		firstErrno: syscall.Errno(le.Uint32(raw[16:])),
		extra:      le.Uint32(raw[20:]),
		elapsed:    time.Duration(le.Uint64(raw[24:])),
	}
	for _, b := range raw[32 : 32+r.n] {
		r.seq = append(r.seq, syscall.Errno(b))
	}
	return r
}

// runVictim starts a victim and runs it right away.
func runVictim(t testing.TB, cg *cgroup, op string, n int, args ...string) victimResult {
	t.Helper()
	return startVictim(t, cg, op, n, args...).run()
}

// loadedKfaultPrograms lists the BPF programs loaded in the kernel whose name starts with kfault_.
func loadedKfaultPrograms(t testing.TB) []string {
	t.Helper()
	var names []string
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if err != nil {
			t.Fatalf("ProgramGetNextID: %v", err)
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // gone meanwhile
		}
		info, err := p.Info()
		p.Close()
		if err == nil && strings.HasPrefix(info.Name, "kfault_") {
			names = append(names, fmt.Sprintf("%s (id %d)", info.Name, id))
		}
	}
	return names
}

// requireNoKfaultPrograms fails unless no kfault program is loaded (waiting briefly for the
// kernel's deferred release).
func requireNoKfaultPrograms(t testing.TB) {
	t.Helper()
	var left []string
	for i := 0; i < 50; i++ {
		if left = loadedKfaultPrograms(t); len(left) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("kfault programs still loaded: %v", left)
	if out, err := exec.Command("bpftool", "prog", "show").CombinedOutput(); err == nil {
		t.Logf("bpftool prog show:\n%s", out)
	}
}

// armFaults prepares and arms faults in one step, as most tests want.
func (e *Engine) armFaults(key string, t Target, faults []annotations.Fault, injected []uint64) error {
	plan, err := e.Prepare(faults)
	if err != nil {
		return fmt.Errorf("arm %s: %w", key, err)
	}
	return e.Arm(key, t, plan, ArmOptions{Injected: injected})
}
