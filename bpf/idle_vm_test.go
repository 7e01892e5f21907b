package bpf

import (
	"testing"
	"time"
)

// With KeepIdle, a program that no rule needs stays attached and does nothing: the cgroup it
// faulted runs unfaulted, the next arm on it loads nothing, and it is detached once it has been
// idle for KeepIdle, or at once by ReleaseIdle. Covers the hook, the exec boundary (function)
// and the call-chain frame (call chain).
func TestVMIdleProgramsKept(t *testing.T) {
	requireVM(t)
	const keep = 3 * time.Second
	for name, tc := range reuseCases {
		t.Run(name, func(t *testing.T) {
			e := newTestEngine(t, MechanismFmodRet)
			e.keepIdle = keep
			plan, args := tc.prepare(t, e)
			opts := ArmOptions{ExecBoundary: tc.exec}
			first, second, byCg := newCgroup(t, "", "first"), newCgroup(t, "", "second"), newCgroup(t, "", "bystander")
			if err := e.Arm("first", first.target, plan, opts); err != nil {
				t.Fatal(err)
			}
			expectAll(t, "first cgroup, armed", runVictim(t, first, tc.op, 20, args...), tc.want)
			loads := e.ProgramLoads()
			programs := loadedKfaultPrograms(t)
			if err := e.Disarm("first"); err != nil {
				t.Fatal(err)
			}
			if idle := loadedKfaultPrograms(t); len(idle) != len(programs) {
				t.Errorf("just disarmed: programs %v, want them kept idle as they were armed: %v", idle, programs)
			}
			expectAll(t, "first cgroup, disarmed (programs idle)", runVictim(t, first, tc.op, 20, args...), tc.byErr)

			if err := e.Arm("second", second.target, plan, opts); err != nil {
				t.Fatal(err)
			}
			if got := e.ProgramLoads(); got != loads {
				t.Errorf("arming on idle programs loaded %d programs, want none", got-loads)
			}
			expectAll(t, "second cgroup", runVictim(t, second, tc.op, 20, args...), tc.want)
			expectAll(t, "bystander", runVictim(t, byCg, tc.op, 20, args...), tc.byErr)
			if err := e.Disarm("second"); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(keep + 10*time.Second)
			for len(loadedKfaultPrograms(t)) != 0 && time.Now().Before(deadline) {
				time.Sleep(200 * time.Millisecond)
			}
			if left := loadedKfaultPrograms(t); len(left) != 0 {
				t.Errorf("idle for over %s, programs still loaded: %v", keep, left)
			}

			// ReleaseIdle does not wait.
			if err := e.Arm("third", second.target, plan, opts); err != nil {
				t.Fatal(err)
			}
			if err := e.Disarm("third"); err != nil {
				t.Fatal(err)
			}
			e.ReleaseIdle()
			requireNoKfaultPrograms(t)
		})
	}
}

// An engine that has not needed the kernel's BTF for KeepIdle releases it and its kallsyms
// snapshot; what is armed stays armed, and the next Prepare and arm parse it again and work.
func TestVMKernelDataReleased(t *testing.T) {
	requireVM(t)
	const keep = 2 * time.Second
	tc := reuseCases["call chain"]
	e := newTestEngine(t, MechanismFmodRet)
	e.keepIdle = keep
	plan, args := tc.prepare(t, e)
	first, second, byCg := newCgroup(t, "", "first"), newCgroup(t, "", "second"), newCgroup(t, "", "bystander")
	if err := e.Arm("first", first.target, plan, ArmOptions{}); err != nil {
		t.Fatal(err)
	}
	held := func() (btf, index bool) {
		kernelBTF.mu.Lock()
		btf = kernelBTF.cache != nil
		kernelBTF.mu.Unlock()
		e.frameSyms.mu.Lock()
		index = e.frameSyms.index != nil
		e.frameSyms.mu.Unlock()
		return btf, index
	}
	if btf, index := held(); !btf || !index {
		t.Fatalf("just armed: kernel BTF held %v, kallsyms snapshot held %v; want both", btf, index)
	}
	deadline := time.Now().Add(keep + 10*time.Second)
	for btf, index := held(); (btf || index) && time.Now().Before(deadline); btf, index = held() {
		time.Sleep(200 * time.Millisecond)
	}
	if btf, index := held(); btf || index {
		t.Fatalf("unused for over %s: kernel BTF held %v, kallsyms snapshot held %v; want both released", keep, btf, index)
	}
	expectAll(t, "first cgroup, armed before the release", runVictim(t, first, tc.op, 20, args...), tc.want)

	again, _ := tc.prepare(t, e)
	if btf, _ := held(); !btf {
		t.Error("Prepare after the release: the kernel BTF is not held again")
	}
	if err := e.Arm("second", second.target, again, ArmOptions{}); err != nil {
		t.Fatal(err)
	}
	expectAll(t, "second cgroup, armed after the release", runVictim(t, second, tc.op, 20, args...), tc.want)
	expectAll(t, "bystander", runVictim(t, byCg, tc.op, 20, args...), tc.byErr)
}
