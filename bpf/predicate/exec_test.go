package predicate

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

// Host execution of compiled predicates.
//
// Tracing programs cannot be loaded everywhere (not on the CI host), but a sleepable
// BPF_PROG_TYPE_SYSCALL program can usually be loaded and run with BPF_PROG_TEST_RUN by root.
// Its context is a buffer the test provides, which the program may read at any offset, and
// bpf_probe_read_kernel works on it. So the test lays out fake kernel objects in the context
// buffer, a prologue turns buffer offsets into kernel pointers (ctx + offset) where the fake
// objects point at each other, and then it calls the compiled predicate with R1 = ctx. For
// ArgSource Tracing the buffer starts with the u64 argument array; for Kprobe with a struct
// pt_regs. This checks the generated code's semantics and that the verifier accepts it
// (modulo the BTF pointer typing of real fentry contexts, which the VM tests cover).

const fakeDataStart = 256

type fakeMem struct {
	buf    []byte
	relocs [][2]int // [field offset, target offset]: *(u64*)(ctx+field) = ctx + target
}

func newFakeMem() *fakeMem { return &fakeMem{buf: make([]byte, fakeDataStart)} }

// alloc reserves n zeroed bytes (8-aligned) and returns their offset.
func (m *fakeMem) alloc(n int) int {
	off := len(m.buf)
	m.buf = append(m.buf, make([]byte, (n+7)&^7)...)
	return off
}

func (m *fakeMem) str(s string) int {
	off := m.alloc(len(s) + 1)
	copy(m.buf[off:], s)
	return off
}

func (m *fakeMem) put(off, size int, v uint64) {
	switch size {
	case 1:
		m.buf[off] = byte(v)
	case 2:
		binary.LittleEndian.PutUint16(m.buf[off:], uint16(v))
	case 4:
		binary.LittleEndian.PutUint32(m.buf[off:], uint32(v))
	case 8:
		binary.LittleEndian.PutUint64(m.buf[off:], v)
	}
}

func (m *fakeMem) ptr(field, target int) { m.relocs = append(m.relocs, [2]int{field, target}) }

// argOff is where argument i lives in the context for src.
func argOff(src ArgSource, i int) int {
	if src == Kprobe {
		return int(kprobeArgOffsets("amd64")[i])
	}
	return 8 * i
}

var (
	execOnce sync.Once
	execErr  error
)

// bpfWedged reports a task blocked in the kernel's BPF JIT allocator. Linux 6.18 was seen to
// deadlock there (kworkers in bpf_prog_pack_free, loaders in bpf_prog_pack_alloc) after a few
// thousand program loads and frees in quick succession; any further load then blocks forever
// in uninterruptible sleep, which would hang the test binary.
func bpfWedged() string {
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		stat, err := os.ReadFile(p + "/stat")
		if err != nil {
			continue
		}
		if i := bytes.LastIndexByte(stat, ')'); i < 0 || i+2 >= len(stat) || stat[i+2] != 'D' {
			continue
		}
		wchan, _ := os.ReadFile(p + "/wchan")
		if bytes.HasPrefix(wchan, []byte("bpf_prog_pack")) {
			return fmt.Sprintf("task %s is blocked in %s", filepath.Base(p), wchan)
		}
	}
	return ""
}

// hostBPF reports why this host cannot load the syscall and kprobe programs the host tests
// use, or "".
func hostBPF() string {
	execOnce.Do(func() {
		// Never load BPF on the host, not even a probe: a host test that loaded thousands
		// of programs once jammed a machine's BPF allocator for good.
		if os.Getenv("KFAULT_E2E") != "1" {
			execErr = errors.New("loads BPF programs: runs inside the test VM only (test/vm/run sets KFAULT_E2E=1)")
			return
		}
		if os.Getpagesize() != 4096 || !littleEndian() {
			execErr = errors.New("host execution tests assume amd64")
			return
		}
		if w := bpfWedged(); w != "" {
			execErr = fmt.Errorf("the kernel's BPF JIT allocator looks deadlocked (%s)", w)
			return
		}
		for _, spec := range []*ebpf.ProgramSpec{
			{Type: ebpf.Syscall, Flags: 1 << 4 /* BPF_F_SLEEPABLE */, License: "GPL", Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}},
			{Type: ebpf.Kprobe, License: "GPL", Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}},
		} {
			p, err := ebpf.NewProgram(spec)
			if err != nil {
				execErr = err
				return
			}
			p.Close()
		}
	})
	if execErr != nil {
		return execErr.Error()
	}
	return ""
}

func needExec(t *testing.T) {
	t.Helper()
	if why := hostBPF(); why != "" {
		t.Skipf("cannot load BPF programs on this host (%s): host execution tests skipped", why)
	}
}

func littleEndian() bool { return binary.NativeEndian.Uint16([]byte{1, 0}) == 1 }

// run compiles pred for sig and runs it on the fake memory; it returns R0.
func run(t *testing.T, sig *Signature, pred string, src ArgSource, m *fakeMem) uint32 {
	t.Helper()
	return runBatch(t, sig, []string{pred}, src, m)[0]
}

// runBatch runs several predicates in one program (loading few programs keeps the kernel's
// deferred-free work small): each result is stored in the context after the fake memory.
func runBatch(t *testing.T, sig *Signature, preds []string, src ArgSource, m *fakeMem) []uint32 {
	t.Helper()
	needExec(t)
	ctx := append([]byte(nil), m.buf...)
	resOff := len(ctx)
	ctx = append(ctx, make([]byte, 4*len(preds))...)
	var insns, subs asm.Instructions
	for _, r := range m.relocs {
		insns = append(insns,
			asm.Mov.Reg(asm.R2, asm.R1),
			asm.Add.Imm(asm.R2, int32(r[1])),
			asm.StoreMem(asm.R1, int16(r[0]), asm.R2, asm.DWord))
	}
	insns = append(insns, asm.Mov.Reg(asm.R6, asm.R1))
	for i, pred := range preds {
		prog, err := Compile(sig, pred, Options{ArgSource: src, Arch: "amd64", Symbol: fmt.Sprintf("pred%d", i)})
		if err != nil {
			t.Fatalf("Compile(%q): %v", pred, err)
		}
		insns = append(insns,
			asm.Mov.Reg(asm.R1, asm.R6),
			prog.Call(),
			asm.StoreMem(asm.R6, int16(resOff+4*i), asm.R0, asm.Word))
		subs = append(subs, prog.Instructions...)
	}
	insns = append(insns, asm.Mov.Imm(asm.R0, 0), asm.Return())
	insns[0] = insns[0].WithSymbol("entry")
	insns = append(insns, subs...)
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "pred_test", Type: ebpf.Syscall, Flags: 1 << 4, License: "GPL", Instructions: insns,
	})
	if err != nil {
		t.Fatalf("load %q: %+v", preds, err)
	}
	defer p.Close()
	out := make([]byte, len(ctx))
	if _, err := p.Run(&ebpf.RunOptions{Context: ctx, ContextOut: out}); err != nil {
		t.Fatalf("run %q: %v", preds, err)
	}
	res := make([]uint32, len(preds))
	for i := range res {
		res[i] = binary.LittleEndian.Uint32(out[resOff+4*i:])
	}
	return res
}

// dallocMem builds d_alloc_parallel(parent, name, wq) arguments: parent is a dentry named
// "kfault" whose d_iname is "kfault", name is the qstr for qname.
func dallocMem(src ArgSource, qname string) *fakeMem {
	m := newFakeMem()
	parent := m.alloc(80)
	grand := m.alloc(80)
	q := m.alloc(16)
	s := m.str(qname)
	pname := m.str("kfault")
	m.put(q+0, 4, 0xdeadbeef)         // hash
	m.put(q+4, 4, uint64(len(qname))) // len
	m.ptr(q+8, s)                     // name
	m.put(parent+0, 4, 0x80000001)    // d_flags
	m.put(parent+4, 4, uint64(0xffffffff))
	m.ptr(parent+8, grand)    // d_parent
	m.put(parent+16+4, 4, 6)  // d_name.len
	m.ptr(parent+16+8, pname) // d_name.name
	copy(m.buf[parent+40:], "kfault")
	copy(m.buf[grand+40:], "root")
	m.ptr(argOff(src, 0), parent)
	m.ptr(argOff(src, 1), q)
	return m
}

func TestExecDAllocParallel(t *testing.T) {
	spec := testSpec(t)
	for _, src := range []ArgSource{Tracing, Kprobe} {
		for _, params := range []string{"", "struct dentry *parent, const struct qstr *name"} {
			sig := mustResolve(t, spec, "d_alloc_parallel", params)
			cases := []struct {
				pred string
				name string
				want uint32
			}{
				{`STRNCMP(name->name, "bananas", 8)`, "bananas", 1},
				{`STRNCMP(name->name, "bananas", 8)`, "apples", 0},
				{`STRNCMP(name->name, "bananas", 8)`, "bananasplit", 0},
				{`STRNCMP(name->name, "bananas", 7)`, "bananasplit", 1},
				{`STRNCMP(name->name, "bananas", 100)`, "bananas", 1},
				{`STRNCMP(name->name, "ban", 3)`, "bananas", 1},
				{`STRNCMP(name->name, "ban", 3)`, "ba", 0},
				{`STRNCMP(name->name, "bananas", 8)`, "", 0},
				{`STRCMP(name->name, "bananas")`, "bananas", 1},
				{`STRCMP(name->name, "bananas")`, "banana", 0},
				{`STRCMP(name->name, "a")`, "a", 1},
				{`STRCMP(name->name, "abcdefghijklmnopq")`, "abcdefghijklmnopq", 1},
				{`STRCMP(name->name, "abcdefghijklmnopq")`, "abcdefghijklmnopr", 0},
				{`!STRCMP(name->name, "bananas")`, "apples", 1},
				{`name->len == 7`, "bananas", 1},
				{`name->len == 7`, "apple", 0},
				{`name->hash == 0xdeadbeef`, "x", 1},
				{`name->hash_len == 0x00000001deadbeef`, "x", 1},
				{`name->name[0] == 'b' && name->name[1] == 'a'`, "bananas", 1},
				{`name->name[0] == 'b' && name->name[1] == 'a'`, "bxnanas", 0},
				{`name->name[6] == 's'`, "bananas", 1},
				{`name->name[6] == 's'`, "banana", 0}, // the NUL
				{`parent->d_flags & 1`, "x", 1},
				{`parent->d_flags & 2`, "x", 0},
				{`parent->d_flags >> 31 == 1`, "x", 1},
				{`parent->d_count == -1`, "x", 1},
				{`parent->d_count < 0`, "x", 1},
				{`parent->d_flags > 0x7fffffff`, "x", 1},
				{`STRCMP(parent->d_iname, "kfault")`, "x", 1},
				{`STRCMP(parent->d_parent->d_iname, "root")`, "x", 1},
				{`STRCMP(parent->d_parent->d_iname, "kfault")`, "x", 0},
				{`STRCMP(parent->d_name.name, "kfault") && parent->d_name.len == 6`, "x", 1},
				{`parent->d_iname[6] == 0`, "bananas", 1}, // NUL after "kfault"
				{`parent->d_iname[5] == 't'`, "bananas", 1},
				{`parent->d_iname[31] == 0`, "bananas", 1},
				{`parent->d_parent->d_parent == 0`, "x", 1},
				{`parent->d_parent->d_parent->d_flags == 0`, "x", 0}, // reading NULL makes it false
				{`!(parent->d_parent->d_parent->d_flags == 0)`, "x", 0},
				{`parent != 0 && name != NULL`, "x", 1},
				{`!parent || !name`, "x", 0},
				{`parent->d_parent != NULL && !parent->d_parent->d_parent`, "x", 1},
				{`(parent->d_parent->d_parent == 0) + (name != 0) == 2`, "x", 1},
				{`(name->len == 7) + (name->hash != 0) == 2`, "bananas", 1},
				{`(name->len | 8) == 15 && (name->len ^ 1) == 6 && (name->len << 2) == 28`, "bananas", 1},
				{`-name->len == -7 && ~name->len == -8`, "bananas", 1},
				{`1 < name->len && 100 > name->len && 7 <= name->len && 7 >= name->len`, "bananas", 1},
				{`name->len - 8 < 0`, "bananas", 1},
				{`name->hash_len - 0x00000008deadbeef > 0`, "bananas", 1}, // unsigned 64-bit wraps
				{`1`, "x", 1},
				{`0 || 0`, "x", 0},
				{`(1 << 40) + 5 == 1099511627781`, "x", 1},
				{`name->hash_len != 0x7fffffffffffffff`, "x", 1},
				{`name->len == 7 && (name->hash == 1 || STRCMP(name->name, "bananas"))`, "bananas", 1},
			}
			byName := map[string][]int{}
			for i, tc := range cases {
				byName[tc.name] = append(byName[tc.name], i)
			}
			for name, idx := range byName {
				preds := make([]string, len(idx))
				for k, i := range idx {
					preds[k] = cases[i].pred
				}
				res := runBatch(t, sig, preds, src, dallocMem(src, name))
				for k, i := range idx {
					if tc := cases[i]; res[k] != tc.want {
						t.Errorf("%v params=%q %q on %q = %d, want %d", src, params, tc.pred, tc.name, res[k], tc.want)
					}
				}
			}
		}
	}
}

func TestExecBio(t *testing.T) {
	spec := testSpec(t)
	sig := mustResolve(t, spec, "should_fail_bio", "")
	mk := func(src ArgSource) *fakeMem {
		m := newFakeMem()
		bio := m.alloc(56)
		m.put(bio+8, 4, 0x801)   // bi_opf: REQ_OP_WRITE | something
		m.put(bio+12, 2, 0xfff0) // bi_flags
		m.put(bio+14, 2, 0xfffe) // bi_prio = -2
		// bi_a:3 = 5 @ bit 0, bi_b:5 = -3 (0b11101) @ bit 3, bi_c:12 = 0xabc @ byte 17
		m.put(bio+16, 1, 5|(0x1d<<3))
		m.put(bio+17, 2, 0xabc)
		m.put(bio+24, 8, uint64(1)<<62)
		for i := 0; i < 4; i++ {
			m.put(bio+32+4*i, 4, uint64(int64(i*10-15)))
		}
		m.put(bio+48, 4, 1)
		m.ptr(argOff(src, 0), bio)
		return m
	}
	for _, src := range []ArgSource{Tracing, Kprobe} {
		cases := []struct {
			pred string
			want uint32
		}{
			{`bio->bi_opf & 1`, 1},
			{`bio->bi_opf & 2`, 0},
			{`(bio->bi_opf & 0xff) == 1`, 1},
			{`bio->bi_flags == 0xfff0`, 1},
			{`bio->bi_prio == -2`, 1},
			{`bio->bi_prio < 0`, 1},
			{`bio->bi_a == 5`, 1},
			{`bio->bi_b == -3`, 1},
			{`bio->bi_b < 0`, 1},
			{`bio->bi_c == 0xabc`, 1},
			{`bio->bi_size == 1 << 62`, 1},
			{`bio->bi_vals[0] == -15 && bio->bi_vals[3] == 15`, 1},
			{`bio->bi_vals[1] == -5 && bio->bi_vals[2] == 5`, 1},
			{`bio->bi_op == 1`, 1},
			{`bio->bi_next == 0`, 1},
			{`bio->bi_next->bi_opf`, 0},
			{`bio->bi_next != 0 && bio->bi_next->bi_opf`, 0},
		}
		preds := make([]string, len(cases))
		for i, tc := range cases {
			preds[i] = tc.pred
		}
		res := runBatch(t, sig, preds, src, mk(src))
		for i, tc := range cases {
			if got := res[i]; got != tc.want {
				t.Errorf("%v %q = %d, want %d", src, tc.pred, got, tc.want)
			}
		}
	}
}

func TestExecInts(t *testing.T) {
	spec := testSpec(t)
	sig := mustResolve(t, spec, "ints", "")
	for _, src := range []ArgSource{Tracing, Kprobe} {
		m := newFakeMem()
		// Garbage in the upper bits must be ignored for narrow arguments.
		m.put(argOff(src, 0), 8, 0xaaaaaaaa_fffffff6) // int a = -10
		m.put(argOff(src, 1), 8, 1<<63)               // unsigned long b
		m.put(argOff(src, 2), 8, 0xaaaaaaaa_aaaaaa80) // char c = -128
		m.put(argOff(src, 3), 8, 0xaaaaaaaa_aaaa0010) // short d = 16
		m.put(argOff(src, 4), 8, 0xaaaaaaaa_aaaaaa01) // bool e = 1
		m.put(argOff(src, 5), 8, uint64(1<<64-5))     // long f = -5
		cases := []struct {
			pred string
			want uint32
		}{
			{`a == -10`, 1},
			{`a < 0 && a > -11`, 1},
			{`b > 0`, 1},
			{`b == 0x8000000000000000`, 1},
			{`b > 1`, 1},
			{`b >> 63 == 1`, 1},
			{`c == -128`, 1},
			{`d == 16`, 1},
			{`e == 1 && e`, 1},
			{`f == -5 && f < 0`, 1},
			{`f >> 1 == -3`, 1},
			{`a + f == -15`, 1},
			{`(a & 0xff) == 0xf6`, 1},
		}
		preds := make([]string, len(cases))
		for i, tc := range cases {
			preds[i] = tc.pred
		}
		res := runBatch(t, sig, preds, src, m)
		for i, tc := range cases {
			if got := res[i]; got != tc.want {
				t.Errorf("%v %q = %d, want %d", src, tc.pred, got, tc.want)
			}
		}
	}
	// Tracing reads the 7th argument; kprobes cannot.
	m := newFakeMem()
	m.put(argOff(Tracing, 6), 8, 77)
	if got := run(t, sig, `g == 77`, Tracing, m); got != 1 {
		t.Errorf("g == 77: %d", got)
	}
}

func TestExecStrs(t *testing.T) {
	spec := testSpec(t)
	sig := mustResolve(t, spec, "strs", "")
	for _, src := range []ArgSource{Tracing, Kprobe} {
		m := newFakeMem()
		s := m.str("hello")
		argv := m.alloc(24)
		a0, a1 := m.str("mount"), m.str("-t")
		m.ptr(argv, a0)
		m.ptr(argv+8, a1)
		m.ptr(argOff(src, 0), s)
		m.ptr(argOff(src, 1), argv)
		cases := []struct {
			pred string
			want uint32
		}{
			{`STRCMP(s, "hello")`, 1},
			{`STRNCMP(s, "help", 3)`, 1},
			{`STRNCMP(s, "help", 4)`, 0},
			{`s[4] == 'o' && s[5] == 0`, 1},
			{`STRCMP(argv[0], "mount") && STRCMP(argv[1], "-t") && argv[2] == 0`, 1},
			{`argv[1][1] == 't' && argv[1][2] == 0`, 1},
			{`argv[0][0] == 'm'`, 1},
		}
		preds := make([]string, len(cases))
		for i, tc := range cases {
			preds[i] = tc.pred
		}
		res := runBatch(t, sig, preds, src, m)
		for i, tc := range cases {
			if got := res[i]; got != tc.want {
				t.Errorf("%v %q = %d, want %d", src, tc.pred, got, tc.want)
			}
		}
	}
}

// userString lives in this process's memory: a user pointer for the kernel.
var userString = []byte("/etc/passwd\x00")

func TestExecUserStrings(t *testing.T) {
	spec := testSpec(t)
	sig := mustResolve(t, spec, "strs", "")
	for _, src := range []ArgSource{Tracing, Kprobe} {
		m := newFakeMem()
		addr := uint64(uintptr(unsafe.Pointer(&userString[0])))
		m.put(argOff(src, 0), 8, addr) // s: no __user tag, read falls back to user memory
		m.put(argOff(src, 2), 8, addr) // u: const char __user *
		cases := []struct {
			pred string
			want uint32
		}{
			{`STRNCMP(s, "/etc/", 5)`, 1},
			{`STRCMP(s, "/etc/passwd")`, 1},
			{`STRCMP(s, "/etc/shadow")`, 0},
			{`STRNCMP(u, "/etc/", 5)`, 1},
			{`u[1] == 'e'`, 1},
		}
		preds := make([]string, len(cases))
		for i, tc := range cases {
			preds[i] = tc.pred
		}
		res := runBatch(t, sig, preds, src, m)
		for i, tc := range cases {
			if got := res[i]; got != tc.want {
				t.Errorf("%v %q = %d, want %d", src, tc.pred, got, tc.want)
			}
		}
	}
}

func TestExecWideArgs(t *testing.T) {
	spec := testSpec(t)
	sig := mustResolve(t, spec, "wide", "")
	for _, src := range []ArgSource{Tracing, Kprobe} {
		m := newFakeMem()
		m.put(argOff(src, 2), 8, 5) // the 16-byte q takes slots 0 and 1
		if got := run(t, sig, `x == 5`, src, m); got != 1 {
			t.Errorf("%v: x == 5 gave %d", src, got)
		}
		_, err := Compile(sig, `y == 1`, Options{ArgSource: src, Arch: "amd64"})
		if err == nil || !strings.Contains(err.Error(), "follows a by-value argument of type struct dentry") {
			t.Errorf("%v: y: %v", src, err)
		}
	}
}

// TestExecFuncInfo calls a predicate compiled with FuncInfo from a program whose own entry
// carries func_info and line_info, as bpf2go-built programs do.
func TestExecFuncInfo(t *testing.T) {
	needExec(t)
	sig := mustResolve(t, testSpec(t), "d_alloc_parallel", "")
	m := dallocMem(Tracing, "bananas")
	prog, err := Compile(sig, `STRNCMP(name->name, "bananas", 8)`, Options{FuncInfo: true, Symbol: "pred"})
	if err != nil {
		t.Fatal(err)
	}
	var insns asm.Instructions
	for _, r := range m.relocs {
		insns = append(insns,
			asm.Mov.Reg(asm.R2, asm.R1),
			asm.Add.Imm(asm.R2, int32(r[1])),
			asm.StoreMem(asm.R1, int16(r[0]), asm.R2, asm.DWord))
	}
	insns = append(insns, prog.Call(), asm.Return())
	insns[0] = btf.WithFuncMetadata(insns[0].WithSymbol("entry").WithSource(asm.Comment("entry")), &btf.Func{
		Name: "entry", Linkage: btf.GlobalFunc,
		Type: &btf.FuncProto{
			Return: &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed},
			Params: []btf.FuncParam{{Name: "ctx", Type: &btf.Pointer{Target: &btf.Void{}}}},
		},
	})
	insns = append(insns, prog.Instructions...)
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "pred_test", Type: ebpf.Syscall, Flags: 1 << 4, License: "GPL", Instructions: insns})
	if err != nil {
		t.Fatalf("load: %+v", err)
	}
	defer p.Close()
	ret, err := p.Run(&ebpf.RunOptions{Context: append([]byte(nil), m.buf...)})
	if err != nil || ret != 1 {
		t.Fatalf("run: %d %v", ret, err)
	}
}
