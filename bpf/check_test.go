package bpf

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/kfault/kfault/annotations"
)

// fixtureKallsyms points kallsymsPath at testdata/kallsyms for the test: a symbol table with
// should_failslab.constprop.0 beside should_failslab, vfs_statx.isra.0 beside vfs_statx, cold
// parts, a partial-inlining clone and a module symbol.
func fixtureKallsyms(t *testing.T) {
	t.Helper()
	old := kallsymsPath
	kallsymsPath = "testdata/kallsyms"
	t.Cleanup(func() { kallsymsPath = old })
}

// TestFailPointCheck: the failtype lines of kfault check, from the fixture's symbols. A hook
// with a clone is refused in the line's words, with its other problems.
func TestFailPointCheck(t *testing.T) {
	fixtureKallsyms(t)
	var names []string
	for _, fp := range annotations.FailPoints[:annotations.Alloc] {
		names = append(names, fp.Functions...)
	}
	syms, err := LookupKernelSymbols(names...)
	if err != nil {
		t.Fatal(err)
	}
	list := map[string]string{"should_failslab": "ERRNO", "should_fail_alloc_page": "TRUE", "should_fail_bio": "ERRNO"}
	good := pointFacts{syms: syms, list: list, anyMech: true}
	noBio := good
	noBio.syms = map[string]KernelSymbol{}
	noBio.list = map[string]string{}
	noList := good
	noList.list, noList.listErr = nil, errDebugfs
	noSyms := good
	noSyms.syms, noSyms.symErr = nil, errors.New("permission denied")
	noMech := good
	noMech.anyMech = false
	noBioConfig := noBio // Debian's 6.1: no CONFIG_FAIL_MAKE_REQUEST, so no should_fail_bio
	noBioConfig.config = func(string) string { return "n" }
	const (
		slabClone = "no: clone should_failslab.constprop.0 is what callers use: overriding should_failslab does nothing"
		yes       = "yes: in kallsyms, on the error-injection list, no .constprop/.isra clone"
	)
	for name, tc := range map[string]struct {
		point  annotations.FailType
		facts  pointFacts
		want   string
		wantOK bool
	}{
		"slab: clone":                 {annotations.Slab, good, slabClone, false},
		"page: cold part is no clone": {annotations.Page, good, yes, true},
		"bio: plain":                  {annotations.Bio, good, yes, true},
		"bio: absent, not listed": {annotations.Bio, noBio, "no: not in testdata/kallsyms (on 6.11+ it needs CONFIG_FAIL_MAKE_REQUEST); " +
			"not on the error-injection list (CONFIG_FUNCTION_ERROR_INJECTION; on 6.11+ also CONFIG_FAIL_MAKE_REQUEST)", false},
		"bio: absent, config says why": {annotations.Bio, noBioConfig, "no: not in testdata/kallsyms (this kernel is built without CONFIG_FAIL_MAKE_REQUEST); " +
			"not on the error-injection list (CONFIG_FUNCTION_ERROR_INJECTION; on 6.11+ also CONFIG_FAIL_MAKE_REQUEST)", false},
		"slab: clone, list unreadable": {annotations.Slab, noList, slabClone, false},
		"page: list unreadable":        {annotations.Page, noList, "probably: in kallsyms, no clone; the error-injection list could not be read", true},
		"page: kallsyms unreadable":    {annotations.Page, noSyms, "no: cannot read testdata/kallsyms: permission denied", false},
		"slab: clone, no mechanism":    {annotations.Slab, noMech, slabClone + "; neither fmod_ret nor kprobe works on the error-injection list (see above)", false},
	} {
		t.Run(name, func(t *testing.T) {
			c := failPointCheck(annotations.FailPoints[tc.point], tc.facts)
			if c.Detail != tc.want || c.OK != tc.wantOK || c.Info {
				t.Errorf("got  %v %q\nwant %v %q", c.OK, c.Detail, tc.wantOK, tc.want)
			}
		})
	}
	if c := failPointCheck(annotations.FailPoints[annotations.Slab], good); c.Name != "failtype 0 (slab): should_failslab" {
		t.Errorf("name %q", c.Name)
	}
}

// TestFrameChecks: the call-chain function lines of kfault check, from the fixture's symbols,
// as printed: each function once, in the order given; a clone (even with the original still
// there) or a function missing from kallsyms is a [no] line and a bad frame.
func TestFrameChecks(t *testing.T) {
	fixtureKallsyms(t)
	fns := []string{"vfs_statx", "d_alloc_parallel", "do_mkdirat", "user_path_at", "filename_lookup", "vfs_statx", "ext4_file_open"}
	syms, err := LookupKernelSymbols(fns...)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		syms    map[string]KernelSymbol
		symErr  error
		want    string
		wantBad []string
	}{
		"fixture": {syms, nil, `
[no]   call-chain function vfs_statx            no: clone vfs_statx.isra.0 is what callers use: a frame on vfs_statx would never see them
[ok]   call-chain function d_alloc_parallel     yes: in kallsyms, no .constprop/.isra clone
[no]   call-chain function do_mkdirat           no: clone do_mkdirat.part.0 is what callers use: a frame on do_mkdirat would never see them
[no]   call-chain function user_path_at         no: clones user_path_at.constprop.0, user_path_at.isra.0 are what callers use: a frame on user_path_at would never see them
[no]   call-chain function filename_lookup      no: not in kallsyms (inlined or absent)
[ok]   call-chain function ext4_file_open       yes: in kallsyms, no .constprop/.isra clone
`, []string{"vfs_statx", "do_mkdirat", "user_path_at", "filename_lookup"}},
		"kallsyms unreadable": {nil, errors.New("permission denied"), `
[info] call-chain function vfs_statx            unknown: cannot read testdata/kallsyms: permission denied
[info] call-chain function d_alloc_parallel     unknown: cannot read testdata/kallsyms: permission denied
[info] call-chain function do_mkdirat           unknown: cannot read testdata/kallsyms: permission denied
[info] call-chain function user_path_at         unknown: cannot read testdata/kallsyms: permission denied
[info] call-chain function filename_lookup      unknown: cannot read testdata/kallsyms: permission denied
[info] call-chain function ext4_file_open       unknown: cannot read testdata/kallsyms: permission denied
`, nil},
	} {
		t.Run(name, func(t *testing.T) {
			checks, bad := frameChecks(fns, tc.syms, tc.symErr)
			var b strings.Builder
			Report{Checks: checks}.WriteTo(&b)
			got, _, _ := strings.Cut(b.String(), "\n\n") // the lines, without the summary
			if got = "\n" + got + "\n"; got != tc.want {
				t.Errorf("got:%s\nwant:%s", got, tc.want)
			}
			if !slices.Equal(bad, tc.wantBad) {
				t.Errorf("bad frames %q, want %q", bad, tc.wantBad)
			}
		})
	}
}

// TestReportBadFrames: the summary of a report whose call-chain functions are bad says which.
func TestReportBadFrames(t *testing.T) {
	for name, tc := range map[string]struct {
		rep  Report
		want string
	}{
		"bad frames": {Report{CanInject: true, Kinds: []string{"failtype 0 (slab)"}, Mechanisms: []Mechanism{MechanismFmodRet}, BadFrames: []string{"vfs_statx", "filename_lookup"}},
			"\nkfault can inject these faults here: failtype 0 (slab) (mechanisms: fmod_ret; auto picks fmod_ret).\nFaults with a call chain through vfs_statx, filename_lookup cannot work here: see the [no] lines above.\n"},
		"none": {Report{CanInject: true, Kinds: []string{"failtype 0 (slab)", "failtype 3 (alloc)"}, Mechanisms: []Mechanism{MechanismFmodRet, MechanismKprobe}},
			"\nkfault can inject these faults here: failtype 0 (slab), failtype 3 (alloc) (mechanisms: fmod_ret, kprobe; auto picks fmod_ret).\n"},
		"LSM hooks only": {Report{CanInject: true, Kinds: []string{"failtype 3 (alloc)", "function (security_* LSM hooks)"}, Mechanisms: []Mechanism{MechanismFmodRet}, LSMOnly: true},
			"\nkfault can inject these faults here: failtype 3 (alloc), function (security_* LSM hooks) (mechanisms: fmod_ret on LSM hooks only; auto picks fmod_ret).\n"},
		"nothing injectable": {Report{BadFrames: []string{"vfs_statx"}},
			"\nkfault cannot inject faults on this kernel: see the [no] lines above.\n"},
	} {
		t.Run(name, func(t *testing.T) {
			var b strings.Builder
			tc.rep.WriteTo(&b)
			if b.String() != tc.want {
				t.Errorf("got %q\nwant %q", b.String(), tc.want)
			}
		})
	}
}
