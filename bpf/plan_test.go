package bpf

import (
	"reflect"
	"testing"

	"github.com/kfault/kfault/annotations"
)

// TestPlanOnly: the faults a select rule chose keep their prepared rules, in the order asked.
func TestPlanOnly(t *testing.T) {
	faults := []annotations.Fault{{FailType: annotations.Slab}, {FailType: annotations.Page}, {FailType: annotations.Bio}}
	rules := []plannedRule{{fns: []string{"should_failslab"}}, {fns: []string{"should_fail_alloc_page"}}, {fns: []string{"should_fail_bio"}}}
	for name, tc := range map[string]struct {
		plan    Plan
		indexes []int
		want    Plan
	}{
		"prepared":         {Plan{faults, rules}, []int{2, 0}, Plan{[]annotations.Fault{faults[2], faults[0]}, []plannedRule{rules[2], rules[0]}}},
		"none":             {Plan{faults, rules}, nil, Plan{[]annotations.Fault{}, []plannedRule{}}},
		"not from Prepare": {Plan{Faults: faults}, []int{1}, Plan{Faults: []annotations.Fault{faults[1]}}},
	} {
		t.Run(name, func(t *testing.T) {
			if got := tc.plan.Only(tc.indexes); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Only(%v) = %+v, want %+v", tc.indexes, got, tc.want)
			}
		})
	}
}

// TestPlanResources: hooks, chains and frames are counted once however many faults share them,
// and a last frame on the hooked function without a predicate is not a frame (as planChain).
func TestPlanResources(t *testing.T) {
	mkdir := func(chain ...annotations.Frame) annotations.Fault {
		return annotations.Fault{Function: "__x64_sys_mkdir", Errno: 13, CallChain: chain}
	}
	a, b := annotations.Frame{FuncName: "do_mkdirat"}, annotations.Frame{FuncName: "vfs_mkdir", Predicate: "1"}
	self := annotations.Frame{FuncName: "__x64_sys_mkdir"}
	for name, tc := range map[string]struct {
		faults                []annotations.Fault
		hooks, chains, frames int
	}{
		"no chain":            {[]annotations.Fault{{FailType: annotations.Slab}}, 1, 0, 0},
		"two hooks":           {[]annotations.Fault{{FailType: annotations.Slab}, mkdir()}, 2, 0, 0},
		"one chain":           {[]annotations.Fault{mkdir(a, b)}, 1, 1, 2},
		"shared chain":        {[]annotations.Fault{mkdir(a, b), mkdir(a, b)}, 1, 1, 2},
		"shared frames":       {[]annotations.Fault{mkdir(a, b), mkdir(b, a), mkdir(a)}, 1, 3, 2},
		"hooked frame":        {[]annotations.Fault{mkdir(a, self)}, 1, 1, 1},
		"only hooked frame":   {[]annotations.Fault{mkdir(self)}, 1, 0, 0},
		"predicate differs":   {[]annotations.Fault{mkdir(b), mkdir(annotations.Frame{FuncName: "vfs_mkdir", Predicate: "2"})}, 1, 2, 2},
		"unknown failtype":    {[]annotations.Fault{{FailType: 9}}, 0, 0, 0},
		"frame with its self": {[]annotations.Fault{mkdir(annotations.Frame{FuncName: "__x64_sys_mkdir", Predicate: "1"})}, 1, 1, 1},
	} {
		t.Run(name, func(t *testing.T) {
			r := Plan{Faults: tc.faults}.Resources()
			if len(r.Hooks) != tc.hooks || len(r.Chains) != tc.chains || len(r.Frames) != tc.frames {
				t.Fatalf("%d hooks, %d chains, %d frames; want %d, %d, %d: %+v", len(r.Hooks), len(r.Chains), len(r.Frames), tc.hooks, tc.chains, tc.frames, r)
			}
		})
	}
}
