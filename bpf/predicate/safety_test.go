package predicate

import (
	"errors"
	"strings"
	"testing"
)

// hostile are predicates a pod author could write to learn kernel addresses or read memory
// of their choosing. Each must be refused, with the rule it breaks named. The fuzz corpus
// (testdata/fuzz) holds them too.
var hostile = map[string]struct {
	fn, pred string
	col      int
	msg      string
}{
	"pointer against an address (KASLR)": {
		"d_alloc_parallel", `parent->d_sb->s_op < 0xffffffff82000000`, 20,
		"a pointer can only be compared with 0 (NULL check): comparing parent->d_sb->s_op with 0xffffffff82000000 would reveal a kernel address",
	},
	"computed index reaching an address": {
		"d_alloc_parallel", `name->name[(name->hash_len - name->hash_len) + 0xffffffff81000000] == 0x41`, 13,
		"an index must be a constant: ((name->hash_len - name->hash_len) + 0xffffffff81000000) is computed at run time",
	},
	"constant index far past a pointer": {
		"d_alloc_parallel", `name->name[0xffffffff81000000] == 0x41`, 12,
		"index 0xffffffff81000000 out of range for name->name, which is a pointer",
	},
	"58-deep pointer chain": {
		"should_fail_bio", "bio" + strings.Repeat("->bi_next", 57) + "->bi_opf == 1", 40,
		"too many pointer dereferences: this -> follows the 5th pointer of one access path, and a predicate may follow at most 4",
	},
	"58-deep dentry chain": {
		"d_alloc_parallel", "parent" + strings.Repeat("->d_parent", 57) + "->d_flags", 47,
		"follows the 5th pointer",
	},
}

func TestHostilePredicatesRefused(t *testing.T) {
	spec := testSpec(t)
	for name, tc := range hostile {
		t.Run(name, func(t *testing.T) {
			sig := mustResolve(t, spec, tc.fn, "")
			for _, src := range []ArgSource{Tracing, Kprobe} {
				p, err := Compile(sig, tc.pred, Options{ArgSource: src, Arch: "amd64"})
				var pe *Error
				if !errors.As(err, &pe) {
					t.Fatalf("%v: Compile = %v, %v; want a refusal", src, p, err)
				}
				if pe.Column != tc.col || !strings.Contains(pe.Msg, tc.msg) {
					t.Errorf("%v: %q (column %d), want column %d and %q", src, pe.Msg, pe.Column, tc.col, tc.msg)
				}
			}
			// As the engine and kfault validate report it: the frame and field first.
			_, _, err := CompileFrame(spec, 0, tc.fn, "", tc.pred, Options{})
			if want := "callchain[0].predicate: column "; err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("CompileFrame: %v, want it to start with %q", err, want)
			}
		})
	}
}

// TestSafetyRules checks each rule on both sides of its line: refused cases name the rule,
// accepted ones compile.
func TestSafetyRules(t *testing.T) {
	spec := testSpec(t)
	const (
		ptrCmp   = "a pointer can only be compared with 0 (NULL check)"
		constIdx = "an index must be a constant"
		deep     = "too many pointer dereferences"
		window   = "so its index must be a constant from 0 to"
		strFn    = "needs a char pointer or char array as its first argument"
		ptrArith = "a pointer's value is a kernel address, which a predicate may only test against 0"
	)
	for name, tc := range map[string]struct {
		fn, pred string
		col      int    // of the refusal
		msg      string // "" = accepted
	}{
		// Rule 1: members only through BTF, at BTF offsets.
		"1: BTF member":            {fn: "d_alloc_parallel", pred: `parent->d_name.len == 7`},
		"1: unknown member":        {fn: "d_alloc_parallel", pred: `parent->d_nope`, col: 9, msg: `unknown member "d_nope" of struct dentry`},
		"1: member of a bare decl": {fn: "d_alloc_parallel", pred: `parent->d_inode->i_mode`, col: 16, msg: "struct inode is only declared in BTF"},

		// Rule 2: constant indexes, in bounds.
		"2: array, last element":        {fn: "d_alloc_parallel", pred: `parent->d_iname[31] == 0`},
		"2: array, folded constant":     {fn: "d_alloc_parallel", pred: `parent->d_iname[(1 << 4) + 15] == 0`},
		"2: array, past the end":        {fn: "d_alloc_parallel", pred: `parent->d_iname[32]`, col: 17, msg: "index 32 out of range for parent->d_iname (32 elements)"},
		"2: array, folded past the end": {fn: "d_alloc_parallel", pred: `parent->d_iname[16 + 16]`, col: 17, msg: "out of range for parent->d_iname (32 elements)"},
		"2: array, negative":            {fn: "d_alloc_parallel", pred: `parent->d_iname[-1]`, col: 17, msg: "out of range for parent->d_iname"},
		"2: array, variable index":      {fn: "d_alloc_parallel", pred: `parent->d_iname[name->len] == 0`, col: 17, msg: constIdx + ": name->len is computed at run time"},
		"2: array in a struct array":    {fn: "should_fail_bio", pred: `bio->bi_vals[3] == 15`},
		"2: struct array, variable":     {fn: "should_fail_bio", pred: `bio->bi_vals[bio->bi_a] < -3`, col: 14, msg: constIdx},
		"2: char pointer, window end":   {fn: "d_alloc_parallel", pred: `name->name[63] == 0`},
		"2: char pointer, past window":  {fn: "d_alloc_parallel", pred: `name->name[64] == 0`, col: 12, msg: window + " 63 (the first 64 bytes)"},
		"2: char pointer, negative":     {fn: "d_alloc_parallel", pred: `name->name[-1] == 0`, col: 12, msg: window},
		"2: char pointer, variable":     {fn: "d_alloc_parallel", pred: `name->name[name->len - 1] == 's'`, col: 12, msg: constIdx},
		"2: int pointer, window end":    {fn: "ptrs", pred: `ip[15] == 1`},
		"2: int pointer, past window":   {fn: "ptrs", pred: `ip[16] == 1`, col: 4, msg: window + " 15"},
		"2: struct pointer, index 0":    {fn: "d_alloc_parallel", pred: `parent[0].d_flags == 1`},
		"2: struct pointer, index 1":    {fn: "d_alloc_parallel", pred: `parent[1].d_flags == 1`, col: 8, msg: window + " 0"},
		"2: pointer array, index 7":     {fn: "ptrs", pred: `dp[7] != 0`},
		"2: pointer array, index 8":     {fn: "ptrs", pred: `dp[8] != 0`, col: 4, msg: window + " 7"},
		"2: argv, variable":             {fn: "strs", pred: `STRCMP(argv[s[0]], "mount")`, col: 13, msg: constIdx},
		"2: flexible array, in window":  {fn: "chars", pred: `bl->data[63] == 0`},
		"2: flexible array, past":       {fn: "chars", pred: `bl->data[64] == 0`, col: 10, msg: "which is an array of unknown length"},
		"2: unsigned huge index":        {fn: "d_alloc_parallel", pred: `name->name[0xffffffffffffffff]`, col: 12, msg: window},

		// Rule 3: at most MaxDerefs pointers followed on one path.
		"3: four ->":                   {fn: "d_alloc_parallel", pred: `parent->d_parent->d_parent->d_parent->d_flags == 0`},
		"3: five ->":                   {fn: "d_alloc_parallel", pred: `parent->d_parent->d_parent->d_parent->d_parent->d_flags == 0`, col: 47, msg: deep + ": this -> follows the 5th pointer"},
		"3: . and arrays are free":     {fn: "d_alloc_parallel", pred: `STRCMP(parent->d_parent->d_parent->d_parent->d_iname, "x") && parent->d_name.name[0] == 'x'`},
		"3: string through a 5th":      {fn: "d_alloc_parallel", pred: `STRCMP(parent->d_parent->d_parent->d_parent->d_name.name, "x")`, col: 8, msg: deep + ": this STRCMP follows the 5th pointer"},
		"3: [] on a pointer counts":    {fn: "ptrs", pred: `dp[0]->d_parent->d_parent->d_parent->d_flags`, col: 36, msg: deep},
		"3: [] and -> mixed, four":     {fn: "ptrs", pred: `dp[0]->d_parent->d_parent->d_flags`},
		"3: separate paths each count": {fn: "d_alloc_parallel", pred: `parent->d_parent->d_parent->d_parent->d_flags && parent->d_parent->d_parent->d_parent->d_count`},
		"3: argv[0][0]":                {fn: "strs", pred: `argv[0][0] == 'm'`},

		// Rule 4: pointers only against 0.
		"4: == 0":                   {fn: "d_alloc_parallel", pred: `parent == 0`},
		"4: != NULL":                {fn: "d_alloc_parallel", pred: `parent->d_parent != NULL`},
		"4: 0 on the left":          {fn: "d_alloc_parallel", pred: `0 == parent && NULL != name`},
		"4: folded 0":               {fn: "d_alloc_parallel", pred: `parent == 1 - 1`},
		"4: !p":                     {fn: "d_alloc_parallel", pred: `!parent->d_parent`},
		"4: p as a condition":       {fn: "d_alloc_parallel", pred: `parent->d_parent && parent->d_parent->d_flags`},
		"4: guard":                  {fn: "should_fail_bio", pred: `bio->bi_next != 0 && bio->bi_next->bi_opf`},
		"4: null check as a value":  {fn: "d_alloc_parallel", pred: `(parent->d_parent == 0) + 1 == 2`},
		"4: array address vs 0":     {fn: "d_alloc_parallel", pred: `parent->d_iname != 0`},
		"4: pointer vs pointer":     {fn: "d_alloc_parallel", pred: `parent == name`, col: 8, msg: ptrCmp + ": comparing parent with the pointer name would reveal kernel addresses"},
		"4: pointer vs its own":     {fn: "d_alloc_parallel", pred: `parent != parent->d_parent`, col: 8, msg: ptrCmp},
		"4: arrays vs each other":   {fn: "d_alloc_parallel", pred: `parent->d_iname == name->name`, col: 17, msg: ptrCmp},
		"4: pointer vs constant":    {fn: "d_alloc_parallel", pred: `name->name == 0x41`, col: 12, msg: ptrCmp + ": comparing name->name with 0x41 would reveal a kernel address"},
		"4: constant vs pointer":    {fn: "d_alloc_parallel", pred: `0xffffffff81000000 <= parent`, col: 20, msg: ptrCmp + ": comparing parent with 0xffffffff81000000"},
		"4: pointer vs integer":     {fn: "d_alloc_parallel", pred: `parent == name->hash_len`, col: 8, msg: ptrCmp + ": comparing parent with the computed value name->hash_len"},
		"4: ordering against 0":     {fn: "d_alloc_parallel", pred: `parent > 0`, col: 8, msg: ptrCmp + ", with == or !=: use parent != 0"},
		"4: NULL vs 1":              {fn: "d_alloc_parallel", pred: `NULL == 1 || parent`}, // constants only: no address
		"4: pointer + 1":            {fn: "d_alloc_parallel", pred: `name + 1`, col: 6, msg: "pointer arithmetic is not supported"},
		"4: pointer - pointer":      {fn: "d_alloc_parallel", pred: `parent - parent->d_parent > 0`, col: 8, msg: ptrArith},
		"4: pointer & mask":         {fn: "d_alloc_parallel", pred: `(parent & 0xfff) == 0`, col: 9, msg: "operator & needs integers, but parent is a struct dentry *: " + ptrArith},
		"4: pointer >> shift":       {fn: "d_alloc_parallel", pred: `parent >> 30 == 0x3fffffff`, col: 8, msg: ptrArith},
		"4: shift by a pointer":     {fn: "d_alloc_parallel", pred: `1 << parent`, col: 3, msg: ptrArith},
		"4: pointer ^ pointer":      {fn: "d_alloc_parallel", pred: `parent ^ name`, col: 8, msg: ptrArith},
		"4: -pointer":               {fn: "d_alloc_parallel", pred: `-parent`, col: 2, msg: "unary - needs an integer"},
		"4: ~pointer":               {fn: "d_alloc_parallel", pred: `~parent`, col: 2, msg: "unary ~ needs an integer"},
		"4: STRCMP on char *":       {fn: "strs", pred: `STRCMP(s, "x")`},
		"4: STRCMP on u8 *":         {fn: "chars", pred: `STRCMP(u8p, "x")`},
		"4: STRCMP on signed char":  {fn: "chars", pred: `STRNCMP(scp, "x", 1)`},
		"4: STRCMP on char[32]":     {fn: "d_alloc_parallel", pred: `STRCMP(parent->d_sb->s_id, "tmpfs")`},
		"4: STRCMP on char[]":       {fn: "chars", pred: `STRCMP(bl->data, "x")`},
		"4: STRCMP on void *":       {fn: "ptrs", pred: `STRCMP(vp, "x")`, col: 8, msg: strFn + "; vp is a void * (a string function reads only char"},
		"4: STRCMP on _Bool *":      {fn: "ptrs", pred: `STRCMP(bp, "x")`, col: 8, msg: strFn},
		"4: STRCMP on int *":        {fn: "ptrs", pred: `STRNCMP(ip, "x", 2)`, col: 9, msg: strFn},
		"4: STRCMP on int[4]":       {fn: "should_fail_bio", pred: `STRCMP(bio->bi_vals, "x")`, col: 8, msg: strFn},
		"4: STRCMP on NULL":         {fn: "d_alloc_parallel", pred: `STRCMP(NULL, "x")`, col: 8, msg: strFn},
		"4: STRCMP on a struct ptr": {fn: "d_alloc_parallel", pred: `STRCMP(parent->d_sb, "x")`, col: 8, msg: strFn},
	} {
		t.Run(name, func(t *testing.T) {
			sig := mustResolve(t, spec, tc.fn, "")
			for _, src := range []ArgSource{Tracing, Kprobe} {
				_, err := Compile(sig, tc.pred, Options{ArgSource: src, Arch: "amd64"})
				if tc.msg == "" {
					if err != nil {
						t.Errorf("%v: Compile(%q): %v", src, tc.pred, err)
					}
					continue
				}
				var pe *Error
				if !errors.As(err, &pe) {
					t.Fatalf("%v: Compile(%q) = %v, want a refusal", src, tc.pred, err)
				}
				if pe.Column != tc.col || !strings.Contains(pe.Msg, tc.msg) {
					t.Errorf("%v: Compile(%q) = %q (column %d), want column %d and %q", src, tc.pred, pe.Msg, pe.Column, tc.col, tc.msg)
				}
			}
		})
	}
}

// TestHostileKernelBTF refuses the hostile predicates against the running kernel's BTF too,
// where the structs are the real ones (dentry->d_sb->s_op is a const struct super_operations *).
func TestHostileKernelBTF(t *testing.T) {
	spec := kernelSpec(t)
	for name, tc := range hostile {
		sig, err := Resolve(spec, tc.fn, "")
		if err != nil {
			t.Logf("skip %s: %v", name, err)
			continue
		}
		_, err = Compile(sig, tc.pred, Options{})
		var pe *Error
		if !errors.As(err, &pe) || pe.Column != tc.col || !strings.Contains(pe.Msg, tc.msg) {
			t.Errorf("%s: Compile(%q) = %v, want column %d and %q", name, tc.pred, err, tc.col, tc.msg)
		}
	}
}
