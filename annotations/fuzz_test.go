package annotations

import (
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// FuzzParse checks that no input makes Parse panic, and that whatever Parse accepts
// is a valid fault list that survives Encode and EncodeJSON unchanged.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"failtype: 0",
		`{failtype: 0, callchain: [{funcname: __x64_sys_mount}]}`,
		"failtype: 0\ncallchain:\n- funcname: d_alloc_parallel\n  parameters: struct dentry *parent, const struct qstr *name\n  predicate: STRNCMP(name->name, \"bananas\", 8)\nheaders: [linux/mmzone.h]\nprobability: 1\ntimes: 10\nduration: 5m\n",
		`[{"function":"__x64_sys_openat","errno":"EACCES"},{"failtype":"bio","probability":0.5}]`,
		"- failtype: page\n  times: 18446744073709551615\n- function: f\n  errno: 4095\n",
		`{failtype: 0, callchain: [{funcname: c, parameters: "char buf[16], int (*cb)(void *, int), ..."}]}`,
		"{failtype: 0, headers: ['', 'null', \"\\u2028\"]}",
		"failtype: 9\nprobabilty: 0",
		// failtype alloc (kfault's 3): by number, name and string, with a chain and times.
		"{failtype: alloc, times: 3}",
		"failtype: 3\ncallchain:\n- funcname: __x64_sys_mount\n",
		`[{"failtype":"3","probability":25},{"failtype":"ALLOC","devices":["/dev/sda"]}]`,
		"&a [*a]",
		"[",
		"",
		// Hostile values: anchors and aliases, a second value, NaN, octal, headers.
		"{failtype: 0, headers: [&a x, *a, *a]}",
		"failtype: 0\ncallchain:\n- funcname: a\n  predicate: &x\n",
		"{failtype: 0, callchain: [{funcname: a, predicate: *p}]}",
		"failtype: 0\ncallchain:\n- funcname: a\n  predicate: x && *p == 1\n",
		"base: &b {failtype: 0}\n<<: *b\n",
		`{"failtype":0} {"failtype":1}`,
		"failtype: 0\n...\nfailtype: 1\n",
		"failtype: 0\n---\nfailtype: 1\n",
		"{failtype: 0, probability: .nan}",
		"{failtype: 0, probability: -.inf}",
		"{failtype: 0, probability: !!float '.inf'}",
		"{failtype: 0, times: 010}",
		"{failtype: 0, times: !!int '010'}",
		"{function: f, errno: 013}",
		"{failtype: 0, headers: [" + strings.Repeat("h,", MaxHeaders+1) + "]}",
		"{failtype: 0, headers: [" + strings.Repeat("h", MaxHeaderBytes+1) + "]}",
		// select: a share of the pods, StatefulSet ordinals, seeds as strings and integers.
		"failtype: 0\nselect:\n  percent: 30\n  seed: rollout-2\n",
		`[{"failtype":1,"select":{"ordinals":[0,2]}},{"failtype":"bio","select":{"percent":0.5,"seed":-7}}]`,
		"{failtype: 0, select: {percent: 30, ordinals: [1], seed: '', mode: one}}",
	} {
		f.Add(seed)
	}
	for _, seed := range hostileInputs() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, value string) {
		// Whatever screen lets through, decode expands by a few times at most: no alias
		// gets past it.
		if len(value) <= MaxValueBytes && screen(value) == nil {
			if j, err := yaml.YAMLToJSONStrict([]byte(value)); err == nil && len(j) > 8*len(value)+16 {
				t.Fatalf("%d bytes of %q decoded to %d bytes of JSON", len(value), value, len(j))
			}
		}
		faults, err := Parse(value)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("empty error message for %q", value)
			}
			return
		}
		if len(faults) == 0 || len(faults) > MaxFaults {
			t.Fatalf("accepted %d faults", len(faults))
		}
		for _, flt := range faults {
			if len(flt.HookFunctions()) == 0 || flt.ReturnValue() == 0 {
				t.Fatalf("accepted fault without a hook or return value: %#v", flt)
			}
			if !(flt.Probability > 0 && flt.Probability <= 100) || len(flt.CallChain) > MaxFrames || len(flt.Headers) > MaxHeaders {
				t.Fatalf("accepted out-of-range fault: %#v", flt)
			}
			if s := flt.Select; s != nil {
				if (len(s.Ordinals) > 0) == (s.Percent != 0) || s.Percent < 0 || s.Percent > 100 || len(s.Ordinals) > MaxOrdinals || len(s.Seed) > MaxSeedBytes {
					t.Fatalf("accepted out-of-range select: %#v", s)
				}
				if _, err := Decide([]Fault{flt}, Target{UID: "u", Name: "n-1"}); err != nil {
					t.Fatalf("Decide refused a StatefulSet pod with a UID: %v", err)
				}
			}
			for _, h := range flt.Headers {
				if len(h) > MaxHeaderBytes {
					t.Fatalf("accepted a %d-byte header", len(h))
				}
			}
			_ = flt.String()
		}
		for _, enc := range []string{Encode(faults), EncodeJSON(faults)} {
			again, err := Parse(enc)
			if err != nil {
				t.Fatalf("re-parse of %q (from %q) failed: %v", enc, value, err)
			}
			if !reflect.DeepEqual(again, faults) {
				t.Fatalf("re-parse of %q (from %q):\n got %#v\nwant %#v", enc, value, again, faults)
			}
		}
	})
}
