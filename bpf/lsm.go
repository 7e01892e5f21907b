package bpf

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf/btf"
)

// LSM hooks. The kernel lets fmod_ret modify any function whose name starts with "security_",
// whether or not it is on the error-injection list (check_attach_modify_return in
// kernel/bpf/verifier.c): on a kernel built without CONFIG_FUNCTION_ERROR_INJECTION, as every
// distribution's is, they are what kfault can fail. kprobe overrides (bpf_override_return) still
// need the error-injection list.

// lsmPrefix starts the name of every function fmod_ret may modify without error injection.
const lsmPrefix = "security_"

// lsmProbeHook is the LSM hook the mechanism probe attaches to: every kernel with
// CONFIG_SECURITY has it, and the probe's program changes nothing.
const lsmProbeHook = "security_file_open"

// onlyLSMModifiable says why fmod_ret refuses a function that is not an LSM hook on a kernel
// without error injection.
const onlyLSMModifiable = "this kernel is built without CONFIG_FUNCTION_ERROR_INJECTION, so only security_* (LSM) functions are modifiable"

// isLSMHook says whether fmod_ret may modify fn without error injection.
func isLSMHook(fn string) bool { return strings.HasPrefix(fn, lsmPrefix) }

// checkLSMHook checks in spec (the kernel's BTF) that the LSM hook fn exists and returns an
// integer: the value fmod_ret puts in its place (-errno) is an int, and a hook returning void
// or a pointer would have its callers read it as something else.
func checkLSMHook(spec *btf.Spec, fn string) error {
	if spec == nil {
		return fmt.Errorf("%s: %w: an LSM hook is checked against the kernel BTF, which is missing", fn, ErrNoBTF)
	}
	var f *btf.Func
	if err := spec.TypeByName(fn, &f); err != nil {
		if errors.Is(err, btf.ErrNotFound) {
			return suggestKernelFunc(fmt.Errorf("%s: %w: no such function in the kernel BTF (this kernel lacks the hook, or CONFIG_SECURITY)", fn, ErrNotInjectable), fn)
		}
		return fmt.Errorf("%s: %w: %w", fn, ErrNotInjectable, err)
	}
	proto, ok := f.Type.(*btf.FuncProto)
	if !ok {
		return fmt.Errorf("%s: %w: BTF has no prototype for it", fn, ErrNotInjectable)
	}
	if i, ok := btf.UnderlyingType(proto.Return).(*btf.Int); !ok || i.Encoding != btf.Signed {
		return fmt.Errorf("%s: %w: it returns %s, not int: fmod_ret can only make a function return an error number", fn, ErrNotInjectable, returnTypeName(proto.Return))
	}
	return nil
}

// returnTypeName names a return type for people: "void", "bool", "struct file *".
func returnTypeName(t btf.Type) string {
	switch t := t.(type) {
	case nil, *btf.Void:
		return "void"
	case *btf.Pointer:
		return returnTypeName(t.Target) + " *"
	case *btf.Struct:
		return "struct " + t.Name
	case *btf.Union:
		return "union " + t.Name
	}
	if name := t.TypeName(); name != "" {
		return name
	}
	return fmt.Sprint(t)
}
