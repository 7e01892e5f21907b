package bpf

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// maxSuggestions is how many names a "did you mean" lists at most.
const maxSuggestions = 5

// How a candidate resembles the name asked for, best first.
const (
	matchLayer   = iota // a layer of the system call of that name (or sys_name): __x64_sys_read, ksys_read, vfs_read for read
	matchVariant        // the name is its first words, leading underscores aside: bio_alloc_bioset, __kmalloc_noprof
	matchNear           // one edit away: should_failslab for should_failsab, read_pages for read_page
	matchWord           // the name is whole _-separated words of it further on: btrfs_bio_alloc
	matchEdit           // a few edits away: do_syslog for do_sys_opn
	matchAffix          // it starts or ends with the name: should_failslab for should_fail
	matchNone
)

// syscallLayers prefix the functions that implement a system call, from the entry points down.
var syscallLayers = []string{"__x64_sys_", "__arm64_sys_", "__se_sys_", "__do_sys_", "sys_", "ksys_", "do_sys_", "vfs_"}

// suggest picks up to maxSuggestions candidates that resemble name, best first: by kind of
// resemblance (matchLayer first), then by edit distance (Levenshtein, at most
// max(1, len(name)/3)), then the shorter name, then byte order. The order of candidates does not
// matter. It runs on refusals only, but over every function of the kernel's BTF: a few
// milliseconds for 80 000 names.
func suggest(name string, candidates []string) []string {
	if name == "" {
		return nil
	}
	type hit struct {
		s           string
		class, dist int
	}
	order := func(a, b hit) int {
		return cmp.Or(cmp.Compare(a.class, b.class), cmp.Compare(a.dist, b.dist),
			cmp.Compare(len(a.s), len(b.s)), strings.Compare(a.s, b.s))
	}
	var best []hit // sorted by order, at most maxSuggestions
	bound := max(1, len(name)/3)
	var row []int // levenshtein's scratch
	var counts [256]int
	for i := range len(name) {
		counts[name[i]]++
	}
	// Every match but an edit contains core: the shorter of the name without leading
	// underscores (variants) and without "sys_" (system call layers), both suffixes of name.
	core := strings.TrimLeft(name, "_")
	if base := strings.TrimPrefix(name, "sys_"); len(base) < len(core) {
		core = base
	}
	for _, c := range candidates {
		if c == name {
			continue
		}
		h := hit{s: c, class: matchNone}
		hasCore := strings.Contains(c, core)
		if hasCore {
			h.class = prefixMatch(c, name)
		}
		if h.class == matchNone && len(c) >= len(name)-bound && len(c) <= len(name)+bound && bagDistance(&counts, name, c, bound) <= bound {
			var d int
			switch d, row = levenshtein(name, c, bound, row); {
			case d <= 1:
				h.class, h.dist = matchNear, d
			case d <= bound:
				h.class, h.dist = matchEdit, d
			}
		}
		if h.class == matchNone && hasCore {
			h.class = wordMatch(c, name)
		}
		if h.class == matchNone || len(best) == maxSuggestions && order(h, best[len(best)-1]) >= 0 {
			continue
		}
		i, _ := slices.BinarySearchFunc(best, h, order)
		best = slices.Insert(best, i, h)
		best = best[:min(len(best), maxSuggestions)]
	}
	out := make([]string, len(best))
	for i, h := range best {
		out[i] = h.s
	}
	return out
}

// prefixMatch says whether c is a system call layer of name (matchLayer), or a variant of it
// (matchVariant), else matchNone.
func prefixMatch(c, name string) int {
	if base := strings.TrimPrefix(name, "sys_"); len(c) > len(base) && strings.HasSuffix(c, base) &&
		slices.Contains(syscallLayers, c[:len(c)-len(base)]) {
		return matchLayer
	}
	tc, tn := strings.TrimLeft(c, "_"), strings.TrimLeft(name, "_")
	if tn != "" && len(tc) > len(tn) && strings.HasPrefix(tc, tn) && tc[len(tn)] == '_' {
		return matchVariant
	}
	return matchNone
}

// wordMatch says whether c contains name between word boundaries (c's ends, or '_'):
// matchWord, else whether c starts or ends with name: matchAffix, else matchNone.
func wordMatch(c, name string) int {
	class := matchNone
	if len(c) <= len(name) {
		return class
	}
	if strings.HasPrefix(c, name) || strings.HasSuffix(c, name) {
		class = matchAffix
	}
	for from := 0; ; {
		i := strings.Index(c[from:], name)
		if i < 0 {
			return class
		}
		i += from
		end := i + len(name)
		if (i == 0 || c[i-1] == '_') && (end == len(c) || c[end] == '_') {
			return matchWord
		}
		from = i + 1
	}
}

// bagDistance is a lower bound of the edit distance between name and c, cheap to compute:
// the larger of the number of c's bytes that name lacks and of name's bytes that c lacks, as
// multisets (an edit lowers each by at most one); or some value above bound as soon as it is
// sure to exceed it. counts holds name's byte counts, and holds them again on return.
func bagDistance(counts *[256]int, name, c string, bound int) int {
	extra, n := 0, 0 // bytes of c beyond name's counts, of the first n bytes of c
	for n < len(c) && extra <= bound {
		if counts[c[n]] <= 0 {
			extra++
		}
		counts[c[n]]--
		n++
	}
	for i := range n {
		counts[c[i]]++
	}
	if n < len(c) {
		return extra
	}
	return max(extra, len(name)-(len(c)-extra))
}

// levenshtein is the edit distance between a and b when it is at most bound, else some value
// above bound. It computes only the cells of the diagonal band that can stay within bound,
// and stops as soon as a row is all above it. row is scratch space, returned for reuse.
func levenshtein(a, b string, bound int, row []int) (int, []int) {
	if len(a) > len(b) {
		a, b = b, a
	}
	if len(b)-len(a) > bound {
		return bound + 1, row
	}
	// row[i] is the distance between a[:i] and b[:j], for the j of the loop; a cell outside
	// the band holds a value above bound.
	row = slices.Grow(row[:0], len(a)+1)[:len(a)+1]
	for i := range row {
		row[i] = min(i, bound+1)
	}
	for j := 1; j <= len(b); j++ {
		lo, hi := max(1, j-bound), min(len(a), j+bound)
		diag := row[lo-1] // distance between a[:i-1] and b[:j-1]
		if lo == 1 {
			row[0] = min(j, bound+1)
		} else {
			row[lo-1] = bound + 1
		}
		rowMin := row[lo-1]
		for i := lo; i <= hi; i++ {
			d := diag
			if a[i-1] != b[j-1] {
				d++
			}
			d = min(d, row[i]+1, row[i-1]+1)
			diag, row[i] = row[i], d
			rowMin = min(rowMin, d)
		}
		if rowMin > bound {
			return bound + 1, row
		}
	}
	return row[len(a)], row
}

// didYouMean adds to err the candidates that resemble name, if any ("...; did you mean
// vfs_read, ksys_read, __x64_sys_read?"), keeping err wrapped.
func didYouMean(err error, name string, candidates []string) error {
	s := suggest(name, candidates)
	if len(s) == 0 {
		return err
	}
	return fmt.Errorf("%w; did you mean %s?", err, strings.Join(s, ", "))
}
