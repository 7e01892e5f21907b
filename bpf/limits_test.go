package bpf

import (
	"os"
	"regexp"
	"strconv"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/kfault/kfault/annotations"
)

// cSources are the C files whose MAX_* defines TestLimits reads.
var cSources = []string{"kfault.bpf.c", "kfault_chain.bpf.h", "kfault_exec.bpf.h", "kfault_pending.bpf.h"}

// cDefines reads the integer MAX_* defines of the C sources.
func cDefines(t *testing.T) map[string]int {
	t.Helper()
	re := regexp.MustCompile(`(?m)^#define\s+(MAX_\w+)\s+(\d+)\b`)
	defs := map[string]int{}
	for _, f := range cSources {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(src), -1) {
			v, err := strconv.Atoi(m[2])
			if err != nil {
				t.Fatalf("%s: %s: %v", f, m[0], err)
			}
			defs[m[1]] = v
		}
	}
	return defs
}

// TestLimits checks every capacity the Go side assumes against the C side: the embedded objects
// (map sizes, value layouts, array lengths of the generated types) and the MAX_* defines of the
// C source, which also catches an object not regenerated after a C change. It loads nothing
// into the kernel.
func TestLimits(t *testing.T) {
	spec, err := loadKfault()
	if err != nil {
		t.Fatal(err)
	}
	noChains, err := loadKfaultNoChains()
	if err != nil {
		t.Fatal(err)
	}
	maskBits := int(8 * unsafe.Sizeof(kfaultTaskChains{}.F[0].Mask[0]))

	// Every MAX_* of the C source, and the value the Go side (or the object) has for it.
	want := map[string]int{
		"MAX_HOOKS":  maxHooks,
		"MAX_LEVELS": maxLevel + 1,
		"MAX_SLOTS":  maxSlots,
		"MAX_RULES":  maxRules,
		// kfault_rules: Go has no constant; every key holds a rule, so it fills after
		// kfault_counters (checked below).
		"MAX_KEYS":           int(spec.Maps["kfault_rules"].MaxEntries),
		"MAX_RULE_DEVS":      maxRuleDevs,
		"MAX_PROTECTED_DEVS": MaxProtectedDevices,
		"MAX_FRAME_IDS":      maxFrameIDs,
		"MAX_FRAME_USERS":    maxFrameUsers,
		"MAX_CHAINS":         maxChains,
		"MAX_CHAIN_FRAMES":   maxChainFrames,
		"MAX_FRAME_SCOPES":   maxFrameScopes,
		"MAX_EXEC_SCOPES":    maxExecScopes,
		"MAX_EXEC_TASKS":     maxExecTasks,
		"MAX_PENDING":        maxPending,
		"MAX_PENDING_PATH":   pendingPathLen,
		// A recursion level needs a bit of the per-slot mask.
		"MAX_FRAME_LEVELS": maskBits,
	}
	defs := cDefines(t)
	for name, v := range want {
		c, ok := defs[name]
		switch {
		case !ok:
			t.Errorf("%s: not defined in %v", name, cSources)
		case c != v:
			t.Errorf("%s is %d in C, %d in Go", name, c, v)
		}
	}
	for name, c := range defs {
		if _, ok := want[name]; !ok {
			t.Errorf("%s (%d): a C limit that TestLimits does not check", name, c)
		}
	}

	// Index masks written as literals in kfault_chain.bpf.h's asm (the verifier needs them):
	// MAX - 1, with MAX a power of two.
	src, err := os.ReadFile("kfault_chain.bpf.h")
	if err != nil {
		t.Fatal(err)
	}
	masks := regexp.MustCompile(`&= (\d+)" : "\+r"\(x\)\); /\* (MAX_\w+) - 1 \*/`).FindAllStringSubmatch(string(src), -1)
	if len(masks) != 2 {
		t.Errorf("kfault_chain.bpf.h: %d index masks found, want 2 (frame_idx, slot_idx)", len(masks))
	}
	for _, m := range masks {
		mask, _ := strconv.Atoi(m[1])
		if n := want[m[2]]; mask != n-1 || n&(n-1) != 0 {
			t.Errorf("kfault_chain.bpf.h: index mask %d for %s = %d (want a power of two, and the mask one less)", mask, m[2], n)
		}
	}

	type mapWant struct {
		entries uint32 // 0: not checked
		value   uintptr
	}
	u64 := unsafe.Sizeof(uint64(0))
	common := map[string]mapWant{
		"kfault_rules":          {0, unsafe.Sizeof(kfaultRuleSet{})},
		"kfault_levels":         {maxHooks, u64},
		"kfault_counters":       {maxRules, u64},
		"kfault_event_drops":    {1, u64},
		"kfault_rule_devs":      {maxRuleDevs, 1},
		"kfault_protected_devs": {MaxProtectedDevices, 1},
	}
	chains := map[string]mapWant{
		"kfault_frames":       {uint32(maxFrameIDs), unsafe.Sizeof(kfaultFrameInfo{})},
		"kfault_chains":       {maxChains, unsafe.Sizeof(kfaultChain{})},
		"kfault_task_chains":  {0, unsafe.Sizeof(kfaultTaskChains{})},
		"kfault_frame_levels": {uint32(maxFrameIDs), u64},
		"kfault_frame_scope":  {maxFrameScopes, unsafe.Sizeof(uint32(0))},
	}
	check := func(obj string, s *ebpf.CollectionSpec, maps map[string]mapWant) {
		t.Helper()
		for name, w := range maps {
			m := s.Maps[name]
			if m == nil {
				t.Errorf("%s: map %s missing", obj, name)
				continue
			}
			if w.entries != 0 && m.MaxEntries != w.entries {
				t.Errorf("%s: %s has %d entries, Go assumes %d", obj, name, m.MaxEntries, w.entries)
			}
			if m.ValueSize != uint32(w.value) {
				t.Errorf("%s: %s values are %d bytes in C, %d in Go", obj, name, m.ValueSize, w.value)
			}
		}
		// Every armed rule's {cgroup, hook} key fits: there are at most maxRules of them.
		if m := s.Maps["kfault_rules"]; m != nil && m.MaxEntries < maxRules {
			t.Errorf("%s: kfault_rules has %d entries, fewer than the %d rules that can be armed", obj, m.MaxEntries, maxRules)
		}
	}
	check("kfault", spec, common)
	check("kfault", spec, chains)
	// The engine writes kfaultRuleSet into the maps of either object.
	check("kfaultNoChains", noChains, common)
	if n := len(kfaultNoChainsRuleSet{}.Rules); n != maxSlots {
		t.Errorf("kfaultNoChains: rule set has %d slots, maxSlots is %d", n, maxSlots)
	}
	for name := range chains {
		if noChains.Maps[name] != nil {
			t.Errorf("kfaultNoChains: has the call-chain map %s", name)
		}
	}

	// The annotation parser refuses longer chains than the hot path follows.
	if annotations.MaxFrames != maxChainFrames {
		t.Errorf("annotations.MaxFrames is %d, the hot path follows %d frames", annotations.MaxFrames, maxChainFrames)
	}
	// kfault_levels values are bitmaps of cgroup levels.
	if maxLevel >= 8*int(u64) {
		t.Errorf("maxLevel %d does not fit the %d-bit level bitmap", maxLevel, 8*u64)
	}
}
