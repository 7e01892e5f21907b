package bpf

import (
	"bytes"
	"encoding/binary"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// funcTypes are BTF types of every kind, with functions among them: those are named in want.
func funcTypes() (types []btf.Type, want []string) {
	sint := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	ptr := &btf.Pointer{Target: sint}
	proto := &btf.FuncProto{Return: sint, Params: []btf.FuncParam{{Name: "a", Type: ptr}, {Name: "b", Type: sint}}}
	s := &btf.Struct{Name: "s", Size: 8, Members: []btf.Member{{Name: "x", Type: sint}, {Name: "y", Type: sint, Offset: 32}}}
	u := &btf.Union{Name: "u", Size: 4, Members: []btf.Member{{Name: "x", Type: sint}}}
	v := &btf.Var{Name: "v", Type: sint, Linkage: btf.GlobalVar}
	types = []btf.Type{
		&btf.Func{Name: "vfs_read", Type: proto, Linkage: btf.GlobalFunc},
		&btf.Array{Index: sint, Type: sint, Nelems: 3},
		s, u,
		&btf.Enum{Name: "e", Size: 4, Values: []btf.EnumValue{{Name: "A", Value: 1}, {Name: "B", Value: 2}}},
		&btf.Enum{Name: "e64", Size: 8, Values: []btf.EnumValue{{Name: "C", Value: 1 << 40}}},
		&btf.Fwd{Name: "f", Kind: btf.FwdStruct},
		&btf.Typedef{Name: "t", Type: &btf.Volatile{Type: &btf.Const{Type: &btf.Restrict{Type: ptr}}}},
		&btf.Func{Name: "ksys_read", Type: proto, Linkage: btf.GlobalFunc, Tags: []string{"a tag"}},
		v,
		&btf.Datasec{Name: ".data", Size: 4, Vars: []btf.VarSecinfo{{Type: v, Size: 4}}},
		&btf.Float{Name: "float", Size: 4},
		&btf.Pointer{Target: &btf.TypeTag{Value: "user", Type: sint}},
		&btf.Func{Name: "dup", Type: proto, Linkage: btf.StaticFunc},
		&btf.Func{Name: "dup", Type: &btf.FuncProto{Return: sint}, Linkage: btf.StaticFunc},
		&btf.Func{Name: "__x64_sys_read", Type: proto, Linkage: btf.GlobalFunc},
	}
	return types, []string{"__x64_sys_read", "dup", "ksys_read", "vfs_read"}
}

func marshalBTF(t testing.TB, types []btf.Type, order binary.ByteOrder) []byte {
	t.Helper()
	b, err := btf.NewBuilder(types, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, &btf.MarshalOptions{Order: order})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestBTFFuncNames(t *testing.T) {
	types, want := funcTypes()
	for name, order := range map[string]binary.ByteOrder{"little-endian": binary.LittleEndian, "big-endian": binary.BigEndian} {
		t.Run(name, func(t *testing.T) {
			raw := marshalBTF(t, types, order)
			got, err := btfFuncNames(raw)
			if err != nil || !slices.Equal(got, want) {
				t.Fatalf("btfFuncNames = %q, %v; want %q", got, err, want)
			}
			// What cilium/ebpf decodes agrees.
			spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			if decoded := decodedFuncNames(t, spec); !slices.Equal(decoded, want) {
				t.Fatalf("decoded %q, want %q", decoded, want)
			}
		})
	}
}

func decodedFuncNames(t testing.TB, spec *btf.Spec) []string {
	var names []string
	for typ, err := range spec.All() {
		if err != nil {
			t.Fatal(err)
		}
		if fn, ok := typ.(*btf.Func); ok {
			names = append(names, fn.Name)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

func TestBTFFuncNamesBad(t *testing.T) {
	types, _ := funcTypes()
	raw := marshalBTF(t, types, binary.LittleEndian)
	hdrLen := int(binary.LittleEndian.Uint32(raw[4:]))
	typeLen := int(binary.LittleEndian.Uint32(raw[12:]))
	set := func(off int, v uint32) []byte {
		b := bytes.Clone(raw)
		binary.LittleEndian.PutUint32(b[off:], v)
		return b
	}
	for name, tc := range map[string]struct {
		raw  []byte
		want string
	}{
		"empty":              {nil, "short header"},
		"short header":       {raw[:20], "short header"},
		"bad magic":          {append([]byte{0, 0}, raw[2:]...), "bad magic"},
		"types out of range": {set(12, uint32(len(raw))), "sections out of bounds"},
		"strs out of range":  {set(20, uint32(len(raw))), "sections out of bounds"},
		"truncated types":    {set(12, uint32(typeLen-3)), "truncated type"},
		"unknown kind":       {set(hdrLen+4, 31<<24), "unknown kind 31"}, // the first type's info
		"name out of range":  {set(hdrLen, 1<<30), "name offset"},        // the first type (a function)'s name
	} {
		if got, err := btfFuncNames(tc.raw); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %q, %v; want an error saying %q", name, got, err, tc.want)
		}
	}
}

// On a host with kernel BTF, btfFuncNames finds the functions that cilium/ebpf decodes. Half a
// second: decoding every type is what btfFuncNames avoids.
func TestKernelFuncNames(t *testing.T) {
	if testing.Short() {
		t.Skip("decodes the whole kernel BTF")
	}
	raw, err := os.ReadFile(vmlinuxBTF)
	if err != nil {
		t.Skipf("no kernel BTF: %v", err)
	}
	got, err := btfFuncNames(raw)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if want := decodedFuncNames(t, spec); !slices.Equal(got, want) {
		t.Fatalf("%d names, cilium/ebpf decodes %d", len(got), len(want))
	}
	t.Logf("%d functions", len(got))
}

func BenchmarkKernelFuncNames(b *testing.B) {
	raw, err := os.ReadFile(vmlinuxBTF)
	if err != nil {
		b.Skipf("no kernel BTF: %v", err)
	}
	for b.Loop() {
		if _, err := btfFuncNames(raw); err != nil {
			b.Fatal(err)
		}
	}
}
