// Package figures is what make bench's figures have in common: the paired ratio with its
// bootstrap interval, and the one line format (Print) from which test/bench/run makes the
// summary table.
package figures

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Prefix starts every figure line; test/bench/run collects the lines that start with it.
const Prefix = "figure\t"

// Print writes one row of make bench's summary table to standard output: what was measured,
// the figure, and its 95% interval or a remark ("" for none). Tabs separate the columns.
func Print(what, figure, interval string) {
	clean := func(s string) string { return strings.NewReplacer("\t", " ", "\n", " ").Replace(s) }
	fmt.Printf("%s%s\t%s\t%s\n", Prefix, clean(what), clean(figure), clean(interval))
}

// Ratio is the median of paired ratios with its 95% bootstrap interval.
type Ratio struct{ Median, Lo, Hi float64 }

// Interval formats the interval for Print.
func (r Ratio) Interval() string { return fmt.Sprintf("[%.3f, %.3f]", r.Lo, r.Hi) }

// Paired is the median of with[i]/base[i] and a 95% percentile bootstrap interval of that
// median (2000 resamples of the pairs, fixed seed: the same data give the same interval). Pairs
// measured one after the other, alternating, let the drift of an emulated machine hit both.
func Paired(base, with []time.Duration) Ratio {
	ratios := make([]float64, len(base))
	for i := range base {
		ratios[i] = float64(with[i]) / float64(base[i])
	}
	medianOf := func(xs []float64) float64 {
		s := slices.Clone(xs)
		slices.Sort(s)
		if n := len(s); n%2 == 0 {
			return (s[n/2-1] + s[n/2]) / 2
		}
		return s[len(s)/2]
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const resamples = 2000
	meds := make([]float64, resamples)
	sample := make([]float64, len(ratios))
	for i := range meds {
		for j := range sample {
			sample[j] = ratios[rng.IntN(len(ratios))]
		}
		meds[i] = medianOf(sample)
	}
	slices.Sort(meds)
	return Ratio{medianOf(ratios), meds[resamples*25/1000], meds[resamples*975/1000-1]}
}
