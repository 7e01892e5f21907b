package predicate

import (
	"fmt"
	"strings"

	"github.com/cilium/ebpf/btf"
)

// Synthetic types for literals and computed values.
var (
	typeInt   btf.Type = &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	typeLong  btf.Type = &btf.Int{Name: "long", Size: 8, Encoding: btf.Signed}
	typeULong btf.Type = &btf.Int{Name: "unsigned long", Size: 8, Encoding: btf.Unsigned}
	typeVoidP btf.Type = &btf.Pointer{Target: &btf.Void{}}
)

type class int

const (
	clOther  class = iota
	clInt          // btf.Int or btf.Enum
	clPtr          // btf.Pointer
	clArray        // btf.Array
	clStruct       // btf.Struct or btf.Union
	clFwd          // forward declaration (incomplete)
	clVoid
	clFloat
	clFunc
)

// under strips typedefs, qualifiers and type tags; nil becomes Void.
func under(t btf.Type) btf.Type {
	if t == nil {
		return &btf.Void{}
	}
	return btf.UnderlyingType(t)
}

func classify(t btf.Type) class {
	switch u := under(t).(type) {
	case *btf.Int, *btf.Enum:
		return clInt
	case *btf.Pointer:
		return clPtr
	case *btf.Array:
		return clArray
	case *btf.Struct, *btf.Union:
		return clStruct
	case *btf.Fwd:
		return clFwd
	case *btf.Void:
		return clVoid
	case *btf.Float:
		return clFloat
	case *btf.FuncProto, *btf.Func:
		return clFunc
	default:
		_ = u
		return clOther
	}
}

// intInfo returns the size in bytes and signedness of an integer-like (int, enum, pointer) type.
func intInfo(t btf.Type) (size int, signed bool) {
	switch u := under(t).(type) {
	case *btf.Int:
		return int(u.Size), u.Encoding&btf.Signed != 0
	case *btf.Enum:
		return int(u.Size), u.Signed
	case *btf.Pointer:
		return 8, false
	}
	return 8, false
}

// hasUserTag reports whether t carries a btf_type_tag("user") before its first pointer/struct.
func hasUserTag(t btf.Type) bool {
	for i := 0; i < 32 && t != nil; i++ {
		switch v := t.(type) {
		case *btf.TypeTag:
			if v.Value == "user" {
				return true
			}
			t = v.Type
		case *btf.Const:
			t = v.Type
		case *btf.Volatile:
			t = v.Type
		case *btf.Restrict:
			t = v.Type
		default:
			return false
		}
	}
	return false
}

// typeString renders a BTF type the way C would declare it, for messages.
func typeString(t btf.Type) string {
	return typeStr(t, 0)
}

func typeStr(t btf.Type, depth int) string {
	if depth > 16 {
		return "..."
	}
	switch v := t.(type) {
	case nil, *btf.Void:
		return "void"
	case *btf.Int:
		return v.Name
	case *btf.Float:
		return v.Name
	case *btf.Typedef:
		return v.Name
	case *btf.Const:
		if _, ok := v.Type.(*btf.Pointer); ok {
			return typeStr(v.Type, depth+1) + " const"
		}
		return "const " + typeStr(v.Type, depth+1)
	case *btf.Volatile:
		if _, ok := v.Type.(*btf.Pointer); ok {
			return typeStr(v.Type, depth+1) + " volatile"
		}
		return "volatile " + typeStr(v.Type, depth+1)
	case *btf.Restrict:
		return typeStr(v.Type, depth+1)
	case *btf.TypeTag:
		return typeStr(v.Type, depth+1)
	case *btf.Pointer:
		if _, ok := under(v.Target).(*btf.FuncProto); ok {
			return "function pointer"
		}
		s := typeStr(v.Target, depth+1)
		if strings.HasSuffix(s, "*") {
			return s + "*"
		}
		return s + " *"
	case *btf.Array:
		return fmt.Sprintf("%s[%d]", typeStr(v.Type, depth+1), v.Nelems)
	case *btf.Struct:
		return "struct " + nameOrAnon(v.Name)
	case *btf.Union:
		return "union " + nameOrAnon(v.Name)
	case *btf.Enum:
		return "enum " + nameOrAnon(v.Name)
	case *btf.Fwd:
		return v.Kind.String() + " " + v.Name
	case *btf.FuncProto:
		return "function"
	}
	return fmt.Sprintf("%T", t)
}

func nameOrAnon(n string) string {
	if n == "" {
		return "(anonymous)"
	}
	return n
}

// compositeMembers returns the members of a struct or union.
func compositeMembers(t btf.Type) []btf.Member {
	switch v := under(t).(type) {
	case *btf.Struct:
		return v.Members
	case *btf.Union:
		return v.Members
	}
	return nil
}

// findMember looks name up in a struct or union, descending into anonymous struct and union
// members. The returned member's Offset is in bits from the start of t.
func findMember(t btf.Type, name string) (btf.Member, bool) {
	return findMemberDepth(t, name, 0)
}

func findMemberDepth(t btf.Type, name string, depth int) (btf.Member, bool) {
	if depth > 16 {
		return btf.Member{}, false
	}
	for _, m := range compositeMembers(t) {
		if m.Name == name {
			return m, true
		}
		if m.Name == "" && classify(m.Type) == clStruct {
			if inner, ok := findMemberDepth(m.Type, name, depth+1); ok {
				inner.Offset += m.Offset
				return inner, true
			}
		}
	}
	return btf.Member{}, false
}

// memberNames lists the members of t, anonymous structs and unions flattened.
func memberNames(t btf.Type) []string {
	var names []string
	var walk func(btf.Type, int)
	walk = func(t btf.Type, depth int) {
		if depth > 16 {
			return
		}
		for _, m := range compositeMembers(t) {
			if m.Name == "" && classify(m.Type) == clStruct {
				walk(m.Type, depth+1)
				continue
			}
			if m.Name != "" {
				names = append(names, m.Name)
			}
		}
	}
	walk(t, 0)
	return names
}

// listNames joins names for an error message, shortening very long lists.
func listNames(names []string) string {
	const max = 40
	if len(names) == 0 {
		return "none"
	}
	if len(names) > max {
		return strings.Join(names[:max], ", ") + fmt.Sprintf(", ... (%d more)", len(names)-max)
	}
	return strings.Join(names, ", ")
}
