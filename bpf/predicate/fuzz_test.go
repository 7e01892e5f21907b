package predicate

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

var fuzzSeeds = []string{
	`STRNCMP(name->name, "bananas", 8)`,
	`STRCMP(name->name, "bananas")`,
	`bio->bi_opf & 1`,
	`(bio->bi_opf & 0xff) == 1 && bio->bi_vals[bio->bi_a] < -3`,
	`parent->d_parent->d_name.len == 4 || !STRNCMP(parent->d_iname, "tmp", 3)`,
	`name->hash_len >> 32 == 7`,
	`a + b - c << 2 >= ~d && e != 'x' || f == 0x7fffffffffffffff`,
	`STRCMP(argv[s[0]], "mount") && argv[1][2] == '\n'`,
	`-(a ^ 3) | 017 & 0b11`,
	`(struct bio *)x`,
	`foo(1)`,
	`a ? b : c`,
	`"lit"`,
	`x = 1`,
	`'\x4`,
	`((((a))))`,
}

func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		e, err := Parse(src)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("Parse(%q): error %T %v is not an *Error", src, err, err)
			}
			if pe.Offset < 0 || pe.Offset > len(src) {
				t.Fatalf("Parse(%q): error offset %d out of range", src, pe.Offset)
			}
			return
		}
		if e == nil {
			t.Fatalf("Parse(%q): nil expression without error", src)
		}
		_ = e.String()
	})
}

// fuzzSigs are the signatures FuzzCompile compiles against: from the synthetic spec, plus
// the kernel's d_alloc_parallel and should_fail_bio when the host has BTF.
var (
	fuzzSigsOnce sync.Once
	fuzzSigs     []*Signature
	kernelSigs   = map[*Signature]bool{} // resolved against the running kernel
)

func loadFuzzSigs(tb testing.TB) []*Signature {
	fuzzSigsOnce.Do(func() {
		spec := testSpec(tb)
		for _, fn := range []string{"d_alloc_parallel", "should_fail_bio", "ints", "strs", "should_failslab"} {
			fuzzSigs = append(fuzzSigs, mustResolve(tb, spec, fn, ""))
		}
		if kspec, err := btf.LoadKernelSpec(); err == nil {
			for _, fn := range []string{"d_alloc_parallel", "should_fail_bio"} {
				if sig, err := Resolve(kspec, fn, ""); err == nil {
					fuzzSigs = append(fuzzSigs, sig)
					kernelSigs[sig] = true
				}
			}
		}
	})
	return fuzzSigs
}

// fuzzLoad reports whether fuzzing should also load every accepted program into the host's
// verifier: only on request (KFAULT_FUZZ_LOAD=1), because thousands of loads and frees in quick
// succession were seen to deadlock the BPF JIT allocator of a 6.18 kernel.
func fuzzLoad() bool {
	return os.Getenv("KFAULT_FUZZ_LOAD") == "1" && hostBPF() == ""
}

// loadCheck loads p behind a minimal caller: as a sleepable syscall program for Tracing code
// (its context is raw memory, like the u64 array of a tracing context) and as a kprobe
// program for Kprobe code. In the test VM (KFAULT_E2E=1), Tracing code for a function of the
// running kernel loads as a real fentry program on that function.
func loadCheck(t *testing.T, p *Program, src ArgSource, sig *Signature) {
	t.Helper()
	insns := asm.Instructions{p.Call().WithSymbol("entry"), asm.Mov.Imm(asm.R0, 0), asm.Return()}
	insns = append(insns, p.Instructions...)
	spec := &ebpf.ProgramSpec{Name: "pred_fuzz", License: "GPL", Instructions: insns}
	switch {
	case src == Kprobe:
		spec.Type = ebpf.Kprobe
	case kernelSigs[sig] && os.Getenv("KFAULT_E2E") == "1":
		spec.Type, spec.AttachType, spec.AttachTo = ebpf.Tracing, ebpf.AttachTraceFEntry, sig.FuncName
	default:
		spec.Type, spec.Flags = ebpf.Syscall, 1<<4
	}
	prog, err := ebpf.NewProgram(spec)
	if err != nil {
		t.Fatalf("verifier rejected %q (%v): %+v\n%v", p.Source, src, err, p.Instructions)
	}
	prog.Close()
}

// refusedSeeds are hostile predicates (see TestHostilePredicatesRefused and the corpus in
// testdata/fuzz/FuzzCompile) that no signature may accept.
var refusedSeeds = func() map[string]bool {
	m := map[string]bool{}
	for _, h := range hostile {
		m[h.pred] = true
	}
	return m
}()

func FuzzCompile(f *testing.F) {
	for i, s := range fuzzSeeds {
		f.Add(s, uint8(i))
	}
	f.Add(`STRNCMP(name->name, "bananas", 8)`, uint8(0))
	f.Add(`bio->bi_opf & 1`, uint8(1))
	f.Add(`a < 0 && b > 1 && c == 'x' && d && e && f >> 2 && g`, uint8(2))
	f.Add(`STRCMP(argv[a], "x")`, uint8(3))
	f.Add(`STRNCMP(name->name, "bananas", 8)`, uint8(10))
	f.Add(`(bio->bi_opf & 0xff) == 1 && bio->bi_iter.bi_size > 4096`, uint8(13))
	f.Fuzz(func(t *testing.T, src string, sel uint8) {
		sigs := loadFuzzSigs(t)
		sig := sigs[int(sel>>1)%len(sigs)]
		argSrc := ArgSource(sel & 1)
		p, err := Compile(sig, src, Options{ArgSource: argSrc, Arch: "amd64"})
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("Compile(%q): error %T %v is not an *Error", src, err, err)
			}
			return
		}
		if refusedSeeds[src] {
			t.Fatalf("Compile(%q) accepted a predicate the safety rules refuse", src)
		}
		// Safety rule 2: no accepted predicate indexes with anything but a constant.
		g := &gen{sig: sig}
		walk(p.Expr, func(e Expr) {
			if ix, ok := e.(*Index); ok && !g.isConst(ix.Index) {
				t.Fatalf("Compile(%q) accepted the computed index %s", src, ix.Index)
			}
		})
		if len(p.Instructions) == 0 || p.Instructions[len(p.Instructions)-1].OpCode.JumpOp() != asm.Exit {
			t.Fatalf("Compile(%q): program does not end in exit", src)
		}
		if p.StackSize > 256 || p.StackSize%8 != 0 {
			t.Fatalf("Compile(%q): stack size %d", src, p.StackSize)
		}
		var buf bytes.Buffer
		if err := slices.Clone(p.Instructions).Marshal(&buf, binary.LittleEndian); err != nil {
			t.Fatalf("Compile(%q): marshal: %v", src, err)
		}
		if fuzzLoad() {
			loadCheck(t, p, argSrc, sig)
		}
	})
}

// TestVerifierKernelPredicates loads kernelPredicates on this host where it can: Kprobe code as
// kprobe programs (not attached), Tracing code as syscall programs. The fentry versions load
// in the VM (TestLoadAccepted).
func TestVerifierKernelPredicates(t *testing.T) {
	if why := hostBPF(); why != "" {
		t.Skipf("cannot load BPF programs on this host (%s)", why)
	}
	spec := kernelSpec(t)
	for _, tc := range kernelPredicates {
		sig, err := Resolve(spec, tc.fn, "")
		if err != nil {
			t.Logf("skip %s: %v", tc.fn, err)
			continue
		}
		for _, src := range []ArgSource{Tracing, Kprobe} {
			p, err := Compile(sig, tc.pred, Options{ArgSource: src, Arch: "amd64"})
			if err != nil {
				if strings.Contains(err.Error(), "unknown member") {
					t.Logf("skip %q on this kernel: %v", tc.pred, err)
					break
				}
				t.Errorf("Compile(%s, %q): %v", tc.fn, tc.pred, err)
				break
			}
			loadCheck(t, p, src, sig)
		}
	}
}
