package predicate

import (
	"fmt"

	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

// Splice replaces the body of the function named p.Symbol in insns (a program's instruction
// stream, e.g. ProgramSpec.Instructions of a bpf2go-built program) with p's instructions, and
// returns the new stream. This is how a C program calls a predicate compiled at run time: it
// declares a stub
//
//	static __noinline int kfault_pred_0(void *ctx) { ... }
//
// (whose result the compiler cannot fold, e.g. through a volatile read), calls it with its
// context, and the loader compiles the frame's predicate with Options{Symbol: "kfault_pred_0"}
// and splices it in before loading. The stub's BTF func and line info, if any, are kept on the
// predicate's first instruction.
//
// The function is found by its symbol; it ends where the next function starts (an instruction
// carrying a symbol or BTF func metadata) or at the end of the stream. Other functions are
// untouched: their jumps stay within themselves and calls are symbolic.
func Splice(insns asm.Instructions, p *Program) (asm.Instructions, error) {
	start := -1
	for i := range insns {
		if insns[i].Symbol() == p.Symbol {
			start = i
			break
		}
	}
	if start < 0 {
		return nil, fmt.Errorf("splice predicate: no function %s in the program", p.Symbol)
	}
	end := len(insns)
	for i := start + 1; i < len(insns); i++ {
		if insns[i].Symbol() != "" || btf.FuncMetadata(&insns[i]) != nil {
			end = i
			break
		}
	}
	body := p.Instructions
	if fn := btf.FuncMetadata(&insns[start]); fn != nil && btf.FuncMetadata(&body[0]) == nil {
		// Keep the stub's BTF func info (and line info) so that the program's ext info stays
		// consistent.
		body = append(asm.Instructions(nil), body...)
		body[0] = btf.WithFuncMetadata(body[0], fn)
		if src := insns[start].Source(); src != nil {
			body[0] = body[0].WithSource(src)
		}
	}
	out := make(asm.Instructions, 0, len(insns)-(end-start)+len(body))
	out = append(out, insns[:start]...)
	out = append(out, body...)
	out = append(out, insns[end:]...)
	return out, nil
}
