package bpf

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// kernelishNames are function names as a kernel's BTF has them, near the names tested below.
var kernelishNames = []string{
	"vfs_read", "ksys_read", "__x64_sys_read", "__ia32_sys_read", "proc_sys_read", "seq_read",
	"read_pages", "readahead_expand", "thread_group_exited", "spread_tasks", "vfs_readv",
	"bio_alloc_bioset", "btrfs_bio_alloc", "bio_alloc_clone", "bio_kmalloc", "bio_add_page",
	"should_failslab", "should_fail_bio", "should_fail_alloc_page", "should_fail_ex",
	"d_alloc", "d_alloc_parallel", "d_alloc_name", "vfs_mkdir", "__x64_sys_mkdir", "vfs_rmdir",
	"__kmalloc_noprof", "kmalloc_reserve", "kmalloc_size_roundup", "ring_buffer_read_page",
}

func TestSuggest(t *testing.T) {
	for name, want := range map[string][]string{
		// System call layers first, shortest first; then the name's variants (read_pages), then
		// names with it as a word further on.
		"read":     {"vfs_read", "ksys_read", "__x64_sys_read", "read_pages", "seq_read"},
		"sys_read": {"vfs_read", "ksys_read", "__x64_sys_read", "proc_sys_read", "__ia32_sys_read"},
		// bio_alloc is an inline wrapper of bio_alloc_bioset on 6.1: variants, then names with
		// it as a word, then names 2 and 3 edits away.
		"bio_alloc": {"bio_alloc_clone", "bio_alloc_bioset", "btrfs_bio_alloc", "bio_kmalloc", "d_alloc"},
		"kmalloc":   {"kmalloc_reserve", "__kmalloc_noprof", "kmalloc_size_roundup", "bio_kmalloc", "d_alloc"},
		// Typos: nearest first (1, 3 and 4 edits).
		"should_failsab":  {"should_failslab", "should_fail_ex", "should_fail_bio"},
		"d_alloc_paralel": {"d_alloc_parallel", "d_alloc_name"},
		"vfs_mkdri":       {"vfs_mkdir"}, // vfs_rmdir is 4 edits away
		"mkdri":           nil,           // 2 edits from mkdir, and at most 1 allowed for 5 letters
		// One edit goes before words; thread_group_exited and readahead_expand do not have
		// read_page as whole words.
		"read_page":        {"read_pages", "ring_buffer_read_page"},
		"should_fail":      {"should_fail_ex", "should_fail_bio", "should_fail_alloc_page", "should_failslab"},
		"no_such_function": nil,
		"xyzzy":            nil,
		"":                 nil,
		// The name itself is not suggested (the BTF has it: nothing was refused).
		"vfs_readv": {"vfs_read"},
	} {
		t.Run(name, func(t *testing.T) {
			if got := suggest(name, kernelishNames); !slices.Equal(got, want) {
				t.Errorf("suggest(%q) = %q, want %q", name, got, want)
			}
		})
	}
}

// Whole words go before a mere start or end (kmalloc, allocate), and a name inside a word is
// no match (reallocate).
func TestSuggestWords(t *testing.T) {
	names := []string{"reallocate", "allocate", "kmalloc", "page_alloc_init"}
	want := []string{"page_alloc_init", "kmalloc", "allocate"}
	if got := suggest("alloc", names); !slices.Equal(got, want) {
		t.Errorf("suggest(alloc) = %q, want %q", got, want)
	}
}

// At most maxSuggestions, the best ones, whatever the order of the candidates.
func TestSuggestCap(t *testing.T) {
	var names []string
	for i := range 20 {
		names = append(names, fmt.Sprintf("alloc_%c%s", 'z'-i, strings.Repeat("x", i%4)))
	}
	want := []string{"alloc_j", "alloc_n", "alloc_r", "alloc_v", "alloc_z"} // the shortest, in byte order
	for range 10 {
		rand.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
		if got := suggest("alloc", names); !slices.Equal(got, want) {
			t.Fatalf("suggest(alloc) = %q, want %q", got, want)
		}
	}
}

func TestDidYouMean(t *testing.T) {
	base := fmt.Errorf("function read: %w", errNotFoundForTest)
	err := didYouMean(base, "read", kernelishNames)
	if want := "function read: not found; did you mean vfs_read, ksys_read, __x64_sys_read, read_pages, seq_read?"; err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
	if !errors.Is(err, errNotFoundForTest) {
		t.Errorf("%v does not wrap the sentinel", err)
	}
	if err := didYouMean(base, "xyzzy", kernelishNames); err != base {
		t.Errorf("no candidate: got %q, want the error unchanged", err)
	}
}

var errNotFoundForTest = errors.New("not found")

// levenshtein, banded and bounded, agrees with the textbook algorithm within its bound.
func TestLevenshtein(t *testing.T) {
	full := func(a, b string) int {
		prev, cur := make([]int, len(b)+1), make([]int, len(b)+1)
		for j := range prev {
			prev[j] = j
		}
		for i := 1; i <= len(a); i++ {
			cur[0] = i
			for j := 1; j <= len(b); j++ {
				sub := prev[j-1]
				if a[i-1] != b[j-1] {
					sub++
				}
				cur[j] = min(sub, prev[j]+1, cur[j-1]+1)
			}
			prev, cur = cur, prev
		}
		return prev[len(b)]
	}
	word := func(r *rand.Rand) string {
		b := make([]byte, r.IntN(9))
		for i := range b {
			b[i] = "ab_"[r.IntN(3)]
		}
		return string(b)
	}
	r := rand.New(rand.NewPCG(1, 2))
	var row []int
	for range 20000 {
		a, b, bound := word(r), word(r), r.IntN(5)
		var got int
		got, row = levenshtein(a, b, bound, row)
		want := full(a, b)
		if want <= bound && got != want || want > bound && got <= bound {
			t.Fatalf("levenshtein(%q, %q, %d) = %d, want %d", a, b, bound, got, want)
		}
		// bagDistance, the filter before levenshtein, never prunes a name within the bound,
		// and leaves its counts as it found them.
		var counts [256]int
		for i := range len(a) {
			counts[a[i]]++
		}
		before := counts
		if lb := bagDistance(&counts, a, b, bound); want <= bound && lb > want {
			t.Fatalf("bagDistance(%q, %q, %d) = %d, above the distance %d", a, b, bound, lb, want)
		}
		if counts != before {
			t.Fatalf("bagDistance(%q, %q, %d) changed the counts", a, b, bound)
		}
	}
	for _, tc := range []struct {
		a, b string
		want int
	}{{"should_failsab", "should_failslab", 1}, {"kitten", "sitting", 3}, {"", "abc", 3}, {"read", "read", 0}} {
		if got, _ := levenshtein(tc.a, tc.b, 5, nil); got != tc.want {
			t.Errorf("levenshtein(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// syntheticNames are n distinct kernel-like function names.
func syntheticNames(n int) []string {
	words := strings.Fields("vfs ksys do sys bio blk mq alloc free read write open close page folio " +
		"cache slab kmem inode dentry file ext4 xfs btrfs nfs net sock skb tcp udp ip dev irq " +
		"sched task cgroup bpf prog map lock unlock init exit get put set clear start stop submit " +
		"end queue flush sync async iter node zone lru fault mmap fs mount super block buffer")
	r := rand.New(rand.NewPCG(3, 4))
	seen := map[string]bool{}
	out := make([]string, 0, n)
	for len(out) < n {
		parts := make([]string, 2+r.IntN(3))
		for i := range parts {
			parts[i] = words[r.IntN(len(words))]
		}
		s := strings.Join(parts, "_")
		if r.IntN(8) == 0 {
			s = "__" + s
		}
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// BenchmarkSuggest: suggest over 80 000 names, more than a kernel's BTF has functions.
func BenchmarkSuggest(b *testing.B) {
	names := syntheticNames(80000)
	for _, name := range []string{"read", "bio_alloc", "should_failsab", "d_alloc_paralel", "no_such_function_at_all"} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				suggest(name, names)
			}
		})
	}
}
