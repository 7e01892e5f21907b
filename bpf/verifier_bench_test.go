package bpf

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/kfault/kfault/bpf/predicate"
)

// TestBenchVerifierStats prints the load time and the verifier's statistics (instructions
// processed, states) of the frame programs and the slab hook programs: verification dominates
// arming time under emulation. KFAULT_BENCH=1, inside the test VM (make bench).
func TestBenchVerifierStats(t *testing.T) {
	requireBench(t)
	e := newTestEngine(t, MechanismFmodRet)
	plan, err := e.planChain(slabChain(benchChain[2]), "should_failslab")
	if err != nil {
		t.Fatal(err)
	}
	// frame_entry twice: its first load also pays the engine's one-time costs (BTF, probes).
	for _, names := range [][]string{{"kfault_frame_entry"}, {"kfault_frame_exit"}, {"kfault_fm_slab"}, {"kfault_kp_slab"}, {"kfault_frame_entry"}} {
		spec := e.spec.Copy()
		for n := range spec.Programs {
			if n != names[0] {
				delete(spec.Programs, n)
			}
		}
		ps := spec.Programs[names[0]]
		if strings.HasPrefix(names[0], "kfault_frame") {
			ps.AttachTo = "d_alloc_parallel"
		}
		if names[0] == "kfault_frame_entry" {
			ps.Instructions, _ = predicate.Splice(ps.Instructions, plan.frames[0].prog)
		}
		kspec, cache, err := e.kernelTypes()
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
			MapReplacements: e.mapReplacements(),
			Programs:        ebpf.ProgramOptions{KernelTypes: kspec, LogLevel: ebpf.LogLevelStats},
			Cache:           cache,
		})
		took := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		log := coll.Programs[names[0]].VerifierLog
		if i := strings.LastIndex(log, "verification time"); i >= 0 {
			log = log[i:]
		}
		fmt.Printf("bench verifier %-18s load %v: %s\n", names[0], took.Round(time.Microsecond), strings.TrimSpace(log))
		coll.Close()
	}
}
