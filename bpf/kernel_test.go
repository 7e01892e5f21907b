package bpf

import (
	"reflect"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
)

func TestParseInjectionList(t *testing.T) {
	m, err := parseInjectionList(strings.NewReader("should_failslab\tERRNO\nshould_fail_alloc_page\tTRUE\n__x64_sys_openat\tERRNO\n"))
	if err != nil || len(m) != 3 || m["should_fail_alloc_page"] != "TRUE" {
		t.Errorf("got %v, %v", m, err)
	}
}

func TestScanKallsyms(t *testing.T) {
	const head = "ffffffff81000000 T _stext\nffffffff81000010 t vfs_statx_fd\n" // other names, and a longer one with f's prefix
	for name, tc := range map[string]struct {
		lines string // kallsyms lines after head
		want  KernelSymbol
	}{
		"absent":              {"", KernelSymbol{}},
		"plain":               {"ffffffff81234560 T vfs_statx\n", KernelSymbol{Exists: true}},
		"constprop clone":     {"ffffffff81234570 t vfs_statx.constprop.0\nffffffff81234580 T vfs_statx\n", KernelSymbol{Exists: true, Clones: []string{"vfs_statx.constprop.0"}}},
		"only an isra clone":  {"ffffffff81234590 t vfs_statx.isra.0\n", KernelSymbol{Clones: []string{"vfs_statx.isra.0"}}},
		"partial inlining":    {"ffffffff81234590 t vfs_statx.part.0\nffffffff812345a0 T vfs_statx\n", KernelSymbol{Exists: true, Clones: []string{"vfs_statx.part.0"}}},
		"module clone":        {"ffffffffc0001000 t vfs_statx.isra.0\t[mod]\n", KernelSymbol{Clones: []string{"vfs_statx.isra.0"}}},
		"cold part":           {"ffffffff81234560 T vfs_statx\nffffffff81000020 t vfs_statx.cold\n", KernelSymbol{Exists: true}},
		"cold part of clone":  {"ffffffff81234590 t vfs_statx.isra.0\nffffffff81000020 t vfs_statx.isra.0.cold\n", KernelSymbol{Clones: []string{"vfs_statx.isra.0"}}},
		"same clone twice":    {"ffffffff81234590 t vfs_statx.isra.0\nffffffff812345b0 t vfs_statx.isra.0\n", KernelSymbol{Clones: []string{"vfs_statx.isra.0"}}},
		"two clones in order": {"ffffffff81234590 t vfs_statx.isra.0\nffffffff812345b0 t vfs_statx.constprop.0\n", KernelSymbol{Clones: []string{"vfs_statx.isra.0", "vfs_statx.constprop.0"}}},
	} {
		t.Run(name, func(t *testing.T) {
			m, err := scanKallsyms(strings.NewReader(head+tc.lines), []string{"vfs_statx", "nope"})
			if err != nil {
				t.Fatal(err)
			}
			if got := m["vfs_statx"]; !reflect.DeepEqual(got, tc.want) {
				t.Errorf("vfs_statx: %+v, want %+v", got, tc.want)
			}
			if got := m["nope"]; got.Exists || got.Clones != nil {
				t.Errorf("nope: %+v", got)
			}
		})
	}
}

func TestReleaseAtLeast(t *testing.T) {
	for rel, want := range map[string]bool{"6.1.192": false, "6.10.0": true, "6.18.44-fc": true, "5.15.0-91-generic": false, "7.0": true, "junk": true} {
		if got := releaseAtLeast(rel, 6, 10); got != want {
			t.Errorf("releaseAtLeast(%q, 6, 10) = %v", rel, got)
		}
	}
}

func TestGFPNoFailLegacy(t *testing.T) {
	if got := gfpNoFail(nil); got != 0x8000 {
		t.Errorf("gfpNoFail(nil) = %#x", got)
	}
}

func TestSymbolAddrs(t *testing.T) {
	in := "0000000000000000 A fixed_percpu_data\n" +
		"000000000001f9c0 D __preempt_count\n" +
		"ffffffff82a37880 R __per_cpu_offset\n" +
		"ffffffffc0001000 t pcpu_hot\t[somemod]\n"
	m, err := symbolAddrs(strings.NewReader(in), "__per_cpu_offset", "__preempt_count", "pcpu_hot")
	if err != nil {
		t.Fatal(err)
	}
	if m["__preempt_count"] != 0x1f9c0 || m["__per_cpu_offset"] != 0xffffffff82a37880 || m["pcpu_hot"] != 0 {
		t.Errorf("got %x", m)
	}
}

// TestMemberOffset: a member is found as a plain member and nested in anonymous structs and
// unions, either way round (6.2-6.14 keep pcpu_hot's preempt_count in an anonymous struct inside
// an anonymous union: pcpuHot6_2 in TestFindPreemptCount).
func TestMemberOffset(t *testing.T) {
	u32 := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	ptr := &btf.Pointer{Target: &btf.Void{}}
	anonUnion := &btf.Union{Size: 8, Members: []btf.Member{
		{Name: "preempt_count", Type: u32, Offset: 0},
		{Name: "x", Type: ptr, Offset: 0},
	}}
	anonStruct := &btf.Struct{Size: 16, Members: []btf.Member{
		{Name: "current_task", Type: ptr, Offset: 0},
		{Name: "", Type: anonUnion, Offset: 64},
	}}
	layout612 := &btf.Struct{Name: "pcpu_hot", Size: 64, Members: []btf.Member{
		{Name: "", Type: anonStruct, Offset: 0},
	}}
	layout61 := &btf.Struct{Name: "pcpu_hot", Size: 16, Members: []btf.Member{
		{Name: "current_task", Type: ptr, Offset: 0},
		{Name: "preempt_count", Type: u32, Offset: 64},
	}}
	typedef := &btf.Typedef{Name: "hot_t", Type: layout612}
	tests := map[string]struct {
		typ    btf.Type
		name   string
		want   btf.Bits
		wantOK bool
	}{
		"plain member":             {layout61, "preempt_count", 64, true},
		"inside anonymous members": {layout612, "preempt_count", 64, true},
		"through a typedef":        {typedef, "preempt_count", 64, true},
		"missing":                  {layout612, "no_such_member", 0, false},
		"not a composite":          {u32, "preempt_count", 0, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok := memberOffset(tc.typ, tc.name)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("memberOffset = %d, %v; want %d, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

// pcpuHot6_2 is x86-64's struct pcpu_hot as 6.2 to 6.14 declare it (asm/current.h, without
// CONFIG_CALL_DEPTH_TRACKING): preempt_count at byte 8, in an anonymous struct inside an
// anonymous union that pads the struct to a cache line.
func pcpuHot6_2() *btf.Struct {
	i32 := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	u16 := &btf.Int{Name: "u16", Size: 2}
	u8 := &btf.Int{Name: "u8", Size: 1}
	ulong := &btf.Int{Name: "unsigned long", Size: 8}
	boolean := &btf.Int{Name: "bool", Size: 1, Encoding: btf.Bool}
	ptr := &btf.Pointer{Target: &btf.Void{}}
	fields := &btf.Struct{Size: 40, Members: []btf.Member{
		{Name: "current_task", Type: ptr, Offset: 0},
		{Name: "preempt_count", Type: i32, Offset: 64},
		{Name: "cpu_number", Type: i32, Offset: 96},
		{Name: "top_of_stack", Type: ulong, Offset: 128},
		{Name: "hardirq_stack_ptr", Type: ptr, Offset: 192},
		{Name: "softirq_pending", Type: u16, Offset: 256},
		{Name: "hardirq_stack_inuse", Type: boolean, Offset: 272},
	}}
	pad := &btf.Union{Size: 64, Members: []btf.Member{
		{Name: "", Type: fields, Offset: 0},
		{Name: "pad", Type: &btf.Array{Index: u8, Type: u8, Nelems: 64}, Offset: 0},
	}}
	return &btf.Struct{Name: "pcpu_hot", Size: 64, Members: []btf.Member{{Name: "", Type: pad, Offset: 0}}}
}

func specOf(t *testing.T, types ...btf.Type) *btf.Spec {
	t.Helper()
	b, err := btf.NewBuilder(types, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := b.Spec()
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// TestFindPreemptCount: the preempt count is found on each x86-64 layout (findPreemptCount says
// which), from kallsyms as each kernel prints it, and never guessed.
func TestFindPreemptCount(t *testing.T) {
	hotSpec := specOf(t, pcpuHot6_2())
	noPC := specOf(t, &btf.Struct{Name: "pcpu_hot", Size: 8, Members: []btf.Member{
		{Name: "current_task", Type: &btf.Pointer{Target: &btf.Void{}}, Offset: 0}}})
	const perCPUOffset = 0xffffffff82a37880
	tests := map[string]struct {
		kallsyms string
		spec     *btf.Spec
		want     uint64 // the preempt count's per-cpu address; 0: an error
	}{
		// 6.1: a per-cpu variable; per-cpu symbols are offsets (the area is linked at 0).
		"6.1 __preempt_count": {
			"0000000000000000 A fixed_percpu_data\n" +
				"000000000001f9c0 D __preempt_count\n" +
				"ffffffff82a37880 R __per_cpu_offset\n", hotSpec, 0x1f9c0},
		// 6.2-6.14: no __preempt_count; pcpu_hot's member, found through BTF.
		"6.2-6.14 pcpu_hot.preempt_count": {
			"0000000000000000 A fixed_percpu_data\n" +
				"0000000000032040 D pcpu_hot\n" +
				"ffffffff82a37880 R __per_cpu_offset\n", hotSpec, 0x32040 + 8},
		// 6.15+: __preempt_count again (cache-hot per-cpu data), at a kernel address.
		"6.15+ __preempt_count": {
			"ffffffff83c00008 D __preempt_count\n" +
				"ffffffff82a37880 R __per_cpu_offset\n", hotSpec, 0xffffffff83c00008},
		"6.15+ without BTF": {
			"ffffffff83c00008 D __preempt_count\n" +
				"ffffffff82a37880 R __per_cpu_offset\n", nil, 0xffffffff83c00008},
		"pcpu_hot without BTF":        {"0000000000032040 D pcpu_hot\nffffffff82a37880 R __per_cpu_offset\n", nil, 0},
		"pcpu_hot without the member": {"0000000000032040 D pcpu_hot\nffffffff82a37880 R __per_cpu_offset\n", noPC, 0},
		"neither":                     {"ffffffff82a37880 R __per_cpu_offset\n", hotSpec, 0},
		"no __per_cpu_offset (!SMP)":  {"000000000001f9c0 D __preempt_count\n", hotSpec, 0},
		"restricted kallsyms (all zero)": {
			"0000000000000000 D __preempt_count\n" +
				"0000000000000000 R __per_cpu_offset\n", hotSpec, 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			off, pc, err := findPreemptCount(strings.NewReader(tc.kallsyms), tc.spec)
			if tc.want == 0 {
				if err == nil || off != 0 || pc != 0 {
					t.Errorf("got %#x, %#x, %v; want an error and zeros", off, pc, err)
				}
				return
			}
			if err != nil || off != perCPUOffset || pc != tc.want {
				t.Errorf("got %#x, %#x, %v; want %#x, %#x", off, pc, err, uint64(perCPUOffset), tc.want)
			}
		})
	}
}
