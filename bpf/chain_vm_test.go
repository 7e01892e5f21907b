package bpf

// Call-chain tests that inject real faults; inside the test VM only (see vm_test.go):
//
//	gcc -static -O2 -o out/progs/kfault-victim test/progs/kfault-victim.c
//	go test -c -o out/e2e/bpf.test ./bpf
//	test/vm/run -- out/e2e/bpf.test -test.v -test.run 'TestVMChain'

import (
	"bufio"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/kfault/kfault/annotations"
	"github.com/kfault/kfault/bpf/predicate"
)

const bananas = `STRNCMP(name->name, "bananas", 8)`

// tmpfsDir mounts a fresh tmpfs for the test. tmpfs keeps no negative dentries, so every
// lookup of a missing name takes the slow path through d_alloc_parallel.
func tmpfsDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("kfault-test", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

func slabChain(frames ...annotations.Frame) annotations.Fault {
	return annotations.Fault{FailType: annotations.Slab, Probability: 100, CallChain: frames}
}

// TestVMChainDAllocParallel is the KernelChaos docs' example: stat of a missing "bananas" fails
// with ENOMEM in the target cgroup; "apples" there, and "bananas" in a bystander, do not.
func TestVMChainDAllocParallel(t *testing.T) {
	forEachMechanism(t, func(t *testing.T, e *Engine) {
		for _, tc := range []struct{ name, params string }{
			{"parameters", "struct dentry *parent, const struct qstr *name"},
			{"btf", ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				dir := tmpfsDir(t)
				victimCg := newCgroup(t, "", "chain-victim")
				byCg := newCgroup(t, "", "chain-bystander")
				armOne(t, e, "bananas", victimCg, slabChain(annotations.Frame{
					FuncName: "d_alloc_parallel", Parameters: tc.params, Predicate: bananas}))
				vr := runVictim(t, victimCg, "stat", 20, filepath.Join(dir, "bananas"))
				expectAll(t, "victim bananas", vr, syscall.ENOMEM)
				expectAll(t, "victim apples", runVictim(t, victimCg, "stat", 20, filepath.Join(dir, "apples")), syscall.ENOENT)
				expectAll(t, "victim bananasplit", runVictim(t, victimCg, "stat", 20, filepath.Join(dir, "bananasplit")), syscall.ENOENT)
				expectAll(t, "victim slab allocations outside the chain", runVictim(t, victimCg, "slab", 20), 0)
				expectAll(t, "bystander bananas", runVictim(t, byCg, "stat", 20, filepath.Join(dir, "bananas")), syscall.ENOENT)
				if c, err := e.Counts("bananas"); err != nil || c[0] != uint64(vr.fail) {
					t.Errorf("Counts = %v, %v; the victim saw %d failures", c, err, vr.fail)
				}
				if err := e.Disarm("bananas"); err != nil {
					t.Fatal(err)
				}
				requireNoKfaultPrograms(t)
				expectAll(t, "victim bananas after disarm", runVictim(t, victimCg, "stat", 5, filepath.Join(dir, "bananas")), syscall.ENOENT)
			})
		}
	})
}

// TestVMChainTwoFrames: a chain hits only with both frames on the stack, in order.
func TestVMChainTwoFrames(t *testing.T) {
	forEachMechanism(t, func(t *testing.T, e *Engine) {
		dir := tmpfsDir(t)
		path := filepath.Join(dir, "bananas")
		stat := annotations.Frame{FuncName: "__x64_sys_newfstatat"}
		dalloc := annotations.Frame{FuncName: "d_alloc_parallel", Predicate: bananas}
		inOrder := newCgroup(t, "", "chain-in-order")
		reversed := newCgroup(t, "", "chain-reversed")
		inner := newCgroup(t, "", "chain-inner-only")
		armOne(t, e, "in-order", inOrder, slabChain(stat, dalloc))
		armOne(t, e, "reversed", reversed, slabChain(dalloc, stat))
		armOne(t, e, "inner-only", inner, slabChain(dalloc)) // shares the d_alloc_parallel frame
		// One hook program, and one fentry/fexit pair per distinct frame: 1 + 2*2.
		if progs := loadedKfaultPrograms(t); len(progs) != 5 {
			t.Errorf("%d kfault programs loaded, want 5 (frames shared): %v", len(progs), progs)
		}

		// stat: newfstatat -> ... -> d_alloc_parallel("bananas"): both frames, in order.
		expectAll(t, "stat, chain in order", runVictim(t, inOrder, "stat", 20, path), syscall.ENOMEM)
		// open: d_alloc_parallel("bananas") without newfstatat: only the inner frame.
		expectAll(t, "open, chain in order", runVictim(t, inOrder, "open", 20, path), syscall.ENOENT)
		// Both frames are on the stack, but not in the chain's order.
		expectAll(t, "stat, chain reversed", runVictim(t, reversed, "stat", 20, path), syscall.ENOENT)
		// The one-frame chain sharing the frame hits both ways.
		expectAll(t, "stat, inner frame only", runVictim(t, inner, "stat", 10, path), syscall.ENOMEM)
		expectAll(t, "open, inner frame only", runVictim(t, inner, "open", 10, path), syscall.ENOMEM)

		e.Disarm("inner-only")
		expectAll(t, "stat, chain in order, after the other disarm", runVictim(t, inOrder, "stat", 10, path), syscall.ENOMEM)
		e.Disarm("reversed")
		e.Disarm("in-order")
		requireNoKfaultPrograms(t)
	})
}

// TestVMChainMount: a slab fault under __x64_sys_mount fails mount(2) with ENOMEM in the
// target; other syscalls there, and mount in a bystander, keep working.
func TestVMChainMount(t *testing.T) {
	forEachMechanism(t, func(t *testing.T, e *Engine) {
		mnt := t.TempDir()
		victimCg := newCgroup(t, "", "mount-victim")
		byCg := newCgroup(t, "", "mount-bystander")
		armOne(t, e, "mount", victimCg, slabChain(annotations.Frame{FuncName: "__x64_sys_mount"}))
		expectAll(t, "victim mount", runVictim(t, victimCg, "mount", 20, mnt), syscall.ENOMEM)
		expectAll(t, "victim eventfd", runVictim(t, victimCg, "slab", 20), 0)
		expectAll(t, "victim open", runVictim(t, victimCg, "open", 20), 0)
		expectAll(t, "bystander mount", runVictim(t, byCg, "mount", 20, mnt), 0)
	})
}

// TestVMChainHookPredicate: a predicate on the hooked function itself (the chain's last frame
// is should_failslab), evaluated by a frame program that runs before the fmod_ret program.
func TestVMChainHookPredicate(t *testing.T) {
	forEachMechanism(t, func(t *testing.T, e *Engine) {
		dir := tmpfsDir(t)
		path := filepath.Join(dir, "bananas")
		dalloc := annotations.Frame{FuncName: "d_alloc_parallel", Predicate: bananas}
		cache := func(name string) annotations.Frame {
			return annotations.Frame{FuncName: "should_failslab", Parameters: "struct kmem_cache *s, gfp_t gfpflags",
				Predicate: `STRCMP(s->name, "` + name + `")`}
		}
		cg := newCgroup(t, "", "hookpred")
		other := newCgroup(t, "", "hookpred-other")
		err := e.armFaults("dentry", cg.target, []annotations.Fault{slabChain(dalloc, cache("dentry"))}, nil)
		if e.Mechanism() == MechanismKprobe {
			if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "callchain[1]") {
				t.Fatalf("kprobe: got %v, want ErrNotSupported naming callchain[1]", err)
			}
			t.Logf("kprobe: %v", err)
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Disarm("dentry") })
		armOne(t, e, "other", other, slabChain(dalloc, cache("no-such-cache")))
		expectAll(t, "dentry cache predicate", runVictim(t, cg, "stat", 20, path), syscall.ENOMEM)
		expectAll(t, "other cache predicate", runVictim(t, other, "stat", 20, path), syscall.ENOENT)
	})
}

func TestVMChainErrors(t *testing.T) {
	forEachMechanism(t, func(t *testing.T, e *Engine) {
		cg := newCgroup(t, "", "chain-errors")
		for _, tc := range []struct {
			frames []annotations.Frame
			want   string
		}{
			{[]annotations.Frame{{FuncName: "__x64_sys_newfstatat"}, {FuncName: "d_alloc_parallel", Predicate: `STRNCMP(name->nme, "x", 2)`}},
				`callchain[1].predicate: column 15: unknown member "nme"`},
			{[]annotations.Frame{{FuncName: "no_such_function_kfault"}}, "callchain[0].funcname"},
			{[]annotations.Frame{{FuncName: "d_alloc_parallel", Parameters: "struct inode *parent"}}, "callchain[0].parameters"},
		} {
			f := []annotations.Fault{slabChain(tc.frames...)}
			err := e.armFaults("x", cg.target, f, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Arm: got %v, want an error containing %q", err, tc.want)
			}
			var fe *predicate.FrameError
			if !errors.As(err, &fe) {
				t.Errorf("Arm: %v is not a *predicate.FrameError", err)
			}
			if verr := e.Validate(f); verr == nil || !strings.Contains(verr.Error(), tc.want) {
				t.Errorf("Validate: got %v, want an error containing %q", verr, tc.want)
			}
		}
		if len(e.Armed()) != 0 {
			t.Errorf("Armed() = %v after failed arms", e.Armed())
		}
	})
}

// TestVMChainScope: a frame's entry program records state only for tasks in the cgroups armed
// with a chain through it. A shell in the armed cgroup and one in a bystander cgroup both look up
// a missing name (d_alloc_parallel, the frame, without a predicate so that it matches for anyone
// it runs for); the armed one then has task storage, the bystander none. The fault is on mount,
// which the shells never call: a slab fault under d_alloc_parallel would fail the shell's own
// exec in the armed cgroup.
func TestVMChainScope(t *testing.T) {
	requireVM(t)
	e := newTestEngine(t, MechanismFmodRet)
	dir := tmpfsDir(t)
	armed := newCgroup(t, "", "scope-armed")
	by := newCgroup(t, "", "scope-bystander")
	armOne(t, e, "scope", armed, annotations.Fault{Function: "__x64_sys_mount", Errno: int(unix.EPERM), Probability: 100,
		CallChain: []annotations.Frame{{FuncName: "d_alloc_parallel"}}})
	var fid uint32
	for _, fp := range e.chains.frames {
		fid = fp.id
	}
	for _, c := range []struct {
		name  string
		cg    *cgroup
		state bool
	}{{"armed", armed, true}, {"bystander", by, false}} {
		found, v := shellTaskState(t, e, c.cg, filepath.Join(dir, "bananas"))
		if found != c.state {
			t.Errorf("%s: task state %v, want %v", c.name, found, c.state)
		}
		if found && (v.F[fid].Gen == 0 || v.F[fid].Calls != 0) {
			t.Errorf("%s: frame %d state %+v: want this frame's generation, no call open", c.name, fid, v.F[fid])
		}
	}
	// Disarmed: the scope is empty again (the frame is detached with its last rule).
	if err := e.Disarm("scope"); err != nil {
		t.Fatal(err)
	}
	if n := len(e.chains.frames); n != 0 {
		t.Errorf("%d frames left after disarm", n)
	}
}

// shellTaskState runs a shell in cg that checks whether path exists (a lookup in the shell's own
// task), then looks the shell's task storage up (by pidfd) while it waits on stdin.
func shellTaskState(t *testing.T, e *Engine, cg *cgroup, path string) (bool, kfaultTaskChains) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", `test -e "$1"; echo ready; read x`, "sh", path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := startInCgroup(cg, cmd); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("shell: %q, %v", line, err)
	}
	pidfd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	var v kfaultTaskChains
	err = e.chains.taskChains.Lookup(int32(pidfd), &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return false, v
	}
	if err != nil {
		t.Fatalf("look the task storage up: %v", err)
	}
	return true, v
}
