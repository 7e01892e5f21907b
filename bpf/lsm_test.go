package bpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/kfault/kfault/annotations"
)

// lsmKernelTypes is the BTF fixture of the LSM tests: a kernel like Debian's without
// CONFIG_SECURITY_NETWORK (no security_sk_alloc) and without System V IPC's hook
// (security_msg_msg_alloc), whose other alloc hooks return int (one through a typedef, as
// kernels may write it), beside LSM functions that must be refused: one returning void, one a
// pointer, one bool, one an unsigned int. It has the syscall __x64_sys_openat, which is no LSM
// hook.
func lsmKernelTypes() []btf.Type {
	sint := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	typedefInt := &btf.Typedef{Name: "errno_t", Type: sint}
	fn := func(name string, ret btf.Type) btf.Type {
		return &btf.Func{Name: name, Linkage: btf.GlobalFunc, Type: &btf.FuncProto{Return: ret}}
	}
	types := []btf.Type{
		fn("security_task_free", &btf.Void{}),
		fn("security_d_instantiate_ptr", &btf.Pointer{Target: &btf.Struct{Name: "file"}}),
		fn("security_bool_hook", &btf.Int{Name: "_Bool", Size: 1, Encoding: btf.Bool}),
		fn("security_unsigned_hook", &btf.Int{Name: "unsigned int", Size: 4}),
		fn("security_file_open", sint),
		fn("__x64_sys_openat", sint),
		fn("should_failslab", sint),
	}
	for _, h := range annotations.FailPoints[annotations.Alloc].Functions {
		switch h {
		case "security_sk_alloc", "security_msg_msg_alloc":
		case "security_vm_enough_memory_mm":
			types = append(types, fn(h, typedefInt))
		default:
			types = append(types, fn(h, sint))
		}
	}
	return types
}

// lsmOnlyKernel is an engine planning against lsmKernelTypes on a kernel without error
// injection: fmod_ret on LSM hooks only.
func lsmOnlyKernel(t *testing.T) *Engine {
	e := fakeKernelTypes(t, lsmKernelTypes(), nil)
	errorInjectionList = "testdata/no-error-injection-list"
	e.lsmOnly = true
	return e
}

func TestCheckLSMHook(t *testing.T) {
	spec := lsmOnlyKernel(t).kspec
	for fn, want := range map[string]string{
		"security_file_open":           "",
		"security_file_alloc":          "",
		"security_vm_enough_memory_mm": "", // int through a typedef
		"security_task_free":           "security_task_free: function is not error-injectable: it returns void, not int",
		"security_d_instantiate_ptr":   "security_d_instantiate_ptr: function is not error-injectable: it returns struct file *, not int",
		"security_bool_hook":           "security_bool_hook: function is not error-injectable: it returns _Bool, not int",
		"security_unsigned_hook":       "security_unsigned_hook: function is not error-injectable: it returns unsigned int, not int",
		"security_sk_alloc":            "security_sk_alloc: function is not error-injectable: no such function in the kernel BTF (this kernel lacks the hook, or CONFIG_SECURITY)",
	} {
		err := checkLSMHook(spec, fn)
		switch {
		case want == "" && err != nil:
			t.Errorf("%s: %v", fn, err)
		case want != "" && (err == nil || !strings.HasPrefix(err.Error(), want) || !errors.Is(err, ErrNotInjectable)):
			t.Errorf("%s: got %v, want an ErrNotInjectable starting %q", fn, err, want)
		}
	}
	if err := checkLSMHook(nil, "security_file_open"); !errors.Is(err, ErrNoBTF) {
		t.Errorf("no BTF: %v", err)
	}
}

// TestPrepareLSMOnly: on a kernel without error injection, alloc hooks the hooks the kernel has,
// function: takes LSM hooks that return int, and everything else is refused with the kernel's
// reason, at Prepare.
func TestPrepareLSMOnly(t *testing.T) {
	e := lsmOnlyKernel(t)
	plan, err := e.Prepare([]annotations.Fault{
		{FailType: annotations.Alloc, Probability: 100, Times: 3},
		{Function: "security_file_open", Errno: 13, Probability: 100},
	})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, h := range annotations.FailPoints[annotations.Alloc].Functions {
		if h != "security_sk_alloc" && h != "security_msg_msg_alloc" {
			want = append(want, h)
		}
	}
	if got := plan.rules[0].fns; !slices.Equal(got, want) {
		t.Errorf("alloc hooks %q, want those the kernel has: %q", got, want)
	}
	if r := plan.rules[0].enc; r.Retval != -12 || r.Limit != 3 {
		t.Errorf("alloc rule: return %d, times %d; want -12 (ENOMEM), 3", r.Retval, r.Limit)
	}
	if got := plan.rules[1].fns; !slices.Equal(got, []string{"security_file_open"}) {
		t.Errorf("function hooks %q", got)
	}
	if res := plan.Resources(); len(res.Hooks) != len(annotations.FailPoints[annotations.Alloc].Functions)+1 {
		t.Errorf("resources: %d hooks, want one per alloc hook and security_file_open: %q", len(res.Hooks), res.Hooks)
	}

	const lsmOnly = "function is not error-injectable: fmod_ret refused: this kernel is built without CONFIG_FUNCTION_ERROR_INJECTION, so only security_* (LSM) functions are modifiable"
	for name, tc := range map[string]struct {
		f    annotations.Fault
		want string
	}{
		"slab":             {annotations.Fault{FailType: annotations.Slab, Probability: 100}, "failtype: should_failslab: " + lsmOnly + " (and CONFIG_FAILSLAB on 6.11+)"},
		"bio":              {annotations.Fault{FailType: annotations.Bio, Probability: 100}, "failtype: should_fail_bio: " + lsmOnly + " (and CONFIG_FAIL_MAKE_REQUEST on 6.11+)"},
		"syscall function": {annotations.Fault{Function: "__x64_sys_openat", Errno: 13, Probability: 100}, "function: __x64_sys_openat: " + lsmOnly},
		"void LSM hook":    {annotations.Fault{Function: "security_task_free", Errno: 12, Probability: 100}, "function: security_task_free: function is not error-injectable: it returns void, not int: fmod_ret can only make a function return an error number"},
	} {
		err := e.Validate([]annotations.Fault{tc.f})
		if err == nil || err.Error() != tc.want || !errors.Is(err, ErrNotInjectable) {
			t.Errorf("%s: got %v\nwant %s", name, err, tc.want)
		}
	}
}

// TestPrepareLSMKprobe: kprobe overrides need the error-injection list, which has no LSM hook:
// alloc is refused, naming the mechanism.
func TestPrepareLSMKprobe(t *testing.T) {
	e := fakeKernelTypes(t, lsmKernelTypes(), []string{"__x64_sys_openat", "should_failslab"})
	e.mech = MechanismKprobe
	err := e.Validate([]annotations.Fault{{FailType: annotations.Alloc, Probability: 100}})
	const want = "failtype: none of its 8 hooks can be overridden here (the first: security_file_alloc: function is not error-injectable: LSM hooks can be overridden with fmod_ret only, not kprobe)"
	if err == nil || err.Error() != want || !errors.Is(err, ErrNotInjectable) {
		t.Errorf("got %v\nwant %s", err, want)
	}
	if err := e.Validate([]annotations.Fault{{Function: "__x64_sys_openat", Errno: 13, Probability: 100}}); err != nil {
		t.Errorf("a function on the list: %v", err)
	}
	// With error injection, fmod_ret takes both kinds.
	e.mech = MechanismFmodRet
	if err := e.Validate([]annotations.Fault{{FailType: annotations.Alloc, Probability: 100}, {FailType: annotations.Slab, Probability: 100}}); err != nil {
		t.Errorf("fmod_ret with error injection: %v", err)
	}
}

// TestLSMPointCheck: the alloc line of kfault check names the hooks the kernel lacks.
func TestLSMPointCheck(t *testing.T) {
	spec := lsmOnlyKernel(t).kspec
	empty := fakeKernelTypes(t, []btf.Type{&btf.Int{Name: "int", Size: 4}}, nil).kspec
	alloc := annotations.FailPoints[annotations.Alloc]
	for name, tc := range map[string]struct {
		facts  pointFacts
		want   string
		wantOK bool
	}{
		"some hooks missing": {pointFacts{btf: spec}, "yes: 6 of its 8 hooks, with fmod_ret; left out, not in the kernel BTF returning int: security_sk_alloc, security_msg_msg_alloc", true},
		"no hook":            {pointFacts{btf: empty, config: func(string) string { return "n" }}, "no: none of its hooks is in the kernel BTF returning int (this kernel is built without CONFIG_SECURITY)", false},
		"no fmod_ret":        {pointFacts{btf: spec, lsmErr: errors.New("no trampolines")}, "no: fmod_ret does not attach to LSM hooks (see the lsm mechanism line)", false},
	} {
		c := failPointCheck(alloc, tc.facts)
		if c.Name != "failtype 3 (alloc): LSM hooks" || c.Detail != tc.want || c.OK != tc.wantOK {
			t.Errorf("%s: got %q %v %q\nwant %v %q", name, c.Name, c.OK, c.Detail, tc.wantOK, tc.want)
		}
	}
}

// The BTF fixtures testdata/lsm-<kernel>.btf are the security_* functions of Debian's binary
// kernels (the matrix's debian-6.1 and debian-6.12), each with its return type and no parameters
// (a pointer's target reduced to a forward declaration). To make them again from those kernels'
// raw BTF (scripts/extract-vmlinux on the vmlinuz that test/vm/fetch-kernel caches, then
// objcopy -O binary --only-section=.BTF vmlinux KERNEL.btf):
//
//	KFAULT_LSM_FIXTURES=debian-6.1=/tmp/debian-6.1.btf,debian-6.12=/tmp/debian-6.12.btf \
//		go test ./bpf -run TestLSMFixtures
var lsmFixtures = []string{"debian-6.1", "debian-6.12"}

func TestLSMFixtures(t *testing.T) {
	src := os.Getenv("KFAULT_LSM_FIXTURES")
	if src == "" {
		t.Skip("set KFAULT_LSM_FIXTURES=name=vmlinux,... to write testdata/lsm-<name>.btf")
	}
	for _, pair := range strings.Split(src, ",") {
		name, path, _ := strings.Cut(pair, "=")
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		var types []btf.Type
		for typ, err := range spec.All() {
			if err != nil {
				t.Fatal(err)
			}
			if fn, ok := typ.(*btf.Func); ok && isLSMHook(fn.Name) {
				types = append(types, &btf.Func{Name: fn.Name, Linkage: fn.Linkage,
					Type: &btf.FuncProto{Return: reducedType(fn.Type.(*btf.FuncProto).Return)}})
			}
		}
		out := marshalBTF(t, types, binary.LittleEndian)
		if err := os.WriteFile(filepath.Join("testdata", "lsm-"+name+".btf"), out, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d security_* functions", name, len(types))
	}
}

// reducedType is t without what a return type check does not need: a pointer's target becomes
// a forward declaration of its name.
func reducedType(t btf.Type) btf.Type {
	switch t := t.(type) {
	case *btf.Pointer:
		return &btf.Pointer{Target: &btf.Fwd{Name: btf.UnderlyingType(t.Target).TypeName(), Kind: btf.FwdStruct}}
	case *btf.Typedef:
		return &btf.Typedef{Name: t.Name, Type: reducedType(t.Type)}
	case *btf.Const:
		return reducedType(t.Type)
	}
	return t
}

// TestAllocHooksOnDebian: on Debian's own kernels every hook of failtype alloc is in the BTF and
// returns int, and a void LSM function is refused: the hook list and the int-return check
// against real kernels' types.
func TestAllocHooksOnDebian(t *testing.T) {
	for _, name := range lsmFixtures {
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata", "lsm-"+name+".btf"))
			if err != nil {
				t.Fatal(err)
			}
			spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range annotations.FailPoints[annotations.Alloc].Functions {
				if err := checkLSMHook(spec, h); err != nil {
					t.Errorf("alloc hook: %v", err)
				}
			}
			if err := checkLSMHook(spec, "security_task_free"); err == nil || !strings.Contains(err.Error(), "returns void, not int") {
				t.Errorf("security_task_free (void): %v", err)
			}
			if c := lsmPointCheck(annotations.FailPoints[annotations.Alloc], pointFacts{btf: spec}); !c.OK || c.Detail != "yes: all 8 hooks in the kernel BTF, returning int, with fmod_ret" {
				t.Errorf("kfault check line: %v %s", c.OK, c.Detail)
			}
		})
	}
}
