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
