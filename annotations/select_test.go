package annotations

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

func TestParseSelect(t *testing.T) {
	for name, tc := range map[string]struct {
		in   string
		want []Fault
	}{
		"percent": {
			in:   "failtype: 0\nselect:\n  percent: 30\n",
			want: []Fault{{Probability: 100, Select: &Select{Percent: 30}}},
		},
		"percent, fraction and string seed": {
			in:   `{failtype: 0, select: {percent: 12.5, seed: "run 2"}}`,
			want: []Fault{{Probability: 100, Select: &Select{Percent: 12.5, Seed: "run 2"}}},
		},
		"integer seed is its decimal text": {
			in:   `{failtype: 0, select: {percent: 100, seed: -7}}`,
			want: []Fault{{Probability: 100, Select: &Select{Percent: 100, Seed: "-7"}}},
		},
		"ordinals, as written": {
			in:   `{failtype: 0, select: {ordinals: [2, 0]}}`,
			want: []Fault{{Probability: 100, Select: &Select{Ordinals: []int{2, 0}}}},
		},
		"null select is absent": {
			in:   "failtype: 0\nselect:\n",
			want: []Fault{{Probability: 100}},
		},
		"one fault of a list": {
			in:   `[{failtype: 0}, {function: f, errno: EIO, select: {percent: 50}}]`,
			want: []Fault{{Probability: 100}, {Function: "f", Errno: 5, Probability: 100, Select: &Select{Percent: 50}}},
		},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := Parse(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %#v\nwant %#v", got, tc.want)
			}
			for _, enc := range []string{Encode(got), EncodeJSON(got)} {
				again, err := Parse(enc)
				if err != nil || !reflect.DeepEqual(again, got) {
					t.Errorf("round trip through %q: %#v, %v", enc, again, err)
				}
			}
		})
	}
}

func TestParseSelectErrors(t *testing.T) {
	for name, tc := range map[string]struct{ in, want string }{
		"not an object":        {`{failtype: 0, select: 30}`, "select: 30 is a number, want an object: {percent: P} or {ordinals: [N, ...]}"},
		"empty":                {`{failtype: 0, select: {}}`, "select.percent: missing: set percent"},
		"both":                 {`{failtype: 0, select: {percent: 30, ordinals: [1]}}`, "select.ordinals: cannot be combined with percent"},
		"unknown key":          {`{failtype: 0, select: {percent: 30, perecnt: 2}}`, `select.perecnt: unknown field (did you mean "percent"?)`},
		"KernelChaos mode":     {`{failtype: 0, select: {mode: one, percent: 3}}`, "select.mode: unknown field: KernelChaos's mode has no field here"},
		"mode at the top":      {`{failtype: 0, mode: fixed-percent}`, "mode: unknown field: KernelChaos's mode and value become select"},
		"percent zero":         {`{failtype: 0, select: {percent: 0}}`, "select.percent: 0 is out of range (0, 100]"},
		"percent over 100":     {`{failtype: 0, select: {percent: 100.5}}`, "select.percent: 100.5 is out of range (0, 100]"},
		"percent string":       {`{failtype: 0, select: {percent: "30%"}}`, `select.percent: "30%" is a string, want a number of percent in (0, 100]`},
		"ordinals empty":       {`{failtype: 0, select: {ordinals: []}}`, "select.ordinals: empty list: want at least one ordinal"},
		"ordinals not a list":  {`{failtype: 0, select: {ordinals: 2}}`, "select.ordinals: 2 is a number, want a list of StatefulSet pod ordinals"},
		"ordinal negative":     {`{failtype: 0, select: {ordinals: [0, -1]}}`, "select.ordinals[1]: -1 must not be negative"},
		"ordinal fraction":     {`{failtype: 0, select: {ordinals: [1.5]}}`, "select.ordinals[0]: 1.5 is not a whole number"},
		"ordinal too large":    {`{failtype: 0, select: {ordinals: [2147483648]}}`, "select.ordinals[0]: 2147483648 is too large (at most 2147483647)"},
		"ordinal twice":        {`{failtype: 0, select: {ordinals: [3, 3]}}`, "select.ordinals[1]: 3 is listed twice"},
		"too many ordinals":    {fmt.Sprintf(`{failtype: 0, select: {ordinals: [%s]}}`, strings.Repeat("1,", MaxOrdinals)+"1"), "select.ordinals: 1025 ordinals, at most 1024 allowed"},
		"seed with ordinals":   {`{failtype: 0, select: {ordinals: [0], seed: a}}`, "select.seed: only valid with percent"},
		"seed empty":           {`{failtype: 0, select: {percent: 5, seed: ""}}`, "select.seed: must not be empty (omit it for no seed)"},
		"seed fraction":        {`{failtype: 0, select: {percent: 5, seed: 1.5}}`, "select.seed: 1.5 is not a whole number"},
		"seed bool":            {`{failtype: 0, select: {percent: 5, seed: true}}`, "select.seed: true is a boolean; want a string or a whole number"},
		"seed too long":        {`{failtype: 0, select: {percent: 5, seed: ` + strings.Repeat("s", MaxSeedBytes+1) + `}}`, "is 129 bytes long, at most 128 allowed"},
		"seed not printable":   {`{failtype: 0, select: {percent: 5, seed: "a\tb"}}`, "select.seed: \"a\\tb\" contains a non-printable"},
		"path in a list":       {`[{failtype: 0}, {failtype: 1, select: {percent: -1}}]`, "[1].select.percent: -1 is out of range (0, 100]"},
		"seed leading zero":    {`{failtype: 0, select: {percent: 5, seed: 007}}`, "select.seed: 007 has a leading zero"},
		"ordinal leading zero": {`{failtype: 0, select: {ordinals: [01]}}`, "select.ordinals[0]: 01 has a leading zero"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestSelectDrawLayout pins the documented byte layout: the expected values were computed
// from the description in docs/annotations.md with Python's hashlib, not with this code.
func TestSelectDrawLayout(t *testing.T) {
	for name, tc := range map[string]struct {
		uid   string
		fault int
		seed  string
		hash  string
		draw  float64
	}{
		"short uid, integer seed": {"abc", 0, "7", "c63c8bb0127c86ca", 77.43613533843802},
		"pod uid, no seed":        {"0b7e4a52-3f1c-4c8e-9a1d-5e6f7a8b9c0d", 0, "", "e327dd979600b86a", 88.73270506937868},
		"pod uid, fault 1, seed":  {"0b7e4a52-3f1c-4c8e-9a1d-5e6f7a8b9c0d", 1, "chaos", "7ca9c965651e4fde", 48.69657394930239},
	} {
		t.Run(name, func(t *testing.T) {
			hash, draw := SelectDraw(tc.uid, tc.fault, tc.seed)
			if hash != tc.hash || draw != tc.draw {
				t.Fatalf("SelectDraw(%q, %d, %q) = %s, %v; want %s, %v", tc.uid, tc.fault, tc.seed, hash, draw, tc.hash, tc.draw)
			}
		})
	}
}

// randomUIDs returns n pod-UID-shaped strings from a fixed PCG source.
func randomUIDs(n int, seed uint64) []string {
	r := rand.New(rand.NewPCG(seed, 0x6b6661756c74))
	out := make([]string, n)
	for i := range out {
		a, b := r.Uint64(), r.Uint64()
		out[i] = fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", a>>32, a>>16&0xffff, a&0xfff, b>>48&0x3fff|0x8000, b&0xffffffffffff)
	}
	return out
}

func selectedUIDs(t *testing.T, value string, uids []string) map[string]bool {
	t.Helper()
	faults, err := Parse(value)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, uid := range uids {
		ds, err := Decide(faults, Target{UID: uid, Name: "web-7d4b9c8f6-x2x9z"})
		if err != nil {
			t.Fatal(err)
		}
		if ds[0].Selected {
			out[uid] = true
		}
	}
	return out
}

func TestSelectPercentShare(t *testing.T) {
	uids := randomUIDs(10000, 1)
	for name, tc := range map[string]struct {
		value      string
		want, tolp float64 // percent selected, ± tolerance in percentage points
	}{
		"30":           {`{failtype: 0, select: {percent: 30}}`, 30, 1.5},
		"30, seeded":   {`{failtype: 0, select: {percent: 30, seed: rollout-2}}`, 30, 1.5},
		"50":           {`{failtype: 0, select: {percent: 50}}`, 50, 1.5},
		"1":            {`{failtype: 0, select: {percent: 1}}`, 1, 0.3},
		"100 is every": {`{failtype: 0, select: {percent: 100}}`, 100, 0},
	} {
		t.Run(name, func(t *testing.T) {
			got := float64(len(selectedUIDs(t, tc.value, uids))) * 100 / float64(len(uids))
			if got < tc.want-tc.tolp || got > tc.want+tc.tolp {
				t.Fatalf("%.2f%% of %d pods selected, want %v%% ± %v", got, len(uids), tc.want, tc.tolp)
			}
		})
	}
}

func TestSelectStable(t *testing.T) {
	faults, err := Parse(`[{failtype: 0, select: {percent: 40, seed: s}}, {failtype: 1, select: {percent: 60}}, {failtype: 2}]`)
	if err != nil {
		t.Fatal(err)
	}
	for _, uid := range randomUIDs(500, 2) {
		target := Target{UID: uid, Name: "web-3"}
		first, err := Decide(faults, target)
		if err != nil {
			t.Fatal(err)
		}
		// Create, Start, and a restarted plugin reading its state file back.
		stored, err := Parse(EncodeJSON(faults))
		if err != nil {
			t.Fatal(err)
		}
		for _, fs := range [][]Fault{faults, faults, stored} {
			again, _ := Decide(fs, target)
			if !reflect.DeepEqual(again, first) {
				t.Fatalf("%s: decided %+v, then %+v", uid, first, again)
			}
		}
		if !first[2].Selected || first[2].Rule != "" {
			t.Fatalf("a fault without select: %+v", first[2])
		}
	}
}

func TestSelectSeedChangesSet(t *testing.T) {
	uids := randomUIDs(2000, 3)
	base := selectedUIDs(t, `{failtype: 0, select: {percent: 30}}`, uids)
	for name, tc := range map[string]struct {
		value string
		same  bool
	}{
		"same rule":                  {`{failtype: 0, select: {percent: 30}}`, true},
		"seed a":                     {`{failtype: 0, select: {percent: 30, seed: a}}`, false},
		"seed b":                     {`{failtype: 0, select: {percent: 30, seed: b}}`, false},
		"seed 7":                     {`{failtype: 0, select: {percent: 30, seed: 7}}`, false},
		"other fields do not matter": {`{failtype: 2, probability: 5, times: 3, select: {percent: 30}}`, true},
	} {
		t.Run(name, func(t *testing.T) {
			got := selectedUIDs(t, tc.value, uids)
			differ := 0
			for _, uid := range uids {
				if got[uid] != base[uid] {
					differ++
				}
			}
			// Two independent 30% draws disagree on 42% of the pods.
			if tc.same && differ != 0 || !tc.same && differ < len(uids)/4 {
				t.Fatalf("%d of %d pods decided differently from the unseeded rule", differ, len(uids))
			}
		})
	}
	// An integer seed is its decimal text; a seed draws apart from another seed.
	if a, b := selectedUIDs(t, `{failtype: 0, select: {percent: 30, seed: 7}}`, uids),
		selectedUIDs(t, `{failtype: 0, select: {percent: 30, seed: "7"}}`, uids); !reflect.DeepEqual(a, b) {
		t.Error("seed: 7 and seed: \"7\" select different pods")
	}
	if a, b := selectedUIDs(t, `{failtype: 0, select: {percent: 30, seed: a}}`, uids),
		selectedUIDs(t, `{failtype: 0, select: {percent: 30, seed: b}}`, uids); reflect.DeepEqual(a, b) {
		t.Error("seeds a and b select the same pods")
	}
}

func TestDecideOrdinals(t *testing.T) {
	one := `{failtype: 0, select: {ordinals: [0, 2]}}`
	list := `[{failtype: 1, select: {percent: 100}}, {failtype: 0, select: {ordinals: [0, 2]}}]`
	for name, tc := range map[string]struct {
		value, pod string
		selected   bool
		err        string
	}{
		"ordinal 0":                {value: one, pod: "db-0", selected: true},
		"ordinal 2":                {value: one, pod: "redis-cluster-2", selected: true},
		"ordinal 1":                {value: one, pod: "db-1"},
		"ordinal 20":               {value: one, pod: "db-20"},
		"Deployment pod":           {value: one, pod: "web-7d4b9c8f6-x2x9z", err: `select.ordinals: pod name "web-7d4b9c8f6-x2x9z" has no trailing -N ordinal; ordinals select StatefulSet pods`},
		"bare name":                {value: one, pod: "db", err: `select.ordinals: pod name "db" has no trailing -N ordinal`},
		"leading zero":             {value: one, pod: "db-02", err: "select.ordinals: pod name"},
		"no name":                  {value: one, pod: "", err: `select.ordinals: pod name "" has no trailing -N ordinal`},
		"in a list, named by path": {value: list, pod: "web-x", err: "[1].select.ordinals: pod name"},
	} {
		t.Run(name, func(t *testing.T) {
			faults, err := Parse(tc.value)
			if err != nil {
				t.Fatal(err)
			}
			ds, err := Decide(faults, Target{UID: "uid-1", Name: tc.pod})
			if tc.err != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.err) && !strings.Contains(err.Error(), "; "+tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			last := ds[len(ds)-1]
			if last.Selected != tc.selected || last.Rule != "ordinals" || !strings.Contains(last.Reason, tc.pod) {
				t.Fatalf("decision %+v, want selected %v", last, tc.selected)
			}
		})
	}
}
