package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestValidateCommand(t *testing.T) {
	for name, tc := range map[string]struct {
		args   []string
		stdin  string
		code   int
		stdout []string // substrings expected on standard output
		stderr []string // substrings expected on standard error
	}{
		"annotation value": {
			args: []string{"testdata/validate/value.yaml"}, code: 0,
			stdout: []string{"valid: 2 faults", `slab: should_failslab returns -ENOMEM when called under d_alloc_parallel [STRNCMP(name->name, "bananas", 8)], probability 1%, at most 10 times`, "function: __x64_sys_openat returns -EACCES (-13)"},
		},
		"annotation value on stdin": {
			args: []string{"-"}, stdin: "{failtype: 0, callchain: [{funcname: __x64_sys_mount}]}", code: 0,
			stdout: []string{"valid: 1 fault", "slab: should_failslab returns -ENOMEM when called under __x64_sys_mount"},
		},
		"bad annotation value": {
			args: []string{"testdata/validate/bad-value.json"}, code: 1,
			stderr: []string{"[1].callchain[0].funcname: must not be empty"},
		},
		"bad value on stdin": {
			args: []string{"-"}, stdin: "failtype: 0\nprobability: 0\n", code: 1,
			stderr: []string{"probability: 0 is out of range (0, 100]"},
		},
		"pod, per container": {
			args: []string{"testdata/validate/pod.yaml"}, code: 0,
			stdout: []string{
				"Pod/mounter:",
				"init container setup (faults.kfault.dev/pod):\n    - function: __x64_sys_openat returns -EACCES (-13), probability 5%",
				"container mounter (faults.kfault.dev/container.mounter):\n    - slab: should_failslab returns -ENOMEM when called under __x64_sys_mount",
				"container sidecar (faults.kfault.dev/pod):",
			},
		},
		"workloads in a multi-document stream": {
			args: []string{"testdata/validate/workloads.yaml"}, code: 0,
			stdout: []string{
				"Deployment/web:\n  container app (faults.kfault.dev/container.app):\n    - bio: should_fail_bio returns -EIO, probability 0.5%, at most 100 times",
				"    - page: should_fail_alloc_page returns true, every time, no limit on times, for 10m0s",
				"container proxy: nothing armed",
				"CronJob/nightly:\n  container job (faults.kfault.dev):\n    - slab: should_failslab returns -ENOMEM, every time, at most 1 time",
			},
		},
		"select: percent and ordinals": {
			args: []string{"testdata/validate/select.yaml"}, code: 0,
			stdout: []string{
				"Deployment/web:\n  container app (faults.kfault.dev/pod):\n    - slab: should_failslab returns -ENOMEM when called under __x64_sys_mount, every time, no limit on times, until the container stops, only in 30% of pods (seed \"rollout-2\")\n" +
					"      select: armed in a pod when the draw SHA-256(pod UID, fault index, seed \"rollout-2\") mapped to [0, 100) is below 30: about 30% of the pods, each deciding alone, the same way every time\n",
				"StatefulSet/db:\n  container postgres (faults.kfault.dev/pod):\n    - bio: should_fail_bio returns -EIO, every time, no limit on times, until the container stops, only in StatefulSet pods with ordinals 0, 2\n" +
					"      select: armed only in pods whose name ends in -N with N in [0, 2] (a StatefulSet's pods); a pod whose name has no trailing -N is refused\n",
			},
		},
		"select value": {
			args: []string{"-"}, stdin: "{failtype: 0, select: {percent: 12.5}}", code: 0,
			stdout: []string{"  - slab: should_failslab returns -ENOMEM, every time, no limit on times, until the container stops, only in 12.5% of pods\n    select: armed in a pod when the draw SHA-256(pod UID, fault index, no seed) mapped to [0, 100) is below 12.5"},
		},
		"select: ordinals outside a StatefulSet": {
			args: []string{"testdata/validate/select-bad.yaml"}, code: 1,
			stdout: []string{"Pod/cache-0:\n  container redis (faults.kfault.dev/pod):\n    - slab"},
			stderr: []string{
				"Deployment/web: annotation faults.kfault.dev/pod: select.ordinals: a Deployment's pods have generated names without a trailing -N ordinal, and kfault refuses them; ordinals select a StatefulSet's pods (use percent here)",
				`Pod/cache: annotation faults.kfault.dev/pod: [1].select.ordinals: pod name "cache" has no trailing -N ordinal`,
			},
		},
		"bad pod": {
			args: []string{"testdata/validate/bad-pod.yaml"}, code: 1,
			stderr: []string{
				`Pod/broken: annotation faults.kfault.dev/pod: probabilty: unknown field (did you mean "probability"?)`,
				`Pod/broken: annotation faults.kfault.dev/container.db: the pod has no container "db" (containers: app)`,
				"Pod/broken: annotation faults.kfault.dev/containers.app: unknown key",
			},
		},
		"no pods": {
			args: []string{"testdata/validate/no-pods.yaml"}, code: 1,
			stderr: []string{"no Pod or pod template in the input"},
		},
		"KernelChaos points at convert": {
			args: []string{"../../annotations/testdata/kernelchaos/mount.yaml"}, code: 1,
			stderr: []string{"KernelChaos/kernel-chaos-example is a Chaos Mesh KernelChaos; run 'kfault convert'"},
		},
		"non-string annotation value": {
			args: []string{"-"}, stdin: "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    faults.kfault.dev/pod: {failtype: 0}\nspec:\n  containers: [{name: a}]\n", code: 1,
			stderr: []string{`Pod/p: metadata.annotations["faults.kfault.dev/pod"]: the value must be a string`},
		},
		"shadowed bare key is noted": {
			args: []string{"-"}, stdin: "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    faults.kfault.dev/pod: 'failtype: 0'\n    faults.kfault.dev: 'failtype: 1'\nspec:\n  containers: [{name: a}]\n", code: 0,
			stdout: []string{"container a (faults.kfault.dev/pod):"},
			stderr: []string{"note: faults.kfault.dev never applies"},
		},
		"no arguments":  {args: nil, code: 2, stderr: []string{"usage: kfault validate FILE|-"}},
		"two arguments": {args: []string{"a", "b"}, code: 2, stderr: []string{"usage: kfault validate FILE|-"}},
		"unknown flag":  {args: []string{"-x", "a"}, code: 2},
		"help":          {args: []string{"-h"}, code: 0, stderr: []string{"usage: kfault validate FILE|-"}},
		"missing file":  {args: []string{"testdata/validate/nonexistent.yaml"}, code: 2, stderr: []string{"no such file"}},
		"empty stdin":   {args: []string{"-"}, stdin: "", code: 1, stderr: []string{"empty annotation value"}},
	} {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := runValidate(tc.args, strings.NewReader(tc.stdin), &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, &stdout, &stderr)
			}
			for _, want := range tc.stdout {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout lacks %q:\n%s", want, &stdout)
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
