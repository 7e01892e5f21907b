package predicate

import (
	"sync"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// Synthetic kernel types, so that tests and fuzzing work without /sys/kernel/btf/vmlinux.
// Layouts (bytes):
//
//	struct qstr   { union { struct { u32 hash; u32 len; }; u64 hash_len; }; const unsigned char *name; }  // 16
//	struct dentry { unsigned int d_flags @0; int d_count @4; struct dentry *d_parent @8;
//	                struct qstr d_name @16; struct inode *d_inode @32; unsigned char d_iname[32] @40;
//	                struct super_block *d_sb @72; }                                                     // 80
//	struct super_block { const struct super_operations *s_op @0; unsigned long s_magic @8; char s_id[32] @16; } // 48
//	struct blob   { int n @0; char data[] @4; }  (a flexible array member)                          // 4
//	struct bio    { struct bio *bi_next @0; unsigned int bi_opf @8; unsigned short bi_flags @12;
//	                short bi_prio @14; unsigned int bi_a:3 @16.0; int bi_b:5 @16.3; unsigned int bi_c:12 @17.0;
//	                long bi_size @24; int bi_vals[4] @32; enum req_op bi_op @48; }                        // 56
var (
	testSpecOnce sync.Once
	testSpecVal  *btf.Spec
	testSpecErr  error
)

func testSpec(tb testing.TB) *btf.Spec {
	tb.Helper()
	testSpecOnce.Do(func() { testSpecVal, testSpecErr = buildTestSpec() })
	if testSpecErr != nil {
		tb.Fatal(testSpecErr)
	}
	return testSpecVal
}

func buildTestSpec() (*btf.Spec, error) {
	uchar := &btf.Int{Name: "unsigned char", Size: 1}
	char := &btf.Int{Name: "char", Size: 1, Encoding: btf.Signed}
	ushort := &btf.Int{Name: "short unsigned int", Size: 2}
	short := &btf.Int{Name: "short int", Size: 2, Encoding: btf.Signed}
	uint := &btf.Int{Name: "unsigned int", Size: 4}
	sint := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	long := &btf.Int{Name: "long int", Size: 8, Encoding: btf.Signed}
	ulong := &btf.Int{Name: "long unsigned int", Size: 8}
	ull := &btf.Int{Name: "long long unsigned int", Size: 8}
	boolT := &btf.Int{Name: "_Bool", Size: 1, Encoding: btf.Bool}
	u32 := &btf.Typedef{Name: "u32", Type: &btf.Typedef{Name: "__u32", Type: uint}}
	u64 := &btf.Typedef{Name: "u64", Type: &btf.Typedef{Name: "__u64", Type: ull}}
	gfp := &btf.Typedef{Name: "gfp_t", Type: uint}

	hashlen := &btf.Struct{Size: 8, Members: []btf.Member{
		{Name: "hash", Type: u32, Offset: 0},
		{Name: "len", Type: u32, Offset: 32},
	}}
	qunion := &btf.Union{Size: 8, Members: []btf.Member{
		{Name: "", Type: hashlen, Offset: 0},
		{Name: "hash_len", Type: u64, Offset: 0},
	}}
	qstr := &btf.Struct{Name: "qstr", Size: 16, Members: []btf.Member{
		{Name: "", Type: qunion, Offset: 0},
		{Name: "name", Type: &btf.Pointer{Target: &btf.Const{Type: uchar}}, Offset: 64},
	}}
	inode := &btf.Fwd{Name: "inode", Kind: btf.FwdStruct}
	sb := &btf.Struct{Name: "super_block", Size: 48, Members: []btf.Member{
		{Name: "s_op", Type: &btf.Pointer{Target: &btf.Const{Type: &btf.Fwd{Name: "super_operations", Kind: btf.FwdStruct}}}, Offset: 0},
		{Name: "s_magic", Type: ulong, Offset: 64},
		{Name: "s_id", Type: &btf.Array{Index: uint, Type: char, Nelems: 32}, Offset: 128},
	}}
	blob := &btf.Struct{Name: "blob", Size: 4, Members: []btf.Member{
		{Name: "n", Type: sint, Offset: 0},
		{Name: "data", Type: &btf.Array{Index: uint, Type: char, Nelems: 0}, Offset: 32},
	}}
	dentry := &btf.Struct{Name: "dentry", Size: 80}
	dentry.Members = []btf.Member{
		{Name: "d_flags", Type: uint, Offset: 0},
		{Name: "d_count", Type: sint, Offset: 32},
		{Name: "d_parent", Type: &btf.Pointer{Target: dentry}, Offset: 64},
		{Name: "d_name", Type: qstr, Offset: 128},
		{Name: "d_inode", Type: &btf.Pointer{Target: inode}, Offset: 256},
		{Name: "d_iname", Type: &btf.Array{Index: uint, Type: uchar, Nelems: 32}, Offset: 320},
		{Name: "d_sb", Type: &btf.Pointer{Target: sb}, Offset: 576},
	}
	reqOp := &btf.Enum{Name: "req_op", Size: 4, Values: []btf.EnumValue{{Name: "REQ_OP_READ", Value: 0}, {Name: "REQ_OP_WRITE", Value: 1}}}
	bio := &btf.Struct{Name: "bio", Size: 56}
	bio.Members = []btf.Member{
		{Name: "bi_next", Type: &btf.Pointer{Target: bio}, Offset: 0},
		{Name: "bi_opf", Type: uint, Offset: 64},
		{Name: "bi_flags", Type: ushort, Offset: 96},
		{Name: "bi_prio", Type: short, Offset: 112},
		{Name: "bi_a", Type: uint, Offset: 128, BitfieldSize: 3},
		{Name: "bi_b", Type: sint, Offset: 131, BitfieldSize: 5},
		{Name: "bi_c", Type: uint, Offset: 136, BitfieldSize: 12},
		{Name: "bi_size", Type: long, Offset: 192},
		{Name: "bi_vals", Type: &btf.Array{Index: uint, Type: sint, Nelems: 4}, Offset: 256},
		{Name: "bi_op", Type: reqOp, Offset: 384},
	}
	wq := &btf.Typedef{Name: "wait_queue_head_t", Type: &btf.Struct{Name: "wait_queue_head", Size: 8}}
	kmem := &btf.Fwd{Name: "kmem_cache", Kind: btf.FwdStruct}
	intRet := sint

	fn := func(name string, params ...btf.FuncParam) *btf.Func {
		return &btf.Func{Name: name, Linkage: btf.GlobalFunc, Type: &btf.FuncProto{Return: intRet, Params: params}}
	}
	types := []btf.Type{
		fn("d_alloc_parallel",
			btf.FuncParam{Name: "parent", Type: &btf.Pointer{Target: dentry}},
			btf.FuncParam{Name: "name", Type: &btf.Pointer{Target: &btf.Const{Type: qstr}}},
			btf.FuncParam{Name: "wq", Type: &btf.Pointer{Target: wq}}),
		fn("should_fail_bio", btf.FuncParam{Name: "bio", Type: &btf.Pointer{Target: bio}}),
		fn("should_failslab",
			btf.FuncParam{Name: "s", Type: &btf.Pointer{Target: kmem}},
			btf.FuncParam{Name: "gfpflags", Type: gfp}),
		fn("ints",
			btf.FuncParam{Name: "a", Type: sint},
			btf.FuncParam{Name: "b", Type: ulong},
			btf.FuncParam{Name: "c", Type: char},
			btf.FuncParam{Name: "d", Type: short},
			btf.FuncParam{Name: "e", Type: boolT},
			btf.FuncParam{Name: "f", Type: long},
			btf.FuncParam{Name: "g", Type: u64}),
		fn("strs",
			btf.FuncParam{Name: "s", Type: &btf.Pointer{Target: &btf.Const{Type: char}}},
			btf.FuncParam{Name: "argv", Type: &btf.Pointer{Target: &btf.Pointer{Target: char}}},
			btf.FuncParam{Name: "u", Type: &btf.Pointer{Target: &btf.TypeTag{Value: "user", Type: &btf.Const{Type: char}}}}),
		fn("byval", btf.FuncParam{Name: "q", Type: qstr}),
		// Pointers that the string functions must refuse, or that only a small constant may index.
		fn("ptrs",
			btf.FuncParam{Name: "dp", Type: &btf.Pointer{Target: &btf.Pointer{Target: dentry}}},
			btf.FuncParam{Name: "vp", Type: &btf.Pointer{Target: &btf.Void{}}},
			btf.FuncParam{Name: "bp", Type: &btf.Pointer{Target: boolT}},
			btf.FuncParam{Name: "ip", Type: &btf.Pointer{Target: sint}}),
		fn("chars",
			btf.FuncParam{Name: "u8p", Type: &btf.Pointer{Target: &btf.Typedef{Name: "u8", Type: &btf.Typedef{Name: "__u8", Type: uchar}}}},
			btf.FuncParam{Name: "scp", Type: &btf.Pointer{Target: &btf.Const{Type: &btf.Int{Name: "signed char", Size: 1, Encoding: btf.Signed}}}},
			btf.FuncParam{Name: "bl", Type: &btf.Pointer{Target: blob}}),
		fn("wide",
			btf.FuncParam{Name: "q", Type: qstr},
			btf.FuncParam{Name: "x", Type: sint},
			btf.FuncParam{Name: "big", Type: dentry},
			btf.FuncParam{Name: "y", Type: sint}),
	}
	b, err := btf.NewBuilder(types, nil)
	if err != nil {
		return nil, err
	}
	return b.Spec()
}

func mustResolve(tb testing.TB, spec *btf.Spec, fn, params string) *Signature {
	tb.Helper()
	sig, err := Resolve(spec, fn, params)
	if err != nil {
		tb.Fatalf("Resolve(%s, %q): %v", fn, params, err)
	}
	return sig
}
