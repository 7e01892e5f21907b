package bpf

import (
	"errors"
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
	names := make([]string, len(annotations.FailPoints))
	for i, fp := range annotations.FailPoints {
		names[i] = fp.Function
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
		"slab: clone, list unreadable": {annotations.Slab, noList, slabClone, false},
		"page: list unreadable":        {annotations.Page, noList, "probably: in kallsyms, no clone; the error-injection list could not be read", true},
		"page: kallsyms unreadable":    {annotations.Page, noSyms, "no: cannot read testdata/kallsyms: permission denied", false},
		"slab: clone, no mechanism":    {annotations.Slab, noMech, slabClone + "; no override mechanism works (see above)", false},
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
