package bpf

import (
	"fmt"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/kfault/kfault/annotations"
	"github.com/kfault/kfault/test/bench/figures"
)

// TestBenchArmedCgroups measures what armed faults cost everyone else: the time of a slab-heavy
// syscall loop (eventfd + close) in a cgroup that is not targeted, against the same loop with
// nothing attached, in interleaved pairs (one of each, alternating, so that drift of the emulated
// machine hits both alike). Each row is the median of the pairs' ratios with a 95% bootstrap
// interval:
//   - nothing attached against itself: what noise alone gives;
//   - the hook attached with no rule for anyone (an empty level bitmap: the mechanism's own cost);
//   - 100% slab faults armed in 1, 100 and 1000 other cgroups.
//
// It also reads the program's own run time per call from the kernel's BPF stats, and the same
// for an empty program on the same hook: the floor that the statistics' own clock reads add.
// Under `test/vm/run --icount` (qemu -icount shift=0, KFAULT_VM_ICOUNT=1) the guest clock
// advances 1 ns per guest instruction, so every time here is an instruction count: the program's
// cost per bystander call then no longer depends on the host's speed or load. Not a test: it
// runs only with KFAULT_BENCH=1, inside the test VM:
//
//	go test -c -o out/bpf.test ./bpf
//	test/vm/run [--icount] -- env KFAULT_BENCH=1 out/bpf.test -test.run TestBenchArmedCgroups -test.v
//
// KFAULT_BENCH_OPS (default 200000) sets the loop length, KFAULT_BENCH_ROUNDS (default 10) the
// number of pairs per row.
func TestBenchArmedCgroups(t *testing.T) {
	requireBench(t)
	ops := envInt("KFAULT_BENCH_OPS", 200000)
	rounds := envInt("KFAULT_BENCH_ROUNDS", 10)
	unit := clockUnit()

	mechs := []Mechanism{MechanismFmodRet, MechanismKprobe}
	for _, m := range mechs {
		t.Run(m.String(), func(t *testing.T) {
			e := newTestEngine(t, m)
			// The runner and the armed cgroups are siblings, as containers are: the runner's
			// ancestor at the armed level is itself, so every call pays a real hash lookup.
			parent := newCgroup(t, "", "bench")
			runner := newCgroup(t, parent.path, "runner")
			loop := func() time.Duration {
				return runVictim(t, runner, "loop", ops).elapsed
			}
			loop() // warm up caches and the dentry/inode slabs
			fault := []annotations.Fault{{FailType: annotations.Slab, Probability: 100}}
			// pairs measures rounds interleaved pairs: the loop with nothing attached, then with
			// what set does (undone by unset before the next baseline).
			pairs := func(what string, set, unset func()) {
				var base, with []time.Duration
				for r := 0; r < rounds; r++ {
					base = append(base, loop())
					set()
					with = append(with, loop())
					unset()
				}
				r := figures.Paired(base, with)
				perOp := float64(median(with)) / float64(ops)
				figures.Print(fmt.Sprintf("%s bystander loop, %s (vs nothing, %d pairs, %.0f %s/op)", m, what, rounds, perOp, unit),
					fmt.Sprintf("ratio %.3f", r.Median), r.Interval())
			}
			nothing := func() {}
			pairs("nothing attached (noise)", nothing, nothing)

			armed := map[string]Target{}
			detachAll := func() {
				for k := range armed {
					e.Disarm(k)
				}
				if len(loadedKfaultPrograms(t)) != 0 {
					t.Fatal("programs left attached for the baseline")
				}
			}
			rearm := func() {
				for k, tg := range armed {
					if err := e.armFaults(k, tg, fault, nil); err != nil {
						t.Fatal(err)
					}
				}
			}
			// The mechanism alone: one armed cgroup, then its level bitmap emptied, so the program
			// returns after one array lookup.
			one := newCgroup(t, parent.path, "c")
			armed["bench-0"] = one.target
			pairs("attached, no rule for anyone", func() {
				rearm()
				if err := e.levels.Put(e.hooks["should_failslab"].id, uint64(0)); err != nil {
					t.Fatal(err)
				}
			}, detachAll)
			for _, n := range []int{1, 100, 1000} {
				for len(armed) < n {
					cg := newCgroup(t, parent.path, "c")
					armed[fmt.Sprintf("bench-%d", len(armed))] = cg.target
				}
				pairs(fmt.Sprintf("armed in %d other cgroups", n), rearm, detachAll)
				// The program's own run time per call, from the kernel's BPF stats: it leaves
				// out the trampoline or kprobe, so it shows directly whether the rule lookup
				// grows with the number of armed cgroups (it must not).
				rearm()
				perCall, calls := programCost(t, e, "should_failslab", loop)
				detachAll()
				figures.Print(fmt.Sprintf("%s hook program per bystander call, armed in %d other cgroups (BPF stats)", m, n),
					fmt.Sprintf("%.1f %s", perCall, unit), fmt.Sprintf("mean of %d calls", calls))
			}
			floor, calls := emptyProgramCost(t, m, "should_failslab", loop)
			figures.Print(fmt.Sprintf("%s empty program per call, same hook (BPF stats' own floor)", m),
				fmt.Sprintf("%.1f %s", floor, unit), fmt.Sprintf("mean of %d calls", calls))
		})
	}
}

// programCost runs loop with the kernel's BPF run-time statistics on and returns the average
// run time per call of fn's hook program, and the number of calls. Statistics are on only
// here: they add two clock reads to every call.
func programCost(t *testing.T, e *Engine, fn string, loop func() time.Duration) (float64, uint64) {
	t.Helper()
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.Fatalf("enable BPF stats: %v", err)
	}
	defer stats.Close()
	h := e.hooks[fn]
	if h == nil {
		t.Fatalf("%s is not hooked", fn)
	}
	return progCost(t, h.coll.Programs[programName(e.mech, h.kind)], loop)
}

// progCost is programCost for any program; call it with BPF run-time statistics enabled.
func progCost(t *testing.T, prog *ebpf.Program, loop func() time.Duration) (float64, uint64) {
	t.Helper()
	before, err := prog.Stats()
	if err != nil {
		t.Fatalf("program stats: %v", err)
	}
	loop()
	after, err := prog.Stats()
	if err != nil {
		t.Fatalf("program stats: %v", err)
	}
	calls := after.RunCount - before.RunCount
	if calls == 0 {
		t.Fatal("the hook program did not run during the loop")
	}
	return float64(after.Runtime-before.Runtime) / float64(calls), calls
}

// emptyProgramCost is programCost for a program that only returns 0, attached to fn as m
// attaches its hook: the per-call floor of BPF statistics, which time each run with two clock
// reads. It is built from instructions, not from the object file: it must do nothing at all.
func emptyProgramCost(t *testing.T, m Mechanism, fn string, loop func() time.Duration) (float64, uint64) {
	t.Helper()
	spec := &ebpf.ProgramSpec{
		Name:         "bench_empty",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		License:      "GPL",
	}
	switch m {
	case MechanismFmodRet:
		spec.Type, spec.AttachType, spec.AttachTo = ebpf.Tracing, ebpf.AttachModifyReturn, fn
	case MechanismKprobe:
		spec.Type = ebpf.Kprobe
	default:
		t.Fatalf("no empty program for %s", m)
	}
	prog, err := ebpf.NewProgram(spec)
	if err != nil {
		t.Fatalf("load the empty program: %v", err)
	}
	defer prog.Close()
	var l link.Link
	if m == MechanismFmodRet {
		l, err = link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachModifyReturn})
	} else {
		l, err = link.Kprobe(fn, prog, nil)
	}
	if err != nil {
		t.Fatalf("attach the empty program to %s: %v", fn, err)
	}
	defer l.Close()
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.Fatalf("enable BPF stats: %v", err)
	}
	defer stats.Close()
	return progCost(t, prog, loop)
}

// clockUnit names what the guest's clock counts: instructions under qemu -icount shift=0
// (test/vm/run --icount), nanoseconds otherwise.
func clockUnit() string {
	if os.Getenv("KFAULT_VM_ICOUNT") == "1" {
		return "insns"
	}
	return "ns"
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func envInt(name string, def int) int {
	var v int
	if _, err := fmt.Sscan(os.Getenv(name), &v); err == nil && v > 0 {
		return v
	}
	return def
}

// requireBench skips unless the benchmarks are asked for (KFAULT_BENCH=1, as make bench sets
// inside the test VM), then as requireVM does.
func requireBench(t *testing.T) {
	t.Helper()
	if os.Getenv("KFAULT_BENCH") != "1" {
		t.Skip("a benchmark: run with KFAULT_BENCH=1 inside the test VM (make bench)")
	}
	requireVM(t)
}
