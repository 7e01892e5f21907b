package predicate

import (
	"math"
	"math/bits"
	"strings"
)

type tokKind int

const (
	tEOF tokKind = iota
	tIdent
	tInt    // integer literal
	tChar   // character literal
	tString // string literal
	tPunct  // operator or punctuation
)

type token struct {
	kind tokKind
	at   int    // byte offset
	text string // source text
	val  uint64 // tInt, tChar
	uns  bool   // tInt: unsigned
	str  string // tString: decoded value
}

// Limits of the language.
const (
	MaxSourceLen = 4096 // bytes of predicate text
	MaxStringLen = 63   // bytes of a string literal (the compare reads at most 64 bytes)
	maxDepth     = 64   // nesting depth of the parser
)

var puncts = []string{
	"<<=", ">>=", "...",
	"->", "<<", ">>", "<=", ">=", "==", "!=", "&&", "||", "++", "--",
	"+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=",
	"(", ")", "[", "]", ".", ",", "!", "~", "-", "+", "<", ">", "&", "|", "^",
	"*", "/", "%", "=", "?", ":", "{", "}", ";", "#",
}

func isIdentStart(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isIdentChar(c byte) bool { return isIdentStart(c) || isDigit(c) }

// lex splits src into tokens.
func lex(src string) ([]token, error) {
	if len(src) > MaxSourceLen {
		return nil, errorAt(src, MaxSourceLen, "predicate too long (%d bytes, at most %d)", len(src), MaxSourceLen)
	}
	var toks []token
	i := 0
	for i < len(src) {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		case isIdentStart(c):
			j := i + 1
			for j < len(src) && isIdentChar(src[j]) {
				j++
			}
			toks = append(toks, token{kind: tIdent, at: i, text: src[i:j]})
			i = j
		case isDigit(c):
			t, err := lexNumber(src, i)
			if err != nil {
				return nil, err
			}
			toks = append(toks, t)
			i += len(t.text)
		case c == '\'':
			t, err := lexChar(src, i)
			if err != nil {
				return nil, err
			}
			toks = append(toks, t)
			i += len(t.text)
		case c == '"':
			t, err := lexString(src, i)
			if err != nil {
				return nil, err
			}
			toks = append(toks, t)
			i += len(t.text)
		default:
			found := false
			for _, p := range puncts {
				if strings.HasPrefix(src[i:], p) {
					toks = append(toks, token{kind: tPunct, at: i, text: p})
					i += len(p)
					found = true
					break
				}
			}
			if !found {
				if c < 0x20 || c >= 0x7f {
					return nil, errorAt(src, i, "unexpected byte 0x%02x", c)
				}
				return nil, errorAt(src, i, "unexpected character %q", string(c))
			}
		}
	}
	toks = append(toks, token{kind: tEOF, at: len(src)})
	return toks, nil
}

func lexNumber(src string, start int) (token, error) {
	j := start
	for j < len(src) && (isIdentChar(src[j])) {
		j++
	}
	text := src[start:j]
	if j < len(src) && src[j] == '.' {
		return token{}, errorAt(src, start, "floating-point numbers are not supported")
	}
	body := text
	// Suffixes: any combination of u/U and l/L/ll/LL.
	uns := false
	for len(body) > 0 {
		last := body[len(body)-1]
		if last == 'u' || last == 'U' {
			uns = true
			body = body[:len(body)-1]
		} else if last == 'l' || last == 'L' {
			body = body[:len(body)-1]
		} else {
			break
		}
	}
	base := uint64(10)
	digits := body
	switch {
	case strings.HasPrefix(body, "0x") || strings.HasPrefix(body, "0X"):
		base, digits = 16, body[2:]
	case strings.HasPrefix(body, "0b") || strings.HasPrefix(body, "0B"):
		base, digits = 2, body[2:]
	case len(body) > 1 && body[0] == '0':
		base, digits = 8, body[1:]
	}
	if digits == "" {
		return token{}, errorAt(src, start, "malformed number %q", text)
	}
	var v uint64
	for k := 0; k < len(digits); k++ {
		d := digitVal(digits[k])
		if d >= base {
			return token{}, errorAt(src, start, "malformed number %q", text)
		}
		hi, lo := bits.Mul64(v, base)
		if hi != 0 {
			return token{}, errorAt(src, start, "number %q does not fit in 64 bits", text)
		}
		var carry uint64
		v, carry = bits.Add64(lo, d, 0)
		if carry != 0 {
			return token{}, errorAt(src, start, "number %q does not fit in 64 bits", text)
		}
	}
	if v > math.MaxInt64 {
		uns = true
	}
	return token{kind: tInt, at: start, text: text, val: v, uns: uns}, nil
}

func digitVal(c byte) uint64 {
	switch {
	case c >= '0' && c <= '9':
		return uint64(c - '0')
	case c >= 'a' && c <= 'f':
		return uint64(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return uint64(c-'A') + 10
	}
	return 99
}

// lexEscape decodes one (possibly escaped) character at src[i] inside a literal. It returns the
// byte value and the index after it.
func lexEscape(src string, i int) (byte, int, error) {
	if i >= len(src) {
		return 0, i, errorAt(src, i, "unterminated literal")
	}
	c := src[i]
	if c == '\n' {
		return 0, i, errorAt(src, i, "newline in literal")
	}
	if c != '\\' {
		return c, i + 1, nil
	}
	if i+1 >= len(src) {
		return 0, i, errorAt(src, i, "unterminated literal")
	}
	e := src[i+1]
	switch e {
	case 'n':
		return '\n', i + 2, nil
	case 't':
		return '\t', i + 2, nil
	case 'r':
		return '\r', i + 2, nil
	case 'a':
		return 7, i + 2, nil
	case 'b':
		return 8, i + 2, nil
	case 'f':
		return 12, i + 2, nil
	case 'v':
		return 11, i + 2, nil
	case '\\', '\'', '"', '?':
		return e, i + 2, nil
	case 'x':
		j := i + 2
		v := 0
		for j < len(src) && j < i+4 && digitVal(src[j]) < 16 {
			v = v*16 + int(digitVal(src[j]))
			j++
		}
		if j == i+2 {
			return 0, i, errorAt(src, i, `\x needs hex digits`)
		}
		return byte(v), j, nil
	}
	if e >= '0' && e <= '7' {
		j := i + 1
		v := 0
		for j < len(src) && j < i+4 && src[j] >= '0' && src[j] <= '7' {
			v = v*8 + int(src[j]-'0')
			j++
		}
		if v > 255 {
			return 0, i, errorAt(src, i, "octal escape out of range")
		}
		return byte(v), j, nil
	}
	return 0, i, errorAt(src, i, "unknown escape sequence %q", src[i:i+2])
}

func lexChar(src string, start int) (token, error) {
	if start+1 < len(src) && src[start+1] == '\'' {
		return token{}, errorAt(src, start, "empty character literal")
	}
	v, j, err := lexEscape(src, start+1)
	if err != nil {
		return token{}, err
	}
	if j >= len(src) || src[j] != '\'' {
		return token{}, errorAt(src, start, "character literal must hold exactly one character")
	}
	return token{kind: tChar, at: start, text: src[start : j+1], val: uint64(v)}, nil
}

func lexString(src string, start int) (token, error) {
	var b []byte
	i := start + 1
	for {
		if i >= len(src) {
			return token{}, errorAt(src, start, "unterminated string literal")
		}
		if src[i] == '"' {
			break
		}
		c, j, err := lexEscape(src, i)
		if err != nil {
			return token{}, err
		}
		if c == 0 {
			return token{}, errorAt(src, i, "NUL byte inside a string literal")
		}
		b = append(b, c)
		i = j
	}
	if len(b) > MaxStringLen {
		return token{}, errorAt(src, start, "string literal too long (%d bytes, at most %d)", len(b), MaxStringLen)
	}
	return token{kind: tString, at: start, text: src[start : i+1], str: string(b)}, nil
}
