package predicate

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf/btf"
)

// Signature is a kernel function's parameter list, resolved against BTF.
type Signature struct {
	FuncName string
	Func     *btf.Func      // the BTF function
	Proto    *btf.FuncProto // its prototype
	// Params are the parameters a predicate may name: all of the BTF prototype's when the frame
	// gives no parameter list, else the given list (a prefix of the BTF list), with the user's
	// names and the BTF types.
	Params []Param
}

// Param is one parameter: Index is its position in the function's argument list (0-based).
type Param struct {
	Name  string
	Type  btf.Type
	Index int
}

func declString(t btf.Type, name string) string {
	ts := typeString(t)
	if name == "" {
		return ts
	}
	if strings.HasSuffix(ts, "*") {
		return ts + name
	}
	return ts + " " + name
}

// Param returns the parameter called name.
func (s *Signature) Param(name string) (Param, bool) {
	for _, p := range s.Params {
		if p.Name == name {
			return p, true
		}
	}
	return Param{}, false
}

// ErrNotInBTF is wrapped by Resolve's error when the function is not in the BTF spec.
var ErrNotInBTF = errors.New("not in kernel BTF")

// Resolve finds funcName in spec and builds its Signature.
//
// parameters is an optional C parameter list, as in a KernelChaos frame, e.g.
// "struct dentry *parent, const struct qstr *name". When it is empty, names and types come
// from BTF. When it is given, it may list fewer parameters than BTF has (a prefix: kernels grow
// parameters at the end), but not more; each listed type must match the BTF type modulo
// const/volatile/restrict qualifiers and typedefs (a typedef name matches the type it stands
// for); the user's names are used, so they may differ from the kernel's. Errors about the list
// are *Error values whose position is in parameters.
func Resolve(spec *btf.Spec, funcName, parameters string) (*Signature, error) {
	if spec == nil {
		return nil, errors.New("no BTF spec")
	}
	funcName = strings.TrimSpace(funcName)
	if funcName == "" {
		return nil, errors.New("empty function name")
	}
	types, err := spec.AnyTypesByName(funcName)
	if err != nil && !errors.Is(err, btf.ErrNotFound) {
		return nil, fmt.Errorf("function %s: %w", funcName, err)
	}
	var fn *btf.Func
	var proto *btf.FuncProto
	for _, t := range types {
		f, ok := t.(*btf.Func)
		if !ok {
			continue
		}
		fp, ok := f.Type.(*btf.FuncProto)
		if !ok {
			continue
		}
		if fn == nil {
			fn, proto = f, fp
			continue
		}
		if !sameProto(proto, fp) {
			return nil, fmt.Errorf("function %s: BTF has several functions of that name with different parameters", funcName)
		}
	}
	if fn == nil {
		return nil, fmt.Errorf("function %s: %w", funcName, ErrNotInBTF)
	}
	sig := &Signature{FuncName: funcName, Func: fn, Proto: proto}
	if strings.TrimSpace(parameters) == "" {
		for i, p := range proto.Params {
			name := p.Name
			if name == "" {
				name = fmt.Sprintf("arg%d", i)
			}
			sig.Params = append(sig.Params, Param{Name: name, Type: p.Type, Index: i})
		}
		return sig, nil
	}
	decls, err := parseParamList(parameters)
	if err != nil {
		return nil, err
	}
	if len(decls) > len(proto.Params) {
		return nil, errorAt(parameters, decls[len(proto.Params)].at,
			"%d parameters given, but %s has %d in kernel BTF: %s",
			len(decls), funcName, len(proto.Params), btfSignature(funcName, proto))
	}
	seen := map[string]bool{}
	for i, d := range decls {
		bp := proto.Params[i]
		if !d.matches(spec, bp.Type) {
			return nil, errorAt(parameters, d.at, "parameter %d (%s): type %q does not match kernel BTF's %q (%s)",
				i+1, d.name, d.text, typeString(bp.Type), btfSignature(funcName, proto))
		}
		if d.name == "" {
			return nil, errorAt(parameters, d.at, "parameter %d (%s) has no name", i+1, d.text)
		}
		if seen[d.name] {
			return nil, errorAt(parameters, d.at, "duplicate parameter name %q", d.name)
		}
		seen[d.name] = true
		sig.Params = append(sig.Params, Param{Name: d.name, Type: bp.Type, Index: i})
	}
	return sig, nil
}

func btfSignature(name string, proto *btf.FuncProto) string {
	parts := make([]string, len(proto.Params))
	for i, p := range proto.Params {
		parts[i] = declString(p.Type, p.Name)
	}
	return name + "(" + strings.Join(parts, ", ") + ")"
}

func sameProto(a, b *btf.FuncProto) bool {
	if len(a.Params) != len(b.Params) {
		return false
	}
	for i := range a.Params {
		if !sameType(a.Params[i].Type, b.Params[i].Type, 0) {
			return false
		}
	}
	return true
}

// sameType compares two types modulo qualifiers and typedefs.
func sameType(a, b btf.Type, depth int) bool {
	if depth > 16 {
		return true
	}
	ua, ub := under(a), under(b)
	switch x := ua.(type) {
	case *btf.Void:
		_, ok := ub.(*btf.Void)
		return ok
	case *btf.Int:
		y, ok := ub.(*btf.Int)
		if !ok {
			return false
		}
		return x.Size == y.Size && (x.Encoding&btf.Signed) == (y.Encoding&btf.Signed)
	case *btf.Enum:
		y, ok := ub.(*btf.Enum)
		return ok && x.Name == y.Name
	case *btf.Struct:
		y, ok := ub.(*btf.Struct)
		if ok {
			return x.Name == y.Name
		}
		f, ok := ub.(*btf.Fwd)
		return ok && f.Kind == btf.FwdStruct && f.Name == x.Name
	case *btf.Union:
		y, ok := ub.(*btf.Union)
		if ok {
			return x.Name == y.Name
		}
		f, ok := ub.(*btf.Fwd)
		return ok && f.Kind == btf.FwdUnion && f.Name == x.Name
	case *btf.Fwd:
		switch y := ub.(type) {
		case *btf.Fwd:
			return x.Name == y.Name && x.Kind == y.Kind
		case *btf.Struct:
			return x.Kind == btf.FwdStruct && x.Name == y.Name
		case *btf.Union:
			return x.Kind == btf.FwdUnion && x.Name == y.Name
		}
		return false
	case *btf.Pointer:
		y, ok := ub.(*btf.Pointer)
		return ok && sameType(x.Target, y.Target, depth+1)
	case *btf.Array:
		y, ok := ub.(*btf.Array)
		return ok && x.Nelems == y.Nelems && sameType(x.Type, y.Type, depth+1)
	case *btf.FuncProto:
		_, ok := ub.(*btf.FuncProto)
		return ok
	case *btf.Float:
		y, ok := ub.(*btf.Float)
		return ok && x.Size == y.Size
	}
	return false
}

// paramDecl is one parsed C parameter declaration.
type paramDecl struct {
	at   int
	text string // the type as written, for messages
	name string

	kind    string // "struct", "union", "enum", "int", "void", "typedef", "func"
	base    string // struct/union/enum/typedef name
	size    int    // kind int: bytes
	signed  int    // kind int: 1 signed, 0 unsigned, -1 either (plain char)
	pointer int    // levels of indirection
}

// qualifiers and annotations ignored in parameter lists.
var ignoredWords = map[string]bool{
	"const": true, "volatile": true, "restrict": true, "__restrict": true, "register": true,
	"__user": true, "__kernel": true, "__rcu": true, "__iomem": true, "__force": true,
	"__percpu": true, "__must_check": true,
}

var intWords = map[string]bool{
	"unsigned": true, "signed": true, "short": true, "long": true, "int": true, "char": true,
	"_Bool": true, "bool": true,
}

func parseParamList(src string) ([]paramDecl, error) {
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	if len(toks) == 2 && toks[0].kind == tIdent && toks[0].text == "void" {
		return nil, nil
	}
	var out []paramDecl
	i := 0
	for {
		d, next, err := parseParamDecl(src, toks, i)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
		i = next
		t := toks[i]
		if t.kind == tEOF {
			return out, nil
		}
		if t.kind == tPunct && t.text == "," {
			i++
			continue
		}
		return nil, errorAt(src, t.at, "unexpected %q in parameter list", t.text)
	}
}

func parseParamDecl(src string, toks []token, i int) (paramDecl, int, error) {
	d := paramDecl{at: toks[i].at, signed: -1}
	nameAt := -1
	var words []string
	start := i
	isPunct := func(s string) bool { return toks[i].kind == tPunct && toks[i].text == s }
	// Specifiers.
	for toks[i].kind == tIdent {
		w := toks[i].text
		switch {
		case ignoredWords[w]:
			i++
		case w == "struct" || w == "union" || w == "enum":
			if d.kind != "" {
				return d, i, errorAt(src, toks[i].at, "unexpected %q in parameter type", w)
			}
			if toks[i+1].kind != tIdent {
				return d, i, errorAt(src, toks[i+1].at, "expected a name after %q", w)
			}
			d.kind, d.base = w, toks[i+1].text
			i += 2
		case intWords[w] || w == "void":
			if d.kind != "" && d.kind != "int" {
				return d, i, errorAt(src, toks[i].at, "unexpected %q in parameter type", w)
			}
			words = append(words, w)
			d.kind = "int"
			i++
		default:
			if d.kind != "" {
				goto declarator // this identifier is the parameter name
			}
			d.kind, d.base = "typedef", w
			i++
		}
	}
declarator:
	if d.kind == "" {
		return d, i, errorAt(src, toks[i].at, "expected a parameter type")
	}
	if d.kind == "int" {
		if err := intSpec(words, &d); err != nil {
			return d, i, errorAt(src, d.at, "%v", err)
		}
	}
	for isPunct("*") || (toks[i].kind == tIdent && ignoredWords[toks[i].text]) {
		if isPunct("*") {
			d.pointer++
		}
		i++
	}
	if isPunct("(") {
		// Function pointer: type (*name)(args).
		i++
		if !isPunct("*") {
			return d, i, errorAt(src, toks[i].at, "unsupported declarator in parameter list")
		}
		i++
		if toks[i].kind == tIdent {
			d.name = toks[i].text
			i++
		}
		if !isPunct(")") {
			return d, i, errorAt(src, toks[i].at, "expected \")\" in function pointer parameter")
		}
		i++
		if !isPunct("(") {
			return d, i, errorAt(src, toks[i].at, "expected the function pointer's parameter list")
		}
		depth := 0
		for {
			if toks[i].kind == tEOF {
				return d, i, errorAt(src, toks[i].at, "unbalanced parentheses in parameter list")
			}
			if isPunct("(") {
				depth++
			} else if isPunct(")") {
				depth--
				if depth == 0 {
					i++
					break
				}
			}
			i++
		}
		d.kind, d.pointer = "func", 1
	} else if toks[i].kind == tIdent {
		d.name = toks[i].text
		nameAt = toks[i].at
		i++
	}
	for isPunct("[") {
		// An array parameter is a pointer.
		i++
		for toks[i].kind != tEOF && !isPunct("]") {
			i++
		}
		if !isPunct("]") {
			return d, i, errorAt(src, toks[i].at, "expected \"]\"")
		}
		i++
		d.pointer++
	}
	end := len(src)
	if i < len(toks) {
		end = toks[i].at
	}
	if nameAt >= 0 {
		end = nameAt
	}
	d.text = strings.TrimSpace(src[toks[start].at:end])
	if d.kind == "int" && d.size == 0 && d.pointer == 0 {
		return d, i, errorAt(src, d.at, "a parameter cannot have type void")
	}
	return d, i, nil
}

func intSpec(words []string, d *paramDecl) error {
	count := map[string]int{}
	for _, w := range words {
		count[w]++
	}
	if count["void"] > 0 {
		if len(words) > 1 {
			return fmt.Errorf("invalid type %q", strings.Join(words, " "))
		}
		d.size = 0
		return nil
	}
	switch {
	case count["_Bool"]+count["bool"] > 0:
		d.size, d.signed = 1, 0
	case count["char"] > 0:
		d.size = 1
		if count["signed"] > 0 {
			d.signed = 1
		} else if count["unsigned"] > 0 {
			d.signed = 0
		}
		return nil
	case count["short"] > 0:
		d.size = 2
	case count["long"] > 0:
		d.size = 8
	default:
		d.size = 4
	}
	if d.size != 1 || d.signed != 0 {
		d.signed = 1
		if count["unsigned"] > 0 {
			d.signed = 0
		}
	}
	return nil
}

// matches reports whether the declared type matches the BTF type t.
func (d *paramDecl) matches(spec *btf.Spec, t btf.Type) bool {
	for range d.pointer {
		if d.kind == "func" {
			break
		}
		p, ok := under(t).(*btf.Pointer)
		if !ok {
			return false
		}
		t = p.Target
	}
	switch d.kind {
	case "func":
		p, ok := under(t).(*btf.Pointer)
		if !ok {
			return false
		}
		_, ok = under(p.Target).(*btf.FuncProto)
		return ok
	case "struct":
		return sameType(&btf.Fwd{Name: d.base, Kind: btf.FwdStruct}, t, 0)
	case "union":
		return sameType(&btf.Fwd{Name: d.base, Kind: btf.FwdUnion}, t, 0)
	case "enum":
		e, ok := under(t).(*btf.Enum)
		return ok && e.Name == d.base
	case "int":
		u := under(t)
		if d.size == 0 {
			_, ok := u.(*btf.Void)
			return ok
		}
		size, signed := 0, false
		switch v := u.(type) {
		case *btf.Int:
			size, signed = int(v.Size), v.Encoding&btf.Signed != 0
		case *btf.Enum:
			size, signed = int(v.Size), v.Signed
		default:
			return false
		}
		return size == d.size && (d.signed < 0 || (d.signed == 1) == signed)
	case "typedef":
		// The same typedef anywhere in t's typedef chain matches.
		for x, n := t, 0; x != nil && n < 32; n++ {
			switch v := x.(type) {
			case *btf.Typedef:
				if v.Name == d.base {
					return true
				}
				x = v.Type
			case *btf.Const:
				x = v.Type
			case *btf.Volatile:
				x = v.Type
			case *btf.Restrict:
				x = v.Type
			case *btf.TypeTag:
				x = v.Type
			default:
				x = nil
			}
		}
		// Else resolve the user's typedef and compare what both stand for.
		cands, _ := spec.AnyTypesByName(d.base)
		for _, c := range cands {
			if td, ok := c.(*btf.Typedef); ok && sameType(td, t, 0) {
				return true
			}
		}
		return false
	}
	return false
}
