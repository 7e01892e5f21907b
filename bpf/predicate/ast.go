package predicate

import (
	"fmt"
	"strings"
)

// Expr is a node of a parsed predicate. Pos is the byte offset of the node's first character in
// the predicate text.
type Expr interface {
	Pos() int
	String() string // a fully parenthesised rendering, for tests and debugging
}

// Ident names a parameter of the frame's function.
type Ident struct {
	At   int
	Name string
}

// IntLit is an integer or character literal.
type IntLit struct {
	At       int
	Text     string // as written
	Value    uint64
	Unsigned bool // has a U suffix, or does not fit in int64
}

// StringLit is a string literal; only valid as an argument of STRNCMP/STRCMP.
type StringLit struct {
	At    int
	Value string // after escapes
}

// Unary is `!x`, `~x` or `-x`.
type Unary struct {
	At int
	Op string
	X  Expr
}

// Binary is `x Op y`. OpAt is the offset of the operator.
type Binary struct {
	OpAt int
	Op   string
	X, Y Expr
}

// Member is `x.name` or `x->name`. OpAt is the offset of `.` or `->`.
type Member struct {
	OpAt   int
	Arrow  bool
	X      Expr
	Name   string
	NameAt int
}

// Index is `x[i]`. OpAt is the offset of `[`.
type Index struct {
	OpAt  int
	X     Expr
	Index Expr
}

// Call is `STRNCMP(...)` or `STRCMP(...)`.
type Call struct {
	At   int
	Name string
	Args []Expr
}

func (e *Ident) Pos() int     { return e.At }
func (e *IntLit) Pos() int    { return e.At }
func (e *StringLit) Pos() int { return e.At }
func (e *Unary) Pos() int     { return e.At }
func (e *Binary) Pos() int    { return e.X.Pos() }
func (e *Member) Pos() int    { return e.X.Pos() }
func (e *Index) Pos() int     { return e.X.Pos() }
func (e *Call) Pos() int      { return e.At }

func (e *Ident) String() string     { return e.Name }
func (e *IntLit) String() string    { return e.Text }
func (e *StringLit) String() string { return fmt.Sprintf("%q", e.Value) }
func (e *Unary) String() string     { return "(" + e.Op + e.X.String() + ")" }
func (e *Binary) String() string {
	return "(" + e.X.String() + " " + e.Op + " " + e.Y.String() + ")"
}
func (e *Member) String() string {
	if e.Arrow {
		return e.X.String() + "->" + e.Name
	}
	return e.X.String() + "." + e.Name
}
func (e *Index) String() string { return e.X.String() + "[" + e.Index.String() + "]" }
func (e *Call) String() string {
	args := make([]string, len(e.Args))
	for i, a := range e.Args {
		args[i] = a.String()
	}
	return e.Name + "(" + strings.Join(args, ", ") + ")"
}

// Error is a predicate or parameter-list error at a position in the source text.
type Error struct {
	Offset int    // byte offset in the source
	Line   int    // 1-based
	Column int    // 1-based, in bytes
	Msg    string // the reason, without the position
	multi  bool   // the source has several lines
}

func (e *Error) Error() string {
	if e.multi {
		return fmt.Sprintf("line %d column %d: %s", e.Line, e.Column, e.Msg)
	}
	return fmt.Sprintf("column %d: %s", e.Column, e.Msg)
}

// errorAt builds an Error for offset off in src.
func errorAt(src string, off int, format string, args ...any) *Error {
	if off < 0 {
		off = 0
	}
	if off > len(src) {
		off = len(src)
	}
	line := 1 + strings.Count(src[:off], "\n")
	col := off + 1
	if i := strings.LastIndexByte(src[:off], '\n'); i >= 0 {
		col = off - i
	}
	return &Error{
		Offset: off, Line: line, Column: col,
		Msg:   fmt.Sprintf(format, args...),
		multi: strings.Contains(src, "\n"),
	}
}
