package predicate

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
)

// refVal is the reference semantics of a subexpression (docs/predicates.md): a 64-bit value,
// whether it is unsigned 64-bit, and whether evaluating it reads unreadable memory (which
// makes the whole predicate false).
type refVal struct {
	v     uint64
	uns   bool
	fails bool
}

// randomAtoms are d_alloc_parallel subexpressions with their values in dallocMem(_, "bananas").
var randomAtoms = []struct {
	text string
	val  refVal
}{
	{`name->len`, refVal{v: 7}},
	{`name->hash`, refVal{v: 0xdeadbeef}},
	{`name->hash_len`, refVal{v: 0x00000007deadbeef, uns: true}},
	{`parent->d_flags`, refVal{v: 0x80000001}},
	{`parent->d_count`, refVal{v: 1<<64 - 1}},
	{`parent->d_parent->d_name.len`, refVal{v: 0}},
	{`name->name[1]`, refVal{v: 'a'}},
	{`name->name[3]`, refVal{v: 'a'}},
	{`parent->d_iname[7]`, refVal{v: 0}},
	{`parent->d_iname[5]`, refVal{v: 't'}},
	{`STRCMP(name->name, "bananas")`, refVal{v: 1}},
	{`STRNCMP(parent->d_iname, "kfa", 3)`, refVal{v: 1}},
	{`STRNCMP(parent->d_iname, "kfx", 3)`, refVal{v: 0}},
	{`(parent != 0)`, refVal{v: 1}},
	{`(name == NULL)`, refVal{v: 0}},
	{`7`, refVal{v: 7}},
	{`-1`, refVal{v: 1<<64 - 1}},
	{`0x7fffffff`, refVal{v: 0x7fffffff}},
	{`0xffffffffffff`, refVal{v: 0xffffffffffff}},
	{`0xffffffffffffffff`, refVal{v: 1<<64 - 1, uns: true}},
	{`'b'`, refVal{v: 'b'}},
	{`0`, refVal{v: 0}},
	{`parent->d_parent->d_parent->d_count`, refVal{fails: true}}, // reads through NULL
}

func b2ref(b bool) refVal { return refVal{v: b2u(b)} }

// randomPredicate builds a well-typed predicate and its reference value.
func randomPredicate(r *rand.Rand, depth int) (string, refVal) {
	if depth <= 0 || r.IntN(4) == 0 {
		a := randomAtoms[r.IntN(len(randomAtoms))]
		return a.text, a.val
	}
	if r.IntN(6) == 0 {
		op := []string{"!", "~", "-"}[r.IntN(3)]
		s, x := randomPredicate(r, depth-1)
		res := refVal{uns: x.uns, fails: x.fails}
		switch op {
		case "!":
			res = refVal{v: b2u(x.v == 0), fails: x.fails}
		case "~":
			res.v = ^x.v
		case "-":
			res.v = -x.v
		}
		return op + "(" + s + ")", res
	}
	ops := []string{"||", "&&", "|", "^", "&", "==", "!=", "<", "<=", ">", ">=", "+", "-", "<<", ">>"}
	op := ops[r.IntN(len(ops))]
	ls, l := randomPredicate(r, depth-1)
	rs, rv := randomPredicate(r, depth-1)
	if op == "<<" || op == ">>" {
		n := r.IntN(64)
		rs, rv = fmt.Sprint(n), refVal{v: uint64(n)}
	}
	text := "(" + ls + " " + op + " " + rs + ")"
	uns := l.uns || rv.uns
	fails := l.fails || rv.fails
	lt := int64(l.v) < int64(rv.v)
	if uns {
		lt = l.v < rv.v
	}
	eq := l.v == rv.v
	var res refVal
	switch op {
	case "||":
		if l.fails || l.v != 0 {
			return text, refVal{v: 1, fails: l.fails}
		}
		return text, refVal{v: b2u(rv.v != 0), fails: rv.fails}
	case "&&":
		if l.fails || l.v == 0 {
			return text, refVal{v: 0, fails: l.fails}
		}
		return text, refVal{v: b2u(rv.v != 0), fails: rv.fails}
	case "|":
		res = refVal{v: l.v | rv.v, uns: uns}
	case "^":
		res = refVal{v: l.v ^ rv.v, uns: uns}
	case "&":
		res = refVal{v: l.v & rv.v, uns: uns}
	case "+":
		res = refVal{v: l.v + rv.v, uns: uns}
	case "-":
		res = refVal{v: l.v - rv.v, uns: uns}
	case "<<":
		res = refVal{v: l.v << rv.v, uns: l.uns}
	case ">>":
		res = refVal{v: uint64(int64(l.v) >> rv.v), uns: l.uns}
		if l.uns {
			res.v = l.v >> rv.v
		}
	case "==":
		res = b2ref(eq)
	case "!=":
		res = b2ref(!eq)
	case "<":
		res = b2ref(lt)
	case "<=":
		res = b2ref(lt || eq)
	case ">":
		res = b2ref(!lt && !eq)
	case ">=":
		res = b2ref(!lt)
	}
	res.fails = fails
	return text, res
}

// TestRandomPredicates compiles a few hundred random well-typed predicates, runs each on fake
// objects (both argument sources) and compares the result with the reference semantics.
func TestRandomPredicates(t *testing.T) {
	needExec(t)
	sig := mustResolve(t, testSpec(t), "d_alloc_parallel", "")
	r := rand.New(rand.NewPCG(1, 2))
	n := 400
	if testing.Short() {
		n = 50
	}
	const batch = 50
	for i := 0; i < n; i += batch {
		src := ArgSource((i / batch) & 1)
		var preds []string
		var refs []refVal
		for range batch {
			pred, ref := randomPredicate(r, 5)
			preds, refs = append(preds, pred), append(refs, ref)
		}
		res := runBatch(t, sig, preds, src, dallocMem(src, "bananas"))
		for k, ref := range refs {
			want := uint32(0)
			if !ref.fails && ref.v != 0 {
				want = 1
			}
			if res[k] != want {
				t.Errorf("%v %s = %d, want %d (reference %+v)", src, preds[k], res[k], want, ref)
			}
		}
	}
}

// FuzzExec is differential fuzzing: the inputs seed the generator of well-typed predicates,
// which must compile, pass the verifier and agree with the reference semantics.
func FuzzExec(f *testing.F) {
	f.Add(uint64(1), uint64(2), uint8(5))
	f.Add(uint64(42), uint64(7), uint8(7))
	f.Fuzz(func(t *testing.T, s1, s2 uint64, depth uint8) {
		if os.Getenv("KFAULT_FUZZ_LOAD") != "1" {
			t.Skip("FuzzExec loads a program per input: set KFAULT_FUZZ_LOAD=1 (see fuzzLoad)")
		}
		needExec(t)
		sig := mustResolve(t, testSpec(t), "d_alloc_parallel", "")
		r := rand.New(rand.NewPCG(s1, s2))
		pred, ref := randomPredicate(r, int(depth%6))
		want := uint32(0)
		if !ref.fails && ref.v != 0 {
			want = 1
		}
		src := ArgSource(s1 & 1)
		if got := run(t, sig, pred, src, dallocMem(src, "bananas")); got != want {
			t.Errorf("%v %s = %d, want %d (reference %+v)", src, pred, got, want, ref)
		}
	})
}
