package predicate

import (
	"testing"

	"github.com/cilium/ebpf/btf"
)

// BenchmarkResolveCompile measures signature resolution plus compilation of the KernelChaos
// example against the kernel's BTF (the spec itself is loaded once).
func BenchmarkResolveCompile(b *testing.B) {
	spec := testSpec(b)
	if k, err := loadKernelSpecForBench(); err == nil {
		spec = k
	}
	for b.Loop() {
		sig, err := Resolve(spec, "d_alloc_parallel", "struct dentry *parent, const struct qstr *name")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Compile(sig, `STRNCMP(name->name, "bananas", 8) && parent->d_name.len > 0`, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

func loadKernelSpecForBench() (*btf.Spec, error) { return btf.LoadKernelSpec() }

// BenchmarkHostileRefused compiles each hostile predicate (safety_test.go) against the
// synthetic spec: a refusal must come before any real work, so each should take microseconds
// and few allocations even for the 58-deep pointer chain.
func BenchmarkHostileRefused(b *testing.B) {
	spec := testSpec(b)
	for name, h := range hostile {
		sig := mustResolve(b, spec, h.fn, "")
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Compile(sig, h.pred, Options{}); err == nil {
					b.Fatalf("Compile(%q) accepted a hostile predicate", h.pred)
				}
			}
		})
	}
}
