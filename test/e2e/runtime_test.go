package e2e

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kfault/kfault/test/e2e/vmtest"
)

// ociRuntime is an OCI runtime the e2e suite runs pods with, by its CRI runtime handler
// (test/vm/containerd-up configures them).
type ociRuntime struct {
	name    string // the runtime's binary, and the subtest's name
	handler string // crictl runp --runtime; "": containerd's default (runc), as without a RuntimeClass
}

var ociRuntimes = []ociRuntime{{name: "runc"}, {name: "crun", handler: "crun"}}

// TestRuntimes runs, with each OCI runtime, the scenarios that depend on what the runtime does
// in the container's cgroup between kfault's arming (NRI StartContainer) and the exec of the
// container's program: the exec boundary (docs/runtimes.md). TestRuntimes/crun runs crun's.
// One kfault nri per runtime; every scenario checks an unannotated neighbour or bystander.
func TestRuntimes(t *testing.T) {
	vmtest.RequireInjection(t)
	for _, rt := range ociRuntimes {
		t.Run(rt.name, func(t *testing.T) {
			if _, err := exec.LookPath(rt.name); err != nil {
				t.Fatalf("%s is not installed (apt-get install %s; .ci/run does): %v", rt.name, rt.name, err)
			}
			p := withPlugin(t, "rt-"+rt.name, vmtest.PluginOptions{})
			t.Run("openat-once", func(t *testing.T) { openatOnce(t, p, rt) })
			t.Run("renamed-runc-init", func(t *testing.T) { renamedRuncInit(t, rt) })
			t.Run("exec", func(t *testing.T) { execFaulted(t, p, rt) })
			t.Run("seed-mount", func(t *testing.T) { seedMount(t, p, rt, "seed", seedFault) })
		})
	}
}

// runPodOn runs a pod on rt.
func runPodOn(t *testing.T, rt ociRuntime, name string, annotations map[string]string) (vmtest.Pod, string) {
	t.Helper()
	pod := newPod(name+"-"+rt.name, annotations)
	pod.Runtime = rt.handler
	id := runPod(t, &pod)
	checkRuntime(t, rt, id)
	return pod, id
}

// checkRuntime fails the test unless rt created the container or pod sandbox (its pause
// container): one that runs, since the runtime's state goes with the task.
func checkRuntime(t *testing.T, rt ociRuntime, id string) {
	t.Helper()
	if got := vmtest.OCIRuntime(t, id); got != rt.name {
		t.Fatalf("container %s was created by %s, want %s", id, got, rt.name)
	}
}

// openatOnce: {function: __x64_sys_openat, errno: EACCES, times: 1} on a container whose own
// first action is an open (busybox sh's redirect `read -r x </etc/passwd`, three tries). The
// fault is armed at NRI StartContainer while the runtime's init is still in the container's
// cgroup with opens of its own to do (runc init opens /proc/self/fd and its exec fifo; crun
// its own): had they not been spared, the one fault would have been spent there, or the start
// would have failed with the runtime's error. The container starts, its first open fails with
// EACCES and the next two succeed; the neighbour's three succeed.
func openatOnce(t *testing.T, p *vmtest.Plugin, rt ociRuntime) {
	pod, podID := runPodOn(t, rt, "once", map[string]string{
		"faults.kfault.dev/container.victim": "{function: __x64_sys_openat, errno: EACCES, times: 1}",
	})
	cmd := vmtest.TryLoop(vmtest.OpenOp, 3, false, "")
	victim := vmtest.StartContainer(t, podID, pod, vmtest.Container{Name: "victim", Command: cmd})
	neighbour := vmtest.StartContainer(t, podID, pod, vmtest.Container{Name: "neighbour", Command: cmd})
	checkRuntime(t, rt, victim)
	vt := vmtest.WaitTries(t, victim, 3, time.Minute)
	nt := vmtest.WaitTries(t, neighbour, 3, time.Minute)
	vlog, nlog := vmtest.Logs(t, victim), vmtest.Logs(t, neighbour)
	t.Logf("victim %s, log %q", vmtest.Summary(vt), vlog)
	t.Logf("neighbour %s", vmtest.Summary(nt))
	if vmtest.Summary(vt) != "1:F 2:ok 3:ok" || !strings.Contains(vlog, "can't open /etc/passwd: Permission denied") {
		t.Errorf("victim: %s, log %q: want its first open to fail with Permission denied (EACCES) and the next two to succeed (times: 1)",
			vmtest.Summary(vt), vlog)
	}
	if vmtest.Failed(nt) != 0 || strings.Contains(nlog, "Permission denied") {
		t.Errorf("neighbour: %s, log %q: want every open to succeed", vmtest.Summary(nt), nlog)
	}
	armed := p.WaitLog(10*time.Second, "armed (victim)", vmtest.ArmedLine(pod.Name, "victim"))
	t.Logf("armed: mechanism %s, armSeconds %v", armed.Str("mechanism"), armed["armSeconds"])
}

// renamedRuncInit: a container process that renames itself as runc's init ("runc:[2:INIT]",
// prctl PR_SET_NAME) is faulted all the same: nothing on the hot path looks at a process name.
// Its neighbour runs the same program unfaulted.
func renamedRuncInit(t *testing.T, rt ociRuntime) {
	pod, podID := runPodOn(t, rt, "rename", map[string]string{"faults.kfault.dev/container.victim": openatEACCES})
	cmd := []string{"kfault-rename", "runc:[2:INIT]", "/etc/passwd"}
	victim := vmtest.StartContainer(t, podID, pod, vmtest.Container{Name: "victim", Command: cmd})
	neighbour := vmtest.StartContainer(t, podID, pod, vmtest.Container{Name: "neighbour", Command: cmd})
	vcode := vmtest.WaitExited(t, victim, time.Minute)
	ncode := vmtest.WaitExited(t, neighbour, time.Minute)
	vlog, nlog := vmtest.Logs(t, victim), vmtest.Logs(t, neighbour)
	t.Logf("victim: exit %d, log %q", vcode, vlog)
	t.Logf("neighbour: exit %d, log %q", ncode, nlog)
	if !strings.Contains(vlog, "comm runc:[2:INIT]") {
		t.Errorf("victim: log %q: the process did not rename itself", vlog)
	}
	if vcode != 1 || !strings.Contains(vlog, "open /etc/passwd: Permission denied") {
		t.Errorf("victim: exit %d, log %q: want its open to fail with Permission denied although it is named runc:[2:INIT]", vcode, vlog)
	}
	if ncode != 0 || !strings.Contains(nlog, "open /etc/passwd ok") {
		t.Errorf("neighbour: exit %d, log %q: want its open to succeed", ncode, nlog)
	}
}

// execFaulted: crictl exec into an armed container. The runtime forks a setup process outside
// the container (runc exec's runc init; crun exec's own), which joins the container's cgroup
// and namespaces and then execs the command. The setup is not faulted (the exec starts: cat
// runs and reports the fault), the exec'd command is. An exec into the unarmed neighbour is
// untouched, and so is the armed container's own sleep.
func execFaulted(t *testing.T, p *vmtest.Plugin, rt ociRuntime) {
	pod, podID := runPodOn(t, rt, "exec", map[string]string{"faults.kfault.dev/container.victim": openatEACCES})
	cmd := []string{"sleep", "3600"}
	victim := vmtest.StartContainer(t, podID, pod, vmtest.Container{Name: "victim", Command: cmd})
	neighbour := vmtest.StartContainer(t, podID, pod, vmtest.Container{Name: "neighbour", Command: cmd})
	checkRuntime(t, rt, victim)
	p.WaitLog(10*time.Second, "armed (victim)", vmtest.ArmedLine(pod.Name, "victim"))

	vout, verr := vmtest.Output("crictl", "exec", victim, "cat", "/etc/passwd")
	nout, nerr := vmtest.Output("crictl", "exec", neighbour, "cat", "/etc/passwd")
	t.Logf("exec in victim: err %v, output %q", verr, vout)
	t.Logf("exec in neighbour: err %v, output %q", nerr, nout)
	switch {
	case strings.Contains(vout, "cat: can't open '/etc/passwd': Permission denied"):
		// The exec'd command ran, and its open was faulted.
	case verr == nil:
		t.Errorf("exec in victim succeeded (output %q): want cat's open to fail with Permission denied", vout)
	default:
		t.Errorf("exec in victim: %v, output %q: want cat to run and its open to fail with Permission denied "+
			"(no cat message: the exec's setup was faulted?)", verr, vout)
	}
	if nerr != nil || !strings.Contains(nout, passwdLine) {
		t.Errorf("exec in neighbour: %v, output %q: want /etc/passwd printed", nerr, nout)
	}
	// Both containers still run: neither the exec nor the fault killed the victim's sleep.
	running, err := vmtest.Output("crictl", "ps", "-q", "--state", "running")
	for name, id := range map[string]string{"victim": victim, "neighbour": neighbour} {
		if err != nil || !strings.Contains(running, id[:12]) {
			t.Errorf("%s: not among the running containers %q (%v)", name, running, err)
		}
	}
}

// A pod whose runtime handler is a sandbox (runsc, in kfault's default sandboxRuntimes; in the
// test VM a stand-in that is really runc, see test/vm/containerd-up) is refused. Strict: the
// annotated container's creation fails, naming the runtime and the setting; an unannotated
// container of the same pod runs. Lenient: the annotated container runs unfaulted, with a
// rejected line; a runc pod's annotated container next to it is faulted (the plugin arms), and
// its neighbour is not.
func TestPluginSandboxRuntimeRefused(t *testing.T) {
	vmtest.RequireInjection(t)
	t.Run("strict", func(t *testing.T) {
		p := withPlugin(t, "sandbox-strict", vmtest.PluginOptions{Config: vmtest.AllowEveryNamespace + "\nmode: strict"})
		pod := newPod("sandbox-strict", map[string]string{"faults.kfault.dev/container.victim": mkdirEACCES})
		pod.Runtime = "runsc"
		refusedPod(t, pod, "an annotated container in a runsc pod", "kfault", "runsc", "is a sandbox", "sandboxRuntimes")
		if n := p.Count("armed"); n != 0 {
			t.Errorf("%d armed lines, want none", n)
		}
	})
	t.Run("lenient", func(t *testing.T) {
		p := withPlugin(t, "sandbox-lenient", vmtest.PluginOptions{Config: vmtest.AllowEveryNamespace + "\nmode: lenient"})
		sandboxed := firstMkdir(t, "sandbox-lenient", "runsc")
		if sandboxed.vcode != 0 || sandboxed.vlog != "" {
			t.Errorf("annotated container of the runsc pod: exit %d, log %q: want it to run unfaulted", sandboxed.vcode, sandboxed.vlog)
		}
		if sandboxed.ncode != 0 {
			t.Errorf("its neighbour: exit %d, log %q", sandboxed.ncode, sandboxed.nlog)
		}
		line := p.WaitLog(10*time.Second, "rejected (runsc pod)", func(e vmtest.LogEntry) bool {
			return e.Msg() == "rejected" && e.Str("pod") == "sandbox-lenient"
		})
		if e := line.Str("error"); !strings.Contains(e, `runtime "runsc" is a sandbox`) {
			t.Errorf("rejected line: error %q does not name the sandbox runtime", e)
		}
		control := firstMkdir(t, "sandbox-control", "")
		if control.vcode == 0 || !strings.Contains(control.vlog, "Permission denied") {
			t.Errorf("annotated container of a runc pod: exit %d, log %q: want its mkdir to fail with Permission denied", control.vcode, control.vlog)
		}
		if control.ncode != 0 || control.nlog != "" {
			t.Errorf("its neighbour: exit %d, log %q: want success", control.ncode, control.nlog)
		}
		for _, e := range p.Log(false) {
			// The plugin's armed lines (the engine's have no source).
			if e.Msg() == "armed" && e.Str("source") != "" && !vmtest.ArmedLine("sandbox-control", "victim")(e) {
				t.Errorf("armed other than the runc pod's victim: %v", e)
			}
		}
	})
}
