package main

import (
	"bytes"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/kfault/kfault/annotations"
)

func TestConvertCommand(t *testing.T) {
	mountChain := []annotations.Frame{{FuncName: "__x64_sys_mount"}}
	mount, err := os.ReadFile("../../annotations/testdata/kernelchaos/mount.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		args   []string
		stdin  string
		code   int
		want   []annotations.Fault // parsed from stdout
		stderr []string
	}{
		"mount example": {
			args: []string{"../../annotations/testdata/kernelchaos/mount.yaml"}, code: 0,
			want: []annotations.Fault{{FailType: annotations.Slab, CallChain: []annotations.Frame{{FuncName: "__x64_sys_mount"}}, Probability: 100}},
			stderr: []string{
				`note: KernelChaos selector {"namespaces":["chaos-mount"]} is replaced by placing the annotation on the pods you choose`,
				"note: for example, in the pod (or pod template) metadata:\n  annotations:\n    faults.kfault.dev/pod: |\n      failtype: 0",
			},
		},
		"stdin, json": {
			args: []string{"-o", "json", "-"}, stdin: string(mount), code: 0,
			want:   []annotations.Fault{{FailType: annotations.Slab, CallChain: []annotations.Frame{{FuncName: "__x64_sys_mount"}}, Probability: 100}},
			stderr: []string{"note: KernelChaos mode one has no exact equivalent"},
		},
		"bananas": {
			args: []string{"../../annotations/testdata/kernelchaos/bananas.yaml"}, code: 0,
			want: []annotations.Fault{{FailType: annotations.Slab, Probability: 1, Times: 10, Duration: 600e9, CallChain: []annotations.Frame{{
				FuncName: "d_alloc_parallel", Parameters: "struct dentry *parent, const struct qstr *name", Predicate: `STRNCMP(name->name, "bananas", 8)`}}}},
			stderr: []string{`note: headers ["linux/mmzone.h"] dropped`},
		},
		"mode all": {
			args: []string{"testdata/convert/all.yaml"}, code: 0,
			want:   []annotations.Fault{{FailType: annotations.Slab, CallChain: mountChain, Probability: 100}},
			stderr: []string{"note: KernelChaos mode all: every pod that carries the annotation gets the fault, which is what kfault does without select"},
		},
		"mode one": {
			args: []string{"testdata/convert/one.yaml"}, code: 0,
			want: []annotations.Fault{{FailType: annotations.Slab, CallChain: mountChain, Probability: 100}},
			stderr: []string{"note: KernelChaos mode one has no exact equivalent, and the annotation arms every pod it is on: each pod decides alone",
				"an exact count of pods needs a controller that sees them all",
				"select: {ordinals: [0]} arms exactly its pod -0", "for 10 replicas, one ≈ percent: 10"},
		},
		"mode fixed": {
			args: []string{"testdata/convert/fixed.yaml"}, code: 0,
			want: []annotations.Fault{{FailType: annotations.Slab, CallChain: mountChain, Probability: 100}},
			stderr: []string{"note: KernelChaos mode fixed (value 3) has no exact equivalent",
				"For a StatefulSet, select: {ordinals: [0, 1, 2]} arms exactly 3 pods", "for 10 replicas, fixed 3 ≈ percent: 30"},
		},
		"mode fixed-percent": {
			args: []string{"testdata/convert/fixed-percent.yaml"}, code: 0,
			want:   []annotations.Fault{{FailType: annotations.Slab, CallChain: mountChain, Probability: 100, Select: &annotations.Select{Percent: 30}}},
			stderr: []string{"note: KernelChaos mode fixed-percent (value 30) became select: {percent: 30}", "      select:\n        percent: 30\n"},
		},
		"mode random-max-percent, json": {
			args: []string{"-o", "json", "testdata/convert/random-max-percent.yaml"}, code: 0,
			want: []annotations.Fault{{FailType: annotations.Slab, CallChain: mountChain, Probability: 100, Select: &annotations.Select{Percent: 50}}},
			stderr: []string{"note: KernelChaos mode random-max-percent (value 50) became select: {percent: 50}, but the draw is per pod, not one draw per experiment",
				"write percent: 25 for the same average"},
		},
		"invalid request": {
			args: []string{"../../annotations/testdata/kernelchaos/bad-callchain.yaml"}, code: 1,
			stderr: []string{
				`kfault convert: spec.failKernRequest.callchain[0].funcname: "ext4 mount" is not a valid C identifier`,
				"kfault convert: spec.failKernRequest.probability: 101 is out of range (0, 100]",
			},
		},
		"not a KernelChaos": {args: []string{"testdata/validate/pod.yaml"}, code: 1, stderr: []string{`kind: "Pod", want KernelChaos`}},
		"several documents": {args: []string{"-"}, stdin: string(mount) + "---\n" + string(mount), code: 1, stderr: []string{"the input has 2 documents"}},
		"bad format":        {args: []string{"-o", "toml", "x"}, code: 2, stderr: []string{"usage: kfault convert"}},
		"no arguments":      {code: 2, stderr: []string{"usage: kfault convert"}},
		"missing file":      {args: []string{"nonexistent.yaml"}, code: 2, stderr: []string{"no such file"}},
	} {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := runConvert(tc.args, strings.NewReader(tc.stdin), &stdout, &stderr)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, &stdout, &stderr)
			}
			if tc.want != nil {
				got, err := annotations.Parse(stdout.String())
				if err != nil {
					t.Fatalf("output %q does not parse: %v", &stdout, err)
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("output parses to %#v, want %#v", got, tc.want)
				}
				if strings.Contains(stdout.String(), "note:") {
					t.Errorf("notes on stdout:\n%s", &stdout)
				}
			}
			for _, want := range tc.stderr {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, &stderr)
				}
			}
		})
	}
}
