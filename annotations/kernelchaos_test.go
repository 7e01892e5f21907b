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
				`KernelChaos mode one with selector {"namespaces":["chaos-mount"]} is replaced by placing the annotation on the pods you choose`,
				"faults.kfault.dev/pod for every container, or faults.kfault.dev/container.<name> for one",
				"has no effect until its containers are recreated",
			},
		},
		"bananas.yaml": {
			want: []Fault{{FailType: Slab, CallChain: []Frame{{FuncName: "d_alloc_parallel", Parameters: "struct dentry *parent, const struct qstr *name", Predicate: bananas}},
				Probability: 1, Times: 10, Duration: 10 * time.Minute}},
			notes: []string{
				`KernelChaos mode fixed (value "2") with selector {"labelSelectors":{"app":"grocer"},"namespaces":["fruit"]}`,
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
				"KernelChaos mode all without a selector",
				"ignored (no kfault equivalent): spec.scheduler",
			},
		},
		"bad-callchain.yaml":    {err: `spec.failKernRequest.callchain[0].funcname: "ext4 mount" is not a valid C identifier; spec.failKernRequest.probability: 101 is out of range (0, 100]; spec.duration: "forever" is not a duration`},
		"empty-last-frame.yaml": {err: "spec.failKernRequest.callchain[0].funcname: empty; bpfki applies the predicate of a last frame without funcname to the fault function itself"},
		"not-kernelchaos.yaml":  {err: `kind: "IOChaos", want KernelChaos`},
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
