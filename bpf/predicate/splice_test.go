package predicate

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

func ctxFunc(name string, linkage btf.FuncLinkage) *btf.Func {
	return &btf.Func{Name: name, Linkage: linkage, Type: &btf.FuncProto{
		Return: &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed},
		Params: []btf.FuncParam{{Name: "ctx", Type: &btf.Pointer{Target: &btf.Void{}}}},
	}}
}

// TestSplice replaces a stub function of a BTF-carrying program, as a bpf2go-built one would
// have, by a compiled predicate, and runs the result.
func TestSplice(t *testing.T) {
	needExec(t)
	sig := mustResolve(t, testSpec(t), "d_alloc_parallel", "")
	for _, name := range []string{"bananas", "apples"} {
		m := dallocMem(Tracing, name)
		var insns asm.Instructions
		for _, r := range m.relocs {
			insns = append(insns,
				asm.Mov.Reg(asm.R2, asm.R1),
				asm.Add.Imm(asm.R2, int32(r[1])),
				asm.StoreMem(asm.R1, int16(r[0]), asm.R2, asm.DWord))
		}
		insns = append(insns,
			asm.Mov.Reg(asm.R6, asm.R1),
			asm.Call.Label("kfault_pred_0"),
			asm.Mov.Reg(asm.R7, asm.R0),
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Call.Label("other"),
			asm.Add.Reg(asm.R0, asm.R7),
			asm.Return(),
		)
		insns[0] = btf.WithFuncMetadata(insns[0].WithSymbol("entry").WithSource(asm.Comment("entry")), ctxFunc("entry", btf.GlobalFunc))
		insns = append(insns,
			btf.WithFuncMetadata(asm.Mov.Imm(asm.R0, 1).WithSymbol("kfault_pred_0").WithSource(asm.Comment("stub")), ctxFunc("kfault_pred_0", btf.StaticFunc)),
			asm.Return(),
			btf.WithFuncMetadata(asm.Mov.Imm(asm.R0, 10).WithSymbol("other").WithSource(asm.Comment("other")), ctxFunc("other", btf.StaticFunc)),
			asm.Return(),
		)
		p, err := Compile(sig, `STRNCMP(name->name, "bananas", 8)`, Options{Symbol: "kfault_pred_0"})
		if err != nil {
			t.Fatal(err)
		}
		spliced, err := Splice(insns, p)
		if err != nil {
			t.Fatal(err)
		}
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "splice", Type: ebpf.Syscall, Flags: 1 << 4, License: "GPL", Instructions: spliced})
		if err != nil {
			t.Fatalf("load: %+v\n%v", err, spliced)
		}
		ret, err := prog.Run(&ebpf.RunOptions{Context: append([]byte(nil), m.buf...)})
		prog.Close()
		want := uint32(10)
		if name == "bananas" {
			want = 11
		}
		if err != nil || ret != want {
			t.Errorf("%s: got %d %v, want %d", name, ret, err, want)
		}
	}
	if _, err := Splice(asm.Instructions{asm.Return()}, &Program{Symbol: "nope"}); err == nil {
		t.Error("splice into a program without the stub succeeded")
	}
}
