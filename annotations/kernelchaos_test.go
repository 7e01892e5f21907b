package annotations

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestConvertKernelChaos(t *testing.T) {
	for file, tc := range map[string]struct {
		want  []Fault  // parsed back from the annotation
		notes []string // substrings, each expected in some note
		err   string   // substring of the error
	}{
		"mount.yaml": {
			want: []Fault{{FailType: Slab, CallChain: []Frame{{FuncName: "__x64_sys_mount"}}, Probability: 100}},
			notes: []string{
				`KernelChaos selector {"namespaces":["chaos-mount"]} is replaced by placing the annotation on the pods you choose`,
				"KernelChaos mode one has no exact equivalent",
				"faults.kfault.dev/pod for every container, or faults.kfault.dev/container.<name> for one",
				"has no effect until its containers are recreated",
				"failtype 0 (slab) overrides should_failslab, which needs a kernel built with CONFIG_FUNCTION_ERROR_INJECTION (and CONFIG_FAILSLAB on 6.11+)",
				"failtype: alloc (kfault's failtype 3, not KernelChaos's)",
			},
		},
		"bananas.yaml": {
			want: []Fault{{FailType: Slab, CallChain: []Frame{{FuncName: "d_alloc_parallel", Parameters: "struct dentry *parent, const struct qstr *name", Predicate: bananas}},
				Probability: 1, Times: 10, Duration: 10 * time.Minute}},
			notes: []string{
				`KernelChaos selector {"labelSelectors":{"app":"grocer"},"namespaces":["fruit"]} is replaced by placing the annotation`,
				"KernelChaos mode fixed (value 2) has no exact equivalent",
				"select: {ordinals: [0, 1]} arms exactly 2 pods",
				"for 10 replicas, fixed 2 ≈ percent: 20",
				`headers ["linux/mmzone.h"] dropped`,
				"spec.duration became duration: 10m0s",
			},
		},
		"defaults.json": {
			want: []Fault{{FailType: Slab, Probability: 100}},
			notes: []string{
				"pre-1.0 Chaos Mesh group",
				"failtype is absent; KernelChaos treats that as 0 (slab)",
				`probability 0 means "every time" in KernelChaos`,
				"KernelChaos mode all: every pod that carries the annotation gets the fault",
				"KernelChaos pod selection (no selector given) is replaced by placing the annotation",
				"ignored (no kfault equivalent): spec.scheduler",
			},
		},
		"bad-callchain.yaml": {err: `spec.failKernRequest.callchain[0].funcname: "ext4 mount" is not a valid C identifier; spec.failKernRequest.probability: 101 is out of range (0, 100]; spec.duration: "forever" is not a duration`},
		"empty-last-frame.yaml": {
			want:  []Fault{{FailType: Page, CallChain: []Frame{{FuncName: "should_fail_alloc_page", Predicate: "order > 2"}}, Probability: 100}},
			notes: []string{"spec.failKernRequest.callchain[0] has no funcname: bpfki applies its predicate to the fault function itself, so the annotation names it (should_fail_alloc_page)"},
		},
		"not-kernelchaos.yaml": {err: `kind: "IOChaos", want KernelChaos`},
	} {
		t.Run(file, func(t *testing.T) {
			manifest, err := os.ReadFile(filepath.Join("testdata", "kernelchaos", file))
			if err != nil {
				t.Fatal(err)
			}
			annotation, notes, err := ConvertKernelChaos(manifest)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want it to contain %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := Parse(annotation)
			if err != nil {
				t.Fatalf("converted annotation %q does not parse: %v", annotation, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("annotation %q parses to\n %#v\nwant %#v", annotation, got, tc.want)
			}
			all := strings.Join(notes, "\n")
			for _, want := range tc.notes {
				if !strings.Contains(all, want) {
					t.Errorf("notes lack %q:\n%s", want, all)
				}
			}
		})
	}
}

func TestConvertKernelChaosInput(t *testing.T) {
	for name, tc := range map[string]struct{ in, err string }{
		"not yaml":           {"kind: [", "not valid YAML or JSON"},
		"list":               {"[1]", "manifest: a list, want a KernelChaos object"},
		"no kind":            {"apiVersion: v1", "kind: missing, want KernelChaos"},
		"wrong apiVersion":   {"{apiVersion: v1, kind: KernelChaos}", `apiVersion: "v1", want chaos-mesh.org/v1alpha1`},
		"no spec":            {"{apiVersion: chaos-mesh.org/v1alpha1, kind: KernelChaos}", "spec: missing, want an object"},
		"no failKernRequest": {"{apiVersion: chaos-mesh.org/v1alpha1, kind: KernelChaos, spec: {mode: one}}", "spec.failKernRequest: missing, want an object"},
		"unknown field":      {"{apiVersion: chaos-mesh.org/v1alpha1, kind: KernelChaos, spec: {failKernRequest: {failtype: 0, callchian: []}}}", `spec.failKernRequest.callchian: unknown field (did you mean "callchain"?)`},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := ConvertKernelChaos([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want it to contain %q", err, tc.err)
			}
		})
	}
}

func TestConvertKernelChaosModes(t *testing.T) {
	manifest := func(modeAndValue string) string {
		return "{apiVersion: chaos-mesh.org/v1alpha1, kind: KernelChaos, spec: {" + modeAndValue + "selector: {namespaces: [shop]}, failKernRequest: {failtype: 0}}}"
	}
	for name, tc := range map[string]struct {
		spec  string
		sel   *Select // what the annotation selects; nil: every pod it is on
		notes []string
		err   string
	}{
		"all": {spec: "mode: all, ", notes: []string{"KernelChaos mode all: every pod that carries the annotation gets the fault"}},
		"one": {spec: "mode: one, ", notes: []string{
			"KernelChaos mode one has no exact equivalent",
			"without knowing the other replicas, so an exact count of pods needs a controller that sees them all",
			"For a StatefulSet, select: {ordinals: [0]} arms exactly its pod -0",
			"for 10 replicas, one ≈ percent: 10",
		}},
		"fixed 3": {spec: `mode: fixed, value: "3", `, notes: []string{
			"KernelChaos mode fixed (value 3) has no exact equivalent",
			"an exact count of pods needs a controller",
			"select: {ordinals: [0, 1, 2]} arms exactly 3 pods",
			"for 10 replicas, fixed 3 ≈ percent: 30",
		}},
		"fixed 12": {spec: `mode: fixed, value: 12, `, notes: []string{"select: {ordinals: [0, 1, ..., 11]} arms exactly 12 pods", "for 100 replicas, fixed 12 ≈ percent: 12"}},
		"fixed-percent": {spec: `mode: fixed-percent, value: "30", `, sel: &Select{Percent: 30}, notes: []string{
			"KernelChaos mode fixed-percent (value 30) became select: {percent: 30}",
			"about 30% of the pods get the fault, not exactly that share",
		}},
		"random-max-percent": {spec: `mode: random-max-percent, value: "50", `, sel: &Select{Percent: 50}, notes: []string{
			"KernelChaos mode random-max-percent (value 50) became select: {percent: 50}, but the draw is per pod, not one draw per experiment",
			"KernelChaos's average share is 25%: write percent: 25 for the same average",
		}},
		"fixed-percent 0":              {spec: `mode: fixed-percent, value: "0", `, err: `spec.value: "0", want the percent of mode fixed-percent, in (0, 100]`},
		"random-max-percent, no value": {spec: `mode: random-max-percent, `, err: "spec.value: missing, want the percent of mode random-max-percent"},
		"fixed, not a count":           {spec: `mode: fixed, value: "2.5", `, err: `spec.value: "2.5", want the number of pods of mode fixed`},
		"unknown mode":                 {spec: `mode: some, `, err: `spec.mode: "some" is not a KernelChaos mode (one, all, fixed, fixed-percent, random-max-percent)`},
	} {
		t.Run(name, func(t *testing.T) {
			annotation, notes, err := ConvertKernelChaos([]byte(manifest(tc.spec)))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want it to contain %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := Parse(annotation)
			if err != nil {
				t.Fatal(err)
			}
			if want := []Fault{{Probability: 100, Select: tc.sel}}; !reflect.DeepEqual(got, want) {
				t.Errorf("annotation %q parses to %#v, want %#v", annotation, got, want)
			}
			all := strings.Join(notes, "\n")
			for _, want := range tc.notes {
				if !strings.Contains(all, want) {
					t.Errorf("notes lack %q:\n%s", want, all)
				}
			}
		})
	}
}
