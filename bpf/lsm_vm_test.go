package bpf

// LSM hooks through fmod_ret, and failtype alloc: they work on every kernel of the matrix,
// Debian's binary kernels (no error injection) included. Inside the test VM only (see
// vm_test.go):
//
//	test/vm/run --kernel debian-6.12 -- out/bpf.test -test.v -test.run 'TestVMLSM|TestVMAlloc'

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/kfault/kfault/annotations"
)

// requireLSM skips unless the test runs inside the test VM, as root, on a kernel where fmod_ret
// attaches to LSM hooks. A kernel whose config says it should (CONFIG_SECURITY and BTF) fails.
func requireLSM(t *testing.T) {
	t.Helper()
	if os.Getenv("KFAULT_E2E") != "1" || os.Geteuid() != 0 {
		t.Skip("run inside the test VM as root: make test")
	}
	if err := HaveFmodRetLSM(); err != nil {
		if KernelConfig("CONFIG_SECURITY") == "y" && KernelConfig("CONFIG_DEBUG_INFO_BTF") == "y" {
			t.Fatalf("CONFIG_SECURITY=y and BTF, yet fmod_ret does not attach to LSM hooks: %v", err)
		}
		t.Skipf("fmod_ret does not attach to LSM hooks here: %v", err)
	}
}

// newLSMEngine is an fmod_ret engine, on a kernel without error injection one limited to LSM
// hooks.
func newLSMEngine(t *testing.T) *Engine {
	t.Helper()
	requireLSM(t)
	e := newTestEngine(t, MechanismFmodRet)
	if want := KernelConfig("CONFIG_FUNCTION_ERROR_INJECTION") != "y"; e.LSMOnly() != want {
		t.Errorf("LSMOnly() = %v, want %v (CONFIG_FUNCTION_ERROR_INJECTION=%q)", e.LSMOnly(), want, KernelConfig("CONFIG_FUNCTION_ERROR_INJECTION"))
	}
	return e
}

// TestVMLSMFileOpenTimes: function: security_file_open, errno: EACCES, times: 3 fails exactly the
// victim's first three opens, and none of a bystander's running at the same time.
func TestVMLSMFileOpenTimes(t *testing.T) {
	e := newLSMEngine(t)
	victimCg := newCgroup(t, "", "lsm-times-victim")
	byCg := newCgroup(t, "", "lsm-times-bystander")
	v := startVictim(t, victimCg, "open", 20)
	b := startVictim(t, byCg, "open", 20)
	armOne(t, e, "lsm-times", victimCg, annotations.Fault{Function: "security_file_open", Errno: int(syscall.EACCES), Probability: 100, Times: 3})
	vr, br := v.run(), b.run()
	expectFirst(t, "victim", vr, 3, syscall.EACCES)
	t.Logf("victim: %s", vr)
	expectAll(t, "bystander", br, 0)
	if c := counts(t, e, "lsm-times"); c != 3 {
		t.Errorf("Counts = %d, want 3", c)
	}
	e.Disarm("lsm-times")
	requireNoKfaultPrograms(t)
}

// allocHookCases: per alloc hook, the victim operation that reaches it and what the process sees
// when the hook fails with -ENOMEM (docs/annotations.md has the table).
var allocHookCases = []struct {
	hook string
	op   string
	want syscall.Errno
}{
	{"security_file_alloc", "open", syscall.ENOMEM},
	{"security_inode_alloc", "pipe", syscall.ENFILE},
	{"security_sk_alloc", "socket", syscall.ENOMEM},
	{"security_task_alloc", "fork", syscall.ENOMEM},
	{"security_prepare_creds", "creds", syscall.ENOMEM},
	{"security_sb_alloc", "mount", syscall.ENOMEM},
	{"security_msg_msg_alloc", "msg", syscall.ENOMEM},
	{"security_vm_enough_memory_mm", "mmap", syscall.ENOMEM},
}

// TestVMAllocHooks: what a process sees when each hook of failtype alloc fails, one hook at a
// time (the fault alloc puts on each: -ENOMEM), with a bystander doing the same untouched.
func TestVMAllocHooks(t *testing.T) {
	e := newLSMEngine(t)
	if len(allocHookCases) != len(annotations.FailPoints[annotations.Alloc].Functions) {
		t.Fatalf("%d cases for %d alloc hooks", len(allocHookCases), len(annotations.FailPoints[annotations.Alloc].Functions))
	}
	for _, tc := range allocHookCases {
		t.Run(tc.hook, func(t *testing.T) {
			var args []string
			if tc.op == "mount" {
				args = []string{t.TempDir()}
			}
			failtypeCase(t, e, annotations.Fault{Function: tc.hook, Errno: int(syscall.ENOMEM), Probability: 100}, tc.op, 10, tc.want, args...)
		})
	}
}

// TestVMAllocOperations: what a process sees with failtype alloc, all hooks armed: each
// operation fails at the first hook it reaches (socket(2) at its inode: ENFILE). The victims
// start before the fault is armed (their exec would fail), one per operation, and a bystander
// runs each operation at the same time.
func TestVMAllocOperations(t *testing.T) {
	e := newLSMEngine(t)
	victimCg := newCgroup(t, "", "alloc-ops-victim")
	byCg := newCgroup(t, "", "alloc-ops-bystander")
	mnt := t.TempDir()
	ops := []struct {
		op   string
		want syscall.Errno
	}{
		{"open", syscall.ENOMEM}, {"pipe", syscall.ENFILE}, {"socket", syscall.ENFILE}, {"fork", syscall.ENOMEM},
		{"creds", syscall.ENOMEM}, {"mount", syscall.ENOMEM}, {"msg", syscall.ENOMEM}, {"mmap", syscall.ENOMEM},
	}
	type pair struct{ v, b *victim }
	var running []pair
	for _, o := range ops {
		var args []string
		if o.op == "mount" {
			args = []string{mnt}
		}
		running = append(running, pair{startVictim(t, victimCg, o.op, 5, args...), startVictim(t, byCg, o.op, 5, args...)})
	}
	armOne(t, e, "alloc-ops", victimCg, annotations.Fault{FailType: annotations.Alloc, Probability: 100})
	for i, o := range ops {
		expectAll(t, "victim "+o.op, running[i].v.run(), o.want)
		expectAll(t, "bystander "+o.op, running[i].b.run(), 0)
	}
}

// TestVMAllocFailtype: failtype alloc attaches one program per hook, and its one rule counts
// times across them: three failures in all, whichever hooks they hit. Samples name the hook
// that injected.
func TestVMAllocFailtype(t *testing.T) {
	e := newLSMEngine(t)
	victimCg := newCgroup(t, "", "alloc-victim")
	byCg := newCgroup(t, "", "alloc-bystander")
	plan, err := e.Prepare([]annotations.Fault{{FailType: annotations.Alloc, Probability: 100, Times: 3}})
	if err != nil {
		t.Fatal(err)
	}
	hooks := plan.rules[0].fns
	t.Logf("alloc hooks on this kernel: %v", hooks)
	// The victims start before the fault is armed: their exec allocates files, memory and
	// credentials, which alloc fails.
	opens := startVictim(t, victimCg, "open", 2)
	pipes := startVictim(t, victimCg, "pipe", 5)
	more := startVictim(t, victimCg, "open", 5)
	b := startVictim(t, byCg, "pipe", 20)
	if err := e.Arm("alloc", victimCg.target, plan, ArmOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Disarm("alloc") })
	if n := len(loadedKfaultPrograms(t)); n != len(hooks) {
		t.Errorf("%d kfault programs for alloc, want one per hook (%d)", n, len(hooks))
	}
	// Two opens fail in file_alloc, then one pipe in inode_alloc (pipe2 allocates the inode
	// first): the budget of 3 is spent across hooks, and the rest succeed.
	expectAll(t, "victim open (security_file_alloc)", opens.run(), syscall.ENOMEM)
	pipe := pipes.run()
	if pipe.fail != 1 || pipe.seq[0] != syscall.ENFILE {
		t.Errorf("victim pipe: want the first to fail with ENFILE, the rest to succeed; got %s %v", pipe, pipe.seq)
	}
	expectAll(t, "victim open after the budget", more.run(), 0)
	expectAll(t, "bystander pipe", b.run(), 0)
	if c := counts(t, e, "alloc"); c != 3 {
		t.Errorf("Counts = %d, want 3", c)
	}
	want := []string{"security_file_alloc", "security_file_alloc", "security_inode_alloc"}
	var got []string
	timeout := time.After(10 * time.Second)
	for len(got) < len(want) {
		select {
		case inj := <-e.Injections():
			if inj.Key == "alloc" {
				got = append(got, inj.Function)
			}
		case <-timeout:
			t.Fatalf("sampled injections: got %v, want %v", got, want)
		}
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("sampled injections name %v, want %v", got, want)
			break
		}
	}
	e.Disarm("alloc")
	requireNoKfaultPrograms(t)
}

// TestVMAllocSoftirqSpared: security_sk_alloc also runs in NET_RX softirq, for the child socket
// of a TCP connection (sk_clone_lock), on whatever task the softirq interrupted. failtype alloc
// under a frame on tcp_v4_rcv (softirq only) on a victim that connects over 127.0.0.1 has all it
// needs there but task context: the interrupt-context filter spares it. The filter-off subtest
// is the control: without the filter the same fault fails that allocation, and the listener
// drops the ACK (TestVMInterruptContextSpared does the same for slab faults).
func TestVMAllocSoftirqSpared(t *testing.T) {
	e := newLSMEngine(t)
	if e.preemptCount == 0 {
		t.Fatal("the engine found no preempt count: the interrupt-context filter is off on this kernel")
	}
	victimCg := newCgroup(t, "", "alloc-irq-victim")
	byCg := newCgroup(t, "", "alloc-irq-bystander")
	rcv := annotations.Fault{FailType: annotations.Alloc, Probability: 100, CallChain: []annotations.Frame{{FuncName: "tcp_v4_rcv"}}}
	const conns = 10

	t.Run("filter", func(t *testing.T) {
		expectSoftirqSpared(t, e, "alloc-softirq", victimCg, byCg, rcv, conns)
	})

	t.Run("filter off", func(t *testing.T) {
		disableIRQFilter(t, e)
		expectSoftirqFaulted(t, e, "alloc-softirq-unfiltered", victimCg, byCg, rcv, conns)
		var hooks []string
		for len(hooks) == 0 {
			select {
			case inj := <-e.Injections():
				if inj.Key == "alloc-softirq-unfiltered" {
					hooks = append(hooks, inj.Function)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no sampled injection")
			}
		}
		t.Logf("the fault hit %s", hooks[0])
	})
}

// TestVMAllocMount: the seed's example on alloc: mount(2) under __x64_sys_mount fails with
// ENOMEM (a new superblock), and a bystander mounts.
func TestVMAllocMount(t *testing.T) {
	e := newLSMEngine(t)
	dir := t.TempDir()
	failtypeCase(t, e, annotations.Fault{FailType: annotations.Alloc, Probability: 100,
		CallChain: []annotations.Frame{{FuncName: "__x64_sys_mount"}}}, "mount", 10, syscall.ENOMEM, filepath.Join(dir))
}
