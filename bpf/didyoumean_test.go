package bpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/kfault/kfault/annotations"
	"github.com/kfault/kfault/bpf/predicate"
)

// fakeKernel points the kernel's BTF and error-injection list at files made of funcs and
// injectable, for the test's duration, and returns an engine that plans against that BTF
// (it loads nothing).
func fakeKernel(t *testing.T, funcs, injectable []string) *Engine {
	t.Helper()
	sint := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	var types []btf.Type
	for _, fn := range funcs {
		types = append(types, &btf.Func{Name: fn, Linkage: btf.GlobalFunc, Type: &btf.FuncProto{Return: sint}})
	}
	raw := marshalBTF(t, types, binary.NativeEndian)
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	btfFile, listFile := filepath.Join(dir, "vmlinux"), filepath.Join(dir, "list")
	if err := os.WriteFile(btfFile, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(listFile, []byte(strings.Join(injectable, "\tERRNO\n")+"\tERRNO\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	oldBTF, oldList := vmlinuxBTF, errorInjectionList
	vmlinuxBTF, errorInjectionList = btfFile, listFile
	resetKernelFuncs()
	t.Cleanup(func() {
		vmlinuxBTF, errorInjectionList = oldBTF, oldList
		resetKernelFuncs()
	})
	e := &Engine{kspec: spec, mech: MechanismFmodRet, log: slog.New(slog.DiscardHandler), chainsOn: true}
	list := map[string]string{}
	for _, fn := range injectable {
		list[fn] = "ERRNO"
	}
	e.nodeKinds.facts = allPointsWork(list)
	return e
}

func bioChain(frames ...annotations.Frame) annotations.Fault {
	return annotations.Fault{FailType: annotations.Bio, Probability: 100, CallChain: frames}
}

func resetKernelFuncs() {
	kernelFuncs.once = sync.Once{}
	kernelFuncs.names, kernelFuncs.err = nil, nil
}

var (
	fakeFuncs = []string{"vfs_read", "ksys_read", "__x64_sys_read", "__x64_sys_openat", "bio_alloc_bioset",
		"should_fail_bio", "d_alloc_parallel", "do_sys_openat2"}
	fakeInjectable = []string{"__x64_sys_read", "__x64_sys_openat", "should_fail_bio"}
)

// A refused function name comes with the names the kernel has that resemble it: call-chain
// frames and fmod_ret targets from its BTF, function targets from its error-injection list.
func TestDidYouMeanMessages(t *testing.T) {
	e := fakeKernel(t, fakeFuncs, fakeInjectable)
	list := " not on " + errorInjectionList
	for name, tc := range map[string]struct {
		faults []annotations.Fault
		want   string
		is     error
	}{
		"frame": {[]annotations.Fault{bioChain(annotations.Frame{FuncName: "read"})},
			"callchain[0].funcname: function read: not in kernel BTF; did you mean vfs_read, ksys_read, __x64_sys_read?", predicate.ErrNotInBTF},
		"inline wrapper": {[]annotations.Fault{bioChain(annotations.Frame{FuncName: "d_alloc_parallel"}, annotations.Frame{FuncName: " bio_alloc "})},
			"callchain[1].funcname: function bio_alloc: not in kernel BTF; did you mean bio_alloc_bioset?", predicate.ErrNotInBTF},
		"no candidate": {[]annotations.Fault{bioChain(annotations.Frame{FuncName: "xyzzy"})},
			"callchain[0].funcname: function xyzzy: not in kernel BTF", predicate.ErrNotInBTF},
		"in a list": {[]annotations.Fault{{FailType: annotations.Bio, Probability: 100}, bioChain(annotations.Frame{FuncName: "d_alloc_paralel"})},
			"[1].callchain[0].funcname: function d_alloc_paralel: not in kernel BTF; did you mean d_alloc_parallel?", predicate.ErrNotInBTF},
		"function target": {[]annotations.Fault{{Function: "read", Errno: 5, Probability: 100}},
			"function: read: function is not error-injectable:" + list + "; did you mean __x64_sys_read?", ErrNotInjectable},
		"function typo": {[]annotations.Fault{{Function: "__x64_sys_opnat", Errno: 5, Probability: 100}},
			"function: __x64_sys_opnat: function is not error-injectable:" + list + "; did you mean __x64_sys_openat, __x64_sys_read?", ErrNotInjectable},
		"function syscall": {[]annotations.Fault{{Function: "openat", Errno: 5, Probability: 100}},
			"function: openat: function is not error-injectable:" + list + "; did you mean __x64_sys_openat?", ErrNotInjectable},
		// Only injectable names: bio_alloc_bioset is in BTF, not on the list.
		"function not injectable": {[]annotations.Fault{{Function: "bio_alloc", Errno: 5, Probability: 100}},
			"function: bio_alloc: function is not error-injectable:" + list, ErrNotInjectable},
		"function no candidate": {[]annotations.Fault{{Function: "xyzzy", Errno: 5, Probability: 100}},
			"function: xyzzy: function is not error-injectable:" + list, ErrNotInjectable},
		// A failtype's function is not misspelt: its kernel config is missing.
		"failtype": {[]annotations.Fault{{FailType: annotations.Slab, Probability: 100}},
			"failtype: should_failslab: function is not error-injectable on this node: not on the error-injection list (CONFIG_FUNCTION_ERROR_INJECTION; on 6.11+ also CONFIG_FAILSLAB); " +
				"this node can inject instead: failtype: bio; function: any of the 3 functions on the error-injection list (kfault check on the node lists them)", ErrNotInjectable},
	} {
		t.Run(name, func(t *testing.T) {
			err := e.Validate(tc.faults)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("got  %v\nwant %s", err, tc.want)
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("%v: not %v", err, tc.is)
			}
			var fe *predicate.FrameError
			if tc.is == predicate.ErrNotInBTF && !errors.As(err, &fe) {
				t.Errorf("%v: not a *predicate.FrameError", err)
			}
		})
	}
}

// A hook the loader or the kernel does not find gets the same suggestions, from BTF.
func TestDidYouMeanHooks(t *testing.T) {
	fakeKernel(t, fakeFuncs, fakeInjectable)
	for name, tc := range map[string]struct {
		err  error
		want string
	}{
		"fmod_ret load": {explainLoad(MechanismFmodRet, "bio_alloc", fmt.Errorf("find target: %w", os.ErrNotExist)),
			"bio_alloc: function is not error-injectable: no such function in the kernel BTF (missing, inlined, or CONFIG_DEBUG_INFO_BTF off): find target: file does not exist; did you mean bio_alloc_bioset?"},
		"fmod_ret attach": {explainAttach(MechanismFmodRet, "read", os.ErrNotExist),
			"read: function is not error-injectable: no such kernel function (or it is inlined/renamed): file does not exist; did you mean vfs_read, ksys_read, __x64_sys_read?"},
		// A failtype's function is not misspelt (should_fail_bio is 4 edits away): the kernel
		// lacks its config.
		"failtype function": {explainLoad(MechanismFmodRet, "should_failslab", os.ErrNotExist),
			"should_failslab: function is not error-injectable: no such function in the kernel BTF (missing, inlined, or CONFIG_DEBUG_INFO_BTF off): file does not exist"},
		// In BTF: what was not found is something else, and a suggestion would mislead.
		"in BTF": {explainLoad(MechanismFmodRet, "ksys_read", errors.New("map not found")),
			"ksys_read: function is not error-injectable: no such function in the kernel BTF (missing, inlined, or CONFIG_DEBUG_INFO_BTF off): map not found"},
	} {
		t.Run(name, func(t *testing.T) {
			if tc.err == nil || tc.err.Error() != tc.want || !errors.Is(tc.err, ErrNotInjectable) {
				t.Errorf("got  %v\nwant %s (ErrNotInjectable)", tc.err, tc.want)
			}
		})
	}
}

// The kernel's function names are read once: the first refusal pays for it, not every one.
func TestKernelFuncNamesOnce(t *testing.T) {
	fakeKernel(t, fakeFuncs, fakeInjectable)
	names, err := kernelFuncNames()
	if err != nil || len(names) != len(fakeFuncs) {
		t.Fatalf("kernelFuncNames = %q, %v", names, err)
	}
	if err := os.Remove(vmlinuxBTF); err != nil {
		t.Fatal(err)
	}
	if again, err := kernelFuncNames(); err != nil || len(again) != len(names) {
		t.Errorf("second call read the file again: %q, %v", again, err)
	}
}
