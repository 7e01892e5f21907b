package predicate

import "strings"

// Parse parses a predicate into an AST. It checks syntax only; types are checked by Compile.
func Parse(src string) (Expr, error) {
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	p := &parser{src: src, toks: toks}
	if p.peek().kind == tEOF {
		return nil, errorAt(src, 0, "empty predicate")
	}
	e, err := p.parseExpr(0)
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tEOF {
		return nil, p.unexpected(t)
	}
	return e, nil
}

type parser struct {
	src   string
	toks  []token
	i     int
	depth int
}

func (p *parser) peek() token { return p.toks[p.i] }
func (p *parser) peekN(n int) token {
	if p.i+n < len(p.toks) {
		return p.toks[p.i+n]
	}
	return p.toks[len(p.toks)-1]
}
func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tEOF {
		p.i++
	}
	return t
}
func (p *parser) isPunct(s string) bool {
	t := p.peek()
	return t.kind == tPunct && t.text == s
}

func (p *parser) errAt(off int, format string, args ...any) error {
	return errorAt(p.src, off, format, args...)
}

// binary operator precedences, C order (higher binds tighter).
var binPrec = map[string]int{
	"||": 1, "&&": 2, "|": 3, "^": 4, "&": 5,
	"==": 6, "!=": 6,
	"<": 7, "<=": 7, ">": 7, ">=": 7,
	"<<": 8, ">>": 8,
	"+": 9, "-": 9,
	"*": 10, "/": 10, "%": 10,
}

func (p *parser) unexpected(t token) error {
	switch {
	case t.kind == tEOF:
		return p.errAt(t.at, "unexpected end of predicate")
	case t.kind == tPunct:
		switch t.text {
		case "?", ":":
			return p.errAt(t.at, "the ternary operator ?: is not supported")
		case "=", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "<<=", ">>=":
			return p.errAt(t.at, "assignment %q is not supported (use == to compare)", t.text)
		case "++", "--":
			return p.errAt(t.at, "%s is not supported", t.text)
		case ",":
			return p.errAt(t.at, "unexpected \",\" (the comma operator is not supported)")
		}
		return p.errAt(t.at, "unexpected %q", t.text)
	case t.kind == tString:
		return p.errAt(t.at, "unexpected string literal")
	}
	return p.errAt(t.at, "unexpected %q", t.text)
}

func (p *parser) enter(at int) error {
	p.depth++
	if p.depth > maxDepth {
		return p.errAt(at, "predicate nested too deeply (at most %d levels)", maxDepth)
	}
	return nil
}

func (p *parser) parseExpr(minPrec int) (Expr, error) {
	if err := p.enter(p.peek().at); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()
	x, err := p.parseUnary()
	if err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		if t.kind != tPunct {
			return x, nil
		}
		prec, ok := binPrec[t.text]
		if !ok || prec <= minPrec {
			return x, nil
		}
		if t.text == "*" || t.text == "/" || t.text == "%" {
			return nil, p.errAt(t.at, "operator %s is not supported", t.text)
		}
		p.next()
		y, err := p.parseExpr(prec)
		if err != nil {
			return nil, err
		}
		x = &Binary{OpAt: t.at, Op: t.text, X: x, Y: y}
	}
}

func (p *parser) parseUnary() (Expr, error) {
	t := p.peek()
	if t.kind == tPunct {
		switch t.text {
		case "!", "~", "-":
			p.next()
			if err := p.enter(t.at); err != nil {
				return nil, err
			}
			defer func() { p.depth-- }()
			x, err := p.parseUnary()
			if err != nil {
				return nil, err
			}
			return &Unary{At: t.at, Op: t.text, X: x}, nil
		case "*":
			return nil, p.errAt(t.at, "unary * (dereference) is not supported; use -> or [0]")
		case "&":
			return nil, p.errAt(t.at, "unary & (address-of) is not supported")
		case "+":
			return nil, p.errAt(t.at, "unary + is not supported")
		}
	}
	if t.kind == tIdent && t.text == "sizeof" {
		return nil, p.errAt(t.at, "sizeof is not supported")
	}
	return p.parsePostfix()
}

func (p *parser) parsePostfix() (Expr, error) {
	x, err := p.parsePrimary()
	if err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		if t.kind != tPunct {
			return x, nil
		}
		switch t.text {
		case "->", ".":
			p.next()
			n := p.next()
			if n.kind != tIdent {
				return nil, p.errAt(n.at, "expected a member name after %q", t.text)
			}
			x = &Member{OpAt: t.at, Arrow: t.text == "->", X: x, Name: n.text, NameAt: n.at}
		case "[":
			p.next()
			idx, err := p.parseExpr(0)
			if err != nil {
				return nil, err
			}
			if !p.isPunct("]") {
				return nil, p.errAt(p.peek().at, "expected \"]\"")
			}
			p.next()
			x = &Index{OpAt: t.at, X: x, Index: idx}
		case "(":
			return nil, p.errAt(t.at, "function calls are not supported (only STRNCMP and STRCMP)")
		case "++", "--":
			return nil, p.errAt(t.at, "%s is not supported", t.text)
		default:
			return x, nil
		}
	}
}

// typeWords start a type name; "(" followed by one of them is a cast.
var typeWords = map[string]bool{
	"struct": true, "union": true, "enum": true, "const": true, "volatile": true,
	"unsigned": true, "signed": true, "int": true, "char": true, "short": true, "long": true,
	"void": true, "_Bool": true, "bool": true, "float": true, "double": true,
	"u8": true, "u16": true, "u32": true, "u64": true, "s8": true, "s16": true, "s32": true, "s64": true,
	"__u8": true, "__u16": true, "__u32": true, "__u64": true,
	"__s8": true, "__s16": true, "__s32": true, "__s64": true,
	"size_t": true, "ssize_t": true, "uintptr_t": true,
}

func (p *parser) parsePrimary() (Expr, error) {
	t := p.next()
	switch t.kind {
	case tInt:
		return &IntLit{At: t.at, Text: t.text, Value: t.val, Unsigned: t.uns}, nil
	case tChar:
		return &IntLit{At: t.at, Text: t.text, Value: t.val}, nil
	case tString:
		return &StringLit{At: t.at, Value: t.str}, nil
	case tIdent:
		if p.isPunct("(") {
			return p.parseCall(t)
		}
		if t.text == "sizeof" {
			return nil, p.errAt(t.at, "sizeof is not supported")
		}
		return &Ident{At: t.at, Name: t.text}, nil
	case tPunct:
		if t.text == "(" {
			n := p.peek()
			if n.kind == tIdent && (typeWords[n.text] ||
				(p.peekN(1).kind == tPunct && p.peekN(1).text == "*" &&
					p.peekN(2).kind == tPunct && (p.peekN(2).text == ")" || p.peekN(2).text == "*"))) {
				return nil, p.errAt(t.at, "casts are not supported")
			}
			x, err := p.parseExpr(0)
			if err != nil {
				return nil, err
			}
			if !p.isPunct(")") {
				c := p.peek()
				if c.kind == tEOF {
					return nil, p.errAt(t.at, "unbalanced \"(\"")
				}
				return nil, p.unexpected(c)
			}
			p.next()
			return x, nil
		}
	}
	return nil, p.unexpected(t)
}

func (p *parser) parseCall(name token) (Expr, error) {
	switch name.text {
	case "STRNCMP", "STRCMP":
	default:
		up := strings.ToUpper(name.text)
		if up == "STRNCMP" || up == "STRCMP" {
			return nil, p.errAt(name.at, "function %s is not supported: did you mean %s (true when the strings match)?", name.text, up)
		}
		return nil, p.errAt(name.at, "function calls are not supported (only STRNCMP and STRCMP): %s", name.text)
	}
	p.next() // (
	c := &Call{At: name.at, Name: name.text}
	if !p.isPunct(")") {
		for {
			a, err := p.parseExpr(0)
			if err != nil {
				return nil, err
			}
			c.Args = append(c.Args, a)
			if p.isPunct(",") {
				p.next()
				continue
			}
			break
		}
	}
	if !p.isPunct(")") {
		t := p.peek()
		if t.kind == tEOF {
			return nil, p.errAt(name.at, "unterminated call to %s", name.text)
		}
		return nil, p.unexpected(t)
	}
	p.next()
	want := 3
	usage := `STRNCMP(expr, "literal", n)`
	if name.text == "STRCMP" {
		want, usage = 2, `STRCMP(expr, "literal")`
	}
	if len(c.Args) != want {
		return nil, p.errAt(name.at, "%s takes %d arguments, got %d: %s", name.text, want, len(c.Args), usage)
	}
	return c, nil
}
