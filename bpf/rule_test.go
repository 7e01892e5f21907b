package bpf

import (
	"slices"
	"testing"

	"github.com/kfault/kfault/annotations"
)

func TestThreshold(t *testing.T) {
	for _, tc := range []struct {
		p      float64
		thr    uint64
		always bool
	}{
		{100, 1 << 32, true},
		{50, 1 << 31, false},
		{25, 1 << 30, false},
		{1, 42949673, false},           // round(0.01 * 2^32)
		{0.5, 21474836, false},         // fractions are allowed
		{1e-12, 1, false},              // never rounds down to "never"
		{99.9999999999, 1 << 32, true}, // rounds up to 2^32: same as always
	} {
		thr, always, err := threshold(tc.p)
		if err != nil || thr != tc.thr || always != tc.always {
			t.Errorf("threshold(%v) = %d, %v, %v; want %d, %v", tc.p, thr, always, err, tc.thr, tc.always)
		}
	}
	for _, bad := range []float64{0, -1, 100.5} {
		if _, _, err := threshold(bad); err == nil {
			t.Errorf("threshold(%v): want an error", bad)
		}
	}
}

func TestEncodeRule(t *testing.T) {
	r, err := encodeRule(annotations.Fault{FailType: annotations.Slab, Probability: 100, Times: 5}, 7)
	if err != nil {
		t.Fatal(err)
	}
	if r.Retval != -12 || r.Limit != 5 || r.Counter != 7 || r.Flags != ruleActive|ruleAlways || r.ChainId != 0 {
		t.Errorf("slab rule = %+v", r)
	}
	r, err = encodeRule(annotations.Fault{Function: "__x64_sys_openat", Errno: 13, Probability: 20}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if r.Retval != -13 || r.Flags != ruleActive || r.Threshold != 858993459 {
		t.Errorf("function rule = %+v", r)
	}
	if _, err := encodeRule(annotations.Fault{Function: "x", Errno: 0, Probability: 1}, 0); err == nil {
		t.Error("errno 0: want an error")
	}
	if _, err := encodeRule(annotations.Fault{FailType: 9, Probability: 1}, 0); err == nil {
		t.Error("failtype 9: want an error")
	}
}

func TestHookAndReturnValue(t *testing.T) {
	for _, tc := range []struct {
		f    annotations.Fault
		fns  []string
		kind hookKind
		ret  int64
		prog string
	}{
		{annotations.Fault{FailType: annotations.Slab}, []string{"should_failslab"}, kindSlab, -12, "kfault_fm_slab"},
		{annotations.Fault{FailType: annotations.Page}, []string{"should_fail_alloc_page"}, kindPage, 1, "kfault_fm_page"},
		{annotations.Fault{FailType: annotations.Bio}, []string{"should_fail_bio"}, kindBio, -5, "kfault_fm_bio"},
		{annotations.Fault{FailType: annotations.Alloc}, annotations.FailPoints[annotations.Alloc].Functions, kindFunc, -12, "kfault_fm_func"},
		{annotations.Fault{Function: "__x64_sys_openat", Errno: 13}, []string{"__x64_sys_openat"}, kindFunc, -13, "kfault_fm_func"},
		{annotations.Fault{Function: "security_file_open", Errno: 13}, []string{"security_file_open"}, kindFunc, -13, "kfault_fm_func"},
		{annotations.Fault{Function: "should_failslab", Errno: 28}, []string{"should_failslab"}, kindSlab, -28, "kfault_fm_slab"},
	} {
		fns, err := hooksOf(tc.f)
		if err != nil || !slices.Equal(fns, tc.fns) {
			t.Errorf("hooksOf(%+v) = %s, %v", tc.f, fns, err)
		}
		for _, fn := range fns {
			if kind := kindOf(fn); kind != tc.kind {
				t.Errorf("kindOf(%s) = %v, want %v", fn, kind, tc.kind)
			}
		}
		ret, err := returnValue(tc.f)
		if err != nil || ret != tc.ret {
			t.Errorf("returnValue(%+v) = %d, %v; want %d", tc.f, ret, err, tc.ret)
		}
		if p := programName(MechanismFmodRet, tc.kind); p != tc.prog {
			t.Errorf("programName = %s, want %s", p, tc.prog)
		}
	}
	if p := programName(MechanismKprobe, kindBio); p != "kfault_kp_bio" {
		t.Errorf("programName(kprobe, bio) = %s", p)
	}
	if _, err := hooksOf(annotations.Fault{FailType: 9}); err == nil {
		t.Error("hooksOf(failtype 9): no error")
	}
}

func TestProgramsExist(t *testing.T) {
	spec, err := loadKfault()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []Mechanism{MechanismFmodRet, MechanismKprobe} {
		for _, k := range []hookKind{kindFunc, kindSlab, kindPage, kindBio} {
			if spec.Programs[programName(m, k)] == nil {
				t.Errorf("program %s missing", programName(m, k))
			}
		}
	}
	for _, v := range []string{"hook_id", "gfp_nofail"} {
		if spec.Variables[v] == nil {
			t.Errorf("variable %s missing", v)
		}
	}
	// Layouts and capacities: TestLimits.
}

func TestInjected(t *testing.T) {
	if injected(7, 5) != 5 || injected(3, 5) != 3 || injected(9, 0) != 9 {
		t.Error("injected() caps at the limit only when there is one")
	}
}

func TestParseMechanism(t *testing.T) {
	for s, want := range map[string]Mechanism{"": MechanismAuto, "auto": MechanismAuto, "fmod_ret": MechanismFmodRet, "kprobe": MechanismKprobe} {
		if m, err := ParseMechanism(s); err != nil || m != want {
			t.Errorf("ParseMechanism(%q) = %v, %v", s, m, err)
		}
	}
	if _, err := ParseMechanism("uprobe"); err == nil {
		t.Error("uprobe: want an error")
	}
}
