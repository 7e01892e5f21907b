package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/kfault/kfault/annotations"
)

// writeTestBTF writes a small raw BTF file with d_alloc_parallel(struct dentry *parent,
// const struct qstr *name) and the structs its predicates reach, for kfault validate to compile
// against instead of the host's kernel BTF.
func writeTestBTF(t *testing.T) string {
	t.Helper()
	uint := &btf.Int{Name: "unsigned int", Size: 4}
	ulong := &btf.Int{Name: "long unsigned int", Size: 8}
	uchar := &btf.Int{Name: "unsigned char", Size: 1}
	qstr := &btf.Struct{Name: "qstr", Size: 16, Members: []btf.Member{
		{Name: "hash", Type: uint, Offset: 0},
		{Name: "len", Type: uint, Offset: 32},
		{Name: "name", Type: &btf.Pointer{Target: &btf.Const{Type: uchar}}, Offset: 64},
	}}
	sb := &btf.Struct{Name: "super_block", Size: 16, Members: []btf.Member{
		{Name: "s_op", Type: &btf.Pointer{Target: &btf.Const{Type: &btf.Fwd{Name: "super_operations", Kind: btf.FwdStruct}}}, Offset: 0},
		{Name: "s_magic", Type: ulong, Offset: 64},
	}}
	dentry := &btf.Struct{Name: "dentry", Size: 40}
	dentry.Members = []btf.Member{
		{Name: "d_flags", Type: uint, Offset: 0},
		{Name: "d_parent", Type: &btf.Pointer{Target: dentry}, Offset: 64},
		{Name: "d_name", Type: qstr, Offset: 128},
		{Name: "d_sb", Type: &btf.Pointer{Target: sb}, Offset: 256},
	}
	fn := &btf.Func{Name: "d_alloc_parallel", Linkage: btf.GlobalFunc, Type: &btf.FuncProto{
		Return: &btf.Pointer{Target: dentry},
		Params: []btf.FuncParam{
			{Name: "parent", Type: &btf.Pointer{Target: dentry}},
			{Name: "name", Type: &btf.Pointer{Target: &btf.Const{Type: qstr}}},
		},
	}}
	b, err := btf.NewBuilder([]btf.Type{fn}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "vmlinux.btf")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestValidateCommand(t *testing.T) {
	testBTF := writeTestBTF(t)
	defer func(p string) { kernelBTFPath = p }(kernelBTFPath)
	defer func(r func(annotations.FailType) error) { refuseFailType = r }(refuseFailType)
	const (
		hostile   = "{failtype: 0, callchain: [{funcname: d_alloc_parallel, predicate: 'parent->d_sb->s_op < 0xffffffff82000000'}]}"
		leakRule  = "callchain[0].predicate: column 20: a pointer can only be compared with 0 (NULL check): comparing parent->d_sb->s_op with 0xffffffff82000000 would reveal a kernel address"
		syntaxOnl = "kfault validate: predicates checked for syntax only, not compiled"
	)
	for name, tc := range map[string]struct {
		args    []string
		stdin   string
		noBTF   bool // no kernel BTF on this machine (else the test BTF stands for it)
		noSlab  bool // this machine's kernel cannot override should_failslab (else every fault point works)
		code    int
		stdout  []string // substrings expected on standard output
		stderr  []string // substrings expected on standard error
		nostder []string // substrings standard error must not have
	}{
		"predicate compiled against kernel BTF": {
			args: []string{"-"}, stdin: `{failtype: 0, callchain: [{funcname: d_alloc_parallel, predicate: 'STRNCMP(name->name, "bananas", 8) && parent->d_sb != 0'}]}`, code: 0,
			stdout: []string{"valid: 1 fault"}, nostder: []string{"syntax only"},
		},
		"predicate type error": {
			args: []string{"-"}, stdin: `{failtype: 0, callchain: [{funcname: d_alloc_parallel, predicate: 'name->nme == 1'}]}`, code: 1,
			stderr: []string{`callchain[0].predicate: column 7: unknown member "nme" of struct qstr (members: hash, len, name)`},
		},
		"address-leaking predicate": {
			args: []string{"-"}, stdin: hostile, code: 1, stderr: []string{leakRule},
		},
		"address-leaking predicate in a manifest": {
			args: []string{"testdata/validate/hostile-pod.yaml"}, code: 1,
			stderr: []string{"Pod/sneaky: annotation faults.kfault.dev/pod: " + leakRule},
		},
		"computed index, second fault of a list": {
			args: []string{"-"}, stdin: "[{failtype: 0}, {failtype: 0, callchain: [{funcname: d_alloc_parallel, predicate: 'name->name[name->len - 1] == 0'}]}]", code: 1,
			stderr: []string{"[1].callchain[0].predicate: column 12: an index must be a constant"},
		},
		"--btf FILE": {
			args: []string{"--btf", "$BTF", "-"}, stdin: hostile, noBTF: true, code: 1, stderr: []string{leakRule}, nostder: []string{"syntax only"},
		},
		"--btf missing file": {
			args: []string{"--btf", "testdata/validate/nonexistent.btf", "-"}, stdin: hostile, code: 2,
			stderr: []string{"kfault validate: --btf testdata/validate/nonexistent.btf: ", "no such file"},
		},
		"--btf and --no-btf": {
			args: []string{"--btf", "$BTF", "--no-btf", "-"}, stdin: hostile, code: 2, stderr: []string{"--btf and --no-btf exclude each other"},
		},
		"--no-btf: syntax only, said once": {
			args: []string{"--no-btf", "-"}, stdin: "[" + hostile + ", " + hostile + "]", code: 0,
			stdout: []string{"valid: 2 faults"}, stderr: []string{syntaxOnl + " (--no-btf)"},
		},
		"--no-btf: syntax errors still reported": {
			args: []string{"--no-btf", "-"}, stdin: "{failtype: 0, callchain: [{funcname: d_alloc_parallel, predicate: 'name->len = 3'}]}", code: 1,
			stderr: []string{"callchain[0].predicate: column 11: assignment \"=\" is not supported"},
		},
		"no kernel BTF: syntax only, and why": {
			args: []string{"-"}, stdin: hostile, noBTF: true, code: 0,
			stderr: []string{syntaxOnl + " (no kernel BTF: ", "pass --btf FILE with a node's BTF, or --no-btf)"},
		},
		"no kernel BTF, no predicate: no note": {
			args: []string{"-"}, stdin: "{failtype: 0, callchain: [{funcname: d_alloc_parallel}]}", noBTF: true, code: 0,
			nostder: []string{"syntax only"},
		},
		"function not in the BTF: noted, syntax checked": {
			args: []string{"-"}, stdin: "{failtype: 0, callchain: [{funcname: vfs_statx, predicate: 'flags & 1'}]}", code: 0,
			stderr: []string{"note: callchain[0].funcname: vfs_statx is not in $BTF; its predicate was checked for syntax only"},
		},
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
		"failtype this machine's kernel cannot override": {
			args: []string{"-"}, stdin: "[{failtype: 2}, {failtype: 0, callchain: [{funcname: __x64_sys_mount}]}]", noSlab: true, code: 1,
			stderr: []string{"[1].failtype: should_failslab: not here; this node can inject instead: failtype: bio"}, nostder: []string{"[0]"},
		},
		"failtype checked only against this machine's kernel": {
			args: []string{"--btf", "$BTF", "-"}, stdin: "{failtype: 0}", noSlab: true, code: 0, stdout: []string{"valid: 1 fault"},
		},
		"no arguments":  {args: nil, code: 2, stderr: []string{"usage: kfault validate [--btf FILE | --no-btf] FILE|-"}},
		"two arguments": {args: []string{"a", "b"}, code: 2, stderr: []string{"usage: kfault validate [--btf FILE | --no-btf] FILE|-"}},
		"unknown flag":  {args: []string{"-x", "a"}, code: 2},
		"help":          {args: []string{"-h"}, code: 0, stderr: []string{"usage: kfault validate [--btf FILE | --no-btf] FILE|-"}},
		"missing file":  {args: []string{"testdata/validate/nonexistent.yaml"}, code: 2, stderr: []string{"no such file"}},
		"empty stdin":   {args: []string{"-"}, stdin: "", code: 1, stderr: []string{"empty annotation value"}},
	} {
		t.Run(name, func(t *testing.T) {
			kernelBTFPath = testBTF
			refuseFailType = func(t annotations.FailType) error {
				if tc.noSlab && t == annotations.Slab {
					return errors.New("should_failslab: not here; this node can inject instead: failtype: bio")
				}
				return nil
			}
			if tc.noBTF {
				kernelBTFPath = filepath.Join(t.TempDir(), "no-btf")
			}
			args := make([]string, len(tc.args))
			for i, a := range tc.args {
				args[i] = strings.ReplaceAll(a, "$BTF", testBTF)
			}
			var stdout, stderr bytes.Buffer
			code := runValidate(args, strings.NewReader(tc.stdin), &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, &stdout, &stderr)
			}
			for _, want := range tc.stdout {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout lacks %q:\n%s", want, &stdout)
				}
			}
			for _, want := range tc.stderr {
				if want = strings.ReplaceAll(want, "$BTF", testBTF); !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, &stderr)
				}
			}
			for _, bad := range tc.nostder {
				if strings.Contains(stderr.String(), bad) {
					t.Errorf("stderr has %q:\n%s", bad, &stderr)
				}
			}
			if n := strings.Count(stderr.String(), syntaxOnl); n > 1 {
				t.Errorf("the syntax-only note is printed %d times:\n%s", n, &stderr)
			}
		})
	}
}
