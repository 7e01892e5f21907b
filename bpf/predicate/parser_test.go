package predicate

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`STRNCMP(name->name, "bananas", 8)`, `STRNCMP(name->name, "bananas", 8)`},
		{`bio->bi_opf & 1`, `(bio->bi_opf & 1)`},
		{`a || b && c`, `(a || (b && c))`},
		{`a | b ^ c & d`, `(a | (b ^ (c & d)))`},
		{`a == b < c`, `(a == (b < c))`},
		{`a << 1 + 2`, `(a << (1 + 2))`},
		{`a - b - c`, `((a - b) - c)`},
		{`!a->b.c[3]`, `(!a->b.c[3])`},
		{`-~x`, `(-(~x))`},
		{`(a || b) && c`, `((a || b) && c)`},
		{`x == 'a'`, `(x == 'a')`},
		{`x == 0x1f && y != 017`, `((x == 0x1f) && (y != 017))`},
		{`x >= 10UL`, `(x >= 10UL)`},
	} {
		e, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if got := e.String(); got != tc.want {
			t.Errorf("Parse(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestParseLiterals(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		uns  bool
	}{
		{"0", 0, false}, {"42", 42, false}, {"0x2A", 42, false}, {"052", 42, false}, {"0b101010", 42, false},
		{"42u", 42, true}, {"0xffffffffffffffff", 1<<64 - 1, true}, {"9223372036854775808", 1 << 63, true},
		{`'a'`, 'a', false}, {`'\n'`, '\n', false}, {`'\0'`, 0, false}, {`'\x41'`, 'A', false},
		{`'\\'`, '\\', false}, {`'\''`, '\'', false}, {`'\101'`, 'A', false},
	} {
		e, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		lit, ok := e.(*IntLit)
		if !ok || lit.Value != tc.want || lit.Unsigned != tc.uns {
			t.Errorf("Parse(%q) = %#v, want %d unsigned=%v", tc.in, e, tc.want, tc.uns)
		}
	}
	e, err := Parse(`STRCMP(x, "a\tb\"c")`)
	if err != nil {
		t.Fatal(err)
	}
	if s := e.(*Call).Args[1].(*StringLit).Value; s != "a\tb\"c" {
		t.Errorf("string literal = %q", s)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		in  string
		col int
		msg string
	}{
		{``, 1, "empty predicate"},
		{`   `, 1, "empty predicate"},
		{`a +`, 4, "unexpected end of predicate"},
		{`(a`, 1, `unbalanced "("`},
		{`a)`, 2, `unexpected ")"`},
		{`(struct dentry *)x`, 1, "casts are not supported"},
		{`(u64 *)x`, 1, "casts are not supported"},
		{`(unsigned long)x == 1`, 1, "casts are not supported"},
		{`foo(x)`, 1, "function calls are not supported (only STRNCMP and STRCMP): foo"},
		{`strncmp(x, "a", 1)`, 1, "did you mean STRNCMP"},
		{`a = 1`, 3, "assignment"},
		{`a += 1`, 3, "assignment"},
		{`a++`, 2, "++ is not supported"},
		{`++a`, 1, "++ is not supported"},
		{`sizeof(a)`, 1, "sizeof is not supported"},
		{`a ? b : c`, 3, "ternary"},
		{`a * b`, 3, "operator * is not supported"},
		{`a / b`, 3, "operator / is not supported"},
		{`*a`, 1, "unary * (dereference) is not supported"},
		{`&a`, 1, "address-of"},
		{`a, b`, 2, "comma operator"},
		{`a->`, 4, "expected a member name"},
		{`a[1`, 4, `expected "]"`},
		{`1.5 == x`, 1, "floating-point"},
		{`0x == 1`, 1, "malformed number"},
		{`09`, 1, "malformed number"},
		{`0x1ffffffffffffffff`, 1, "does not fit in 64 bits"},
		{`'ab'`, 1, "exactly one character"},
		{`''`, 1, "empty character literal"},
		{`"abc`, 1, "unterminated string"},
		{`STRCMP(x, "a\0b")`, 13, "NUL byte"},
		{`STRCMP(x, "` + strings.Repeat("a", 64) + `")`, 11, "string literal too long (64 bytes, at most 63)"},
		{`STRNCMP(x, "a")`, 1, "STRNCMP takes 3 arguments, got 2"},
		{`STRCMP(x)`, 1, "STRCMP takes 2 arguments, got 1"},
		{`a @ b`, 3, `unexpected character "@"`},
		{`'\q'`, 2, "unknown escape"},
		{strings.Repeat("(", 100) + "a" + strings.Repeat(")", 100), 65, "nested too deeply"},
		{strings.Repeat("!", 100) + "a", 64, "nested too deeply"},
		{strings.Repeat("a", MaxSourceLen+1), MaxSourceLen + 1, "predicate too long"},
	} {
		_, err := Parse(tc.in)
		var pe *Error
		if !errors.As(err, &pe) {
			t.Errorf("Parse(%.40q): error %v, want *Error", tc.in, err)
			continue
		}
		if pe.Column != tc.col || !strings.Contains(pe.Msg, tc.msg) {
			t.Errorf("Parse(%.40q) = %q (column %d), want column %d and %q", tc.in, pe.Error(), pe.Column, tc.col, tc.msg)
		}
	}
}

func TestErrorLineColumn(t *testing.T) {
	_, err := Parse("a &&\n  b +")
	var pe *Error
	if !errors.As(err, &pe) || pe.Line != 2 || pe.Column != 6 || !strings.HasPrefix(err.Error(), "line 2 column 6: ") {
		t.Fatalf("got %v", err)
	}
}
