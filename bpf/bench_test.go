package bpf

import (
	"fmt"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/kfault/kfault/annotations"
)

// TestBenchArmedCgroups measures what armed faults cost everyone else: the time of a slab-heavy
// syscall loop (eventfd + close) in a cgroup that is not targeted, with 100% slab faults armed in
// 1, 100 and 1000 other cgroups, against the same loop with nothing attached. Not a test: it
// runs only with KFAULT_BENCH=1, inside the test VM:
//
//	go test -c -o out/bpf.test ./bpf
//	test/vm/run -- env KFAULT_BENCH=1 out/bpf.test -test.run TestBenchArmedCgroups -test.v
//
// KFAULT_BENCH_OPS (default 200000) sets the loop length, KFAULT_BENCH_ROUNDS (default 5) how
// many interleaved measurements each ratio takes the median of.
func TestBenchArmedCgroups(t *testing.T) {
	requireBench(t)
	ops := envInt("KFAULT_BENCH_OPS", 200000)
	rounds := envInt("KFAULT_BENCH_ROUNDS", 5)

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
			armed := 0
			for _, n := range []int{1, 100, 1000} {
				for ; armed < n; armed++ {
					cg := newCgroup(t, parent.path, "c")
					if err := e.armFaults(fmt.Sprintf("bench-%d", armed), cg.target,
						[]annotations.Fault{{FailType: annotations.Slab, Probability: 100}}, nil); err != nil {
						t.Fatal(err)
					}
				}
				// Interleave: detach everything for the baseline, re-attach for the measurement,
				// so that drift of the emulated machine hits both alike.
				var base, with []time.Duration
				for r := 0; r < rounds; r++ {
					with = append(with, loop())
					keys := e.Armed()
					saved := make([]Target, len(keys))
					for i, k := range keys {
						saved[i] = e.armed[k].target
						e.Disarm(k)
					}
					if len(loadedKfaultPrograms(t)) != 0 {
						t.Fatal("programs left attached for the baseline")
					}
					base = append(base, loop())
					for i, k := range keys {
						if err := e.armFaults(k, saved[i], []annotations.Fault{{FailType: annotations.Slab, Probability: 100}}, nil); err != nil {
							t.Fatal(err)
						}
					}
				}
				mb, mw := median(base), median(with)
				fmt.Printf("bench %-8s armed in %4d other cgroups: %8.1f ns/op vs %8.1f ns/op with nothing attached: ratio %.3f\n",
					m, n, float64(mw)/float64(ops), float64(mb)/float64(ops), float64(mw)/float64(mb))
				// The program's own run time per call, from the kernel's BPF stats: it leaves
				// out the trampoline or kprobe, so it shows directly whether the rule lookup
				// grows with the number of armed cgroups (it must not).
				perCall, calls := programCost(t, e, "should_failslab", loop)
				fmt.Printf("bench %-8s armed in %4d other cgroups: the program runs %6.1f ns per call for a bystander (%d calls, BPF stats)\n",
					m, n, perCall, calls)
				if n == 1000 {
					// Decomposition: the program attached but with an empty level bitmap, so it
					// returns after one array lookup: the cost of the mechanism itself.
					h := e.hooks["should_failslab"]
					var floor []time.Duration
					for r := 0; r < rounds; r++ {
						if err := e.levels.Put(h.id, uint64(0)); err != nil {
							t.Fatal(err)
						}
						floor = append(floor, loop())
						if err := e.writeLevels(h); err != nil {
							t.Fatal(err)
						}
					}
					mf := median(floor)
					fmt.Printf("bench %-8s attached, empty level bitmap:    %8.1f ns/op vs %8.1f ns/op with nothing attached: ratio %.3f (the mechanism's own cost)\n",
						m, float64(mf)/float64(ops), float64(mb)/float64(ops), float64(mf)/float64(mb))
				}
			}
			for _, k := range e.Armed() {
				e.Disarm(k)
			}
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
