package predicate

import (
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

func TestCompileErrors(t *testing.T) {
	spec := testSpec(t)
	dalloc := mustResolve(t, spec, "d_alloc_parallel", "")
	bio := mustResolve(t, spec, "should_fail_bio", "")
	ints := mustResolve(t, spec, "ints", "")
	byval := mustResolve(t, spec, "byval", "")
	slab := mustResolve(t, spec, "should_failslab", "")
	for _, tc := range []struct {
		sig  *Signature
		pred string
		col  int
		msg  string
	}{
		{dalloc, `STRNCMP(nme->name, "bananas", 8)`, 9, `unknown parameter "nme" of d_alloc_parallel (parameters: parent, name, wq)`},
		{dalloc, `STRNCMP(name->nme, "bananas", 8)`, 15, `unknown member "nme" of struct qstr (members: hash, len, hash_len, name)`},
		{dalloc, `name.name`, 5, `. on name, which is a pointer (const struct qstr *): use ->`},
		{dalloc, `name->len->x`, 10, `-> on name->len, which is a u32, not a pointer to a struct or union`},
		{dalloc, `parent->d_name->name`, 15, `-> on parent->d_name, which is a struct qstr, not a pointer (use .)`},
		{dalloc, `parent->d_name + 1`, 1, `parent->d_name is a struct qstr, not a value`},
		{dalloc, `parent->d_name == 1`, 1, `parent->d_name is a struct qstr, not a value`},
		{dalloc, `parent->d_inode->i_mode`, 16, `struct inode is only declared in BTF`},
		{dalloc, `STRCMP(name->len, "x")`, 8, `STRCMP needs a char pointer or char array as its first argument; name->len is a u32`},
		{dalloc, `STRCMP(parent, "x")`, 8, `STRCMP needs a char pointer or char array as its first argument; parent is a struct dentry *`},
		{dalloc, `STRCMP(name->name, name)`, 20, `the second argument of STRCMP must be a string literal`},
		{dalloc, `STRNCMP(name->name, "a", name->len)`, 26, `the third argument of STRNCMP must be a constant`},
		{dalloc, `STRNCMP(name->name, "a", 0)`, 26, `STRNCMP length must be at least 1`},
		{dalloc, `STRNCMP(name->name, "a", -1)`, 26, `STRNCMP length must be at least 1`},
		{dalloc, `"bananas"`, 1, `a string literal is only allowed as the second argument`},
		{dalloc, `name == "bananas"`, 9, `a string literal is only allowed`},
		{dalloc, `name + 1`, 6, `pointer arithmetic is not supported`},
		{dalloc, `name & 1`, 6, `operator & needs integers, but name is a const struct qstr *`},
		{dalloc, `-name`, 2, `unary - needs an integer, got const struct qstr *`},
		{dalloc, `~parent->d_name`, 2, `parent->d_name is a struct qstr, not a value`},
		{dalloc, `name->len << 64`, 14, `shift count 64 out of range`},
		{dalloc, `1 << 64`, 6, `shift count 64 out of range`},
		{dalloc, `parent->d_iname[32]`, 17, `index 32 out of range for parent->d_iname (32 elements)`},
		{dalloc, `parent->d_iname[-1]`, 17, `out of range`},
		{dalloc, `parent[0].d_flags == 1 && name[0]`, 27, `name[0] is a const struct qstr, not a value`},
		{dalloc, `name->len[0]`, 10, `[] on name->len, which is a u32, not a pointer or array`},
		{dalloc, `wq->x`, 5, `unknown member "x" of struct wait_queue_head (members: none)`},
		{bio, `bio->bi_a.x`, 10, `. on a bitfield`},
		{bio, `bio->bi_vals.x`, 13, `bio->bi_vals is a int[4], not a struct or union`},
		{byval, `q.len`, 1, `parameter q is a struct qstr passed by value`},
		{slab, `s->size`, 2, `struct kmem_cache is only declared in BTF`},
		{slab, `gfpflags->x`, 9, `-> on gfpflags, which is a gfp_t`},
		{ints, `a.x`, 2, `. on a, which is a int, not a struct or union`},
		{ints, `a == b ==`, 10, `unexpected end`},
	} {
		_, err := Compile(tc.sig, tc.pred, Options{})
		var pe *Error
		if !errors.As(err, &pe) {
			t.Errorf("Compile(%q): error %v, want *Error", tc.pred, err)
			continue
		}
		if pe.Column != tc.col || !strings.Contains(pe.Msg, tc.msg) {
			t.Errorf("Compile(%q) = %q (column %d), want column %d and %q", tc.pred, pe.Msg, pe.Column, tc.col, tc.msg)
		}
	}
	// Kprobes read six arguments from registers.
	_, err := Compile(ints, `g == 1`, Options{ArgSource: Kprobe, Arch: "amd64"})
	if err == nil || !strings.Contains(err.Error(), "kprobe reads only the first 6 arguments") {
		t.Errorf("kprobe 7th arg: %v", err)
	}
}

func TestCompileShape(t *testing.T) {
	spec := testSpec(t)
	sig := mustResolve(t, spec, "d_alloc_parallel", "struct dentry *parent, const struct qstr *name")
	p, err := Compile(sig, `STRNCMP(name->name, "bananas", 8)`, Options{Symbol: "pred0", FuncInfo: true})
	if err != nil {
		t.Fatal(err)
	}
	if p.Symbol != "pred0" || p.Instructions[0].Symbol() != "pred0" {
		t.Errorf("symbol: %q %q", p.Symbol, p.Instructions[0].Symbol())
	}
	if btf.FuncMetadata(&p.Instructions[0]) == nil {
		t.Error("no func metadata")
	}
	if last := p.Instructions[len(p.Instructions)-1]; last.OpCode.JumpOp() != asm.Exit {
		t.Errorf("last instruction %v", last)
	}
	if len(p.Args) != 1 || p.Args[0] != 1 {
		t.Errorf("args %v", p.Args)
	}
	// 16 bytes of scratch + the string buffer (8 + 1 rounded up to 16), no spills.
	if p.StackSize != 32 {
		t.Errorf("stack size %d", p.StackSize)
	}
	// The name->name read: 8 bytes at offset 8 of the qstr.
	found := false
	for i, ins := range p.Instructions {
		if ins.OpCode == asm.Add.Op(asm.ImmSource) && ins.Dst == asm.R3 && ins.Constant == 8 &&
			i+3 < len(p.Instructions) && p.Instructions[i+3].Constant == 8 {
			found = true
		}
		if ins.Constant < 0 && ins.OpCode.Class().IsJump() && ins.Offset != -1 {
			t.Errorf("unexpected backward jump %v", ins)
		}
	}
	if !found {
		t.Errorf("no 8-byte read at offset 8:\n%v", p.Instructions)
	}
	// Every jump target exists and is forward.
	offs, err := p.Instructions.SymbolOffsets()
	if err != nil {
		t.Fatal(err)
	}
	for i, ins := range p.Instructions {
		if r := ins.Reference(); r != "" && ins.OpCode.JumpOp() != asm.Call {
			if j, ok := offs[r]; !ok || j <= i {
				t.Errorf("instruction %d jumps to %q (%d)", i, r, j)
			}
		}
	}
	// Labels are prefixed by the symbol, so two predicates can share a program.
	for _, ins := range p.Instructions[1:] {
		if s := ins.Symbol(); s != "" && !strings.HasPrefix(s, "pred0__") {
			t.Errorf("label %q", s)
		}
	}
}

func TestCompileSpills(t *testing.T) {
	spec := testSpec(t)
	sig := mustResolve(t, spec, "ints", "")
	// Right-nested operands that are not constants need one spill slot each.
	pred := "a"
	for range 16 {
		pred = "a + (" + pred + ")"
	}
	if _, err := Compile(sig, pred+" == 0", Options{}); err != nil {
		t.Fatal(err)
	}
	pred = "a + (" + pred + ")"
	_, err := Compile(sig, pred+" == 0", Options{})
	if err == nil || !strings.Contains(err.Error(), "too complex") {
		t.Fatalf("17 spills: %v", err)
	}
}
