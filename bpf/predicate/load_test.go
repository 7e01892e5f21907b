package predicate

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
)

// Tests named TestLoad* load compiled predicates into real fentry and kprobe programs on the
// running kernel, attach them and trigger them. They need root, kernel BTF and a kernel that
// allows tracing programs: the test VM (test/vm/run sets KFAULT_E2E=1). Run them with
//
//	go test -c -o out/predicate.test ./bpf/predicate
//	test/vm/run -- out/predicate.test -test.v -test.run Load

var (
	tracingOnce sync.Once
	tracingErr  error
)

func needTracing(t *testing.T) *btf.Spec {
	t.Helper()
	if os.Getenv("KFAULT_E2E") != "1" {
		t.Skip("set KFAULT_E2E=1 (the test VM does) to load tracing programs")
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Skipf("no kernel BTF: %v", err)
	}
	tracingOnce.Do(func() {
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type: ebpf.Tracing, AttachType: ebpf.AttachTraceFEntry, AttachTo: "d_alloc_parallel", License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		})
		if err == nil {
			p.Close()
		}
		tracingErr = err
	})
	if tracingErr != nil {
		t.Skipf("this kernel does not load fentry programs: %v", tracingErr)
	}
	return spec
}

// counterProgram wraps pred: when it returns 1, counter[0] is incremented. The entry function
// returns 0.
func counterProgram(pred *Program, counter *ebpf.Map) asm.Instructions {
	insns := asm.Instructions{
		pred.Call().WithSymbol("entry"),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.StoreImm(asm.R10, -8, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, counter.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	}
	return append(insns, pred.Instructions...)
}

func newCounter(t *testing.T) *ebpf.Map {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func readCounter(t *testing.T, m *ebpf.Map) uint64 {
	t.Helper()
	var v uint64
	if err := m.Lookup(uint32(0), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// lookup makes the kernel look name up in a fresh directory (so it is not in the dcache and
// d_alloc_parallel runs).
func lookup(t *testing.T, name string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "kfaultpred")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	_, _ = os.Stat(filepath.Join(dir, name))
}

type attachFn func(*ebpf.Program) (link.Link, error)

func loadAndAttach(t *testing.T, spec *btf.Spec, src ArgSource, params, pred string) *ebpf.Map {
	t.Helper()
	sig, err := Resolve(spec, "d_alloc_parallel", params)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Compile(sig, pred, Options{ArgSource: src})
	if err != nil {
		t.Fatalf("Compile(%q): %v", pred, err)
	}
	counter := newCounter(t)
	ps := &ebpf.ProgramSpec{Name: "kfault_pred", License: "GPL", Instructions: counterProgram(p, counter)}
	var attach attachFn
	if src == Tracing {
		ps.Type, ps.AttachType, ps.AttachTo = ebpf.Tracing, ebpf.AttachTraceFEntry, "d_alloc_parallel"
		attach = func(prog *ebpf.Program) (link.Link, error) {
			return link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceFEntry})
		}
	} else {
		ps.Type = ebpf.Kprobe
		attach = func(prog *ebpf.Program) (link.Link, error) { return link.Kprobe("d_alloc_parallel", prog, nil) }
	}
	prog, err := ebpf.NewProgram(ps)
	if err != nil {
		t.Fatalf("load %v %q: %+v\n%v", src, pred, err, p.Instructions)
	}
	t.Cleanup(func() { prog.Close() })
	l, err := attach(prog)
	if err != nil {
		t.Fatalf("attach %v: %v", src, err)
	}
	t.Cleanup(func() { l.Close() })
	return counter
}

func TestLoadDAllocParallel(t *testing.T) {
	spec := needTracing(t)
	for _, src := range []ArgSource{Tracing, Kprobe} {
		for _, params := range []string{"struct dentry *parent, const struct qstr *name", ""} {
			for _, tc := range []struct {
				pred  string
				hits  []string // names whose lookup must count
				skips []string // names whose lookup must not
			}{
				{`STRNCMP(name->name, "bananas", 8)`, []string{"bananas"}, []string{"apples", "bananasplit", "banana"}},
				{`STRCMP(name->name, "bananas")`, []string{"bananas"}, []string{"apples", "bananasplit"}},
				{`name->len == 7 && name->name[6] == 's' && name->name[0] == 'b'`, []string{"bananas", "bxxxxxs"}, []string{"apples", "bananax"}},
				{`STRNCMP(parent->d_name.name, "kfaultpred", 10) && !STRNCMP(name->name, "apples", 7)`, []string{"bananas", "cherries"}, []string{"apples"}},
				{`STRNCMP(parent->d_parent->d_name.name, "kfaultpred", 10)`, nil, []string{"bananas"}},
			} {
				counter := loadAndAttach(t, spec, src, params, tc.pred)
				for _, n := range tc.hits {
					before := readCounter(t, counter)
					lookup(t, n)
					if after := readCounter(t, counter); after <= before {
						t.Errorf("%v %q: lookup of %q did not count (%d -> %d)", src, tc.pred, n, before, after)
					}
				}
				for _, n := range tc.skips {
					before := readCounter(t, counter)
					lookup(t, n)
					if after := readCounter(t, counter); after != before {
						t.Errorf("%v %q: lookup of %q counted (%d -> %d)", src, tc.pred, n, before, after)
					}
				}
			}
		}
	}
}

// TestLoadAccepted loads, as fentry programs, predicates of every shape the compiler emits,
// against kernel functions.
func TestLoadAccepted(t *testing.T) {
	spec := needTracing(t)
	for _, tc := range kernelPredicates {
		sig, err := Resolve(spec, tc.fn, "")
		if err != nil {
			t.Logf("skip %s: %v", tc.fn, err)
			continue
		}
		p, err := Compile(sig, tc.pred, Options{})
		if err != nil {
			if strings.Contains(err.Error(), "unknown member") {
				t.Logf("skip %q on this kernel: %v", tc.pred, err)
				continue
			}
			t.Errorf("Compile(%s, %q): %v", tc.fn, tc.pred, err)
			continue
		}
		// fentry programs must return 0; fmod_ret ones return 0 to leave the result alone.
		insns := append(asm.Instructions{p.Call().WithSymbol("entry"), asm.Mov.Imm(asm.R0, 0), asm.Return()}, p.Instructions...)
		attachTypes := []ebpf.AttachType{ebpf.AttachTraceFEntry}
		if strings.HasPrefix(tc.fn, "should_fail") {
			attachTypes = append(attachTypes, ebpf.AttachModifyReturn)
		}
		for _, at := range attachTypes {
			prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
				Type: ebpf.Tracing, AttachType: at, AttachTo: tc.fn, License: "GPL", Instructions: insns,
			})
			if err != nil {
				t.Errorf("load %v %s %q: %+v\n%v", at, tc.fn, tc.pred, err, p.Instructions)
				continue
			}
			prog.Close()
		}
	}
}

// kernelPredicates exercise every shape of generated code against real kernel functions and
// layouts. Members that a kernel lacks make a case skip.
var kernelPredicates = []struct{ fn, pred string }{
	{"d_alloc_parallel", `STRNCMP(name->name, "bananas", 8)`},
	{"d_alloc_parallel", `1`},
	{"d_alloc_parallel", `0 || name`},
	{"d_alloc_parallel", `parent == 0 || name != NULL && name->len > 3`},
	{"d_alloc_parallel", `name->len == 7 && name->name[6] == 's'`},
	{"d_alloc_parallel", `parent->d_name.len == 1 && parent->d_name.name[0] == 'x'`},
	{"d_alloc_parallel", `parent->d_sb->s_magic == 0x01021994 && STRCMP(parent->d_sb->s_id, "tmpfs")`},
	{"d_alloc_parallel", `(name->hash_len >> 32) + (name->hash & 3) - ~name->len << 1 == 5`},
	{"d_alloc_parallel", `(name->len == 1) + (name->len == 2) + (name->len == 3) == 1`},
	{"d_alloc_parallel", `parent->d_flags & 0x8 || -parent->d_lockref.count < 0`},
	{"d_alloc_parallel", `wq != 0 && parent->d_inode->i_ino > 2 && parent->d_inode->i_sb->s_magic == parent->d_sb->s_magic`},
	{"should_fail_bio", `bio->bi_opf & 1`},
	{"should_fail_bio", `(bio->bi_opf & 0xff) == 1 && bio->bi_iter.bi_size > 4096 && bio->bi_bdev->bd_dev != 0`},
	{"should_fail_bio", `bio->bi_vcnt > 0 && bio->bi_io_vec[0].bv_len == 4096`},
	{"should_failslab", `STRNCMP(s->name, "dentry", 6) && (gfpflags & 0x400) && s->size > 128`},
	{"should_fail_alloc_page", `order > 0 && gfp_mask & 0x10`},
	{"do_sys_openat2", `dfd == -100 && how->flags & 0x40`},
	{"do_sys_openat2", `STRNCMP(filename, "/etc", 4)`},
	{"__x64_sys_mount", `regs->di != 0`},
}
