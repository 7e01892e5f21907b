package predicate

import (
	"errors"
	"testing"
)

func TestCompileFrame(t *testing.T) {
	spec := testSpec(t)
	sig, prog, err := CompileFrame(spec, 0, "d_alloc_parallel", "struct dentry *parent, const struct qstr *name", `STRNCMP(name->name, "bananas", 8)`, Options{Symbol: "f0"})
	if err != nil || sig == nil || prog == nil || prog.Symbol != "f0" {
		t.Fatalf("%v %v %v", sig, prog, err)
	}
	if _, prog, err := CompileFrame(spec, 0, "d_alloc_parallel", "", " ", Options{}); err != nil || prog != nil {
		t.Fatalf("empty predicate: %v %v", prog, err)
	}
	for _, tc := range []struct{ fn, params, pred, want string }{
		{"nope", "", "", "callchain[2].funcname: function nope: not in kernel BTF"},
		{"d_alloc_parallel", "struct inode *p", "", `callchain[2].parameters: column 1: parameter 1 (p): type "struct inode *" does not match kernel BTF's "struct dentry *" (d_alloc_parallel(struct dentry *parent, const struct qstr *name, wait_queue_head_t *wq))`},
		{"d_alloc_parallel", "", `STRNCMP(name->nme, "bananas", 8)`, `callchain[2].predicate: column 15: unknown member "nme" of struct qstr (members: hash, len, hash_len, name)`},
	} {
		_, _, err := CompileFrame(spec, 2, tc.fn, tc.params, tc.pred, Options{})
		var fe *FrameError
		if !errors.As(err, &fe) || err.Error() != tc.want {
			t.Errorf("CompileFrame(%s, %q, %q) = %v, want %s", tc.fn, tc.params, tc.pred, err, tc.want)
		}
	}
	_, _, err = CompileFrame(spec, 0, "nope", "", "", Options{})
	if !errors.Is(err, ErrNotInBTF) {
		t.Errorf("not unwrappable to ErrNotInBTF: %v", err)
	}
}
