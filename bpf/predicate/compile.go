package predicate

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"slices"

	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

// ArgSource says where the compiled code finds the function's arguments.
type ArgSource int

const (
	// Tracing: R1 is the context of a BPF_PROG_TYPE_TRACING program (fentry, fexit, fmod_ret):
	// an array of u64, argument i at offset 8*i.
	Tracing ArgSource = iota
	// Kprobe: R1 is a struct pt_regs * (kprobe at function entry); arguments come from the
	// calling-convention registers (x86_64: di, si, dx, cx, r8, r9; arm64: x0..x7).
	Kprobe
)

func (a ArgSource) String() string {
	switch a {
	case Tracing:
		return "tracing"
	case Kprobe:
		return "kprobe"
	}
	return fmt.Sprintf("ArgSource(%d)", int(a))
}

// Options tune Compile.
type Options struct {
	ArgSource ArgSource
	// Symbol names the subprogram (the symbol of its first instruction) and prefixes its jump
	// labels, so several predicates can live in one program. Default "kfault_predicate".
	Symbol string
	// FuncInfo attaches a btf.Func (static, "int Symbol(void *ctx)") and a line-info source
	// (the predicate text) to the first instruction, for programs that carry BTF func_info and
	// line_info, as bpf2go-built ones do: every subprogram then needs both.
	FuncInfo bool
	// Arch selects the kprobe register layout: "amd64" or "arm64". Default runtime.GOARCH.
	Arch string
}

// Program is a compiled predicate: a BPF subprogram.
type Program struct {
	// Instructions: the subprogram. The first instruction carries Symbol; the last is an exit.
	// Jumps are symbolic (resolved by cilium/ebpf when the program is marshalled).
	Instructions asm.Instructions
	Symbol       string
	// StackSize is the number of bytes of stack below R10 the subprogram uses (multiple of 8).
	// The kernel adds it to the caller's stack depth; the sum must stay within 512.
	StackSize int
	// Args lists the argument indices the predicate reads, in ascending order.
	Args []int
	// Source is the predicate text; Expr its syntax tree.
	Source string
	Expr   Expr
}

// Call returns the BPF-to-BPF call instruction that invokes the predicate. Put the program's
// context in R1 first; R0 holds 1 or 0 afterwards; R1-R5 are clobbered, R6-R9 preserved.
func (p *Program) Call() asm.Instruction {
	return asm.Call.Label(p.Symbol)
}

// Limits of the generated code.
const (
	maxSpills   = 16 // pending intermediate values
	maxReadSize = 8  // bytes read per scalar dereference
)

// Compile type-checks predicate against sig and compiles it to a BPF subprogram.
//
// The contract of the generated code (see the package documentation): called with R1 = the
// program context (as described by opts.ArgSource), it returns R0 = 1 when the predicate holds
// and 0 when it does not or when any kernel memory read fails. It clobbers R1-R5, uses R6-R9 as a
// BPF-to-BPF callee may (the caller's are preserved by the call), and uses StackSize bytes of its
// own stack frame. It calls only bpf_probe_read_kernel, bpf_probe_read_kernel_str and, for
// __user-tagged pointers, bpf_probe_read_user(_str). It has no loops and no back-edges.
func Compile(sig *Signature, predicate string, opts Options) (*Program, error) {
	if sig == nil || sig.Proto == nil {
		return nil, fmt.Errorf("no signature")
	}
	expr, err := Parse(predicate)
	if err != nil {
		return nil, err
	}
	if opts.Symbol == "" {
		opts.Symbol = "kfault_predicate"
	}
	if opts.Arch == "" {
		opts.Arch = runtime.GOARCH
	}
	if opts.ArgSource != Tracing && opts.ArgSource != Kprobe {
		return nil, fmt.Errorf("unknown ArgSource %d", opts.ArgSource)
	}
	if opts.ArgSource == Kprobe && kprobeArgOffsets(opts.Arch) == nil {
		return nil, fmt.Errorf("kprobe argument registers unknown for architecture %q", opts.Arch)
	}
	g := &gen{src: predicate, sig: sig, opts: opts, args: map[int]bool{}}
	g.strSize = stringBufferSize(expr)
	g.lTrue, g.lFalse = g.newLabel("true"), g.newLabel("false")

	g.emit(asm.Mov.Reg(asm.R6, asm.R1)) // keep the context: helper calls clobber R1-R5
	if err := g.cond(expr, g.lTrue, g.lFalse); err != nil {
		return nil, err
	}
	g.place(g.lTrue)
	g.emit(asm.Mov.Imm(asm.R0, 1))
	g.emit(asm.Return())
	g.place(g.lFalse)
	g.emit(asm.Mov.Imm(asm.R0, 0))
	g.emit(asm.Return())

	insns := g.finish()
	insns[0] = insns[0].WithSymbol(opts.Symbol)
	if opts.FuncInfo {
		// A line_info record too: a program with line info needs one at every function start.
		insns[0] = insns[0].WithSource(asm.Comment("predicate: " + predicate))
		insns[0] = btf.WithFuncMetadata(insns[0], &btf.Func{
			Name:    opts.Symbol,
			Linkage: btf.StaticFunc,
			Type: &btf.FuncProto{
				Return: &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed},
				Params: []btf.FuncParam{{Name: "ctx", Type: &btf.Pointer{Target: &btf.Void{}}}},
			},
		})
	}
	p := &Program{
		Instructions: insns,
		Symbol:       opts.Symbol,
		StackSize:    g.stackSize(),
		Source:       predicate,
		Expr:         expr,
	}
	for i := range g.args {
		p.Args = append(p.Args, i)
	}
	slices.Sort(p.Args)
	return p, nil
}

func kprobeArgOffsets(arch string) []int16 {
	switch arch {
	case "amd64":
		// struct pt_regs: r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di ...
		return []int16{112, 104, 96, 88, 72, 64}
	case "arm64":
		return []int16{0, 8, 16, 24, 32, 40, 48, 56}
	}
	return nil
}

// maxTracingArgs is MAX_BPF_FUNC_ARGS.
const maxTracingArgs = 12

// stringBufferSize is the stack needed by the largest STRNCMP/STRCMP: the compared bytes plus
// one (bpf_probe_read_kernel_str always writes a NUL), rounded up to 8.
func stringBufferSize(e Expr) int {
	size := 0
	walk(e, func(x Expr) {
		c, ok := x.(*Call)
		if !ok || len(c.Args) < 2 {
			return
		}
		s, ok := c.Args[1].(*StringLit)
		if !ok {
			return
		}
		need := (len(s.Value) + 2 + 7) &^ 7
		size = max(size, need)
	})
	return size
}

func walk(e Expr, f func(Expr)) {
	f(e)
	switch v := e.(type) {
	case *Unary:
		walk(v.X, f)
	case *Binary:
		walk(v.X, f)
		walk(v.Y, f)
	case *Member:
		walk(v.X, f)
	case *Index:
		walk(v.X, f)
		walk(v.Index, f)
	case *Call:
		for _, a := range v.Args {
			walk(a, f)
		}
	}
}

// Stack layout (offsets from R10):
//
//	-8             scratch: destination of scalar reads
//	-16            reserved (it held a pointer to launder for variable indexes, which the safety
//	               rules no longer allow; kept so that the documented stack sizes stay)
//	-16-strSize    string buffer (strSize bytes, 8-aligned)
//	below          spill slots, 8 bytes each
const offRead = -8

type item struct {
	ins    asm.Instruction
	labels []string
}

type gen struct {
	src  string
	sig  *Signature
	opts Options
	args map[int]bool

	items   []item
	pending []string
	nlabel  int

	strSize  int
	spills   int
	maxSpill int

	lTrue, lFalse string
}

func (g *gen) stackSize() int {
	return 16 + g.strSize + 8*g.maxSpill
}

func (g *gen) strOff() int16 { return int16(-16 - g.strSize) }

func (g *gen) spillOff(k int) int16 { return int16(-16 - g.strSize - 8*(k+1)) }

func (g *gen) errAt(off int, format string, args ...any) error {
	return errorAt(g.src, off, format, args...)
}

func (g *gen) newLabel(what string) string {
	g.nlabel++
	return fmt.Sprintf("%s__%s_%d", g.opts.Symbol, what, g.nlabel)
}

func (g *gen) emit(ins asm.Instruction) {
	g.items = append(g.items, item{ins: ins, labels: g.pending})
	g.pending = nil
}

// place binds label to the next emitted instruction.
func (g *gen) place(label string) { g.pending = append(g.pending, label) }

func (g *gen) jump(label string) { g.emit(asm.Ja.Label(label)) }

// finish resolves label aliases, drops unreachable code (the verifier rejects it; constant
// conditions leave some) and jumps to the next instruction, and returns the stream.
func (g *gen) finish() asm.Instructions {
	items := g.items
	canonical := func() map[string]string {
		canon := map[string]string{}
		for _, it := range items {
			for _, l := range it.labels {
				canon[l] = it.labels[0]
			}
		}
		return canon
	}
	for changed := true; changed; {
		changed = false
		canon := canonical()
		index := map[string]int{}
		for i, it := range items {
			if len(it.labels) > 0 {
				index[it.labels[0]] = i
			}
		}
		// Reachability from the first instruction. Jumps only go forward.
		reach := make([]bool, len(items))
		if len(items) > 0 {
			reach[0] = true
		}
		for i, it := range items {
			if !reach[i] {
				continue
			}
			op := it.ins.OpCode
			if op.Class().IsJump() {
				switch op.JumpOp() {
				case asm.Exit:
					continue
				case asm.Call:
					// A helper call falls through.
				default:
					if j, ok := index[canon[it.ins.Reference()]]; ok {
						reach[j] = true
					}
					if op.JumpOp() == asm.Ja {
						continue
					}
				}
			}
			if i+1 < len(items) {
				reach[i+1] = true
			}
		}
		out := items[:0:0]
		for i := 0; i < len(items); i++ {
			it := items[i]
			if !reach[i] {
				changed = true
				continue
			}
			ref := canon[it.ins.Reference()]
			if it.ins.OpCode.Class().IsJump() && it.ins.OpCode.JumpOp() == asm.Ja && i+1 < len(items) &&
				len(items[i+1].labels) > 0 && canon[items[i+1].labels[0]] == ref {
				// Jump to the next instruction: drop it, keeping its labels.
				items[i+1].labels = append(slices.Clone(it.labels), items[i+1].labels...)
				changed = true
				continue
			}
			out = append(out, it)
		}
		items = out
	}
	canon := canonical()
	insns := make(asm.Instructions, 0, len(items))
	for _, it := range items {
		ins := it.ins
		if r := ins.Reference(); r != "" {
			if c, ok := canon[r]; ok && c != r {
				ins = ins.WithReference(c)
			}
		}
		if len(it.labels) > 0 {
			ins = ins.WithSymbol(it.labels[0])
		}
		insns = append(insns, ins)
	}
	return insns
}

func (g *gen) push(at int) error {
	if g.spills >= maxSpills {
		return g.errAt(at, "predicate too complex (more than %d pending intermediate values)", maxSpills)
	}
	g.emit(asm.StoreMem(asm.R10, g.spillOff(g.spills), asm.R0, asm.DWord))
	g.spills++
	g.maxSpill = max(g.maxSpill, g.spills)
	return nil
}

func (g *gen) pop(dst asm.Register) {
	g.spills--
	g.emit(asm.LoadMem(dst, asm.R10, g.spillOff(g.spills), asm.DWord))
}

// operand is the result of compiling an expression.
type operand struct {
	kind opKind
	typ  btf.Type // C type of the value or object
	c    uint64   // kConst
	// kLvalue: the object is in kernel memory at R0 + off.
	off             int64
	bitOff, bitSize uint32 // bitfield within the bytes at off
	user            bool   // the memory is user memory
	// typed: R0 holds a pointer the verifier types (PTR_TO_BTF_ID): no variable arithmetic.
	typed bool
	// derefs: the pointers followed to reach this value or object (see MaxDerefs).
	derefs int
}

type opKind int

const (
	kConst  opKind = iota // value known at compile time
	kValue                // value in R0
	kLvalue               // object at R0 + off
)

// isConst reports whether e folds to a constant without emitting code.
func (g *gen) isConst(e Expr) bool {
	switch v := e.(type) {
	case *IntLit:
		return true
	case *Ident:
		_, isParam := g.sig.Param(v.Name)
		return v.Name == "NULL" && !isParam
	case *Unary:
		return g.isConst(v.X)
	case *Binary:
		return g.isConst(v.X) && g.isConst(v.Y)
	}
	return false
}

// value compiles e to an rvalue: a constant or a value in R0.
func (g *gen) value(e Expr) (operand, error) {
	o, err := g.expr(e)
	if err != nil {
		return o, err
	}
	return g.rvalue(e, o)
}

// scalar is value plus a check that the result is an integer or a pointer.
func (g *gen) scalar(e Expr, what string) (operand, error) {
	o, err := g.value(e)
	if err != nil {
		return o, err
	}
	switch classify(o.typ) {
	case clInt, clPtr:
		return o, nil
	}
	return o, g.errAt(e.Pos(), "%s needs an integer or pointer, got %s", what, typeString(o.typ))
}

func (g *gen) integer(e Expr, what string) (operand, error) {
	o, err := g.value(e)
	if err != nil {
		return o, err
	}
	if classify(o.typ) != clInt {
		return o, g.errAt(e.Pos(), "%s needs an integer, got %s", what, typeString(o.typ))
	}
	return o, nil
}

// rvalue turns an lvalue into a value: reads scalars from memory, decays arrays to pointers.
func (g *gen) rvalue(e Expr, o operand) (operand, error) {
	if o.kind != kLvalue {
		return o, nil
	}
	switch classify(o.typ) {
	case clArray:
		arr := under(o.typ).(*btf.Array)
		g.addOff(o.off)
		var target btf.Type = arr.Type
		if o.user {
			target = &btf.TypeTag{Value: "user", Type: target}
		}
		return operand{kind: kValue, typ: &btf.Pointer{Target: target}, typed: o.typed, derefs: o.derefs}, nil
	case clInt, clPtr:
	case clStruct:
		return o, g.errAt(e.Pos(), "%s is a %s, not a value (use . or -> to pick a member)", exprName(e), typeString(o.typ))
	case clFloat:
		return o, g.errAt(e.Pos(), "%s has floating-point type %s, which is not supported", exprName(e), typeString(o.typ))
	default:
		return o, g.errAt(e.Pos(), "%s has type %s, which cannot be read", exprName(e), typeString(o.typ))
	}
	size, signed := intInfo(o.typ)
	if o.bitSize > 0 {
		nbytes := int((o.bitOff + o.bitSize + 7) / 8)
		if nbytes > maxReadSize {
			return o, g.errAt(e.Pos(), "bitfield %s spans more than 8 bytes", exprName(e))
		}
		if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
			return o, g.errAt(e.Pos(), "bitfields are supported on little-endian machines only")
		}
		// Zero 8 bytes, read the bytes holding the field, shift it out of the 64-bit word.
		g.emit(asm.StoreImm(asm.R10, offRead, 0, asm.Word))
		g.emit(asm.StoreImm(asm.R10, offRead+4, 0, asm.Word))
		if err := g.read(o, nbytes, offRead); err != nil {
			return o, err
		}
		g.emit(asm.LoadMem(asm.R0, asm.R10, offRead, asm.DWord))
		left := int32(64 - o.bitOff - o.bitSize)
		if left > 0 {
			g.emit(asm.LSh.Imm(asm.R0, left))
		}
		if shift := int32(64 - o.bitSize); shift > 0 {
			if signed {
				g.emit(asm.ArSh.Imm(asm.R0, shift))
			} else {
				g.emit(asm.RSh.Imm(asm.R0, shift))
			}
		}
		return operand{kind: kValue, typ: o.typ}, nil
	}
	if size != 1 && size != 2 && size != 4 && size != 8 {
		return o, g.errAt(e.Pos(), "%s has a %d-byte type %s, which cannot be read", exprName(e), size, typeString(o.typ))
	}
	if err := g.read(o, size, offRead); err != nil {
		return o, err
	}
	g.emit(asm.LoadMem(asm.R0, asm.R10, offRead, sizeOf(size)))
	g.extend(size, signed)
	return operand{kind: kValue, typ: o.typ, derefs: o.derefs}, nil
}

func sizeOf(n int) asm.Size {
	switch n {
	case 1:
		return asm.Byte
	case 2:
		return asm.Half
	case 4:
		return asm.Word
	}
	return asm.DWord
}

// extend sign- or zero-extends the size-byte value in R0 to 64 bits.
func (g *gen) extend(size int, signed bool) {
	if size >= 8 {
		return
	}
	if signed {
		g.emit(asm.LSh.Imm(asm.R0, int32(64-8*size)))
		g.emit(asm.ArSh.Imm(asm.R0, int32(64-8*size)))
		return
	}
	switch size {
	case 4:
		g.emit(asm.Mov.Reg32(asm.R0, asm.R0))
	default:
		g.emit(asm.And.Imm(asm.R0, int32(1)<<(8*size)-1))
	}
}

// addOff adds a constant to R0.
func (g *gen) addOff(off int64) {
	if off != 0 {
		g.emit(asm.Add.Imm(asm.R0, int32(off)))
	}
}

// read copies n bytes from the lvalue o (R0 + o.off) to the stack at R10+dst; a failed read
// makes the predicate false.
func (g *gen) read(o operand, n int, dst int16) error {
	g.emit(asm.Mov.Reg(asm.R3, asm.R0))
	if o.off != 0 {
		g.emit(asm.Add.Imm(asm.R3, int32(o.off)))
	}
	g.emit(asm.Mov.Reg(asm.R1, asm.R10))
	g.emit(asm.Add.Imm(asm.R1, int32(dst)))
	g.emit(asm.Mov.Imm(asm.R2, int32(n)))
	if o.user {
		g.emit(asm.FnProbeReadUser.Call())
	} else {
		g.emit(asm.FnProbeReadKernel.Call())
	}
	g.emit(asm.JNE.Imm(asm.R0, 0, g.lFalse))
	return nil
}

func (g *gen) loadConst(r asm.Register, v uint64) {
	if int64(v) >= math.MinInt32 && int64(v) <= math.MaxInt32 {
		g.emit(asm.Mov.Imm(r, int32(int64(v))))
	} else {
		g.emit(asm.LoadImm(r, int64(v), asm.DWord))
	}
}

func exprName(e Expr) string {
	s := e.String()
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}

// expr compiles e; the result may be an lvalue.
func (g *gen) expr(e Expr) (operand, error) {
	if g.isConst(e) {
		v, t, err := g.constant(e)
		return operand{kind: kConst, typ: t, c: v}, err
	}
	switch v := e.(type) {
	case *Ident:
		return g.param(v)
	case *StringLit:
		return operand{}, g.errAt(v.At, "a string literal is only allowed as the second argument of STRNCMP or STRCMP")
	case *Member:
		return g.member(v)
	case *Index:
		return g.index(v)
	case *Unary:
		switch v.Op {
		case "-", "~":
			x, err := g.integer(v.X, "unary "+v.Op)
			if err != nil {
				return x, err
			}
			if v.Op == "-" {
				g.emit(asm.Neg.Imm(asm.R0, 0))
			} else {
				g.emit(asm.Xor.Imm(asm.R0, -1))
			}
			return operand{kind: kValue, typ: promote(x.typ, x.typ)}, nil
		}
		return g.boolValue(e)
	case *Call:
		return g.boolValue(e)
	case *Binary:
		switch v.Op {
		case "&&", "||", "==", "!=", "<", "<=", ">", ">=":
			return g.boolValue(e)
		}
		return g.arith(v)
	}
	return operand{}, g.errAt(e.Pos(), "unsupported expression")
}

// boolValue materialises a condition as 0 or 1 in R0.
func (g *gen) boolValue(e Expr) (operand, error) {
	lt, lf, end := g.newLabel("t"), g.newLabel("f"), g.newLabel("end")
	if err := g.cond(e, lt, lf); err != nil {
		return operand{}, err
	}
	g.place(lt)
	g.emit(asm.Mov.Imm(asm.R0, 1))
	g.jump(end)
	g.place(lf)
	g.emit(asm.Mov.Imm(asm.R0, 0))
	g.place(end)
	// The next instruction carries end; make sure there is one.
	g.emit(asm.Mov.Reg(asm.R0, asm.R0))
	return operand{kind: kValue, typ: typeInt}, nil
}

// promote gives the type of an arithmetic result: unsigned long when either operand is a 64-bit
// unsigned integer or a pointer, else long. (Every operand is widened to 64 bits first.)
func promote(a, b btf.Type) btf.Type {
	sa, siga := intInfo(a)
	sb, sigb := intInfo(b)
	if (sa == 8 && !siga) || (sb == 8 && !sigb) {
		return typeULong
	}
	return typeLong
}

func isUnsigned(t btf.Type) bool {
	size, signed := intInfo(t)
	return size == 8 && !signed
}

func (g *gen) param(id *Ident) (operand, error) {
	p, ok := g.sig.Param(id.Name)
	if !ok {
		names := make([]string, len(g.sig.Params))
		for i, p := range g.sig.Params {
			names[i] = p.Name
		}
		return operand{}, g.errAt(id.At, "unknown parameter %q of %s (parameters: %s)", id.Name, g.sig.FuncName, listNames(names))
	}
	cl := classify(p.Type)
	switch cl {
	case clInt, clPtr:
	case clStruct:
		return operand{}, g.errAt(id.At, "parameter %s is a %s passed by value, which is not supported", id.Name, typeString(p.Type))
	default:
		return operand{}, g.errAt(id.At, "parameter %s has type %s, which is not supported", id.Name, typeString(p.Type))
	}
	g.args[p.Index] = true
	size, signed := intInfo(p.Type)
	// The argument's slot: earlier arguments wider than 8 bytes (16-byte structs or __int128
	// passed by value) take two slots, in the tracing context as in registers.
	slot := 0
	for i := 0; i < p.Index && i < len(g.sig.Proto.Params); i++ {
		n, err := btf.Sizeof(g.sig.Proto.Params[i].Type)
		if err != nil || n > 16 {
			return operand{}, g.errAt(id.At, "parameter %s follows a by-value argument of type %s, whose placement is unknown", id.Name, typeString(g.sig.Proto.Params[i].Type))
		}
		slot += max(1, (n+7)/8)
	}
	switch g.opts.ArgSource {
	case Kprobe:
		offs := kprobeArgOffsets(g.opts.Arch)
		if slot >= len(offs) {
			return operand{}, g.errAt(id.At, "parameter %s is argument %d; a kprobe reads only the first %d arguments from registers", id.Name, p.Index+1, len(offs))
		}
		g.emit(asm.LoadMem(asm.R0, asm.R6, offs[slot], asm.DWord))
		g.extend(size, signed)
		return operand{kind: kValue, typ: p.Type}, nil
	default:
		if slot >= maxTracingArgs {
			return operand{}, g.errAt(id.At, "parameter %s is argument %d; tracing programs read at most %d", id.Name, p.Index+1, maxTracingArgs)
		}
		off := int16(8 * slot)
		if cl == clPtr {
			if classify(under(p.Type).(*btf.Pointer).Target) == clStruct {
				// The verifier types this load as a trusted BTF pointer.
				g.emit(asm.LoadMem(asm.R0, asm.R6, off, asm.DWord))
				return operand{kind: kValue, typ: p.Type, typed: true}, nil
			}
			// Other pointers (to pointers, ints, functions) are copied out of the context, so the
			// verifier sees a plain scalar.
			g.emit(asm.Mov.Reg(asm.R3, asm.R6))
			if off != 0 {
				g.emit(asm.Add.Imm(asm.R3, int32(off)))
			}
			g.emit(asm.Mov.Reg(asm.R1, asm.R10))
			g.emit(asm.Add.Imm(asm.R1, offRead))
			g.emit(asm.Mov.Imm(asm.R2, 8))
			g.emit(asm.FnProbeReadKernel.Call())
			g.emit(asm.JNE.Imm(asm.R0, 0, g.lFalse))
			g.emit(asm.LoadMem(asm.R0, asm.R10, offRead, asm.DWord))
			return operand{kind: kValue, typ: p.Type}, nil
		}
		g.emit(asm.LoadMem(asm.R0, asm.R6, off, asm.DWord))
		g.extend(size, signed)
		return operand{kind: kValue, typ: p.Type}, nil
	}
}

func (g *gen) member(m *Member) (operand, error) {
	var base operand
	var comp btf.Type
	if m.Arrow {
		x, err := g.expr(m.X)
		if err != nil {
			return x, err
		}
		if x.kind == kLvalue && classify(x.typ) == clStruct {
			return x, g.errAt(m.OpAt, "-> on %s, which is a %s, not a pointer (use .)", exprName(m.X), typeString(x.typ))
		}
		if x, err = g.rvalue(m.X, x); err != nil {
			return x, err
		}
		ptr, ok := under(x.typ).(*btf.Pointer)
		if !ok {
			return x, g.errAt(m.OpAt, "-> on %s, which is a %s, not a pointer to a struct or union", exprName(m.X), typeString(x.typ))
		}
		comp = ptr.Target
		if err := g.checkDerefs(m.OpAt, x.derefs+1, "->"); err != nil {
			return x, err
		}
		if x.kind == kConst {
			g.loadConst(asm.R0, x.c)
		}
		base = operand{kind: kLvalue, typ: comp, user: hasUserTag(ptr.Target), typed: x.typed, derefs: x.derefs + 1}
	} else {
		x, err := g.expr(m.X)
		if err != nil {
			return x, err
		}
		if x.kind != kLvalue {
			if classify(x.typ) == clPtr {
				return x, g.errAt(m.OpAt, ". on %s, which is a pointer (%s): use ->", exprName(m.X), typeString(x.typ))
			}
			return x, g.errAt(m.OpAt, ". on %s, which is a %s, not a struct or union", exprName(m.X), typeString(x.typ))
		}
		comp = x.typ
		base = x
		if base.bitSize > 0 {
			return x, g.errAt(m.OpAt, ". on a bitfield")
		}
	}
	switch classify(comp) {
	case clStruct:
	case clFwd:
		return base, g.errAt(m.OpAt, "%s is only declared in BTF, its members are unknown", typeString(under(comp)))
	default:
		return base, g.errAt(m.OpAt, "%s %s: %s is a %s, not a struct or union", map[bool]string{true: "->", false: "."}[m.Arrow], m.Name, exprName(m.X), typeString(comp))
	}
	mem, ok := findMember(comp, m.Name)
	if !ok {
		return base, g.errAt(m.NameAt, "unknown member %q of %s (members: %s)", m.Name, typeString(under(comp)), listNames(memberNames(comp)))
	}
	base.typ = mem.Type
	if mem.BitfieldSize > 0 {
		base.off += int64(mem.Offset / 8)
		base.bitOff = uint32(mem.Offset % 8)
		base.bitSize = uint32(mem.BitfieldSize)
	} else {
		if mem.Offset%8 != 0 {
			return base, g.errAt(m.NameAt, "member %s is not byte-aligned", m.Name)
		}
		base.off += int64(mem.Offset / 8)
	}
	if base.off > math.MaxInt32/2 {
		return base, g.errAt(m.NameAt, "member offset too large")
	}
	return base, nil
}

func (g *gen) index(ix *Index) (operand, error) {
	x, err := g.expr(ix.X)
	if err != nil {
		return x, err
	}
	var elem btf.Type
	var nelems int64 = -1 // -1: a pointer, whose target's size is unknown
	user := false
	switch classify(x.typ) {
	case clArray:
		if x.kind != kLvalue {
			return x, g.errAt(ix.OpAt, "cannot index %s", exprName(ix.X))
		}
		arr := under(x.typ).(*btf.Array)
		elem, nelems, user = arr.Type, int64(arr.Nelems), x.user
	case clPtr:
		x, err = g.rvalue(ix.X, x)
		if err != nil {
			return x, err
		}
		ptr := under(x.typ).(*btf.Pointer)
		elem, user = ptr.Target, hasUserTag(ptr.Target)
		if err := g.checkDerefs(ix.OpAt, x.derefs+1, "[]"); err != nil {
			return x, err
		}
		if x.kind == kConst {
			g.loadConst(asm.R0, x.c)
		}
		x = operand{kind: kLvalue, typ: elem, typed: x.typed, derefs: x.derefs + 1}
	default:
		if x.kind == kLvalue {
			x, err = g.rvalue(ix.X, x)
			if err != nil {
				return x, err
			}
		}
		return x, g.errAt(ix.OpAt, "[] on %s, which is a %s, not a pointer or array", exprName(ix.X), typeString(x.typ))
	}
	if x.bitSize > 0 {
		return x, g.errAt(ix.OpAt, "[] on a bitfield")
	}
	cl := classify(elem)
	if cl == clVoid || cl == clFunc || cl == clFwd {
		return x, g.errAt(ix.OpAt, "cannot index %s: element type %s has no size", exprName(ix.X), typeString(elem))
	}
	size, err := btf.Sizeof(elem)
	if err != nil || size <= 0 {
		return x, g.errAt(ix.OpAt, "cannot index %s: element type %s has no size", exprName(ix.X), typeString(elem))
	}
	x.typ, x.user = elem, user
	// Only constant indexes, within bounds (safety rule 2): no address is ever computed at
	// run time, so the element's offset is known here.
	i, err := g.checkIndex(ix, nelems, size)
	if err != nil {
		return x, err
	}
	x.off += i * int64(size)
	if x.off > math.MaxInt32/2 || x.off < math.MinInt32/2 {
		return x, g.errAt(ix.Index.Pos(), "index %d out of range", i)
	}
	return x, nil
}

// binaryOperands compiles both operands of a binary operator. Afterwards the left operand is
// in R0 unless it is constant, and the right operand is constant or in R1 (swapped reports
// that a constant left operand was moved to the right: R0 then holds the right operand).
type binOps struct {
	l, r    operand
	swapped bool
}

func (g *gen) binaryOperands(b *Binary, what string, check func(Expr, string) (operand, error)) (binOps, error) {
	var res binOps
	l, err := check(b.X, what)
	if err != nil {
		return res, err
	}
	rConst := g.isConst(b.Y)
	if l.kind == kValue && !rConst {
		if err := g.push(b.OpAt); err != nil {
			return res, err
		}
	}
	r, err := check(b.Y, what)
	if err != nil {
		return res, err
	}
	res.l, res.r = l, r
	switch {
	case l.kind == kValue && r.kind == kValue:
		g.emit(asm.Mov.Reg(asm.R1, asm.R0))
		g.pop(asm.R0)
	case l.kind == kConst && r.kind == kValue:
		res.swapped = true
	}
	return res, nil
}

var aluOps = map[string]asm.ALUOp{
	"+": asm.Add, "-": asm.Sub, "&": asm.And, "|": asm.Or, "^": asm.Xor, "<<": asm.LSh,
}

func (g *gen) arith(b *Binary) (operand, error) {
	what := "operator " + b.Op
	ops, err := g.binaryOperands(b, what, g.scalar)
	if err != nil {
		return operand{}, err
	}
	l, r := ops.l, ops.r
	for _, side := range []struct {
		o operand
		e Expr
	}{{l, b.X}, {r, b.Y}} {
		if classify(side.o.typ) == clPtr {
			if b.Op == "+" || b.Op == "-" {
				return operand{}, g.errAt(b.OpAt, "pointer arithmetic is not supported (%s is a %s; use p[i] with a constant i): %s", exprName(side.e), typeString(side.o.typ), pointerValueNote)
			}
			return operand{}, g.errAt(b.OpAt, "%s needs integers, but %s is a %s: %s", what, exprName(side.e), typeString(side.o.typ), pointerValueNote)
		}
	}
	var typ btf.Type
	op, ok := aluOps[b.Op]
	switch b.Op {
	case "<<", ">>":
		typ = promote(l.typ, l.typ)
		if b.Op == ">>" {
			op = asm.RSh
			if !isUnsigned(typ) {
				op = asm.ArSh
			}
		}
		if r.kind == kConst && r.c > 63 {
			return operand{}, g.errAt(b.Y.Pos(), "shift count %d out of range (0..63)", int64(r.c))
		}
	default:
		if !ok {
			return operand{}, g.errAt(b.OpAt, "operator %s is not supported", b.Op)
		}
		typ = promote(l.typ, r.typ)
	}
	switch {
	case ops.swapped: // constant left, right in R0
		g.emit(asm.Mov.Reg(asm.R1, asm.R0))
		g.loadConst(asm.R0, l.c)
		g.emit(op.Reg(asm.R0, asm.R1))
	case r.kind == kConst: // left in R0
		if int64(r.c) >= math.MinInt32 && int64(r.c) <= math.MaxInt32 {
			g.emit(op.Imm(asm.R0, int32(int64(r.c))))
		} else {
			g.emit(asm.LoadImm(asm.R1, int64(r.c), asm.DWord))
			g.emit(op.Reg(asm.R0, asm.R1))
		}
	default: // left in R0, right in R1
		g.emit(op.Reg(asm.R0, asm.R1))
	}
	return operand{kind: kValue, typ: typ}, nil
}

var jumpOps = map[string][2]asm.JumpOp{ // unsigned, signed
	"==": {asm.JEq, asm.JEq}, "!=": {asm.JNE, asm.JNE},
	"<": {asm.JLT, asm.JSLT}, "<=": {asm.JLE, asm.JSLE},
	">": {asm.JGT, asm.JSGT}, ">=": {asm.JGE, asm.JSGE},
}

var swapCmp = map[string]string{"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}

// cond compiles e as a condition: control goes to t when it holds, to f when not.
func (g *gen) cond(e Expr, t, f string) error {
	if g.isConst(e) {
		v, _, err := g.constant(e)
		if err != nil {
			return err
		}
		if v != 0 {
			g.jump(t)
		} else {
			g.jump(f)
		}
		return nil
	}
	switch v := e.(type) {
	case *Unary:
		if v.Op == "!" {
			return g.cond(v.X, f, t)
		}
	case *Binary:
		switch v.Op {
		case "&&":
			mid := g.newLabel("and")
			if err := g.cond(v.X, mid, f); err != nil {
				return err
			}
			g.place(mid)
			return g.cond(v.Y, t, f)
		case "||":
			mid := g.newLabel("or")
			if err := g.cond(v.X, t, mid); err != nil {
				return err
			}
			g.place(mid)
			return g.cond(v.Y, t, f)
		case "==", "!=", "<", "<=", ">", ">=":
			return g.compare(v, t, f)
		}
	case *Call:
		return g.strcmp(v, t, f)
	}
	o, err := g.scalar(e, "a condition")
	if err != nil {
		return err
	}
	if o.kind == kConst { // cannot happen: isConst handled it
		g.loadConst(asm.R0, o.c)
	}
	g.emit(asm.JNE.Imm(asm.R0, 0, t))
	g.jump(f)
	return nil
}

func (g *gen) compare(b *Binary, t, f string) error {
	ops, err := g.binaryOperands(b, "operator "+b.Op, g.scalar)
	if err != nil {
		return err
	}
	l, r := ops.l, ops.r
	if err := g.checkPointerCompare(b, l, r); err != nil {
		return err
	}
	lp, rp := classify(l.typ) == clPtr, classify(r.typ) == clPtr
	unsigned := lp || rp || isUnsigned(promote(l.typ, r.typ))
	op := b.Op
	var jop asm.JumpOp
	pick := func(op string) asm.JumpOp {
		if unsigned {
			return jumpOps[op][0]
		}
		return jumpOps[op][1]
	}
	switch {
	case ops.swapped: // constant left: compare R0 (right) against it with the operator mirrored
		jop = pick(swapCmp[op])
		g.cmpImm(jop, l.c, t)
	case r.kind == kConst:
		jop = pick(op)
		g.cmpImm(jop, r.c, t)
	default:
		jop = pick(op)
		g.emit(jop.Reg(asm.R0, asm.R1, t))
	}
	g.jump(f)
	return nil
}

func (g *gen) cmpImm(jop asm.JumpOp, c uint64, t string) {
	if int64(c) >= math.MinInt32 && int64(c) <= math.MaxInt32 {
		g.emit(jop.Imm(asm.R0, int32(int64(c)), t))
		return
	}
	g.emit(asm.LoadImm(asm.R1, int64(c), asm.DWord))
	g.emit(jop.Reg(asm.R0, asm.R1, t))
}

// strcmp compiles STRNCMP(x, "lit", n) / STRCMP(x, "lit"): true when the first
// min(n, len(lit)+1) bytes of the kernel string x equal those of lit (NUL included).
func (g *gen) strcmp(c *Call, t, f string) error {
	lit, ok := c.Args[1].(*StringLit)
	if !ok {
		return g.errAt(c.Args[1].Pos(), "the second argument of %s must be a string literal", c.Name)
	}
	m := len(lit.Value) + 1
	if c.Name == "STRNCMP" {
		if !g.isConst(c.Args[2]) {
			return g.errAt(c.Args[2].Pos(), "the third argument of STRNCMP must be a constant")
		}
		n, typ, err := g.constant(c.Args[2])
		if err != nil {
			return err
		}
		if classify(typ) != clInt {
			return g.errAt(c.Args[2].Pos(), "the third argument of STRNCMP must be an integer")
		}
		if int64(n) <= 0 || (isUnsigned(typ) && n > math.MaxInt64) {
			return g.errAt(c.Args[2].Pos(), "STRNCMP length must be at least 1, got %d", int64(n))
		}
		if n < uint64(m) {
			m = int(n)
		}
	}
	x, err := g.expr(c.Args[0])
	if err != nil {
		return err
	}
	var elem btf.Type
	user := false
	switch classify(x.typ) {
	case clArray:
		if x.kind != kLvalue {
			return g.errAt(c.Args[0].Pos(), "%s needs a char pointer or char array", c.Name)
		}
		elem, user = under(x.typ).(*btf.Array).Type, x.user
		g.addOff(x.off)
	case clPtr:
		x, err = g.rvalue(c.Args[0], x)
		if err != nil {
			return err
		}
		ptr := under(x.typ).(*btf.Pointer)
		elem, user = ptr.Target, hasUserTag(ptr.Target)
		if isCharType(elem) {
			if err := g.checkDerefs(c.Args[0].Pos(), x.derefs+1, c.Name); err != nil {
				return err
			}
		}
		if x.kind == kConst {
			g.loadConst(asm.R0, x.c)
		}
	default:
		return g.errAt(c.Args[0].Pos(), "%s needs a char pointer or char array as its first argument; %s is a %s", c.Name, exprName(c.Args[0]), typeString(x.typ))
	}
	if !isCharType(elem) {
		return g.errAt(c.Args[0].Pos(), "%s needs a char pointer or char array as its first argument; %s is a %s (a string function reads only char, signed char or unsigned char)", c.Name, exprName(c.Args[0]), typeString(x.typ))
	}
	// Read up to m bytes and a NUL into the string buffer.
	buf := g.strOff()
	readStr := func(fn asm.BuiltinFunc) {
		g.emit(asm.Mov.Reg(asm.R1, asm.R10))
		g.emit(asm.Add.Imm(asm.R1, int32(buf)))
		g.emit(asm.Mov.Imm(asm.R2, int32(m+1)))
		g.emit(fn.Call())
	}
	if user {
		g.emit(asm.Mov.Reg(asm.R3, asm.R0))
		readStr(asm.FnProbeReadUserStr)
	} else {
		// A string that is not in kernel memory is read from user memory: syscall arguments
		// such as file names are user pointers, which BTF marks only in clang-built kernels.
		g.emit(asm.Mov.Reg(asm.R7, asm.R0))
		g.emit(asm.Mov.Reg(asm.R3, asm.R0))
		readStr(asm.FnProbeReadKernelStr)
		ok := g.newLabel("str")
		g.emit(asm.JSGE.Imm(asm.R0, 0, ok))
		g.emit(asm.Mov.Reg(asm.R3, asm.R7))
		readStr(asm.FnProbeReadUserStr)
		g.place(ok)
	}
	g.emit(asm.JSLT.Imm(asm.R0, 0, g.lFalse))
	want := make([]byte, m+8)
	copy(want, lit.Value)
	for k := 0; k < m; {
		n := 8
		for k+n > m {
			n /= 2
		}
		g.emit(asm.LoadMem(asm.R1, asm.R10, buf+int16(k), sizeOf(n)))
		var v uint64
		switch n {
		case 8:
			v = binary.NativeEndian.Uint64(want[k:])
		case 4:
			v = uint64(binary.NativeEndian.Uint32(want[k:]))
		case 2:
			v = uint64(binary.NativeEndian.Uint16(want[k:]))
		default:
			v = uint64(want[k])
		}
		if v <= math.MaxInt32 {
			g.emit(asm.JNE.Imm(asm.R1, int32(v), f))
		} else {
			g.emit(asm.LoadImm(asm.R2, int64(v), asm.DWord))
			g.emit(asm.JNE.Reg(asm.R1, asm.R2, f))
		}
		k += n
	}
	g.jump(t)
	return nil
}

// constant folds a constant expression. Arithmetic is on 64 bits, as at run time.
func (g *gen) constant(e Expr) (uint64, btf.Type, error) {
	switch v := e.(type) {
	case *IntLit:
		if v.Unsigned {
			return v.Value, typeULong, nil
		}
		return v.Value, typeLong, nil
	case *Ident:
		return 0, typeVoidP, nil // NULL
	case *Unary:
		x, t, err := g.constant(v.X)
		if err != nil {
			return 0, nil, err
		}
		switch v.Op {
		case "!":
			return b2u(x == 0), typeInt, nil
		case "-":
			if classify(t) == clPtr {
				return 0, nil, g.errAt(v.At, "unary - needs an integer, got %s", typeString(t))
			}
			return -x, t, nil
		case "~":
			if classify(t) == clPtr {
				return 0, nil, g.errAt(v.At, "unary ~ needs an integer, got %s", typeString(t))
			}
			return ^x, t, nil
		}
	case *Binary:
		x, tx, err := g.constant(v.X)
		if err != nil {
			return 0, nil, err
		}
		y, ty, err := g.constant(v.Y)
		if err != nil {
			return 0, nil, err
		}
		ptr := classify(tx) == clPtr || classify(ty) == clPtr
		uns := ptr || isUnsigned(promote(tx, ty))
		switch v.Op {
		case "&&":
			return b2u(x != 0 && y != 0), typeInt, nil
		case "||":
			return b2u(x != 0 || y != 0), typeInt, nil
		case "==":
			return b2u(x == y), typeInt, nil
		case "!=":
			return b2u(x != y), typeInt, nil
		case "<", "<=", ">", ">=":
			var lt, eq bool
			if uns {
				lt, eq = x < y, x == y
			} else {
				lt, eq = int64(x) < int64(y), x == y
			}
			res := map[string]bool{"<": lt, "<=": lt || eq, ">": !lt && !eq, ">=": !lt}[v.Op]
			return b2u(res), typeInt, nil
		}
		if ptr {
			return 0, nil, g.errAt(v.OpAt, "operator %s needs integers", v.Op)
		}
		switch v.Op {
		case "+":
			return x + y, promote(tx, ty), nil
		case "-":
			return x - y, promote(tx, ty), nil
		case "&":
			return x & y, promote(tx, ty), nil
		case "|":
			return x | y, promote(tx, ty), nil
		case "^":
			return x ^ y, promote(tx, ty), nil
		case "<<", ">>":
			if y > 63 {
				return 0, nil, g.errAt(v.Y.Pos(), "shift count %d out of range (0..63)", int64(y))
			}
			t := promote(tx, tx)
			if v.Op == "<<" {
				return x << y, t, nil
			}
			if isUnsigned(t) {
				return x >> y, t, nil
			}
			return uint64(int64(x) >> y), t, nil
		}
		return 0, nil, g.errAt(v.OpAt, "operator %s is not supported", v.Op)
	}
	return 0, nil, g.errAt(e.Pos(), "not a constant")
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}
