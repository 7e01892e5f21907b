package predicate

import (
	"fmt"

	"github.com/cilium/ebpf/btf"
)

// Safety rules. A predicate is written by whoever can create a pod, and runs with the rights of
// kfault, in the kernel. What it may reach is kernel data that BTF describes, found from the
// function's arguments; never kernel addresses, and never memory chosen by arithmetic. The rules
// (docs/predicates.md, "Safety rules"):
//
//  1. Memory is reached only through BTF members (-> and .), at offsets BTF gives.
//  2. Indexes are constants (after folding), within the bounds of a BTF array; a pointer, or an
//     array of unknown length, only within its first PointerWindow bytes.
//  3. One access path follows at most MaxDerefs pointers.
//  4. A pointer's value is never observable: a pointer may only be tested against 0 (== 0,
//     != 0, !p, p as a condition). STRNCMP and STRCMP read only char pointers and char arrays.
const (
	// MaxDerefs is the most pointers that one access path may follow. Each -> follows the
	// pointer on its left, each [] on a pointer follows that pointer, and STRNCMP/STRCMP
	// follow a char pointer (not a char array, which is inside an object already reached).
	// `a->b->c->d->e` follows four: a, a->b, a->b->c and a->b->c->d.
	MaxDerefs = 4
	// PointerWindow is how many bytes at a pointer (or at an array of unknown length) a
	// constant index may reach: p[i] is allowed when (i+1)*sizeof(*p) <= PointerWindow, and
	// p[0] always. BTF does not say how large the object behind a pointer is; this is the same
	// window that STRNCMP/STRCMP may read (a 63-byte literal plus its NUL).
	PointerWindow = MaxStringLen + 1
)

// checkDerefs refuses an access path that follows more than MaxDerefs pointers; n is the
// number it follows with the operator at offset at.
func (g *gen) checkDerefs(at, n int, op string) error {
	if n > MaxDerefs {
		return g.errAt(at, "too many pointer dereferences: this %s follows the %s pointer of one access path, and a predicate may follow at most %d (each -> and each [] on a pointer follows one)", op, ordinal(n), MaxDerefs)
	}
	return nil
}

// checkIndex refuses an index that is not a constant within bounds, and returns the constant.
// nelems is the array's length, or -1 for a pointer or an array of unknown length; size is the
// element size in bytes.
func (g *gen) checkIndex(ix *Index, nelems int64, size int) (int64, error) {
	if !g.isConst(ix.Index) {
		return 0, g.errAt(ix.Index.Pos(), "an index must be a constant: %s is computed at run time, and a computed index could reach any kernel address", exprName(ix.Index))
	}
	v, t, err := g.constant(ix.Index)
	if err != nil {
		return 0, err
	}
	if classify(t) != clInt {
		return 0, g.errAt(ix.Index.Pos(), "index must be an integer")
	}
	i := int64(v)
	if nelems > 0 {
		if i < 0 || i >= nelems {
			return 0, g.errAt(ix.Index.Pos(), "index %s out of range for %s (%d elements): an index must lie within the array's bounds", ix.Index.String(), exprName(ix.X), nelems)
		}
		return i, nil
	}
	last := int64(PointerWindow/size - 1)
	if last < 0 {
		last = 0
	}
	if i < 0 || i > last {
		what := "a pointer"
		if nelems == 0 {
			what = "an array of unknown length"
		}
		return 0, g.errAt(ix.Index.Pos(), "index %s out of range for %s, which is %s: the size of the object behind it is unknown, so its index must be a constant from 0 to %d (the first %d bytes)", ix.Index.String(), exprName(ix.X), what, last, PointerWindow)
	}
	return i, nil
}

// checkPointerCompare enforces that a pointer is only ever compared with 0: comparing it with
// anything else would reveal kernel addresses (and so defeat KASLR).
func (g *gen) checkPointerCompare(b *Binary, l, r operand) error {
	lp, rp := classify(l.typ) == clPtr, classify(r.typ) == clPtr
	if !lp && !rp {
		return nil
	}
	ptr, other, oe := b.X, r, b.Y
	if !lp || (l.kind == kConst && rp) { // the pointer side: the one that is not a constant

		ptr, other, oe = b.Y, l, b.X
	}
	const rule = "a pointer can only be compared with 0 (NULL check)"
	if other.kind == kConst && other.c == 0 {
		if b.Op != "==" && b.Op != "!=" {
			return g.errAt(b.OpAt, "%s, with == or !=: use %s != 0 instead of %s %s %s", rule, exprName(ptr), exprName(b.X), b.Op, exprName(b.Y))
		}
		return nil
	}
	switch {
	case lp && rp:
		return g.errAt(b.OpAt, "%s: comparing %s with the pointer %s would reveal kernel addresses", rule, exprName(ptr), exprName(oe))
	case other.kind == kConst:
		return g.errAt(b.OpAt, "%s: comparing %s with %s would reveal a kernel address", rule, exprName(ptr), exprName(oe))
	}
	return g.errAt(b.OpAt, "%s: comparing %s with the computed value %s would reveal a kernel address", rule, exprName(ptr), exprName(oe))
}

// pointerValueNote ends the messages that refuse a pointer in arithmetic.
const pointerValueNote = "a pointer's value is a kernel address, which a predicate may only test against 0"

// isCharType reports whether t is char, signed char or unsigned char (after typedefs and
// qualifiers): a one-byte integer that is not _Bool.
func isCharType(t btf.Type) bool {
	i, ok := under(t).(*btf.Int)
	return ok && i.Size == 1 && i.Encoding&btf.Bool == 0
}

func ordinal(n int) string {
	switch {
	case n%100 >= 11 && n%100 <= 13:
		return fmt.Sprintf("%dth", n)
	case n%10 == 1:
		return fmt.Sprintf("%dst", n)
	case n%10 == 2:
		return fmt.Sprintf("%dnd", n)
	case n%10 == 3:
		return fmt.Sprintf("%drd", n)
	}
	return fmt.Sprintf("%dth", n)
}
