package annotations

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

const bananas = `STRNCMP(name->name, "bananas", 8)`

func TestParseValid(t *testing.T) {
	dalloc := Frame{FuncName: "d_alloc_parallel", Parameters: "struct dentry *parent, const struct qstr *name", Predicate: bananas}
	for name, tc := range map[string]struct {
		in   string
		want []Fault
	}{
		"failtype 0 with the KernelChaos d_alloc_parallel callchain": {
			in: `
failtype: 0
callchain:
- funcname: d_alloc_parallel
  parameters: struct dentry *parent, const struct qstr *name
  predicate: STRNCMP(name->name, "bananas", 8)
headers: ["linux/mmzone.h"]
probability: 1
times: 10
duration: 5m
`,
			want: []Fault{{FailType: Slab, CallChain: []Frame{dalloc}, Headers: []string{"linux/mmzone.h"}, Probability: 1, Times: 10, Duration: 5 * time.Minute}},
		},
		"flow style mount example": {
			in:   `{failtype: 0, callchain: [{funcname: __x64_sys_mount}]}`,
			want: []Fault{{FailType: Slab, CallChain: []Frame{{FuncName: "__x64_sys_mount"}}, Probability: 100}},
		},
		"bio limited to devices": {
			in:   `{failtype: bio, devices: [/dev/nullb0, "259:0"], times: 5}`,
			want: []Fault{{FailType: Bio, Devices: []string{"/dev/nullb0", "259:0"}, Probability: 100, Times: 5}},
		},
		"should_fail_bio function limited to devices": {
			in:   `{function: should_fail_bio, errno: EIO, devices: ["7:0"]}`,
			want: []Fault{{Function: "should_fail_bio", Errno: 5, Devices: []string{"7:0"}, Probability: 100}},
		},
		"json object": {
			in:   `{"failtype": 2, "probability": 12.5}`,
			want: []Fault{{FailType: Bio, Probability: 12.5}},
		},
		"json list": {
			in:   `[{"failtype": 1}, {"function": "__x64_sys_openat", "errno": "EACCES"}]`,
			want: []Fault{{FailType: Page, Probability: 100}, {Function: "__x64_sys_openat", Errno: 13, Probability: 100}},
		},
		"yaml list": {
			in:   "- failtype: page\n- function: __x64_sys_openat\n  errno: EACCES\n",
			want: []Fault{{FailType: Page, Probability: 100}, {Function: "__x64_sys_openat", Errno: 13, Probability: 100}},
		},
		"failtype names": {
			in:   `[{failtype: slab}, {failtype: Page}, {failtype: BIO}, {failtype: "2"}, {failtype: kmalloc}, {failtype: alloc_page}]`,
			want: []Fault{{FailType: Slab, Probability: 100}, {FailType: Page, Probability: 100}, {FailType: Bio, Probability: 100}, {FailType: Bio, Probability: 100}, {FailType: Slab, Probability: 100}, {FailType: Page, Probability: 100}},
		},
		"failtype alloc, kfault's 3": {
			in:   `[{failtype: alloc}, {failtype: 3}, {failtype: "3"}, {failtype: ALLOC, callchain: [{funcname: __x64_sys_mount}], times: 3}]`,
			want: []Fault{{FailType: Alloc, Probability: 100}, {FailType: Alloc, Probability: 100}, {FailType: Alloc, Probability: 100}, {FailType: Alloc, Probability: 100, Times: 3, CallChain: []Frame{{FuncName: "__x64_sys_mount"}}}},
		},
		"errno forms": {
			in:   `[{function: f, errno: 13}, {function: f, errno: "13"}, {function: f, errno: eacces}, {function: f, errno: EWOULDBLOCK}, {function: f, errno: ENOTSUPP}, {function: f, errno: 4095}]`,
			want: []Fault{{Function: "f", Errno: 13, Probability: 100}, {Function: "f", Errno: 13, Probability: 100}, {Function: "f", Errno: 13, Probability: 100}, {Function: "f", Errno: 11, Probability: 100}, {Function: "f", Errno: 524, Probability: 100}, {Function: "f", Errno: 4095, Probability: 100}},
		},
		"probability bounds and fractions": {
			in:   `[{failtype: 0, probability: 100}, {failtype: 0, probability: 0.001}, {failtype: 0, probability: 1e1}]`,
			want: []Fault{{Probability: 100}, {Probability: 0.001}, {Probability: 10}},
		},
		"times zero and max": {
			in:   `[{failtype: 0, times: 0}, {failtype: 0, times: 18446744073709551615}, {failtype: 0, times: 1e3}]`,
			want: []Fault{{Probability: 100}, {Probability: 100, Times: 1<<64 - 1}, {Probability: 100, Times: 1000}},
		},
		"duration forms": {
			in:   `[{failtype: 0, duration: 1h30m}, {failtype: 0, duration: 0s}, {failtype: 0, duration: 250ms}]`,
			want: []Fault{{Probability: 100, Duration: 90 * time.Minute}, {Probability: 100}, {Probability: 100, Duration: 250 * time.Millisecond}},
		},
		"document markers around one document": {
			in:   "# comment\n---\nfailtype: 2\n---\n# trailing\n",
			want: []Fault{{FailType: Bio, Probability: 100}},
		},
		"null fields are absent": {
			in:   "failtype: 0\nprobability:\ntimes: null\ncallchain: ~\n",
			want: []Fault{{Probability: 100}},
		},
		"empty lists": {
			in:   `{failtype: 0, callchain: [], headers: []}`,
			want: []Fault{{Probability: 100}},
		},
		"parameters forms": {
			in: `{failtype: 0, callchain: [
  {funcname: a, parameters: "void"},
  {funcname: b, parameters: "gfp_t gfp_mask, unsigned int order"},
  {funcname: c, parameters: "char buf[16], int (*cb)(void *, int), ..."},
  {funcname: d, parameters: "const char __user *filename"}]}`,
			want: []Fault{{Probability: 100, CallChain: []Frame{
				{FuncName: "a", Parameters: "void"},
				{FuncName: "b", Parameters: "gfp_t gfp_mask, unsigned int order"},
				{FuncName: "c", Parameters: "char buf[16], int (*cb)(void *, int), ..."},
				{FuncName: "d", Parameters: "const char __user *filename"},
			}}},
		},
		"predicate without parameters": {
			in:   `{failtype: 0, callchain: [{funcname: d_alloc_parallel, predicate: 'STRNCMP(name->name, "bananas", 8)'}]}`,
			want: []Fault{{Probability: 100, CallChain: []Frame{{FuncName: "d_alloc_parallel", Predicate: bananas}}}},
		},
		"& and * outside anchors and aliases": {
			in: "failtype: 0\ncallchain:\n- funcname: a\n  predicate: x && *p == 1\n- funcname: b\n  predicate: '*p & 4'\n- funcname: c\n  predicate: STRNCMP(name->name, \"&x *y\", 2)\nheaders: [\"&a\", '*a', a&b*c]\n",
			want: []Fault{{Probability: 100, Headers: []string{"&a", "*a", "a&b*c"}, CallChain: []Frame{
				{FuncName: "a", Predicate: "x && *p == 1"},
				{FuncName: "b", Predicate: "*p & 4"},
				{FuncName: "c", Predicate: `STRNCMP(name->name, "&x *y", 2)`},
			}}},
		},
		"& and * in JSON strings": {
			in:   `{"failtype": 0, "callchain": [{"funcname": "a", "predicate": "*p == 0 && (f & 1)"}]}`,
			want: []Fault{{Probability: 100, CallChain: []Frame{{FuncName: "a", Predicate: "*p == 0 && (f & 1)"}}}},
		},
		"quoted leading zeros are strings": {
			in:   `{failtype: "0", headers: ['010', "007"], times: 10, probability: 0.5}`,
			want: []Fault{{Probability: 0.5, Times: 10, Headers: []string{"010", "007"}}},
		},
		"thirty-two headers": {
			in:   "{failtype: 0, headers: [" + strings.Repeat("linux/mmzone.h,", MaxHeaders-1) + strings.Repeat("h", MaxHeaderBytes) + "]}",
			want: []Fault{{Probability: 100, Headers: append(slices.Repeat([]string{"linux/mmzone.h"}, MaxHeaders-1), strings.Repeat("h", MaxHeaderBytes))}},
		},
		"eight frames and sixteen faults": {
			in:   "[" + strings.Repeat("{failtype: 0, callchain: [{funcname: a},{funcname: a},{funcname: a},{funcname: a},{funcname: a},{funcname: a},{funcname: a},{funcname: a}]},", 16) + "]",
			want: repeatFault(Fault{Probability: 100, CallChain: []Frame{{FuncName: "a"}, {FuncName: "a"}, {FuncName: "a"}, {FuncName: "a"}, {FuncName: "a"}, {FuncName: "a"}, {FuncName: "a"}, {FuncName: "a"}}}, 16),
		},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := Parse(tc.in)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Parse:\n got %#v\nwant %#v", got, tc.want)
			}
			// Every accepted value survives Encode and EncodeJSON.
			for _, enc := range []string{Encode(got), EncodeJSON(got)} {
				again, err := Parse(enc)
				if err != nil {
					t.Fatalf("Parse(encoded %q): %v", enc, err)
				}
				if !reflect.DeepEqual(again, got) {
					t.Fatalf("round trip of %q:\n got %#v\nwant %#v", enc, again, got)
				}
			}
		})
	}
}

func repeatFault(f Fault, n int) []Fault {
	out := make([]Fault, n)
	for i := range out {
		out[i] = f
	}
	return out
}

func TestParseInvalid(t *testing.T) {
	for name, tc := range map[string]struct {
		in   string
		want string // the full text of the first error, or a prefix of it ending in "..."
	}{
		"empty":                {"", "empty annotation value: want a fault object or a list of them"},
		"blank":                {"  \n\t", "empty annotation value: want a fault object or a list of them"},
		"null document":        {"null", "empty annotation value: want a fault object or a list of them"},
		"scalar document":      {"42", "42 is a number, want a fault object or a list of them"},
		"bad yaml":             {"failtype: [", "not valid YAML or JSON: ..."},
		"duplicate key":        {"failtype: 0\nfailtype: 1", "not valid YAML or JSON: ..."},
		"two documents":        {"failtype: 0\n---\nfailtype: 1\n", "2 YAML documents (separated by ---); write one fault object or a list of them"},
		"two inline documents": {"--- {failtype: 0}\n--- {failtype: 1}\n", "2 YAML documents (separated by ---); write one fault object or a list of them"},
		"two CRLF documents":   {"failtype: 0\r\n---\r\nfailtype: 1\r\n", "2 YAML documents (separated by ---); write one fault object or a list of them"},
		"empty list":           {"[]", "empty list: want at least one fault"},
		"too many faults":      {"[" + strings.Repeat("{failtype: 0},", 17) + "]", "17 faults in one annotation, at most 16 allowed"},
		"list item not object": {"[{failtype: 0}, 3]", "[1]: 3 is a number, want a fault object"},
		"too large":            {"failtype: 0\n#" + strings.Repeat("x", MaxValueBytes), "annotation value is 65549 bytes, more than the limit of 65536"},

		"unknown field with suggestion":   {"{failtype: 0, probabilty: 5}", `probabilty: unknown field (did you mean "probability"?)`},
		"unknown field case":              {"{failType: 0}", `failType: unknown field (did you mean "failtype"?)`},
		"unknown field without sugestion": {"{failtype: 0, colour: red}", "colour: unknown field (known fields: failtype, function, errno, callchain, headers, devices, probability, times, duration, select)"},
		"unknown field in list":           {"[{failtype: 0}, {failtype: 0, tims: 3}]", `[1].tims: unknown field (did you mean "times"?)`},
		"failKernRequest block pasted":    {"failKernRequest: {failtype: 0}", "failKernRequest: unknown field: paste the contents of failKernRequest..."},
		"manifest pasted":                 {"{kind: Pod, failtype: 0}", "kind: unknown field: this looks like a Kubernetes manifest..."},
		"unknown frame field":             {"{failtype: 0, callchain: [{funcname: a, predicat: x}]}", `callchain[0].predicat: unknown field (did you mean "predicate"?)`},

		"devices on slab":          {"{failtype: 0, devices: [/dev/nullb0]}", "devices: only valid on bio faults (failtype 2 or function should_fail_bio)"},
		"devices on alloc":         {"{failtype: alloc, devices: [/dev/nullb0]}", "devices: only valid on bio faults (failtype 2 or function should_fail_bio)"},
		"errno on alloc":           {"{failtype: alloc, errno: ENOSPC}", "errno: only valid with function; failtype returns a fixed value (slab -ENOMEM, page true, bio -EIO, alloc -ENOMEM)"},
		"devices on a function":    {"[{failtype: 2}, {function: f, errno: 1, devices: [\"7:0\"]}]", "[1].devices: only valid on bio faults (failtype 2 or function should_fail_bio)"},
		"devices not a list":       {"{failtype: 2, devices: /dev/sda}", `devices: "/dev/sda" is a string, want a list of block devices (/dev/... paths or major:minor)`},
		"devices empty":            {"{failtype: 2, devices: []}", "devices: empty list: leave devices out to fail bios on every unprotected device"},
		"devices too many":         {"{failtype: 2, devices: [" + strings.Repeat(`"1:1",`, 9) + "]}", "devices: 9 entries, at most 8 allowed"},
		"device relative":          {"{failtype: 2, devices: [/dev/sda, sda]}", `devices[1]: "sda": want a block device path under /dev (e.g. /dev/nullb0) or major:minor (e.g. 259:0)`},
		"device outside /dev":      {"{failtype: 2, devices: [/tmp/x]}", `devices[0]: "/tmp/x": want a block device path under /dev ...`},
		"device unclean":           {"{failtype: 2, devices: [/dev/../etc/x]}", `devices[0]: "/dev/../etc/x": want a block device path under /dev ...`},
		"device major too large":   {"{failtype: 2, devices: [\"4096:0\"]}", `devices[0]: "4096:0": major:minor out of range (major < 4096, minor < 1048576)`},
		"device twice":             {"{failtype: 2, devices: [\"7:0\", \"7:0\"]}", `devices[1]: "7:0" is listed twice`},
		"device number":            {"{failtype: 2, devices: [7]}", `devices[0]: 7 is a number, want a string (/dev/... path or major:minor)`},
		"failtype and function":    {"{failtype: 0, function: f, errno: 1}", "function: cannot be combined with failtype (failtype 0); set one of them"},
		"neither":                  {"{probability: 5}", "failtype: missing: set failtype (0|1|2|3 or slab|page|bio|alloc), or function with errno"},
		"neither in list":          {"[{failtype: 0}, {times: 5}]", "[1].failtype: missing: ..."},
		"failtype out of range":    {"{failtype: 4}", "failtype: 4 is not a fail type; want 0|slab, 1|page, 2|bio or 3|alloc"},
		"failtype negative":        {"{failtype: -1}", "failtype: -1 is not a fail type; ..."},
		"failtype fraction":        {"{failtype: 0.5}", "failtype: 0.5 is not a fail type; ..."},
		"failtype unknown name":    {"{failtype: disk}", `failtype: "disk" is not a fail type; ...`},
		"failtype wrong type":      {"{failtype: [0]}", "failtype: a list; want 0|slab, 1|page, 2|bio or 3|alloc"},
		"function without errno":   {"{function: __x64_sys_openat}", `errno: missing: function "__x64_sys_openat" needs an errno to return (a name like EACCES, or a number)`},
		"errno without function":   {"{failtype: 0, errno: EIO}", "errno: only valid with function; ..."},
		"function empty":           {"{function: '', errno: 1}", "function: must not be empty (the error-injectable kernel function to fail)"},
		"function not identifier":  {"{function: 'sys open', errno: 1}", `function: "sys open" is not a valid C identifier`},
		"function wrong type":      {"{function: 7, errno: 1}", "function: 7 is a number, want a kernel function name (the error-injectable kernel function to fail)"},
		"function too long":        {"{function: " + strings.Repeat("a", 129) + ", errno: 1}", `function: "aaaa...`},
		"errno unknown name":       {"{function: f, errno: EFOO}", `errno: unknown errno name "EFOO"; want a name like EACCES or a number 1-4095`},
		"errno close name":         {"{function: f, errno: EACCESS}", `errno: unknown errno name "EACCESS" (did you mean "EACCES"?)`},
		"errno negative":           {"{function: f, errno: -13}", "errno: -13 must be positive: kfault returns -errno, so write 13 or its name"},
		"errno negative name":      {"{function: f, errno: -EACCES}", `errno: "-EACCES": write the name without the minus sign (kfault returns -errno)`},
		"errno zero":               {"{function: f, errno: 0}", "errno: 0 is not an error; want a name like EACCES or a number 1-4095"},
		"errno too large":          {"{function: f, errno: 4096}", "errno: 4096 is out of range; ..."},
		"errno fraction":           {"{function: f, errno: 1.5}", "errno: 1.5 is not a whole number; ..."},
		"errno wrong type":         {"{function: f, errno: true}", "errno: true is a boolean; ..."},
		"probability zero":         {"{failtype: 0, probability: 0}", "probability: 0 is out of range (0, 100]"},
		"probability negative":     {"{failtype: 0, probability: -5}", "probability: -5 is out of range (0, 100]"},
		"probability above 100":    {"{failtype: 0, probability: 100.5}", "probability: 100.5 is out of range (0, 100]"},
		"probability string":       {"{failtype: 0, probability: '50%'}", `probability: "50%" is a string, want a number of percent in (0, 100]`},
		"times negative":           {"{failtype: 0, times: -1}", "times: -1 must not be negative (0 means unlimited)"},
		"times fraction":           {"{failtype: 0, times: 2.5}", "times: 2.5 is not a whole number"},
		"times too large":          {"{failtype: 0, times: 1e30}", "times: 1e+30 is too large (at most 18446744073709551615)"},
		"times string":             {"{failtype: 0, times: ten}", `times: "ten" is a string, want a whole number >= 0 (0 means unlimited)`},
		"duration bad":             {"{failtype: 0, duration: 5 minutes}", `duration: "5 minutes" is not a duration; want a Go duration like 30s, 5m or 1h30m`},
		"duration negative":        {"{failtype: 0, duration: -5m}", `duration: "-5m" must not be negative`},
		"duration number":          {"{failtype: 0, duration: 300}", `duration: 300 has no unit; write it like "300s"`},
		"duration list":            {"{failtype: 0, duration: [1]}", "duration: a list, want a Go duration like 30s, 5m or 1h30m"},
		"headers not list":         {"{failtype: 0, headers: linux/mmzone.h}", `headers: "linux/mmzone.h" is a string, want a list of header names (accepted for KernelChaos compatibility, unused)`},
		"headers item not string":  {"{failtype: 0, headers: [a, 1]}", "headers[1]: 1 is a number, want a string"},
		"callchain not list":       {"{failtype: 0, callchain: {funcname: a}}", "callchain: an object, want a list of frames ({funcname, parameters, predicate})"},
		"callchain too long":       {"{failtype: 0, callchain: [" + strings.Repeat("{funcname: a},", 9) + "]}", "callchain: 9 frames, at most 8 allowed"},
		"frame not object":         {"{failtype: 0, callchain: [d_alloc_parallel]}", `callchain[0]: "d_alloc_parallel" is a string, want a frame object ({funcname, parameters, predicate})`},
		"funcname missing":         {"{failtype: 0, callchain: [{predicate: x}]}", "callchain[0].funcname: missing: name the kernel function that must be on the stack"},
		"funcname empty in list":   {"[{failtype: 0}, {failtype: 0, callchain: [{funcname: ''}]}]", "[1].callchain[0].funcname: must not be empty (the kernel function that must be on the stack)"},
		"funcname not identifier":  {"{failtype: 0, callchain: [{funcname: 1abc}]}", `callchain[0].funcname: "1abc" is not a valid C identifier`},
		"funcname constprop":       {"{failtype: 0, callchain: [{funcname: should_failslab.constprop.0}]}", `callchain[0].funcname: "should_failslab.constprop.0" is not a valid C identifier: compiler suffixes like .constprop.0 or .isra.0 are not part of the name; write "should_failslab"`},
		"parameters empty":         {"{failtype: 0, callchain: [{funcname: a, parameters: ''}]}", "callchain[0].parameters: must not be empty (omit it: BTF knows the signature)"},
		"parameters no name":       {"{failtype: 0, callchain: [{funcname: a, parameters: 'struct dentry *'}]}", `callchain[0].parameters: "struct dentry *" is not a C parameter list: parameter 1 ("struct dentry *") does not end in a parameter name`},
		"parameters type only":     {"{failtype: 0, callchain: [{funcname: a, parameters: 'int a, unsigned int'}]}", `callchain[0].parameters: "int a, unsigned int" is not a C parameter list: parameter 2 ("unsigned int") does not end in a parameter name`},
		"parameters empty param":   {"{failtype: 0, callchain: [{funcname: a, parameters: 'int a,,int b'}]}", "callchain[0].parameters: ...: parameter 2 is empty"},
		"parameters bad char":      {"{failtype: 0, callchain: [{funcname: a, parameters: 'int a; int b'}]}", `callchain[0].parameters: "int a; int b" is not a C parameter list: parameter 1 ("int a; int b") has a character that cannot appear in a declaration`},
		"parameters stray dot":     {"{failtype: 0, callchain: [{funcname: a, parameters: 'int a.b'}]}", "callchain[0].parameters: ...has a character that cannot appear in a declaration"},
		"parameters unbalanced":    {"{failtype: 0, callchain: [{funcname: a, parameters: 'int (*f(void)'}]}", "callchain[0].parameters: ...: unbalanced parentheses"},
		"parameters ellipsis":      {"{failtype: 0, callchain: [{funcname: a, parameters: '..., int a'}]}", "callchain[0].parameters: ...: ... must be the last parameter"},
		"parameters wrong type":    {"{failtype: 0, callchain: [{funcname: a, parameters: [int a]}]}", "callchain[0].parameters: a list, want a string"},
		"predicate empty":          {"{failtype: 0, callchain: [{funcname: a, predicate: '  '}]}", "callchain[0].predicate: must not be empty (omit it to match every call)"},
		"predicate control char":   {`{"failtype": 0, "callchain": [{"funcname": "a", "predicate": "x\u0001"}]}`, `callchain[0].predicate: "x\x01" contains a non-printable or non-ASCII byte at offset 1`},
		"predicate non-ascii":      {"{failtype: 0, callchain: [{funcname: a, predicate: 'x == é'}]}", "callchain[0].predicate: ...non-ASCII byte at offset 5"},
		"predicate too long":       {"{failtype: 0, callchain: [{funcname: a, predicate: '" + strings.Repeat("x", MaxTextBytes+1) + "'}]}", "callchain[0].predicate: ...is 1025 bytes long, at most 1024 allowed"},
		"several errors, in order": {"{failtype: 9, probability: 0}", "failtype: 9 is not a fail type; ..."},
		"headers too many":         {"{failtype: 0, headers: [" + strings.Repeat("h,", MaxHeaders+1) + "]}", "headers: 33 entries, at most 32 allowed (kfault does not use them: leave headers out)"},
		"header too long":          {"{failtype: 0, headers: [a, " + strings.Repeat("h", MaxHeaderBytes+1) + "]}", `headers[1]: "hhhh...is 257 bytes long, at most 256 allowed`},

		"anchor and alias":          {"{failtype: 0, headers: [&a x, *a]}", "headers[0]: " + errAnchors},
		"alias amplification":       {hostileInputs()["alias amplification"], "headers[0]: " + errAnchors},
		"nested aliases":            {hostileInputs()["nested aliases"], "headers: " + errAnchors},
		"anchor on the whole value": {"&v {failtype: 0}", errAnchors},
		"anchor on a key":           {"{&k failtype: 0}", errAnchors},
		"merge key":                 {"base: &b {failtype: 0}\n<<: *b\n", "base: " + errAnchors},
		"anchor as empty predicate": {"failtype: 0\ncallchain:\n- funcname: a\n  predicate: &x\n", "callchain[0].predicate: " + errAnchors},
		"unquoted dereference":      {"{failtype: 0, callchain: [{funcname: a, predicate: *p}]}", errAnchors},
		"alias in a later document": {"failtype: 0\n---\n*a\n", "2 YAML documents (separated by ---); ..."},

		"two JSON values":              {`{"failtype":0} {"failtype":1}`, "more text after the first JSON/YAML value: write one fault object or a list of them ([{...}, {...}])"},
		"two JSON values on two lines": {"{\"failtype\":0}\n{\"failtype\":1}\n", "more text after the first JSON/YAML value: ..."},
		"two JSON lists":               {`[{"failtype":0}] [{"failtype":1}]`, "more text after the first JSON/YAML value: ..."},
		"text after a JSON value":      {`{"failtype":0} x`, "more text after the first JSON/YAML value: ..."},
		"document end, then more":      {"failtype: 0\n...\nfailtype: 1\n", "more text after the first JSON/YAML value: ..."},

		"probability nan":        {"{failtype: 0, probability: .nan}", "probability: .nan is not a finite number"},
		"probability NaN":        {"{failtype: 0, probability: .NaN}", "probability: .NaN is not a finite number"},
		"probability inf":        {"{failtype: 0, probability: .inf}", "probability: .inf is not a finite number"},
		"probability plus inf":   {"{failtype: 0, probability: +.Inf}", "probability: +.Inf is not a finite number"},
		"probability minus inf":  {"{failtype: 0, probability: -.inf}", "probability: -.inf is not a finite number"},
		"probability tagged nan": {"{failtype: 0, probability: !!float '.nan'}", "probability: .nan is not a finite number"},
		"times inf in a list":    {"[{failtype: 0}, {failtype: 0, times: .INF}]", "[1].times: .INF is not a finite number"},

		"times leading zero":             {"{failtype: 0, times: 010}", "times: 010 has a leading zero (YAML reads 010 as octal 8); write it without leading zeros (10)"},
		"times leading zero, not octal":  {"{failtype: 0, times: 09}", "times: 09 has a leading zero ...(9)"},
		"times leading zero in JSON":     {`{"failtype": 0, "times": 010}`, "times: 010 has a leading zero ...(10)"},
		"times leading zero, negative":   {"{failtype: 0, times: -010}", "times: -010 has a leading zero ...(-10)"},
		"times leading zero, underscore": {"{failtype: 0, times: 0_10}", "times: 0_10 has a leading zero ...(10)"},
		"times leading zero, tagged":     {"{failtype: 0, times: !!int '010'}", "times: 010 has a leading zero ...(10)"},
		"failtype leading zero":          {"{failtype: 00}", "failtype: 00 has a leading zero ...(0)"},
		"errno leading zero":             {"{function: f, errno: 013}", "errno: 013 has a leading zero ...(13)"},
		"errno quoted leading zero":      {"{function: f, errno: '013'}", `errno: "013" has a leading zero; write it without leading zeros`},
		"probability leading zero":       {"{failtype: 0, probability: 010}", "probability: 010 has a leading zero ...(10)"},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := Parse(tc.in)
			if err == nil {
				t.Fatalf("Parse accepted %q: %#v", tc.in, got)
			}
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error is %T, want non-empty Errors", err)
			}
			first := es[0].Error()
			if prefix, ok := strings.CutSuffix(tc.want, "..."); ok {
				prefix, suffix, split := strings.Cut(prefix, "...")
				if !strings.HasPrefix(first, prefix) || (split && !strings.HasSuffix(first, suffix)) {
					t.Fatalf("error\n got %q\nwant %q", first, tc.want)
				}
			} else if strings.Contains(tc.want, "...") {
				prefix, suffix, _ := strings.Cut(tc.want, "...")
				if !strings.HasPrefix(first, prefix) || !strings.HasSuffix(first, suffix) {
					t.Fatalf("error\n got %q\nwant %q", first, tc.want)
				}
			} else if first != tc.want {
				t.Fatalf("error\n got %q\nwant %q", first, tc.want)
			}
			// The field path leads the message.
			if es[0].Path != "" && !strings.HasPrefix(err.Error(), es[0].Path+": ") {
				t.Fatalf("error %q does not start with its path %q", err, es[0].Path)
			}
		})
	}
}

func TestParseReportsEveryError(t *testing.T) {
	_, err := Parse("- failtype: 5\n- function: x\n  errno: EFOO\n- failtype: 0\n  probability: 0\n  times: -1\n")
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"[0].failtype: 5 ", `[1].errno: unknown errno name "EFOO"`, "[2].probability: 0 is out of range (0, 100]", "[2].times: -1 must not be negative"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	var es Errors
	errors.As(err, &es)
	if len(es) != 4 {
		t.Errorf("got %d errors, want 4: %v", len(es), err)
	}
}

func TestErrorsTruncated(t *testing.T) {
	errs := func(n int) Errors {
		var es Errors
		for i := range n {
			es = append(es, &FieldError{Path: indexPath("", i), Reason: "bad"})
		}
		return es
	}
	for name, tc := range map[string]struct {
		es         Errors
		shown      int
		wantSuffix string
	}{
		"one":    {errs(1), 1, "[0]: bad"},
		"ten":    {errs(10), 10, "[9]: bad"},
		"eleven": {errs(11), 10, "[9]: bad; and 1 more"},
		"thirty": {errs(30), 10, "[9]: bad; and 20 more"},
	} {
		t.Run(name, func(t *testing.T) {
			msg := tc.es.Error()
			if got := strings.Count(msg, ": bad"); got != tc.shown || !strings.HasSuffix(msg, tc.wantSuffix) {
				t.Fatalf("%q: %d errors shown, want %d ending in %q", msg, got, tc.shown, tc.wantSuffix)
			}
		})
	}

	// An annotation with thirty errors: two in each of fifteen faults.
	_, err := Parse(hostileInputs()["thirty errors"])
	var es Errors
	if !errors.As(err, &es) || len(es) != 30 {
		t.Fatalf("got %v, want 30 errors", err)
	}
	msg := err.Error()
	if got := strings.Count(msg, "]."); got != 10 || !strings.HasSuffix(msg, "; and 20 more") {
		t.Fatalf("error %q: %d shown, want 10 and a count of the other 20", msg, got)
	}
}

func TestJSONAndYAMLAgree(t *testing.T) {
	for name, pair := range map[string][2]string{
		"single": {
			`{"failtype":0,"callchain":[{"funcname":"d_alloc_parallel","predicate":"STRNCMP(name->name, \"bananas\", 8)"}],"probability":1,"times":10,"duration":"5m"}`,
			"failtype: 0\ncallchain:\n- funcname: d_alloc_parallel\n  predicate: 'STRNCMP(name->name, \"bananas\", 8)'\nprobability: 1\ntimes: 10\nduration: 5m\n",
		},
		"list": {
			`[{"function":"__x64_sys_openat","errno":"EACCES"},{"failtype":"bio"}]`,
			"- function: __x64_sys_openat\n  errno: EACCES\n- failtype: bio\n",
		},
	} {
		t.Run(name, func(t *testing.T) {
			j, err := Parse(pair[0])
			if err != nil {
				t.Fatal(err)
			}
			y, err := Parse(pair[1])
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(j, y) {
				t.Fatalf("JSON %#v\nYAML %#v", j, y)
			}
		})
	}
}

func TestSingleIsListOfOne(t *testing.T) {
	one, err := Parse("failtype: 1")
	if err != nil {
		t.Fatal(err)
	}
	list, err := Parse("- failtype: 1")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(one, list) || len(one) != 1 {
		t.Fatalf("single %#v, list %#v", one, list)
	}
}

func TestDefaults(t *testing.T) {
	fs, err := Parse("failtype: 0")
	if err != nil {
		t.Fatal(err)
	}
	f := fs[0]
	if f.Probability != 100 || f.Times != 0 || f.Duration != 0 || f.CallChain != nil || f.Headers != nil || f.Function != "" || f.Errno != 0 {
		t.Fatalf("defaults: %#v", f)
	}
}

func TestHookAndReturnValue(t *testing.T) {
	for name, tc := range map[string]struct {
		f      Fault
		hook   string
		ret    int64
		str    string
		ftName string
	}{
		"slab": {Fault{FailType: Slab, Probability: 100}, "should_failslab", -12, "slab: should_failslab returns -ENOMEM, every time, no limit on times, until the container stops", "slab"},
		"page": {Fault{FailType: Page, Probability: 50, Times: 3}, "should_fail_alloc_page", 1, "page: should_fail_alloc_page returns true, probability 50%, at most 3 times, until the container stops", "page"},
		"bio":  {Fault{FailType: Bio, Probability: 100, Duration: time.Minute}, "should_fail_bio", -5, "bio: should_fail_bio returns -EIO, every time, no limit on times, for 1m0s", "bio"},
		"alloc": {Fault{FailType: Alloc, Probability: 100, Times: 3}, "alloc", -12,
			"alloc: security_file_alloc, security_inode_alloc, security_sk_alloc, security_task_alloc, security_prepare_creds, security_sb_alloc, security_msg_msg_alloc, security_vm_enough_memory_mm return -ENOMEM, every time, at most 3 times, until the container stops", "alloc"},
		"function": {Fault{Function: "__x64_sys_openat", Errno: 13, Probability: 0.5, CallChain: []Frame{{FuncName: "a"}, {FuncName: "b", Predicate: "x == 1"}}}, "__x64_sys_openat", -13,
			"function: __x64_sys_openat returns -EACCES (-13) when called under a -> b [x == 1], probability 0.5%, no limit on times, until the container stops", "slab"},
		"function unnamed errno": {Fault{Function: "f", Errno: 600, Probability: 100}, "f", -600, "function: f returns -600 (-600), every time, no limit on times, until the container stops", "slab"},
	} {
		t.Run(name, func(t *testing.T) {
			if got := tc.f.HookName(); got != tc.hook {
				t.Errorf("HookName = %q, want %q", got, tc.hook)
			}
			if got := tc.f.ReturnValue(); got != tc.ret {
				t.Errorf("ReturnValue = %d, want %d", got, tc.ret)
			}
			if got := tc.f.String(); got != tc.str {
				t.Errorf("String =\n %q\nwant\n %q", got, tc.str)
			}
			if got := tc.f.FailType.String(); got != tc.ftName {
				t.Errorf("FailType.String = %q, want %q", got, tc.ftName)
			}
		})
	}
	if got := FailType(7).String(); got != "FailType(7)" {
		t.Errorf("FailType(7).String() = %q", got)
	}
	if got := FailType(7).HookFunctions(); got != nil {
		t.Errorf("FailType(7).HookFunctions() = %q", got)
	}
}

func TestErrnoTable(t *testing.T) {
	for name, want := range map[string]int{
		"EPERM": 1, "ENOENT": 2, "EIO": 5, "ENOMEM": 12, "EACCES": 13, "EBUSY": 16, "EINVAL": 22,
		"ENOSPC": 28, "EAGAIN": 11, "EWOULDBLOCK": 11, "ETIMEDOUT": 110, "ENOTSUP": 95, "EOPNOTSUPP": 95,
		"EDEADLK": 35, "EDEADLOCK": 35, "EHWPOISON": 133, "ERESTARTSYS": 512, "ENOTSUPP": 524,
		"eintr": 4,
	} {
		if got, ok := LookupErrno(name); !ok || got != want {
			t.Errorf("LookupErrno(%q) = %d, %v; want %d", name, got, ok, want)
		}
	}
	if _, ok := LookupErrno("EFOO"); ok {
		t.Error("LookupErrno(EFOO) succeeded")
	}
	for n, want := range map[int]string{13: "EACCES", 11: "EAGAIN", 524: "ENOTSUPP", 4000: ""} {
		if got := ErrnoName(n); got != want {
			t.Errorf("ErrnoName(%d) = %q, want %q", n, got, want)
		}
	}
	// Every name maps to a number whose canonical name maps back to it.
	for _, name := range ErrnoNames() {
		n, _ := LookupErrno(name)
		if back, ok := LookupErrno(ErrnoName(n)); !ok || back != n {
			t.Errorf("%s = %d, but ErrnoName(%d) = %q", name, n, n, ErrnoName(n))
		}
	}
	if len(ErrnoNames()) < 130 {
		t.Errorf("only %d errno names", len(ErrnoNames()))
	}
}

func TestEncodeQuoting(t *testing.T) {
	fs := []Fault{{
		Function: "on", Errno: 600, Probability: 1e-7, Times: 1 << 63, Duration: time.Nanosecond,
		CallChain: []Frame{{FuncName: "yes", Parameters: "int x", Predicate: `x == '#' || STRCMP(s, ": \t")`}},
		Headers:   []string{"", "null", "a: b", "- x", "\u2028"},
	}, {FailType: Bio, Probability: 100}}
	for _, enc := range []string{Encode(fs), EncodeJSON(fs)} {
		got, err := Parse(enc)
		if err != nil {
			t.Fatalf("Parse(%q): %v", enc, err)
		}
		if !reflect.DeepEqual(got, fs) {
			t.Fatalf("round trip of\n%s\n got %#v\nwant %#v", enc, got, fs)
		}
	}
}

// hostileInputs are annotation values built to cost the parser time or memory, or to
// slip something past it. BenchmarkParseHostile times them; FuzzParse seeds with them.
func hostileInputs() map[string]string {
	alias := `headers: [&s "` + strings.Repeat("x", 40<<10) + `"`
	for len(alias) < 50<<10 {
		alias += ", *s"
	}
	alias += "]\nfailtype: 0\n"
	laughs := "failtype: 0\nheaders: &a [x, x, x, x, x, x, x, x, x, x]\n"
	prev := "a"
	for _, name := range []string{"b", "c", "d", "e", "f", "g", "h", "i"} {
		laughs += "x" + name + ": &" + name + " [" + strings.TrimSuffix(strings.Repeat("*"+prev+", ", 10), ", ") + "]\n"
		prev = name
	}
	return map[string]string{
		"alias amplification": alias,
		"nested aliases":      laughs,
		"thirty errors":       "[" + strings.Repeat("{failtype: 7, times: -1},", 15) + "]",
		"many headers":        "{failtype: 0, headers: [" + strings.Repeat("h,", 30<<10) + "]}",
		"long header":         "{failtype: 0, headers: [" + strings.Repeat("h", 60<<10) + "]}",
		"deep nesting":        "{failtype: 0, headers: " + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + "}",
		"two JSON values":     `{"failtype":0} {"failtype":1}`,
		"leading zero":        "{failtype: 0, times: 010}",
		"NaN probability":     "{failtype: 0, probability: .nan}",
	}
}

func BenchmarkParseHostile(b *testing.B) {
	for name, in := range hostileInputs() {
		b.Run(strings.ReplaceAll(name, " ", "_"), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = Parse(in)
			}
		})
	}
}

// TestFaultsJSON: the stored form reads back to the same faults, and a state file of an
// earlier version (the annotation text as a string) still loads.
func TestFaultsJSON(t *testing.T) {
	tests := map[string]struct {
		stored string
		want   Faults
	}{
		"list":                    {`[{"failtype":0,"times":3},{"function":"vfs_read","errno":"EIO"}]`, Faults{{FailType: Slab, Probability: 100, Times: 3}, {Function: "vfs_read", Errno: 5, Probability: 100}}},
		"old text":                {`"{failtype: 1, probability: 5}"`, Faults{{FailType: Page, Probability: 5}}},
		"empty":                   {`[]`, nil},
		"refused by this version": {`"{failtype: 0, times: 010}"`, nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var got Faults
			if err := json.Unmarshal([]byte(tc.stored), &got); err != nil {
				t.Fatal(err)
			}
			if !got.Equal(tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			data, err := json.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			var again Faults
			if err := json.Unmarshal(data, &again); err != nil || !again.Equal(got) {
				t.Fatalf("round trip through %s: %+v, %v", data, again, err)
			}
		})
	}
}

// FromFields gives the fault Parse gives for the same object, and the same errors.
func TestFromFields(t *testing.T) {
	tests := map[string]struct {
		text    string
		fields  map[string]any
		wantErr string
	}{
		"failtype":   {text: `{failtype: slab, times: 5}`, fields: map[string]any{"failtype": "slab", "times": json.Number("5")}},
		"function":   {text: `{function: __x64_sys_mkdir, errno: EACCES, duration: 1m}`, fields: map[string]any{"function": "__x64_sys_mkdir", "errno": "EACCES", "duration": "1m"}},
		"bad number": {fields: map[string]any{"failtype": "page", "probability": json.Number("101")}, wantErr: "probability: 101 is out of range (0, 100]"},
		"no kind":    {fields: map[string]any{"times": json.Number("1")}, wantErr: "failtype: missing"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := FromFields(tc.fields)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want, err := Parse(tc.text)
			if err != nil {
				t.Fatal(err)
			}
			if !Faults(want).Equal(Faults{got}) {
				t.Errorf("FromFields: %v\nParse:      %v", got, want[0])
			}
		})
	}
}
