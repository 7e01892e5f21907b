package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/kfault/kfault/bpf"
)

// TestCheckCommand: --spec hands Preflight the distinct call-chain functions of the spec, read
// as kfault validate reads it, and a bad call-chain function makes the exit status 1.
// Preflight loads BPF programs: it is replaced by one that records what it was asked.
func TestCheckCommand(t *testing.T) {
	defer func(p func(bool, ...string) bpf.Report) { preflight = p }(preflight)
	fmodRet := []bpf.Mechanism{bpf.MechanismFmodRet}
	for name, tc := range map[string]struct {
		args      []string
		stdin     string
		rep       bpf.Report // what Preflight finds
		wantFuncs []string   // what Preflight is asked about; nil: not called or asked nothing
		code      int
		stdout    []string
		stderr    []string
	}{
		"no spec": {
			rep:  bpf.Report{CanInject: true, Kinds: []string{"failtype 0 (slab)"}, Mechanisms: fmodRet},
			code: 0, stdout: []string{"kfault can inject these faults here: failtype 0 (slab) (mechanisms: fmod_ret; auto picks fmod_ret)"},
		},
		"LSM hooks only": {
			rep:  bpf.Report{CanInject: true, Kinds: []string{"failtype 3 (alloc)", "function (security_* LSM hooks)"}, Mechanisms: fmodRet, LSMOnly: true},
			code: 0, stdout: []string{"kfault can inject these faults here: failtype 3 (alloc), function (security_* LSM hooks) (mechanisms: fmod_ret on LSM hooks only; auto picks fmod_ret)"},
		},
		"manifests": {
			args: []string{"--spec", "testdata/check/chains.yaml"},
			rep:  bpf.Report{CanInject: true, Mechanisms: fmodRet},
			// container.app's faults, then pod's (keys in order), then the Deployment's.
			wantFuncs: []string{"vfs_statx", "d_alloc_parallel", "__x64_sys_mount"}, code: 0,
		},
		"value on standard input": {
			args: []string{"--spec", "-"}, stdin: "[{failtype: 0, callchain: [{funcname: vfs_statx}, {funcname: should_failslab}]}, {failtype: 2, callchain: [{funcname: vfs_statx}]}]",
			rep:       bpf.Report{CanInject: true, Mechanisms: fmodRet},
			wantFuncs: []string{"vfs_statx", "should_failslab"}, code: 0,
		},
		"a bad call-chain function": {
			args: []string{"--spec", "-"}, stdin: "{failtype: 0, callchain: [{funcname: vfs_statx}]}",
			rep:       bpf.Report{CanInject: true, Mechanisms: fmodRet, BadFrames: []string{"vfs_statx"}},
			wantFuncs: []string{"vfs_statx"}, code: 1,
			stdout: []string{"Faults with a call chain through vfs_statx cannot work here"},
		},
		"nothing injectable": {
			rep:  bpf.Report{},
			code: 1, stdout: []string{"kfault cannot inject faults on this kernel"},
		},
		"no call chain in the spec": {
			args: []string{"--spec", "-"}, stdin: "{failtype: 0}",
			rep:  bpf.Report{CanInject: true, Mechanisms: fmodRet},
			code: 0, stderr: []string{"kfault check: --spec -: no fault has a callchain; no call-chain function to check"},
		},
		"bad value": {
			args: []string{"--spec", "-"}, stdin: "{failtype: 0, callchain: [{funcname: ''}]}",
			code: 2, stderr: []string{"kfault check: --spec -: ", "callchain[0].funcname: must not be empty", "(kfault validate - says what is wrong)"},
		},
		"bad annotation in a manifest": {
			args: []string{"--spec", "testdata/validate/bad-pod.yaml"},
			code: 2, stderr: []string{"kfault check: --spec testdata/validate/bad-pod.yaml: Pod/broken: annotation faults.kfault.dev/containers.app: unknown key"},
		},
		"missing file": {
			args: []string{"--spec", "testdata/check/nonexistent.yaml"},
			code: 2, stderr: []string{"kfault check: --spec testdata/check/nonexistent.yaml: open testdata/check/nonexistent.yaml: no such file"},
		},
		"an argument": {
			args: []string{"testdata/check/chains.yaml"},
			code: 2, stderr: []string{"usage: kfault check"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			called := false
			var gotFuncs []string
			preflight = func(mount bool, chainFuncs ...string) bpf.Report {
				called = true
				gotFuncs = chainFuncs
				return tc.rep
			}
			var stdout, stderr bytes.Buffer
			code := runCheck(tc.args, strings.NewReader(tc.stdin), &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, &stdout, &stderr)
			}
			if called != (tc.code != 2) {
				t.Errorf("Preflight called: %v", called)
			}
			if !slices.Equal(gotFuncs, tc.wantFuncs) {
				t.Errorf("Preflight asked about %q, want %q", gotFuncs, tc.wantFuncs)
			}
			for _, s := range tc.stdout {
				if !strings.Contains(stdout.String(), s) {
					t.Errorf("standard output lacks %q:\n%s", s, &stdout)
				}
			}
			for _, s := range tc.stderr {
				if !strings.Contains(stderr.String(), s) {
					t.Errorf("standard error lacks %q:\n%s", s, &stderr)
				}
			}
		})
	}
}
