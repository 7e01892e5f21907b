package annotations

import (
	"reflect"
	"strings"
	"testing"
)

// TestSplitDocuments: the line break that ends a marker line stays with the next document
// (a blank line to YAML).
func TestSplitDocuments(t *testing.T) {
	for name, tc := range map[string]struct {
		in   string
		want []string
	}{
		"empty":                     {"", nil},
		"comments only":             {"# a\n\n  # b\n", nil},
		"one document":              {"a: 1\n", []string{"a: 1\n"}},
		"markers around one":        {"# c\n---\na: 1\n---\n# trailing\n", []string{"\na: 1\n"}},
		"two":                       {"a: 1\n---\nb: 2\n", []string{"a: 1\n", "\nb: 2\n"}},
		"marker with a comment":     {"a: 1\n--- # next\nb: 2\n", []string{"a: 1\n", "# next\nb: 2\n"}},
		"content on the marker":     {"--- {a: 1}\n--- {b: 2}\n", []string{"{a: 1}\n", "{b: 2}\n"}},
		"empty documents dropped":   {"---\n---\na: 1\n---\n---\n", []string{"\na: 1\n"}},
		"four dashes is not one":    {"a: |\n  x\n----\n", []string{"a: |\n  x\n----\n"}},
		"indented is not a marker":  {"a: |\n  ---\n  b\n", []string{"a: |\n  ---\n  b\n"}},
		"no space after the dashes": {"a: 1\n---b\n", []string{"a: 1\n---b\n"}},
		"CRLF":                      {"a: 1\r\n---\r\nb: 2\r\n", []string{"a: 1\r\n", "\nb: 2\r\n"}},
	} {
		t.Run(name, func(t *testing.T) {
			var got []string
			for _, d := range SplitDocuments([]byte(tc.in)) {
				got = append(got, string(d))
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("SplitDocuments(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestIsManifest(t *testing.T) {
	for in, want := range map[string]bool{
		"apiVersion: v1\nkind: Pod\n":            true,
		"# c\n---\napiVersion: v1\nkind: List\n": true,
		`{"apiVersion": "v1", "kind": "Pod"}`:    true,
		"failtype: 0\n":                          false,
		"kind: Pod\n":                            false, // no apiVersion: a value with a pasted kind
		"apiVersion: v1\nkind: 3\n":              false,
		"[{failtype: 0}]":                        false,
		"":                                       false,
		"failtype: 0\n---\napiVersion: v1\nkind: Pod\n": false, // the first document decides
		"{": false,
	} {
		if got := IsManifest([]byte(in)); got != want {
			t.Errorf("IsManifest(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestManifestPods(t *testing.T) {
	for name, tc := range map[string]struct {
		in   string
		want []ManifestPod
		err  []string // lines of the error
	}{
		"pod": {
			in: "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    faults.kfault.dev/pod: 'failtype: 0'\n    other: x\n" +
				"spec:\n  initContainers: [{name: setup}]\n  containers: [{name: a}, {name: b}, {image: nameless}]\n",
			want: []ManifestPod{{Name: "Pod/p", AnnotationsPath: "metadata.annotations",
				Annotations:    map[string]string{PodKey: "failtype: 0", "other": "x"},
				InitContainers: []string{"setup"}, Containers: []string{"a", "b"}}},
		},
		"workloads": {
			in: "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    metadata:\n      annotations: {faults.kfault.dev: 'failtype: 1'}\n    spec:\n      containers: [{name: app}]\n" +
				"---\napiVersion: batch/v1\nkind: CronJob\nmetadata: {name: nightly}\nspec:\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          containers: [{name: job}]\n" +
				"---\napiVersion: v1\nkind: PodTemplate\ntemplate:\n  spec:\n    containers: [{name: t}]\n" +
				"---\napiVersion: v1\nkind: Service\nmetadata: {name: svc}\n",
			want: []ManifestPod{
				{Name: "Deployment/web", AnnotationsPath: "spec.template.metadata.annotations", Annotations: map[string]string{Key: "failtype: 1"}, Containers: []string{"app"}},
				{Name: "CronJob/nightly", AnnotationsPath: "spec.jobTemplate.spec.template.metadata.annotations", Annotations: map[string]string{}, Containers: []string{"job"}},
				{Name: "PodTemplate/(unnamed)", AnnotationsPath: "template.metadata.annotations", Annotations: map[string]string{}, Containers: []string{"t"}},
			},
		},
		"list": {
			in: `{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}}, 3,` +
				` {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"}, "spec": {"template": {"spec": {"containers": [{"name": "pg"}]}}}}]}`,
			want: []ManifestPod{
				{Name: "Pod/a", AnnotationsPath: "metadata.annotations", Annotations: map[string]string{}},
				{Name: "StatefulSet/db", AnnotationsPath: "spec.template.metadata.annotations", Annotations: map[string]string{}, Containers: []string{"pg"}},
			},
		},
		"values kfault cannot read": {
			in: "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    faults.kfault.dev/pod: {failtype: 0}\n    faults.kfault.dev/container.a: 3\n    other: 4\n" +
				"---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: q\n  annotations: [x]\n",
			want: []ManifestPod{
				{Name: "Pod/p", AnnotationsPath: "metadata.annotations", Annotations: map[string]string{}, Invalid: Errors{
					{Path: `metadata.annotations["faults.kfault.dev/container.a"]`, Reason: "the value must be a string (quote it, or use a YAML block scalar: |)"},
					{Path: `metadata.annotations["faults.kfault.dev/pod"]`, Reason: "the value must be a string (quote it, or use a YAML block scalar: |)"},
				}},
				{Name: "Pod/q", AnnotationsPath: "metadata.annotations", Annotations: map[string]string{}, Invalid: Errors{
					{Path: "metadata.annotations", Reason: "must be a map of strings"},
				}},
			},
		},
		"bad documents, good ones kept": {
			in: "[1, 2]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: ok}\n---\nkind: [\n" +
				"---\napiVersion: chaos-mesh.org/v1alpha1\nkind: KernelChaos\nmetadata: {name: kc}\n",
			want: []ManifestPod{{Name: "Pod/ok", AnnotationsPath: "metadata.annotations", Annotations: map[string]string{}}},
			err: []string{
				"document 1: not a Kubernetes object: not an object",
				"document 3: not a Kubernetes object: ",
				"KernelChaos/kc is a Chaos Mesh KernelChaos; run 'kfault convert' on it to get the annotation",
			},
		},
		"KernelChaos in a List": {
			in:  `{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "Pod"}, {"kind": "KernelChaos", "metadata": {"name": "kc"}}]}`,
			err: []string{"KernelChaos/kc is a Chaos Mesh KernelChaos"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := ManifestPods([]byte(tc.in))
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("pods:\n%+v\nwant:\n%+v", got, tc.want)
			}
			var lines []string
			if err != nil {
				lines = strings.Split(err.Error(), "\n")
			}
			if len(lines) != len(tc.err) {
				t.Fatalf("error %q, want %d lines starting %q", lines, len(tc.err), tc.err)
			}
			for i, want := range tc.err {
				if !strings.HasPrefix(lines[i], want) {
					t.Errorf("error line %d = %q, want it to start with %q", i+1, lines[i], want)
				}
			}
		})
	}
}
