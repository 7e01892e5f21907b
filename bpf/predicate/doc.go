// Package predicate compiles KernelChaos/inject.py frame predicates, such as
//
//	STRNCMP(name->name, "bananas", 8)      on d_alloc_parallel(struct dentry *parent, const struct qstr *name)
//	bio->bi_opf & 1                        on should_fail_bio(struct bio *bio)
//
// straight to BPF instructions, using kernel BTF for signatures, types and member offsets. No
// clang, BCC or kernel headers are needed at run time. The language is described in
// docs/predicates.md.
//
// # API
//
//	sig, err := predicate.Resolve(spec, frame.FuncName, frame.Parameters) // spec: btf.LoadKernelSpec()
//	prog, err := predicate.Compile(sig, frame.Predicate, predicate.Options{ArgSource: predicate.Tracing, Symbol: "pred_0"})
//
// or, for one call-chain frame with errors named like the annotation's fields
// ("callchain[0].predicate: column 15: unknown member ..."),
//
//	sig, prog, err := predicate.CompileFrame(spec, i, frame.FuncName, frame.Parameters, frame.Predicate, opts) // prog nil without a predicate
//
// Resolve finds the function in BTF (an error wrapping ErrNotInBTF when absent) and checks the
// optional C parameter list against it. Compile parses and type-checks the predicate and
// generates the code. Parse checks syntax only and needs no BTF. Errors about the predicate or
// the parameter list are *Error values carrying the byte offset, line and column; their text
// starts with "column N: " ("line L column N: " for multi-line text). CompileFrame wraps them in a
// FrameError that names the frame and field, e.g. "callchain[0].predicate: column 15: unknown
// member "nme" of struct qstr (members: hash, len, hash_len, name)".
//
// Load the kernel spec once and keep it: btf.LoadKernelSpec parses all of vmlinux's BTF.
// Resolve plus Compile then take well under a millisecond.
//
// # Safety rules
//
// Predicates come from pod annotations, written by anyone who can create a pod, and run in the
// kernel. Compile lets them read kernel data that BTF describes, reached from the arguments,
// and never a kernel address nor memory at a computed address (safety.go; docs/predicates.md,
// "Safety rules"):
//
//  1. Memory is reached only through BTF members, at the offsets BTF gives.
//  2. Indexes are integer constants (after folding): 0..N-1 for an array of N elements; for a
//     pointer or an array of unknown length, within the first PointerWindow (64) bytes.
//  3. One access path follows at most MaxDerefs (4) pointers: each -> and each [] on a pointer
//     follows one, and so does STRNCMP/STRCMP on a char pointer.
//  4. A pointer may only be tested against 0 (p == 0, p != NULL, !p, p as a condition); it is
//     never compared with another value, nor used in arithmetic. STRNCMP/STRCMP take only
//     char, signed char or unsigned char pointers and arrays.
//
// A refusal is an *Error like any other, its message naming the rule, e.g. "column 20: a pointer
// can only be compared with 0 (NULL check): comparing parent->d_sb->s_op with
// 0xffffffff82000000 would reveal a kernel address".
//
// # Code contract
//
// Program.Instructions is one BPF-to-BPF subprogram (a static function). Either append it after
// the caller's own instructions in the same program and invoke it with Program.Call() (a
// pseudo-call to Program.Symbol), or, for a C (bpf2go) program, let the C code call a
// __noinline stub function of that name and replace the stub's body with Splice. Either way:
//
//   - Input: R1 = the program's context, exactly as the program received it.
//     ArgSource Tracing (fentry, fexit, fmod_ret): the context is the array of u64 arguments,
//     argument i at offset 8*i (a 16-byte argument passed by value takes two slots). ArgSource Kprobe: the context is struct pt_regs at function
//     entry; argument i comes from the calling-convention register (x86_64: di, si, dx, cx,
//     r8, r9; arm64: x0..x7), so a kprobe predicate can name only those arguments.
//   - Output: R0 = 1 when the predicate holds, 0 when it does not. It is also 0 when any read of
//     kernel memory fails (a NULL or bad pointer anywhere in the predicate): a fault is never
//     injected on the strength of a value that could not be read.
//   - Registers: R1-R5 are clobbered (as by any call). The subprogram uses R6 and R7 for itself;
//     the BPF calling convention restores the caller's R6-R9 on return.
//   - Stack: Program.StackSize bytes of the subprogram's own frame (16 bytes of scratch, a string
//     buffer of up to 72 bytes when STRNCMP/STRCMP is used, 8 bytes per pending intermediate
//     value, at most 16 of them). The verifier adds it to the caller's frame: the total must stay
//     within 512 bytes. Typical predicates need 16-40 bytes.
//   - Helpers: bpf_probe_read_kernel, bpf_probe_read_kernel_str, and bpf_probe_read_user(_str)
//     for pointers BTF tags __user and as the fallback for strings not in kernel memory (file
//     names passed to syscalls). All are available to tracing and kprobe programs (GPL).
//   - Control flow: forward jumps only (no loops, no back-edges), symbolic labels prefixed by
//     Symbol + "__" so several predicates can share one program; unreachable code is removed.
//     Jump offsets are resolved by cilium/ebpf when the program is marshalled.
//   - BTF: with Options.FuncInfo the first instruction carries a btf.Func ("static int
//     Symbol(void *ctx)") and a line-info source (the predicate text). A caller needs them when
//     its own program has func_info/line_info, as bpf2go-built programs do: the kernel then
//     wants both at every subprogram start (else "missing bpf_line_info for func#N"). Without
//     such a caller, leave FuncInfo off: a lone record not at instruction 0 is rejected too.
//
// With ArgSource Tracing, pointer-to-struct arguments are read from the context directly (the
// verifier types them as BTF pointers); they are only ever added constant offsets and passed
// to the probe-read helpers, or compared with 0. Any other pointer argument is copied out of the
// context with bpf_probe_read_kernel so the verifier sees a plain number.
//
// # Semantics
//
// Every value is widened to 64 bits when read: signed BTF integers and enums are
// sign-extended, unsigned ones zero-extended, bitfields extracted (little-endian hosts).
// Arithmetic and comparisons are on 64 bits, unsigned when either operand is a 64-bit unsigned
// integer, signed otherwise (so, unlike C, -1 < 1u is true). Each dereference reads
// exactly the member's size (at most 8 bytes). STRNCMP(e, "lit", n) and STRCMP(e, "lit") are
// true when the strings match (unlike C's strncmp); they read min(n, len(lit)+1) bytes plus one
// with bpf_probe_read_kernel_str and compare them unrolled, 8 bytes at a time.
package predicate
