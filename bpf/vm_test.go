package bpf

// Tests that inject real faults. They run inside the test VM only (test/vm/run sets
// KFAULT_E2E=1); elsewhere they skip. Build on the host and run in the VM:
//
//	gcc -static -O2 -o out/progs/kfault-victim test/progs/kfault-victim.c
//	go test -c -o out/bpf.test ./bpf
//	test/vm/run -- out/bpf.test -test.v -test.run VM

import (
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kfault/kfault/annotations"
	"golang.org/x/sys/unix"
)

// forEachMechanism runs f once per forced mechanism, each with its own engine.
func forEachMechanism(t *testing.T, f func(t *testing.T, e *Engine)) {
	requireVM(t)
	for _, m := range []Mechanism{MechanismFmodRet, MechanismKprobe} {
		t.Run(m.String(), func(t *testing.T) {
			e := newTestEngine(t, m)
			if got := e.Mechanism(); got != m {
				t.Fatalf("Mechanism() = %s, want %s", got, m)
			}
			f(t, e)
			for _, k := range e.Armed() {
				if err := e.Disarm(k); err != nil {
					t.Errorf("Disarm(%s): %v", k, err)
				}
			}
			requireNoKfaultPrograms(t) // the last disarm detached everything
		})
	}
}

// armOne arms faults on cg under key and registers a Disarm for the end of the test.
func armOne(t *testing.T, e *Engine, key string, cg *cgroup, faults ...annotations.Fault) {
	t.Helper()
	start := time.Now()
	if err := e.armFaults(key, cg.target, faults, nil); err != nil {
		t.Fatalf("Arm(%s): %v", key, err)
	}
	t.Logf("Arm(%s) took %v", key, time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() { e.Disarm(key) })
}

func expectAll(t *testing.T, who string, r victimResult, want syscall.Errno) {
	t.Helper()
	bad := 0
	for _, e := range r.seq {
		if e != want {
			bad++
		}
	}
	if bad > 0 || r.n == 0 {
		t.Errorf("%s: want every operation to give %v; got %s", who, errnoName(want), r)
	} else {
		t.Logf("%s: %s", who, r)
	}
}

// expectFirst: the first n operations of r failed with want, and the others succeeded (a times
// budget of n).
func expectFirst(t *testing.T, who string, r victimResult, n int, want syscall.Errno) {
	t.Helper()
	for i, got := range r.seq {
		w := syscall.Errno(0)
		if i < n {
			w = want
		}
		if got != w {
			t.Errorf("%s: operation %d: got %s, want %s (all: %v)", who, i, errnoName(got), errnoName(w), r.seq)
			return
		}
	}
}

func errnoName(e syscall.Errno) string {
	if e == 0 {
		return "success"
	}
	return e.Error()
}

// failtypeCase arms one fault on a victim cgroup and runs the same operation in the victim and
// in a sibling bystander cgroup, at the same time.
func failtypeCase(t *testing.T, e *Engine, f annotations.Fault, op string, n int, want syscall.Errno, args ...string) {
	victimCg := newCgroup(t, "", "victim")
	byCg := newCgroup(t, "", "bystander")
	v := startVictim(t, victimCg, op, n, args...)
	b := startVictim(t, byCg, op, n, args...)
	armOne(t, e, "victim", victimCg, f)
	if got := e.Armed(); len(got) != 1 || got[0] != "victim" {
		t.Errorf("Armed() = %v", got)
	}
	vr := v.run()
	br := b.run()
	expectAll(t, "victim", vr, want)
	expectAll(t, "bystander", br, 0)
	counts, err := e.Counts("victim")
	if err != nil {
		t.Fatal(err)
	}
	if counts[0] < uint64(vr.fail) {
		t.Errorf("Counts = %v, but the victim saw %d failures", counts, vr.fail)
	}
	t.Logf("injected: %v", counts)
	if err := e.Disarm("victim"); err != nil {
		t.Fatal(err)
	}
	if err := e.Disarm("victim"); err != nil {
		t.Errorf("second Disarm: %v", err)
	}
	requireNoKfaultPrograms(t)
	// Disarmed: the victim's cgroup works again.
	expectAll(t, "victim after disarm", runVictim(t, victimCg, op, n, args...), 0)
}

func TestVMFailtypeSlab(t *testing.T) {
	forEachMechanism(t, func(t *testing.T, e *Engine) {
		failtypeCase(t, e, annotations.Fault{FailType: annotations.Slab, Probability: 100}, "slab", 50, syscall.ENOMEM)
	})
}

func TestVMFailtypePage(t *testing.T) {
	forEachMechanism(t, func(t *testing.T, e *Engine) {
		failtypeCase(t, e, annotations.Fault{FailType: annotations.Page, Probability: 100}, "page", 50, syscall.ENOMEM)
	})
}

func TestVMFailtypeBio(t *testing.T) {
	const dev = "/dev/nullb0"
	if _, err := os.Stat(dev); err != nil && os.Getenv("KFAULT_E2E") == "1" {
		t.Fatalf("%s missing: the test kernel needs CONFIG_BLK_DEV_NULL_BLK=y: %v", dev, err)
	}
	forEachMechanism(t, func(t *testing.T, e *Engine) {
		failtypeCase(t, e, annotations.Fault{FailType: annotations.Bio, Probability: 100}, "bio", 20, syscall.EIO, dev)
	})
}

func TestVMFunctionOpenat(t *testing.T) {
	forEachMechanism(t, func(t *testing.T, e *Engine) {
		failtypeCase(t, e, annotations.Fault{Function: "__x64_sys_openat", Errno: int(syscall.EACCES), Probability: 100}, "open", 50, syscall.EACCES)
	})
}

func TestVMTimes(t *testing.T) {
	forEachMechanism(t, func(t *testing.T, e *Engine) {
		victimCg := newCgroup(t, "", "times-victim")
		byCg := newCgroup(t, "", "times-bystander")
		f := annotations.Fault{Function: "__x64_sys_openat", Errno: int(syscall.EACCES), Probability: 100, Times: 5}
		v := startVictim(t, victimCg, "open", 20)
		b := startVictim(t, byCg, "open", 20)
		armOne(t, e, "times", victimCg, f)
		vr, br := v.run(), b.run()
		expectFirst(t, "victim", vr, 5, syscall.EACCES)
		expectAll(t, "bystander", br, 0)
		if c, _ := e.Counts("times"); len(c) != 1 || c[0] != 5 {
			t.Errorf("Counts = %v, want [5]", c)
		}

		// A restarted plugin continues the budget: 3 already injected leaves 2.
		if err := e.armFaults("times", victimCg.target, []annotations.Fault{f}, []uint64{3}); err != nil {
			t.Fatal(err)
		}
		vr = runVictim(t, victimCg, "open", 10)
		if vr.fail != 2 || vr.seq[0] != syscall.EACCES || vr.seq[1] != syscall.EACCES {
			t.Errorf("seeded with 3 of 5: got %s %v, want 2 failures first", vr, vr.seq)
		}
		if c, _ := e.Counts("times"); len(c) != 1 || c[0] != 5 {
			t.Errorf("Counts after the seeded run = %v, want [5]", c)
		}
	})
}

func TestVMProbability(t *testing.T) {
	forEachMechanism(t, func(t *testing.T, e *Engine) {
		victimCg := newCgroup(t, "", "prob-victim")
		byCg := newCgroup(t, "", "prob-bystander")
		const n, p = 2000, 0.20
		v := startVictim(t, victimCg, "open", n)
		b := startVictim(t, byCg, "open", n)
		armOne(t, e, "prob", victimCg, annotations.Fault{Function: "__x64_sys_openat", Errno: int(syscall.EACCES), Probability: 20})
		vr, br := v.run(), b.run()
		mean, sigma := n*p, math.Sqrt(n*p*(1-p))
		t.Logf("probability 20%% over %d: %d failures (expected %.0f ± %.1f)", n, vr.fail, mean, 3*sigma)
		if math.Abs(float64(vr.fail)-mean) > 3*sigma {
			t.Errorf("%d failures out of %d is outside %.0f ± 3σ (%.1f)", vr.fail, n, mean, 3*sigma)
		}
		for _, e := range vr.seq {
			if e != 0 && e != syscall.EACCES {
				t.Errorf("unexpected errno %v", e)
				break
			}
		}
		if c, _ := e.Counts("prob"); len(c) != 1 || c[0] != uint64(vr.fail) {
			t.Errorf("Counts = %v, victim saw %d", c, vr.fail)
		}
		expectAll(t, "bystander", br, 0)
	})
}

func TestVMChildCgroupAfterArm(t *testing.T) {
	forEachMechanism(t, func(t *testing.T, e *Engine) {
		parent := newCgroup(t, "", "subtree-parent")
		byCg := newCgroup(t, "", "subtree-bystander")
		armOne(t, e, "subtree", parent, annotations.Fault{Function: "__x64_sys_openat", Errno: int(syscall.EACCES), Probability: 100})
		// Created and started after arming, one and two levels below the armed cgroup.
		child := newCgroup(t, parent.path, "child")
		grandchild := newCgroup(t, child.path, "grandchild")
		expectAll(t, "child", runVictim(t, child, "open", 20), syscall.EACCES)
		expectAll(t, "grandchild", runVictim(t, grandchild, "open", 20), syscall.EACCES)
		expectAll(t, "bystander", runVictim(t, byCg, "open", 20), 0)
	})
}

func TestVMDuration(t *testing.T) {
	forEachMechanism(t, func(t *testing.T, e *Engine) {
		cg := newCgroup(t, "", "duration-victim")
		armOne(t, e, "duration", cg, annotations.Fault{Function: "__x64_sys_openat", Errno: int(syscall.EPERM), Probability: 100, Duration: 2 * time.Second})
		expectAll(t, "victim within the duration", runVictim(t, cg, "open", 5), syscall.EPERM)
		deadline := time.Now().Add(20 * time.Second)
		for {
			active, err := e.Active("duration")
			if err != nil {
				t.Fatal(err)
			}
			if !active[0] {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the fault is still active long after its duration")
			}
			time.Sleep(100 * time.Millisecond)
		}
		expectAll(t, "victim after the duration", runVictim(t, cg, "open", 5), 0)
		if c, err := e.Counts("duration"); err != nil || c[0] < 5 {
			t.Errorf("Counts after expiry = %v, %v", c, err)
		}
		requireNoKfaultPrograms(t) // the expired rule was the hook's last
	})
}

// TestVMArmSince: a re-arm after a restart (ArmOptions.Since in the past) leaves a fault whose
// duration has elapsed off, with its seeded count, and arms the others for what is left.
func TestVMArmSince(t *testing.T) {
	forEachMechanism(t, func(t *testing.T, e *Engine) {
		cg := newCgroup(t, "", "since-victim")
		by := newCgroup(t, "", "since-bystander")
		faults := []annotations.Fault{
			{Function: "__x64_sys_openat", Errno: int(syscall.EPERM), Probability: 100, Duration: 5 * time.Minute},
			{Function: "__x64_sys_openat", Errno: int(syscall.EACCES), Probability: 100, Duration: time.Hour},
		}
		plan, err := e.Prepare(faults)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Arm("since", cg.target, plan, ArmOptions{Injected: []uint64{7, 3}, Since: time.Now().Add(-10 * time.Minute)}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Disarm("since") })
		if active, err := e.Active("since"); err != nil || active[0] || !active[1] {
			t.Fatalf("Active = %v, %v; want [false true]", active, err)
		}
		expectAll(t, "victim", runVictim(t, cg, "open", 5), syscall.EACCES)
		expectAll(t, "bystander", runVictim(t, by, "open", 5), 0)
		if c, err := e.Counts("since"); err != nil || c[0] != 7 || c[1] != 3+5 {
			t.Errorf("Counts = %v, %v; want [7 8]", c, err)
		}
	})
}

func TestVMSharedHook(t *testing.T) {
	forEachMechanism(t, func(t *testing.T, e *Engine) {
		requireNoKfaultPrograms(t) // a new engine attaches nothing
		a := newCgroup(t, "", "shared-a")
		b := newCgroup(t, "", "shared-b")
		deep := newCgroup(t, b.path, "deeper")
		c := newCgroup(t, "", "shared-c")
		f := annotations.Fault{Function: "__x64_sys_openat", Errno: int(syscall.EACCES), Probability: 100}
		g := annotations.Fault{Function: "__x64_sys_openat", Errno: int(syscall.ENOENT), Probability: 100}
		armOne(t, e, "a", a, f)
		armOne(t, e, "deep", deep, g) // another level, another errno, same hook
		if n := len(loadedKfaultPrograms(t)); n != 1 {
			t.Errorf("%d kfault programs for one hooked function, want 1", n)
		}
		expectAll(t, "a", runVictim(t, a, "open", 5), syscall.EACCES)
		expectAll(t, "deep", runVictim(t, deep, "open", 5), syscall.ENOENT)
		expectAll(t, "b (parent of deep)", runVictim(t, b, "open", 5), 0)
		expectAll(t, "c", runVictim(t, c, "open", 5), 0)
		e.Disarm("a")
		expectAll(t, "a after its disarm", runVictim(t, a, "open", 5), 0)
		expectAll(t, "deep still armed", runVictim(t, deep, "open", 5), syscall.ENOENT)
		if n := len(loadedKfaultPrograms(t)); n != 1 {
			t.Errorf("%d kfault programs, want 1 while deep is armed", n)
		}
		e.Disarm("deep")
		requireNoKfaultPrograms(t)
	})
}

func TestVMArmErrors(t *testing.T) {
	forEachMechanism(t, func(t *testing.T, e *Engine) {
		cg := newCgroup(t, "", "errors")
		err := e.armFaults("x", cg.target, []annotations.Fault{{Function: "vfs_read", Errno: 5, Probability: 100}}, nil)
		if !errors.Is(err, ErrNotInjectable) {
			t.Errorf("vfs_read: got %v, want ErrNotInjectable", err)
		}
		t.Logf("errors read: %v", err) // call-chain errors: TestVMChainErrors
		if len(e.Armed()) != 0 {
			t.Errorf("Armed() = %v after failed arms", e.Armed())
		}
	})
}

func TestVMPreflight(t *testing.T) {
	if os.Getenv("KFAULT_E2E") != "1" || os.Geteuid() != 0 {
		t.Skip("run inside the test VM as root: make test")
	}
	// What each line must say follows from the kernel's config, read apart from the probes,
	// so the test holds on every kernel of the matrix (make test-matrix), distro ones included.
	if KernelConfig("CONFIG_BPF") == "" {
		t.Skip("kernel config unreadable (no /proc/config.gz, /boot/config-<release> or $KFAULT_KERNEL_CONFIG): cannot tell what kfault check should say")
	}
	rep := Preflight(false)
	var b strings.Builder
	rep.WriteTo(&b)
	t.Logf("kfault check:\n%s", b.String())

	injection := KernelConfig("CONFIG_FUNCTION_ERROR_INJECTION") == "y"
	// fmod_ret may modify security_* functions whatever the error injection: every kernel of
	// the matrix has LSM hooks (CONFIG_SECURITY) and BTF.
	lsm := KernelConfig("CONFIG_SECURITY") == "y" && KernelConfig("CONFIG_DEBUG_INFO_BTF") == "y"
	want := map[string]bool{
		"error-injection list":                  injection,
		"mechanism fmod_ret":                    injection,
		"mechanism kprobe":                      injection && KernelConfig("CONFIG_BPF_KPROBE_OVERRIDE") == "y",
		"mechanism lsm (fmod_ret on LSM hooks)": lsm,
		"function targets (LSM hooks)":          lsm,
		"ring buffer (sampled injections)":      true, // every kernel of the matrix is 6.1+
		"task storage (call chains)":            true,
		"exec boundary (runtime setup spared)":  true,
		"interrupt-context filter":              true, // every x86-64 layout: findPreemptCount
	}
	var u unix.Utsname
	unix.Uname(&u)
	post611 := releaseAtLeast(unix.ByteSliceToString(u.Release[:]), 6, 11)
	for _, fp := range annotations.FailPoints[:annotations.Alloc] {
		// From 6.11 each hook exists only with its option. Before, should_fail_bio is empty
		// without CONFIG_FAIL_MAKE_REQUEST and the compiler drops it (Debian's 6.1).
		present := KernelConfig(fp.Config) == "y" || !post611 && fp.Type != annotations.Bio
		want[fmt.Sprintf("failtype %d (%s): %s", fp.Type, fp.Name, fp.Functions[0])] = injection && present
	}
	want["failtype 3 (alloc): LSM hooks"] = lsm
	seen := map[string]bool{}
	for _, c := range rep.Checks {
		w, ok := want[c.Name]
		if !ok {
			continue
		}
		seen[c.Name] = true
		if c.OK != w {
			t.Errorf("%s: ok=%v, want %v for this kernel's config: %s", c.Name, c.OK, w, c.Detail)
		}
		if !c.OK && !strings.HasPrefix(c.Detail, "no") && !strings.HasPrefix(c.Detail, "off") {
			t.Errorf("%s: not ok, yet the detail does not say no: %s", c.Name, c.Detail)
		}
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("no %q line", name)
		}
	}
	if rep.CanInject != (injection || lsm) {
		t.Errorf("CanInject=%v, want %v (CONFIG_FUNCTION_ERROR_INJECTION=%q, CONFIG_SECURITY=%q)", rep.CanInject, injection || lsm,
			KernelConfig("CONFIG_FUNCTION_ERROR_INJECTION"), KernelConfig("CONFIG_SECURITY"))
	}
	switch {
	case !injection && !lsm && !strings.Contains(b.String(), "kfault cannot inject faults on this kernel"):
		t.Error("the report does not end by saying nothing can be injected here")
	case lsm && !strings.Contains(b.String(), "kfault can inject these faults here: ") || lsm && !slices.Contains(rep.Kinds, "failtype 3 (alloc)"):
		t.Errorf("the report does not end by naming failtype 3 (alloc) among what can be injected: kinds %q", rep.Kinds)
	case rep.LSMOnly != (lsm && !injection):
		t.Errorf("LSMOnly=%v, want %v", rep.LSMOnly, lsm && !injection)
	}
	for _, c := range rep.Checks {
		if c.Name == "mechanism kprobe" && !c.OK && injection && !strings.Contains(c.Detail, "CONFIG_BPF_KPROBE_OVERRIDE") {
			t.Errorf("the kprobe line does not name CONFIG_BPF_KPROBE_OVERRIDE: %s", c.Detail)
		}
		// Trampolines work wherever tp_btf attaches (the exec boundary line): a refused
		// fmod_ret must then name the real cause (6.12 said "trampolines unsupported").
		if c.Name == "mechanism fmod_ret" && !c.OK && !injection && !strings.Contains(c.Detail, "built without CONFIG_FUNCTION_ERROR_INJECTION") {
			t.Errorf("the fmod_ret line does not say the kernel is built without CONFIG_FUNCTION_ERROR_INJECTION: %s", c.Detail)
		}
	}
	requireNoKfaultPrograms(t) // the probes left nothing behind
}

// TestVMInjectionSamples checks the ring buffer of sampled injections: a rule's first
// SampleFirst injections and then every SampleEvery-th reach Injections, each naming the key,
// the fault, the hooked function and the task that was hit, and nothing comes from the
// bystander running the same calls.
func TestVMInjectionSamples(t *testing.T) {
	forEachMechanism(t, func(t *testing.T, e *Engine) {
		victimCg := newCgroup(t, "", "samples-victim")
		byCg := newCgroup(t, "", "samples-bystander")
		const n = 2*SampleEvery + 50
		v := startVictim(t, victimCg, "open", n)
		b := startVictim(t, byCg, "open", n)
		start := time.Now()
		armOne(t, e, "samples", victimCg, annotations.Fault{Function: "__x64_sys_openat", Errno: int(syscall.EACCES), Probability: 100})
		vr, br := v.run(), b.run()
		expectAll(t, "victim", vr, syscall.EACCES)
		expectAll(t, "bystander", br, 0)

		var want []uint64
		for i := uint64(1); i <= SampleFirst; i++ {
			want = append(want, i)
		}
		want = append(want, SampleEvery, 2*SampleEvery)
		var got []uint64
		timeout := time.After(10 * time.Second)
	collect:
		for len(got) < len(want) {
			select {
			case inj, ok := <-e.Injections():
				if !ok {
					t.Fatal("Injections closed while the engine is open")
				}
				got = append(got, inj.Seq)
				if inj.Key != "samples" || inj.Fault != 0 || inj.Function != "__x64_sys_openat" {
					t.Errorf("sample attributed to key %q fault %d function %s", inj.Key, inj.Fault, inj.Function)
				}
				if inj.TGID != v.cmd.Process.Pid || inj.PID != inj.TGID || !strings.HasPrefix(inj.Comm, "kfault-victim") {
					t.Errorf("sample names pid %d tgid %d comm %q, want the victim (pid %d); the bystander is pid %d",
						inj.PID, inj.TGID, inj.Comm, v.cmd.Process.Pid, b.cmd.Process.Pid)
				}
				if inj.Retval != -int64(syscall.EACCES) {
					t.Errorf("sample retval %d, want %d", inj.Retval, -int64(syscall.EACCES))
				}
				if inj.Time.Before(start.Add(-time.Second)) || inj.Time.After(time.Now().Add(time.Second)) {
					t.Errorf("sample time %v is outside the test (%v .. now)", inj.Time, start)
				}
			case <-timeout:
				break collect
			}
		}
		// Nothing more: the other injections were counted, not sampled.
		select {
		case inj := <-e.Injections():
			got = append(got, inj.Seq)
		case <-time.After(500 * time.Millisecond):
		}
		if !slices.Equal(got, want) {
			t.Errorf("sampled injection numbers %v, want %v", got, want)
		}
		if c, _ := e.Counts("samples"); len(c) != 1 || c[0] != n {
			t.Errorf("Counts = %v, want [%d]", c, n)
		}
		if d := e.SamplesDropped(); d != 0 {
			t.Errorf("%d samples dropped", d)
		}
	})
}

// TestVMInjectionsClosedByClose checks that closing the engine closes Injections.
func TestVMInjectionsClosedByClose(t *testing.T) {
	requireVM(t)
	e := newTestEngine(t, MechanismAuto)
	ch := e.Injections()
	if ch == nil {
		t.Fatal("engine has no Injections channel")
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case _, ok := <-ch:
		if ok {
			t.Error("a sample arrived from a closed engine")
		}
	case <-time.After(5 * time.Second):
		t.Error("Injections still open after Close")
	}
}

// TestVMBioWritebackAttribution checks that a bio fault follows the data, not the submitter:
// with cgroup writeback, pages a victim dirtied are written with the victim's blkcg even when
// another task submits them. The victim and a bystander each write a buffered file on the same
// ext4 and exit; the fault is armed on the victim's cgroup afterwards; then this test process
// (in neither cgroup) fsyncs both files: the victim's fsync fails with EIO and the bystander's
// succeeds. The samples name this process, proving the match came through bio->bi_blkg.
func TestVMBioWritebackAttribution(t *testing.T) {
	requireVM(t)
	if KernelConfig("CONFIG_CGROUP_WRITEBACK") != "y" {
		t.Skipf("CONFIG_CGROUP_WRITEBACK=%q: buffered writeback is not attributed to cgroups", KernelConfig("CONFIG_CGROUP_WRITEBACK"))
	}
	// Writeback is attributed to a cgroup only where the memory and io controllers are on.
	enableControllers(t, Cgroup2Mount(), "+memory +io")
	enableControllers(t, testCgroupRoot(t), "+memory +io")
	mnt := loopExt4(t)
	forEachMechanism(t, func(t *testing.T, e *Engine) {
		victimCg := newCgroup(t, "", "wb-victim")
		byCg := newCgroup(t, "", "wb-bystander")
		victimFile := filepath.Join(mnt, fmt.Sprintf("victim-%s", e.Mechanism()))
		byFile := filepath.Join(mnt, fmt.Sprintf("bystander-%s", e.Mechanism()))
		for _, w := range []struct {
			cg   *cgroup
			file string
		}{{victimCg, victimFile}, {byCg, byFile}} {
			// dd without conv=fsync: the data stays dirty in the page cache, charged to w.cg.
			runInCgroup(t, w.cg, "dd", "if=/dev/urandom", "of="+w.file, "bs=64k", "count=16", "status=none")
		}
		armOne(t, e, "writeback", victimCg, annotations.Fault{FailType: annotations.Bio, Probability: 100})
		if err := fsyncFile(byFile); err != nil {
			t.Errorf("bystander's file: fsync: %v, want success", err)
		}
		if err := fsyncFile(victimFile); !errors.Is(err, syscall.EIO) {
			t.Errorf("victim's file: fsync: %v, want EIO (its dirty pages carry the victim's blkcg)", err)
		}
		c, _ := e.Counts("writeback")
		t.Logf("injected: %v", c)
		if len(c) != 1 || c[0] == 0 {
			t.Errorf("Counts = %v, want bios failed", c)
		}
		self := os.Getpid()
		select {
		case inj := <-e.Injections():
			t.Logf("first sample: pid %d tgid %d comm %q", inj.PID, inj.TGID, inj.Comm)
			if inj.TGID != self {
				t.Errorf("sample names tgid %d (%s), want this test process (%d), which submitted the bio", inj.TGID, inj.Comm, self)
			}
		case <-time.After(5 * time.Second):
			t.Error("no sampled injection")
		}
	})
}

// enableControllers writes to dir's cgroup.subtree_control.
func enableControllers(t *testing.T, dir, controllers string) {
	t.Helper()
	for _, c := range strings.Fields(controllers) {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(c), 0); err != nil {
			t.Fatalf("enable %s in %s: %v", c, dir, err)
		}
	}
}

// loopExt4 mounts a fresh ext4 on a loop device backed by a tmpfs file, for the test's life.
func loopExt4(t *testing.T) string {
	t.Helper()
	mnt, _ := loopExt4With(t, nil, "")
	return mnt
}

// runInCgroup runs a command inside cg and waits for it.
func runInCgroup(t *testing.T, cg *cgroup, name string, args ...string) {
	t.Helper()
	var out strings.Builder
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := startInCgroup(cg, cmd)
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		t.Fatalf("%s %v in %s: %v: %s", name, args, cg.path, err, out.String())
	}
}

func fsyncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// TestVMNoCallChainsVariant runs the hot path built without call chains, which the engine loads
// by itself on kernels without task storage (before 5.11): plain faults hit the victim and not
// its bystander, and a fault with a callchain is refused, at arm and at validation, saying why.
func TestVMNoCallChainsVariant(t *testing.T) {
	requireVM(t)
	for _, m := range []Mechanism{MechanismFmodRet, MechanismKprobe} {
		t.Run(m.String(), func(t *testing.T) {
			e := newTestEngineWith(t, Options{Mechanism: m, NoCallChains: true})
			if _, ok := e.spec.Maps["kfault_task_chains"]; ok || e.spec.Programs["kfault_frame_entry"] != nil {
				t.Fatal("the engine loaded the hot path with call chains")
			}
			failtypeCase(t, e, annotations.Fault{Function: "__x64_sys_openat", Errno: int(syscall.EACCES), Probability: 100}, "open", 50, syscall.EACCES)

			chained := []annotations.Fault{{FailType: annotations.Slab, Probability: 100,
				CallChain: []annotations.Frame{{FuncName: "__x64_sys_mount"}}}}
			cg := newCgroup(t, "", "nochains")
			err := e.armFaults("chained", cg.target, chained, nil)
			if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "5.11") {
				t.Errorf("Arm with a callchain: %v, want ErrNotSupported naming kernel 5.11", err)
			}
			if err := e.Validate(chained); !errors.Is(err, ErrNotSupported) {
				t.Errorf("Validate with a callchain: %v, want ErrNotSupported", err)
			}
			if len(e.Armed()) != 0 {
				t.Errorf("Armed() = %v after the refused arm", e.Armed())
			}
			requireNoKfaultPrograms(t)
		})
	}
}

// TestVMSamplesDroppedWhenReaderStalls: when the ring buffer is full the hot path drops samples,
// counts them, and still injects every fault. Here every injection is sampled and the reader
// is stalled (it needs the engine lock to attribute a sample) while the victim fails 8000
// opens, about twice what the ring buffer holds.
func TestVMSamplesDroppedWhenReaderStalls(t *testing.T) {
	requireVM(t)
	e := newTestEngine(t, MechanismAuto)
	e.sampleEvery = 1 // sample every injection
	victimCg := newCgroup(t, "", "drops-victim")
	const n = 8000
	v := startVictim(t, victimCg, "open", n)
	armOne(t, e, "drops", victimCg, annotations.Fault{Function: "__x64_sys_openat", Errno: int(syscall.EACCES), Probability: 100})
	e.mu.Lock()
	vr := v.run()
	e.mu.Unlock()
	expectAll(t, "victim", vr, syscall.EACCES)
	if c, _ := e.Counts("drops"); len(c) != 1 || c[0] != n {
		t.Errorf("Counts = %v, want [%d]: a full ring buffer must not cost a fault", c, n)
	}
	received := 0
	for done := false; !done; {
		select {
		case <-e.Injections():
			received++
		case <-time.After(time.Second):
			done = true
		}
	}
	dropped := e.SamplesDropped()
	t.Logf("%d injections: %d samples received, %d dropped", n, received, dropped)
	if dropped == 0 || uint64(received)+dropped != n {
		t.Errorf("received %d + dropped %d samples, want %d in all with some dropped", received, dropped, n)
	}
}

// TestVMNoFailAllocationsSpared: an allocation made with __GFP_NOFAIL is never failed, as the
// kernel's own failslab never fails one. jbd2's journal_alloc_journal_head (6.1) first asks
// with GFP_NOFS and, when that fails, asks again with __GFP_NOFAIL, whose caller cannot handle
// NULL. With slab faults armed under jbd2_journal_add_journal_head, the first attempts fail
// (counted), the __GFP_NOFAIL retries succeed, and every mkdir on the ext4 succeeds. Were the
// retries failed too, jbd2 would loop forever and the test would time out.
func TestVMNoFailAllocationsSpared(t *testing.T) {
	forEachMechanism(t, func(t *testing.T, e *Engine) {
		mnt := loopExt4(t)
		victimCg := newCgroup(t, "", "nofail-victim")
		byCg := newCgroup(t, "", "nofail-bystander")
		armOne(t, e, "nofail", victimCg, slabChain(annotations.Frame{FuncName: "jbd2_journal_add_journal_head"}))
		for _, w := range []struct {
			cg  *cgroup
			dir string
		}{{victimCg, "v"}, {byCg, "b"}} {
			script := fmt.Sprintf("for i in 1 2 3 4 5 6 7 8; do mkdir %s/%s$i || exit 1; sync -f %s; done", mnt, w.dir, mnt)
			runInCgroup(t, w.cg, "sh", "-c", script)
		}
		c, err := e.Counts("nofail")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("journal-head allocations failed (each retried with __GFP_NOFAIL): %v", c)
		if c[0] == 0 {
			t.Error("no allocation under jbd2_journal_add_journal_head was failed: the test proves nothing")
		}
	})
}

// TestVMExecBoundary: a fault armed with the exec boundary hits the tasks that exec'd in the
// armed cgroup after the arm, not a task that was already there (as runc's init is at NRI
// StartContainer), and not a bystander cgroup. Then the disarm detaches the exec programs. In
// both objects: task storage, and the thread-id hash map with its exit program.
func TestVMExecBoundary(t *testing.T) {
	requireVM(t)
	for name, o := range execBoundaryEngines {
		t.Run(name, func(t *testing.T) {
			e := newTestEngineWith(t, o)
			victimCg := newCgroup(t, "", "victim")
			byCg := newCgroup(t, "", "bystander")
			early := startVictim(t, victimCg, "open", 50)
			by := startVictim(t, byCg, "open", 50)
			plan, err := e.Prepare([]annotations.Fault{{Function: "__x64_sys_openat", Errno: int(syscall.EACCES), Probability: 100}})
			if err != nil {
				t.Fatal(err)
			}
			if err := e.Arm("victim", victimCg.target, plan, ArmOptions{ExecBoundary: true}); err != nil {
				t.Fatalf("Arm: %v", err)
			}
			progs := loadedKfaultPrograms(t)
			for _, p := range []string{"kfault_exec", "kfault_fork"} {
				// loadedKfaultPrograms names them "kfault_exec (id 9)".
				if !slices.ContainsFunc(progs, func(l string) bool { return strings.HasPrefix(l, p+" ") }) {
					t.Errorf("%s not loaded while a rule with the exec boundary is armed: %v", p, progs)
				}
			}
			late := startVictim(t, victimCg, "open", 50)
			// A child forked without exec inherits eligibility: busybox sh exec'd in the cgroup
			// after the arm, its subshell is only forked, and the subshell's open is faulted.
			// The same script in the bystander opens.
			vsub, bsub := subshellOpen(t, victimCg), subshellOpen(t, byCg)
			t.Logf("subshell open: victim %q, bystander %q", vsub, bsub)
			if !strings.Contains(vsub, "sub-fail") || !strings.Contains(vsub, "denied") {
				t.Errorf("victim's forked subshell: %q, want its open to fail with Permission denied (sub-fail)", vsub)
			}
			if !strings.Contains(bsub, "sub-ok") {
				t.Errorf("bystander's subshell: %q, want sub-ok", bsub)
			}
			expectAll(t, "task in the cgroup before the arm (no exec since)", early.run(), 0)
			lr := late.run()
			expectAll(t, "task exec'd in the cgroup after the arm", lr, syscall.EACCES)
			expectAll(t, "bystander", by.run(), 0)
			if o.NoCallChains {
				// The exit program removed the late victim's thread id.
				var tid, v uint32
				n := 0
				for it := e.exec.tasks.Iterate(); it.Next(&tid, &v); {
					n++
				}
				t.Logf("kfault_exec_tasks entries after the victim exited: %d", n)
				if n != 0 {
					t.Errorf("kfault_exec_tasks holds %d entries after every eligible task exited", n)
				}
			}
			if err := e.Disarm("victim"); err != nil {
				t.Fatal(err)
			}
			requireNoKfaultPrograms(t)
		})
	}
}

// execBoundaryEngines are the engines the exec boundary's tests run on: both mechanisms, and the
// object without call chains (its thread-id map and exit program instead of task storage).
var execBoundaryEngines = map[string]Options{
	"fmod_ret":          {Mechanism: MechanismFmodRet},
	"kprobe":            {Mechanism: MechanismKprobe},
	"fmod_ret-nochains": {Mechanism: MechanismFmodRet, NoCallChains: true},
}

// subshellOpen runs busybox sh in cg; its subshell, forked without exec, opens /etc/passwd. The
// output says sub-ok or sub-fail (with the shell's error).
func subshellOpen(t *testing.T, cg *cgroup) string {
	t.Helper()
	var out strings.Builder
	cmd := exec.Command("busybox", "sh", "-c", "(: < /etc/passwd) 2>&1 && echo sub-ok || echo sub-fail")
	cmd.Stdout, cmd.Stderr = &out, &out
	err := startInCgroup(cg, cmd)
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		t.Fatalf("busybox sh in %s: %v: %s", cg.path, err, out.String())
	}
	return out.String()
}
