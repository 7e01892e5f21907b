package figures

import (
	"testing"
	"time"
)

func TestPairedRatio(t *testing.T) {
	ms := func(xs ...int) []time.Duration {
		var ds []time.Duration
		for _, x := range xs {
			ds = append(ds, time.Duration(x)*time.Millisecond)
		}
		return ds
	}
	for name, tc := range map[string]struct {
		base, with  []time.Duration
		med, lo, hi float64
	}{
		"same":          {ms(10, 20, 30, 40), ms(10, 20, 30, 40), 1, 1, 1},
		"twice":         {ms(10, 20, 30), ms(20, 40, 60), 2, 2, 2},
		"one outlier":   {ms(10, 10, 10, 10, 10), ms(10, 10, 10, 10, 50), 1, 1, 5},
		"spread, odd n": {ms(10, 10, 10), ms(9, 10, 12), 1, 0.9, 1.2},
	} {
		r := Paired(tc.base, tc.with)
		med, lo, hi := r.Median, r.Lo, r.Hi
		near := func(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }
		if !near(med, tc.med) || lo < tc.lo-1e-9 || hi > tc.hi+1e-9 || lo > med || hi < med {
			t.Errorf("%s: median %.3f [%.3f, %.3f], want median %.3f within [%.3f, %.3f]", name, med, lo, hi, tc.med, tc.lo, tc.hi)
		}
	}
}
