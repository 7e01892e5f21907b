package bpf

import (
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/kfault/kfault/annotations"
)

// TestRefuseFailType: a failtype whose fault point cannot be overridden on the node is refused
// at Prepare with kfault check's reason (the missing option, the clone) and the kinds of fault
// that work there; never replaced silently.
func TestRefuseFailType(t *testing.T) {
	debian, err := btf.LoadSpec("testdata/lsm-debian-6.12.btf")
	if err != nil {
		t.Fatal(err)
	}
	noLSM := errors.New("fmod_ret does not attach to LSM hooks")
	exists := KernelSymbol{Exists: true}
	all := map[string]string{"should_failslab": "ERRNO", "should_fail_alloc_page": "TRUE", "should_fail_bio": "ERRNO", "__x64_sys_openat": "ERRNO"}
	config := func(vals map[string]string) func(string) string {
		return func(name string) string { return vals[name] }
	}
	for name, tc := range map[string]struct {
		facts pointFacts
		fault annotations.FailType
		want  string // the whole error; "" accepted
	}{
		"capable kernel": {
			facts: pointFacts{syms: map[string]KernelSymbol{"should_failslab": exists, "should_fail_alloc_page": exists, "should_fail_bio": exists}, list: all, anyMech: true},
			fault: annotations.Slab,
		},
		// Debian's 6.12: no error injection, and 6.11+ drops the fault points without their options.
		"no error injection, 6.12": {
			facts: pointFacts{syms: map[string]KernelSymbol{}, listErr: errors.New("no such file"), btf: debian,
				config: config(map[string]string{"CONFIG_FUNCTION_ERROR_INJECTION": "n", "CONFIG_FAILSLAB": "n", "CONFIG_FAIL_PAGE_ALLOC": "n", "CONFIG_FAIL_MAKE_REQUEST": "n"})},
			fault: annotations.Slab,
			want: "should_failslab: function is not error-injectable on this node: not in /proc/kallsyms (this kernel is built without CONFIG_FAILSLAB); " +
				"this kernel is built without CONFIG_FUNCTION_ERROR_INJECTION, so nothing is error-injectable; neither fmod_ret nor kprobe works on the error-injection list; " +
				"this node can inject instead: failtype 3 (alloc), function (security_* LSM hooks), e.g. failtype: alloc or function: security_file_permission (kfault check on the node lists them)",
		},
		// Debian's 6.1: the fault point is there, but no error injection and so no list.
		"no error injection, 6.1": {
			facts: pointFacts{syms: map[string]KernelSymbol{"should_failslab": exists, "should_fail_alloc_page": exists}, listErr: errors.New("missing"), btf: debian,
				config: config(map[string]string{"CONFIG_FUNCTION_ERROR_INJECTION": "n"})},
			fault: annotations.Slab,
			want: "should_failslab: function is not error-injectable on this node: this kernel is built without CONFIG_FUNCTION_ERROR_INJECTION, so nothing is error-injectable; neither fmod_ret nor kprobe works on the error-injection list; " +
				"this node can inject instead: failtype 3 (alloc), function (security_* LSM hooks), e.g. failtype: alloc or function: security_file_permission (kfault check on the node lists them)",
		},
		// No list (debugfs not mounted) and no config: kfault cannot tell, the kernel decides at attach.
		"cannot tell": {
			facts: pointFacts{syms: map[string]KernelSymbol{"should_failslab": exists}, listErr: errDebugfs, anyMech: true},
			fault: annotations.Slab,
		},
		// A 6.11+ kernel with error injection but without CONFIG_FAILSLAB.
		"missing option": {
			facts: pointFacts{syms: map[string]KernelSymbol{"should_fail_bio": exists}, list: map[string]string{"should_fail_bio": "ERRNO", "__x64_sys_openat": "ERRNO"}, anyMech: true, lsmErr: noLSM,
				config: config(map[string]string{"CONFIG_FAILSLAB": "n"})},
			fault: annotations.Slab,
			want: "should_failslab: function is not error-injectable on this node: not in /proc/kallsyms (this kernel is built without CONFIG_FAILSLAB); not on the error-injection list (CONFIG_FUNCTION_ERROR_INJECTION; on 6.11+ also CONFIG_FAILSLAB); " +
				"this node can inject instead: failtype 2 (bio), function (error-injection list), e.g. failtype: bio or function: __x64_sys_openat (kfault check on the node lists them)",
		},
		// gcc turned the hook into a clone: overriding the original would be a silent no-op.
		"clone only": {
			facts: pointFacts{syms: map[string]KernelSymbol{"should_failslab": {Exists: true, Clones: []string{"should_failslab.constprop.0"}}, "should_fail_alloc_page": exists, "should_fail_bio": exists}, list: all, anyMech: true, lsmErr: noLSM},
			fault: annotations.Slab,
			want: "should_failslab: function is not error-injectable on this node: clone should_failslab.constprop.0 is what callers use: overriding should_failslab does nothing; " +
				"this node can inject instead: failtype 1 (page), failtype 2 (bio), function (error-injection list), e.g. failtype: page or failtype: bio or function: __x64_sys_openat (kfault check on the node lists them)",
		},
	} {
		t.Run(name, func(t *testing.T) {
			k := &nodeKinds{facts: func() pointFacts { return tc.facts }}
			fp, _ := tc.fault.Point()
			err := k.refuse(fp)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || err.Error() != tc.want):
				t.Fatalf("got  %v\nwant %s", err, tc.want)
			case tc.want != "" && !errors.Is(err, ErrNotInjectable):
				t.Errorf("%v: not ErrNotInjectable", err)
			}
		})
	}
}

// TestPrepareRefusesFailType: the refusal reaches Prepare (so CreateContainer and kfault
// inject), with the field path, for each failtype this node cannot do.
func TestPrepareRefusesFailType(t *testing.T) {
	debian, err := btf.LoadSpec("testdata/lsm-debian-6.12.btf")
	if err != nil {
		t.Fatal(err)
	}
	e := &Engine{kspec: debian, mech: MechanismFmodRet, lsmOnly: true}
	e.nodeKinds.facts = func() pointFacts {
		return pointFacts{syms: map[string]KernelSymbol{}, listErr: errors.New("missing"), btf: debian}
	}
	err = e.Validate([]annotations.Fault{{FailType: annotations.Bio, Probability: 100}, {FailType: annotations.Slab, Probability: 100}})
	for _, want := range []string{
		"[0].failtype: should_fail_bio: function is not error-injectable on this node: ",
		"[1].failtype: should_failslab: function is not error-injectable on this node: ",
		"e.g. failtype: alloc or function: security_file_permission",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want %q", err, want)
		}
	}
	if !errors.Is(err, ErrNotInjectable) {
		t.Errorf("%v: not ErrNotInjectable", err)
	}
}
