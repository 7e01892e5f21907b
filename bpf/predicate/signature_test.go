package predicate

import (
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// signatureString renders a resolved signature in C, e.g. "should_fail_bio(struct bio *bio)",
// with the parameter names the user gave and the kernel's types.
func signatureString(s *Signature) string {
	parts := make([]string, len(s.Params))
	for i, p := range s.Params {
		parts[i] = declString(p.Type, p.Name)
	}
	return s.FuncName + "(" + strings.Join(parts, ", ") + ")"
}

func TestResolve(t *testing.T) {
	spec := testSpec(t)
	sig := mustResolve(t, spec, "d_alloc_parallel", "")
	if got, want := signatureString(sig), "d_alloc_parallel(struct dentry *parent, const struct qstr *name, wait_queue_head_t *wq)"; got != want {
		t.Errorf("signature %q, want %q", got, want)
	}
	for _, tc := range []struct{ fn, params, want string }{
		{"d_alloc_parallel", "struct dentry *parent, const struct qstr *name", "d_alloc_parallel(struct dentry *parent, const struct qstr *name)"},
		{"d_alloc_parallel", "struct dentry *p, struct qstr *n, wait_queue_head_t *w", "d_alloc_parallel(struct dentry *p, const struct qstr *n, wait_queue_head_t *w)"},
		{"d_alloc_parallel", "struct dentry *p, const struct qstr *n, struct wait_queue_head *w", "d_alloc_parallel(struct dentry *p, const struct qstr *n, wait_queue_head_t *w)"},
		{"d_alloc_parallel", "struct dentry * const p", "d_alloc_parallel(struct dentry *p)"},
		{"should_failslab", "struct kmem_cache *s, gfp_t gfpflags", "should_failslab(struct kmem_cache *s, gfp_t gfpflags)"},
		{"should_failslab", "struct kmem_cache *s, unsigned int flags", "should_failslab(struct kmem_cache *s, gfp_t flags)"},
		{"should_failslab", "struct kmem_cache *s, u32 flags", "should_failslab(struct kmem_cache *s, gfp_t flags)"},
		{"ints", "int a, unsigned long b, char c, short d, bool e, long f, u64 g", "ints(int a, long unsigned int b, char c, short int d, _Bool e, long int f, u64 g)"},
		{"ints", "signed int a, unsigned long long b, signed char c, short int d, _Bool e, long long f, unsigned long g", "ints(int a, long unsigned int b, char c, short int d, _Bool e, long int f, u64 g)"},
		{"strs", "const char *s, char **argv, const char __user *u", "strs(const char *s, char **argv, const char *u)"},
		{"strs", "char s[], char *argv[]", "strs(const char *s, char **argv)"},
		{"should_fail_bio", "void", "should_fail_bio()"},
	} {
		sig, err := Resolve(spec, tc.fn, tc.params)
		if err != nil {
			t.Errorf("Resolve(%s, %q): %v", tc.fn, tc.params, err)
			continue
		}
		if got := signatureString(sig); got != tc.want {
			t.Errorf("Resolve(%s, %q) = %q, want %q", tc.fn, tc.params, got, tc.want)
		}
	}
}

func TestResolveErrors(t *testing.T) {
	spec := testSpec(t)
	_, err := Resolve(spec, "no_such_function", "")
	if !errors.Is(err, ErrNotInBTF) || err.Error() != "function no_such_function: not in kernel BTF" {
		t.Errorf("unknown function: %v", err)
	}
	for _, tc := range []struct {
		fn, params string
		col        int
		msg        string
	}{
		{"d_alloc_parallel", "struct inode *parent", 1, `parameter 1 (parent): type "struct inode *" does not match kernel BTF's "struct dentry *" (d_alloc_parallel(struct dentry *parent, const struct qstr *name, wait_queue_head_t *wq))`},
		{"d_alloc_parallel", "struct dentry *parent, struct qstr name", 24, `parameter 2 (name): type "struct qstr" does not match kernel BTF's "const struct qstr *"`},
		{"d_alloc_parallel", "struct dentry *parent, const struct qstr **name", 24, `does not match`},
		{"d_alloc_parallel", "struct dentry *a, const struct qstr *b, wait_queue_head_t *c, int d", 63, `4 parameters given, but d_alloc_parallel has 3 in kernel BTF`},
		{"d_alloc_parallel", "struct dentry *, const struct qstr *name", 1, `parameter 1 (struct dentry *) has no name`},
		{"d_alloc_parallel", "struct dentry *a, const struct qstr *a", 19, `duplicate parameter name "a"`},
		{"should_failslab", "struct kmem_cache *s, int flags", 23, `type "int" does not match kernel BTF's "gfp_t"`},
		{"should_failslab", "struct kmem_cache *s, unsigned long flags", 23, `does not match`},
		{"should_failslab", "struct kmem_cache *s, size_t flags", 23, `does not match`},
		{"ints", "unsigned int a", 1, `does not match`},
		{"d_alloc_parallel", "struct dentry *parent,", 23, `expected a parameter type`},
		{"d_alloc_parallel", "struct *parent", 8, `expected a name after "struct"`},
		{"d_alloc_parallel", "struct dentry *parent; int x", 22, `unexpected ";"`},
		{"should_fail_bio", "void x", 1, `cannot have type void`},
	} {
		_, err := Resolve(spec, tc.fn, tc.params)
		var pe *Error
		if !errors.As(err, &pe) {
			t.Errorf("Resolve(%s, %q): error %v, want *Error", tc.fn, tc.params, err)
			continue
		}
		if pe.Column != tc.col || !strings.Contains(pe.Msg, tc.msg) {
			t.Errorf("Resolve(%s, %q) = %q (column %d), want column %d and %q", tc.fn, tc.params, pe.Msg, pe.Column, tc.col, tc.msg)
		}
	}
}

// kernelSpec returns the running kernel's BTF or skips.
func kernelSpec(t *testing.T) *btf.Spec {
	t.Helper()
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Skipf("no kernel BTF: %v", err)
	}
	return spec
}

func TestKernelBTF(t *testing.T) {
	spec := kernelSpec(t)
	sig, err := Resolve(spec, "d_alloc_parallel", "struct dentry *parent, const struct qstr *name")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Resolve(spec, "d_alloc_parallel", ""); err != nil {
		t.Fatal(err)
	}
	// struct qstr: the anonymous union of {hash, len} and hash_len, then name at offset 8.
	var qstr *btf.Struct
	if err := spec.TypeByName("qstr", &qstr); err != nil {
		t.Fatal(err)
	}
	m, ok := findMember(qstr, "name")
	if !ok || m.Offset != 64 {
		t.Errorf("qstr.name: %v %v", m, ok)
	}
	m, ok = findMember(qstr, "len")
	if !ok || m.Offset != 32 {
		t.Errorf("qstr.len: %v %v", m, ok)
	}
	_, err = Compile(sig, `STRNCMP(name->nme, "bananas", 8)`, Options{})
	if err == nil || err.Error() != `column 15: unknown member "nme" of struct qstr (members: hash, len, hash_len, name)` {
		t.Errorf("unknown member: %v", err)
	}
	for _, tc := range []struct{ fn, pred string }{
		{"d_alloc_parallel", `STRNCMP(name->name, "bananas", 8)`},
		{"d_alloc_parallel", `parent->d_name.len == 4 && STRCMP(parent->d_name.name, "tmp") && parent->d_sb->s_magic == 0x01021994`},
		{"should_fail_bio", `bio->bi_opf & 1`},
		{"should_fail_bio", `(bio->bi_opf & 0xff) == 1 && bio->bi_iter.bi_size > 4096`},
	} {
		sig, err := Resolve(spec, tc.fn, "")
		if err != nil {
			t.Errorf("Resolve(%s): %v", tc.fn, err)
			continue
		}
		for _, src := range []ArgSource{Tracing, Kprobe} {
			if _, err := Compile(sig, tc.pred, Options{ArgSource: src}); err != nil {
				t.Errorf("Compile(%s, %q, %v): %v", tc.fn, tc.pred, src, err)
			}
		}
	}
}
