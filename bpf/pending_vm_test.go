package bpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/kfault/kfault/annotations"
)

// TestVMArmPending: a fault armed by path before its cgroup exists hits the first task exec'd in
// the cgroup as soon as it is made, with no Retarget yet (the kernel armed the cgroup in the
// mkdir), and a bystander cgroup not at all. An exec in the mount namespace the cgroup was made
// from (a runtime's own re-exec) does not cross the exec boundary; one in a mount namespace of
// its own (the container's program) does. Retarget then keeps the count going, and the maps
// hold no placeholder afterwards; the disarm leaves nothing. A cgroup made before the path was
// armed is refused by Retarget (ErrMadeBefore), and its disarm leaves nothing either.
func TestVMArmPending(t *testing.T) {
	requireVM(t)
	for name, o := range execBoundaryEngines {
		t.Run(name, func(t *testing.T) {
			e := newTestEngineWith(t, o)
			plan, err := e.Prepare([]annotations.Fault{{Function: "__x64_sys_openat", Errno: int(syscall.EACCES), Probability: 100}})
			if err != nil {
				t.Fatal(err)
			}
			byCg := newCgroup(t, "", "bystander")

			t.Run("made after the arm", func(t *testing.T) {
				dir, target := pendingCgroupPath(t)
				if err := e.ArmPending("victim", target, plan, ArmOptions{ExecBoundary: true}); err != nil {
					t.Fatalf("ArmPending: %v", err)
				}
				cg := makeCgroup(t, dir)
				// An exec in the mount namespace the cgroup was made from is the runtime's own
				// (runc re-executes itself in the cgroup): it does not cross the boundary.
				expectAll(t, "task exec'd in the cgroup, in the mount namespace that made it", runVictim(t, cg, "open", 20), 0)
				cg.newMountNS = true
				expectAll(t, "victim exec'd in the cgroup made after the arm, in a mount namespace of its own", runVictim(t, cg, "open", 20), syscall.EACCES)
				byCg.newMountNS = true
				expectAll(t, "bystander", runVictim(t, byCg, "open", 20), 0)
				expectCounts(t, e, "victim", 20)
				if err := e.Retarget("victim", cg.target); err != nil {
					t.Fatalf("Retarget: %v", err)
				}
				expectAll(t, "victim after Retarget", runVictim(t, cg, "open", 20), syscall.EACCES)
				expectCounts(t, e, "victim", 40)
				for _, k := range ruleKeys(t, e) {
					if k.Cgroup&placeholderBit != 0 {
						t.Errorf("kfault_rules still holds the placeholder %#x after Retarget", k.Cgroup)
					}
				}
				if n := pendingEntries(t, e); n != 0 {
					t.Errorf("kfault_pending holds %d entries after Retarget", n)
				}
				if err := e.Disarm("victim"); err != nil {
					t.Fatal(err)
				}
				expectEmptyMaps(t, e)
			})

			t.Run("made before the arm", func(t *testing.T) {
				dir, target := pendingCgroupPath(t)
				cg := makeCgroup(t, dir)
				if err := e.ArmPending("early", target, plan, ArmOptions{ExecBoundary: true}); err != nil {
					t.Fatalf("ArmPending: %v", err)
				}
				if err := e.Retarget("early", cg.target); !errors.Is(err, ErrMadeBefore) {
					t.Errorf("Retarget of a cgroup made before the arm: %v, want ErrMadeBefore", err)
				}
				expectAll(t, "task in a cgroup made before the arm (not armed by the kernel)", runVictim(t, cg, "open", 20), 0)
				if err := e.Disarm("early"); err != nil {
					t.Fatal(err)
				}
				expectEmptyMaps(t, e)
			})
			requireNoKfaultPrograms(t)
		})
	}
}

var pendingSeq int

// pendingCgroupPath names a cgroup below the test root that does not exist yet: its directory,
// and its Target by path (CgroupPath).
func pendingCgroupPath(t *testing.T) (string, Target) {
	t.Helper()
	pendingSeq++
	dir := filepath.Join(testCgroupRoot(t), fmt.Sprintf("pending-%d", pendingSeq))
	rel, err := filepath.Rel(Cgroup2Mount(), dir)
	if err != nil {
		t.Fatal(err)
	}
	target, err := CgroupPath("/" + rel)
	if err != nil {
		t.Fatal(err)
	}
	return dir, target
}

func makeCgroup(t *testing.T, dir string) *cgroup {
	t.Helper()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeCgroup(dir) })
	tg, err := TargetFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &cgroup{path: dir, target: tg}
}

func expectCounts(t *testing.T, e *Engine, key string, want uint64) {
	t.Helper()
	got, err := e.Counts(key)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != want {
		t.Errorf("Counts(%s) = %v, want [%d]", key, got, want)
	}
}

func ruleKeys(t *testing.T, e *Engine) []kfaultRuleKey {
	t.Helper()
	var keys []kfaultRuleKey
	var k kfaultRuleKey
	var v kfaultRuleSet
	it := e.rules.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}

func pendingEntries(t *testing.T, e *Engine) int {
	t.Helper()
	n := 0
	var k kfaultPendingKey
	var v kfaultPending
	it := e.pending.m.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// expectEmptyMaps checks that no rule, exec scope or pending path is left in the maps.
func expectEmptyMaps(t *testing.T, e *Engine) {
	t.Helper()
	if keys := ruleKeys(t, e); len(keys) != 0 {
		t.Errorf("kfault_rules holds %v after the disarm", keys)
	}
	if n := pendingEntries(t, e); n != 0 {
		t.Errorf("kfault_pending holds %d entries after the disarm", n)
	}
	var cg uint64
	var n uint32
	for it := e.exec.scopeMap.Iterate(); it.Next(&cg, &n); {
		t.Errorf("kfault_exec_scope holds cgroup %d after the disarm", cg)
	}
}

// reuseCase is a fault whose programs a second arm reuses, with the victim op it fails and what
// that op gives a bystander.
type reuseCase struct {
	fault       annotations.Fault
	exec        bool // armed with the exec boundary
	op          string
	missing     bool // the op's argument is a missing file in a tmpfs
	want, byErr syscall.Errno
}

// reuseCases: a function fault (hook and exec boundary) and a call chain (hook and frame).
var reuseCases = map[string]reuseCase{
	"function":   {fault: annotations.Fault{Function: "__x64_sys_openat", Errno: int(syscall.EACCES), Probability: 100}, exec: true, op: "open", want: syscall.EACCES},
	"call chain": {fault: slabChain(annotations.Frame{FuncName: "d_alloc_parallel"}), op: "stat", missing: true, want: syscall.ENOMEM, byErr: syscall.ENOENT},
}

// prepare compiles the case's fault on e and returns the plan and the victim op's arguments.
func (tc reuseCase) prepare(t *testing.T, e *Engine) (Plan, []string) {
	t.Helper()
	plan, err := e.Prepare([]annotations.Fault{tc.fault})
	if err != nil {
		t.Fatal(err)
	}
	if tc.missing {
		return plan, []string{filepath.Join(tmpfsDir(t), "missing")}
	}
	return plan, nil
}

// TestVMSecondArmLoadsNothing: arming a second cgroup on hooks (and call-chain frames) that are
// attached already writes map entries only: the engine's load counter does not move (issue:
// node scale). The second cgroup is faulted, a bystander is not.
func TestVMSecondArmLoadsNothing(t *testing.T) {
	requireVM(t)
	for name, tc := range reuseCases {
		t.Run(name, func(t *testing.T) {
			e := newTestEngine(t, MechanismFmodRet)
			plan, args := tc.prepare(t, e)
			first, second, byCg := newCgroup(t, "", "first"), newCgroup(t, "", "second"), newCgroup(t, "", "bystander")
			if err := e.Arm("first", first.target, plan, ArmOptions{ExecBoundary: tc.exec}); err != nil {
				t.Fatal(err)
			}
			loads := e.ProgramLoads()
			if loads == 0 {
				t.Fatal("the first arm loaded nothing: the counter proves nothing")
			}
			if err := e.Arm("second", second.target, plan, ArmOptions{ExecBoundary: tc.exec}); err != nil {
				t.Fatal(err)
			}
			if got := e.ProgramLoads(); got != loads {
				t.Errorf("the second arm on attached hooks loaded programs: %d loads after the first arm, %d after the second", loads, got)
			}
			t.Logf("program loads: %d for the first arm, %d more for the second", loads, e.ProgramLoads()-loads)
			expectAll(t, "second cgroup", runVictim(t, second, tc.op, 20, args...), tc.want)
			expectAll(t, "bystander", runVictim(t, byCg, tc.op, 20, args...), tc.byErr)
		})
	}
}
