package bpf

import (
	"fmt"
	"maps"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// Frame scope bookkeeping: which map entries each change turns on and off.
func TestFrameScope(t *testing.T) {
	var s frameScope
	type change struct{ key, level bool }
	step := func(what string, got, want change) {
		t.Helper()
		if got != want {
			t.Errorf("%s: key %v level %v, want key %v level %v", what, got.key, got.level, want.key, want.level)
		}
	}
	k, l := s.add(100, 3)
	step("first rule on cgroup 100 (level 3)", change{k, l}, change{true, true})
	k, l = s.add(100, 3)
	step("second rule on cgroup 100", change{k, l}, change{false, false})
	k, l = s.add(200, 3)
	step("first rule on cgroup 200 (level 3)", change{k, l}, change{true, false})
	k, l = s.add(300, 5)
	step("first rule on cgroup 300 (level 5)", change{k, l}, change{true, true})
	if b := s.bits(); b != 1<<3|1<<5 {
		t.Errorf("bits %#x, want levels 3 and 5", b)
	}
	k, l = s.remove(100, 3)
	step("remove one of cgroup 100's", change{k, l}, change{false, false})
	k, l = s.remove(100, 3)
	step("remove cgroup 100's last", change{k, l}, change{true, false})
	k, l = s.remove(200, 3)
	step("remove cgroup 200's (level 3's last)", change{k, l}, change{true, true})
	k, l = s.remove(200, 3)
	step("remove what is not counted", change{k, l}, change{false, false})
	if b := s.bits(); b != 1<<5 {
		t.Errorf("bits %#x, want level 5", b)
	}
	k, l = s.remove(300, 5)
	step("remove the last", change{k, l}, change{true, true})
	if s.bits() != 0 || len(s.cgroups) != 0 {
		t.Errorf("not empty after removing everything: %#x %v", s.bits(), s.cgroups)
	}
}

// refMaps lists the maps a program's instructions reference, in order of first reference.
func refMaps(insns asm.Instructions) []string {
	var out []string
	for _, ins := range insns {
		if !ins.IsLoadFromMap() {
			continue
		}
		if r := ins.Reference(); r != "" && !strings.HasPrefix(r, ".") && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// TestFrameScopeSpec checks, on the committed object (loaded as a spec only, nothing goes into
// the kernel), that the C side is what the Go side assumes: the scope maps' shapes, the entry
// program's first map lookup being the scope's level bitmap (scope first), the exit program
// without a scope check, and the engine sharing every map of the object.
func TestFrameScopeSpec(t *testing.T) {
	spec, err := loadKfault()
	if err != nil {
		t.Fatal(err)
	}
	levels, scope := spec.Maps["kfault_frame_levels"], spec.Maps["kfault_frame_scope"]
	if levels == nil || scope == nil {
		t.Fatalf("scope maps missing: kfault_frame_levels %v, kfault_frame_scope %v", levels, scope)
	}
	if levels.Type != ebpf.Array || levels.KeySize != 4 || levels.ValueSize != 8 || levels.MaxEntries != uint32(maxFrameIDs) {
		t.Errorf("kfault_frame_levels: %v key %d value %d entries %d; Go writes u32 frame id -> u64 bitmap, %d ids",
			levels.Type, levels.KeySize, levels.ValueSize, levels.MaxEntries, maxFrameIDs)
	}
	if scope.Type != ebpf.Hash || scope.KeySize != uint32(unsafe.Sizeof(kfaultFrameScopeKey{})) || scope.ValueSize != 4 {
		t.Errorf("kfault_frame_scope: %v key %d value %d; Go writes kfaultFrameScopeKey (%d bytes) -> u32",
			scope.Type, scope.KeySize, scope.ValueSize, unsafe.Sizeof(kfaultFrameScopeKey{}))
	}
	// The scope's levels are the hooks' levels: one bitmap bit per cgroup level.
	if hl := spec.Maps["kfault_levels"]; hl == nil || hl.ValueSize != levels.ValueSize {
		t.Errorf("kfault_levels and kfault_frame_levels values differ: %v / %v", hl, levels)
	}

	entry, exit := spec.Programs["kfault_frame_entry"], spec.Programs["kfault_frame_exit"]
	if entry == nil || exit == nil {
		t.Fatal("frame programs missing")
	}
	got := refMaps(entry.Instructions)
	if len(got) < 2 || got[0] != "kfault_frame_levels" {
		t.Errorf("kfault_frame_entry references maps %v: the first must be kfault_frame_levels (scope first)", got)
	}
	if !slices.Contains(got, "kfault_frame_scope") {
		t.Errorf("kfault_frame_entry references maps %v: no kfault_frame_scope", got)
	}
	// Scope first, in instruction order: no task storage or frame info before the scope lookup.
	first := map[string]int{}
	for i, ins := range entry.Instructions {
		if r := ins.Reference(); r != "" {
			if _, ok := first[r]; !ok {
				first[r] = i
			}
		}
	}
	for _, later := range []string{"kfault_frames", "kfault_task_chains", predSymbol} {
		if i, ok := first[later]; !ok || i < first["kfault_frame_levels"] || i < first["kfault_frame_scoped"] {
			t.Errorf("kfault_frame_entry: %s referenced at %d, before the scope check (levels at %d, kfault_frame_scoped at %d)",
				later, i, first["kfault_frame_levels"], first["kfault_frame_scoped"])
		}
	}
	for _, m := range refMaps(exit.Instructions) {
		if m == "kfault_frame_levels" || m == "kfault_frame_scope" {
			t.Errorf("kfault_frame_exit references %s: an exit must undo its entry whatever the task's cgroup now", m)
		}
	}
	// The hook programs use the scope check too, against their own maps only.
	for name, p := range spec.Programs {
		// The cgroup_mkdir program copies scope entries to a new cgroup (kfault_pending.bpf.h).
		if strings.HasPrefix(name, "kfault_frame_") || name == "kfault_cgroup_mkdir" {
			continue
		}
		for _, m := range refMaps(p.Instructions) {
			if m == "kfault_frame_levels" || m == "kfault_frame_scope" {
				t.Errorf("%s references %s", name, m)
			}
		}
	}

	// Every map of either object is shared by all the engine's program instances.
	for _, c := range []struct {
		name string
		load func() (*ebpf.CollectionSpec, error)
		on   bool
	}{{"kfault", loadKfault, true}, {"kfaultNoChains", loadKfaultNoChains, false}} {
		s, err := c.load()
		if err != nil {
			t.Fatal(err)
		}
		e := &Engine{chainsOn: c.on}
		var objMaps []string
		for n := range s.Maps {
			if !strings.HasPrefix(n, ".") {
				objMaps = append(objMaps, n)
			}
		}
		slices.Sort(objMaps)
		shared := slices.Sorted(maps.Keys(e.mapReplacements()))
		if !slices.Equal(objMaps, shared) {
			t.Errorf("%s: maps %v, the engine shares %v", c.name, objMaps, shared)
		}
	}
}

// clangVersion is the clang major version the committed objects were generated with: another
// version compiles the same source to other (equally valid) instructions, so the comparison below
// only runs with this one. Update it when regenerating with another clang.
const clangVersion = "14"

// TestGeneratedObjects compiles kfault.bpf.c as go generate does (both variants) and compares
// the result with the committed objects: programs, their instructions and map references, and
// the maps. It fails when the C source changed and the objects were not regenerated. It needs
// clang (skips without it, or with another major version than clangVersion) and loads nothing
// into the kernel.
func TestGeneratedObjects(t *testing.T) {
	clang, err := exec.LookPath("clang")
	if err != nil {
		t.Skip("clang not installed")
	}
	out, err := exec.Command(clang, "--version").Output()
	if err != nil || !strings.Contains(string(out), "clang version "+clangVersion+".") {
		t.Skipf("the committed objects come from clang %s; this is %q", clangVersion, strings.SplitN(string(out), "\n", 2)[0])
	}
	for _, c := range []struct {
		name  string
		flags []string
		load  func() (*ebpf.CollectionSpec, error)
	}{
		{"kfault", nil, loadKfault},
		{"kfaultNoChains", []string{"-DKFAULT_NO_CHAINS"}, loadKfaultNoChains},
	} {
		t.Run(c.name, func(t *testing.T) {
			obj := filepath.Join(t.TempDir(), c.name+".o")
			// gen.go's -cflags, and what bpf2go adds for -target amd64.
			args := append([]string{"-O2", "-g", "-Wall", "-Werror", "-mcpu=v3", "-target", "bpfel", "-D__TARGET_ARCH_x86",
				"-fno-ident", "-c", "kfault.bpf.c", "-o", obj}, c.flags...)
			if b, err := exec.Command(clang, args...).CombinedOutput(); err != nil {
				t.Fatalf("clang: %v\n%s", err, b)
			}
			fresh, err := ebpf.LoadCollectionSpec(obj)
			if err != nil {
				t.Fatal(err)
			}
			committed, err := c.load()
			if err != nil {
				t.Fatal(err)
			}
			stale := func(format string, args ...any) {
				t.Helper()
				t.Errorf("%s: "+format+" (run: cd bpf && go generate ./...)", append([]any{c.name}, args...)...)
			}
			if a, b := slices.Sorted(maps.Keys(fresh.Programs)), slices.Sorted(maps.Keys(committed.Programs)); !slices.Equal(a, b) {
				stale("programs %v in the source, %v committed", a, b)
			}
			for name, p := range fresh.Programs {
				q := committed.Programs[name]
				if q == nil {
					continue
				}
				if d := insnDiff(p.Instructions, q.Instructions); d != "" {
					stale("program %s differs from the source: %s", name, d)
				}
			}
			if a, b := slices.Sorted(maps.Keys(fresh.Maps)), slices.Sorted(maps.Keys(committed.Maps)); !slices.Equal(a, b) {
				stale("maps %v in the source, %v committed", a, b)
			}
			for name, m := range fresh.Maps {
				q := committed.Maps[name]
				if q == nil {
					continue
				}
				if m.Type != q.Type || m.KeySize != q.KeySize || m.ValueSize != q.ValueSize || m.MaxEntries != q.MaxEntries || m.Flags != q.Flags {
					stale("map %s differs: source %v %d/%d/%d/%#x, committed %v %d/%d/%d/%#x", name,
						m.Type, m.KeySize, m.ValueSize, m.MaxEntries, m.Flags, q.Type, q.KeySize, q.ValueSize, q.MaxEntries, q.Flags)
				}
			}
		})
	}
}

// insnDiff describes the first difference between two instruction streams ("" when equal),
// ignoring source and debug metadata.
func insnDiff(a, b asm.Instructions) string {
	if len(a) != len(b) {
		return fmt.Sprintf("%d instructions, %d committed", len(a), len(b))
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.OpCode != y.OpCode || x.Dst != y.Dst || x.Src != y.Src || x.Offset != y.Offset || x.Constant != y.Constant ||
			x.Reference() != y.Reference() || x.Symbol() != y.Symbol() {
			return fmt.Sprintf("instruction %d: %v, committed %v", i, x, y)
		}
	}
	return ""
}
