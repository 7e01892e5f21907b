package bpf

import (
	"reflect"
	"testing"

	"github.com/kfault/kfault/annotations"
)

// TestPlanOnly: the faults a select rule chose keep their prepared rules, in the order asked.
func TestPlanOnly(t *testing.T) {
	faults := []annotations.Fault{{FailType: annotations.Slab}, {FailType: annotations.Page}, {FailType: annotations.Bio}}
	rules := []plannedRule{{fn: "should_failslab"}, {fn: "should_fail_alloc_page"}, {fn: "should_fail_bio"}}
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
