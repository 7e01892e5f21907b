package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kfault/kfault/test/e2e/vmtest"
)

// mkdirEACCES fails every mkdir(2) of the annotated container: busybox `mkdir DIR` says
// "Permission denied". Cheap and deterministic, and unlike openat, not called by runc init
// between the arming (NRI StartContainer) and the exec of the container's process.
const mkdirEACCES = "{function: __x64_sys_mkdir, errno: EACCES}"

// openatEACCES fails every open(2): busybox `cat FILE` says "Permission denied".
const openatEACCES = "{function: __x64_sys_openat, errno: EACCES}"

const passwdLine = "root:x:0:0:root" // the first line of the busybox image's /etc/passwd

// withPlugin starts containerd and a kfault nri of the test's own.
func withPlugin(t *testing.T, name string, o vmtest.PluginOptions) *vmtest.Plugin {
	t.Helper()
	vmtest.RequireInjection(t)
	vmtest.Containerd(t)
	return vmtest.StartPlugin(t, name, o)
}

func newPod(name string, annotations map[string]string) vmtest.Pod {
	return vmtest.Pod{Name: name, Namespace: "default", UID: fmt.Sprintf("%s-%d", name, time.Now().UnixNano()),
		Annotations: annotations}
}

func runPod(t *testing.T, p *vmtest.Pod) string {
	t.Helper()
	if p.CgroupParent == "" {
		p.CgroupParent = "/kubepods/besteffort/pod" + p.UID
	}
	return vmtest.RunPod(t, *p)
}

// createRefused creates the pod's container "victim", which kfault must refuse (strict mode),
// and checks that crictl's error says each of want. crictl quotes the message again: match a
// quoted name without its quotes. what names the container for the failure.
func createRefused(t *testing.T, podID string, pod vmtest.Pod, what string, want ...string) {
	t.Helper()
	_, err := vmtest.CreateContainer(t, podID, pod, vmtest.Container{Name: "victim", Command: []string{"true"}})
	if err == nil {
		t.Fatalf("crictl create of %s succeeded", what)
	}
	t.Logf("crictl create: %v", err)
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("create error does not say %q: %v", w, err)
		}
	}
}

// refusedPod runs pod, whose annotation asks a fault for its container "victim" that kfault
// must refuse (strict mode): createRefused, then an unannotated container of the same pod runs.
func refusedPod(t *testing.T, pod vmtest.Pod, what string, want ...string) {
	t.Helper()
	podID := runPod(t, &pod)
	createRefused(t, podID, pod, what, want...)
	plain := vmtest.StartContainer(t, podID, pod, vmtest.Container{Name: "plain", Command: []string{"cat", "/etc/passwd"}})
	if code := vmtest.WaitExited(t, plain, time.Minute); code != 0 {
		t.Errorf("unannotated container of the same pod: exit %d, log %q", code, vmtest.Logs(t, plain))
	}
}

// firstMkdirResult is what firstMkdir saw: the victim's container id, both exit codes and logs.
type firstMkdirResult struct {
	victim       string
	vcode, ncode int
	vlog, nlog   string
}

// firstMkdir runs a pod whose container "victim" has the mkdir fault and whose "neighbour" has
// none, both running `mkdir /tmp/first` as their own first and only action, until both exit.
// runtime: the pod's CRI runtime handler ("": containerd's default, runc).
func firstMkdir(t *testing.T, podName, runtime string) firstMkdirResult {
	t.Helper()
	pod := newPod(podName, map[string]string{"faults.kfault.dev/container.victim": mkdirEACCES})
	pod.Runtime = runtime
	podID := runPod(t, &pod)
	cmd := []string{"mkdir", "/tmp/first"}
	r := firstMkdirResult{victim: vmtest.StartContainer(t, podID, pod, vmtest.Container{Name: "victim", Command: cmd})}
	neighbour := vmtest.StartContainer(t, podID, pod, vmtest.Container{Name: "neighbour", Command: cmd})
	r.vcode = vmtest.WaitExited(t, r.victim, time.Minute)
	r.ncode = vmtest.WaitExited(t, neighbour, time.Minute)
	r.vlog, r.nlog = vmtest.Logs(t, r.victim), vmtest.Logs(t, neighbour)
	return r
}

// The annotated container's very first action, mkdir as the container's own process (no
// shell first), fails: the fault was armed before any user code ran. Its neighbour in the same
// pod runs the same command and succeeds.
func TestPluginArmedBeforeFirstInstruction(t *testing.T) {
	p := withPlugin(t, "first", vmtest.PluginOptions{})
	r := firstMkdir(t, "first", "")
	vcode, ncode, vlog, nlog := r.vcode, r.ncode, r.vlog, r.nlog
	t.Logf("victim: exit %d, log %q", vcode, vlog)
	t.Logf("neighbour: exit %d, log %q", ncode, nlog)
	if vcode == 0 || !strings.Contains(vlog, "mkdir: can't create directory '/tmp/first': Permission denied") {
		t.Errorf("victim: exit %d, log %q: want its very first mkdir to fail with Permission denied", vcode, vlog)
	}
	if ncode != 0 || nlog != "" {
		t.Errorf("neighbour: exit %d, log %q: want success", ncode, nlog)
	}
	armed := p.WaitLog(10*time.Second, "armed (victim)", vmtest.ArmedLine("first", "victim"))
	t.Logf("armed line: cgroup %s, mechanism %s, armSeconds %v", armed.Str("cgroup"), armed.Str("mechanism"), armed["armSeconds"])
	if from := armed.Str("cgroupFrom"); from != "pid" {
		t.Errorf("the cgroup was resolved from %q, want the container's init pid", from)
	}
	for _, e := range p.Log(false) {
		if e.Msg() == "armed" && e.Str("container") == "neighbour" {
			t.Errorf("the neighbour was armed: %v", e)
		}
	}
}

// kfault in its own cgroup namespace, as a DaemonSet pod on cgroup v2 is: the container's
// /proc/<pid>/cgroup is relative ("0::/../kubepods/..."), the plugin falls back to the OCI
// cgroupsPath, and the fault still hits exactly the annotated container.
func TestPluginInCgroupNamespace(t *testing.T) {
	p := withPlugin(t, "cgns", vmtest.PluginOptions{CgroupNamespace: true})
	// The plugin sits in /kfault-e2e-cgns (as this test sees it) and in a cgroup namespace of
	// its own, rooted there: to it, a container's cgroup is "/../kubepods/...".
	pluginNS, err1 := os.Readlink(fmt.Sprintf("/proc/%d/ns/cgroup", p.Pid()))
	ourNS, err2 := os.Readlink("/proc/self/ns/cgroup")
	if err1 != nil || err2 != nil || pluginNS == ourNS {
		t.Fatalf("the plugin is not in a cgroup namespace of its own: %s %v, ours %s %v", pluginNS, err1, ourNS, err2)
	}
	if got := vmtest.CgroupOf(t, p.Pid()); got != "/sys/fs/cgroup/kfault-e2e-cgns" {
		t.Fatalf("the plugin runs in %s, want /sys/fs/cgroup/kfault-e2e-cgns", got)
	}
	r := firstMkdir(t, "cgns", "")
	victim, vcode, ncode, vlog, nlog := r.victim, r.vcode, r.ncode, r.vlog, r.nlog
	if vcode == 0 || !strings.Contains(vlog, "Permission denied") {
		t.Errorf("victim: exit %d, log %q: want its mkdir to fail with Permission denied", vcode, vlog)
	}
	if ncode != 0 || nlog != "" {
		t.Errorf("neighbour: exit %d, log %q: want success", ncode, nlog)
	}
	armed := p.WaitLog(10*time.Second, "armed (victim)", vmtest.ArmedLine("cgns", "victim"))
	cg := armed.Str("cgroup")
	t.Logf("armed line: cgroup %s", cg)
	if filepath.Base(cg) != victim || !strings.HasPrefix(cg, "/sys/fs/cgroup/kubepods/") {
		t.Errorf("armed cgroup %s is not the victim's (/sys/fs/cgroup/kubepods/.../%s)", cg, victim)
	}
	if from := armed.Str("cgroupFrom"); from != "cgroupsPath" {
		t.Errorf("the cgroup was resolved from %q, want cgroupsPath: the container's /proc/<pid>/cgroup is outside the plugin's namespace", from)
	}
}

// A bad annotation fails crictl create, and the message names the field. A container of the
// same pod that the annotation does not name is created and runs.
func TestPluginBadAnnotationFailsCreate(t *testing.T) {
	withPlugin(t, "bad", vmtest.PluginOptions{})
	pod := newPod("bad", map[string]string{
		"faults.kfault.dev/container.victim": "{function: __x64_sys_mkdir, errno: EACCES, probability: 200}",
	})
	refusedPod(t, pod, "a container with probability: 200", "kfault", "probability", "200")
}

// A pod in a denied namespace (kube-system, the default deny list) cannot carry a fault: the
// annotated container's creation fails with a message naming the namespace; an unannotated
// container of the same pod runs.
func TestPluginDeniedNamespace(t *testing.T) {
	withPlugin(t, "denied", vmtest.PluginOptions{})
	pod := newPod("denied", map[string]string{"faults.kfault.dev/container.victim": mkdirEACCES})
	pod.Namespace = "kube-system"
	refusedPod(t, pod, "an annotated container in kube-system", "kfault", "namespace", "kube-system", "denied")
}

// With kfault's shipped default (allowedNamespaces empty, strict mode) an annotated pod runs
// with no fault, and the plugin's log says why and which setting turns kfault on.
func TestPluginDefaultDeny(t *testing.T) {
	p := withPlugin(t, "defaultdeny", vmtest.PluginOptions{Config: "mode: strict"})
	r := firstMkdir(t, "defaultdeny", "")
	if r.vcode != 0 {
		t.Errorf("annotated container under the default config: exit %d, log %q (a fault was injected)", r.vcode, r.vlog)
	}
	if r.ncode != 0 {
		t.Errorf("neighbour: exit %d, log %q", r.ncode, r.nlog)
	}
	line := p.WaitLog(10*time.Second, "not injected (victim)", func(e vmtest.LogEntry) bool {
		return e.Msg() == "not injected" && e.Str("container") == "victim"
	})
	if reason := line.Str("reason"); !strings.Contains(reason, "allowedNamespaces") || !strings.Contains(reason, `add "default"`) {
		t.Errorf("not injected: reason %q does not say which setting to change", reason)
	}
	if n := p.Count("armed"); n != 0 {
		t.Errorf("%d armed lines under the default config", n)
	}
}

// kill -9 of the plugin stops injection at once (nothing is pinned); a restarted plugin
// re-arms the running container at Synchronize and its times budget continues.
func TestPluginKillAndRestart(t *testing.T) {
	p := withPlugin(t, "kill", vmtest.PluginOptions{})
	pod := newPod("kill", map[string]string{
		"faults.kfault.dev/container.victim": "{function: __x64_sys_mkdir, errno: EACCES, times: 6}",
	})
	podID := runPod(t, &pod)
	vg, ng := vmtest.NewGate(t, "kill-victim"), vmtest.NewGate(t, "kill-neighbour")
	victim := vmtest.StartContainer(t, podID, pod, vmtest.Container{Name: "victim",
		Command: vmtest.MkdirLoop(100, true, ""), Mounts: []vmtest.Mount{vg.Mount()}})
	neighbour := vmtest.StartContainer(t, podID, pod, vmtest.Container{Name: "neighbour",
		Command: vmtest.MkdirLoop(100, true, ""), Mounts: []vmtest.Mount{ng.Mount()}})

	// Three injections, then wait until the state file has them (persisted every 5 s).
	vg.Allow(1, 3)
	ng.Allow(1, 3)
	vt := vmtest.WaitTries(t, victim, 3, time.Minute)
	nt := vmtest.WaitTries(t, neighbour, 3, time.Minute)
	t.Logf("before the kill: victim %s; neighbour %s", vmtest.Summary(vt), vmtest.Summary(nt))
	if vmtest.Failed(vt) != 3 || vmtest.Failed(nt) != 0 {
		t.Fatalf("before the kill: victim %s (want 3 failures), neighbour %s (want none)", vmtest.Summary(vt), vmtest.Summary(nt))
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		e, ok := p.State()[victim]
		if ok && len(e.Injected) == 1 && e.Injected[0] == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("state file: victim entry %+v, want injected [3]", e)
		}
		time.Sleep(500 * time.Millisecond)
	}

	p.Kill()
	t.Logf("kfault nri killed with SIGKILL")
	vg.Allow(4, 4)
	vt = vmtest.WaitTries(t, victim, 4, time.Minute)
	if !vt[3].OK {
		t.Errorf("try 4, after kill -9: failed; injection did not stop (%s)", vmtest.Summary(vt))
	}
	if o := vmtest.BPF(t); len(o.Programs) != 0 || len(o.Links) != 0 {
		t.Errorf("after kill -9, kfault BPF objects remain: programs %v links %v", o.Programs, o.Links)
	}

	p.Start()
	armed := p.WaitLog(30*time.Second, "armed (victim, at Synchronize)", vmtest.ArmedLine("kill", "victim"))
	t.Logf("re-armed after restart: alreadyInjected %v", armed["alreadyInjected"])
	vg.Allow(5, 12)
	ng.Allow(4, 12)
	vt = vmtest.WaitTries(t, victim, 12, 2*time.Minute)
	nt = vmtest.WaitTries(t, neighbour, 12, 2*time.Minute)
	t.Logf("victim %s", vmtest.Summary(vt))
	t.Logf("neighbour %s", vmtest.Summary(nt))
	after := vt[4:12]
	if got := vmtest.Failed(after); got != 3 {
		t.Errorf("after the restart: %d failures in tries 5..12, want exactly 3 (times: 6, 3 used before the kill): %s", got, vmtest.Summary(after))
	}
	for i := 0; i < 3; i++ {
		if after[i].OK {
			t.Errorf("try %d after the restart succeeded; want tries 5, 6, 7 to fail", after[i].N)
		}
	}
	if vmtest.Failed(nt) != 0 {
		t.Errorf("neighbour had failures: %s", vmtest.Summary(nt))
	}
}

// Restarting containerd: the plugin reconnects (and is re-synchronized) and the running
// container's fault stays armed throughout.
func TestPluginContainerdRestart(t *testing.T) {
	p := withPlugin(t, "ctrd-restart", vmtest.PluginOptions{})
	pod := newPod("restart", map[string]string{
		"faults.kfault.dev/container.victim": mkdirEACCES,
		"faults.kfault.dev/container.late":   mkdirEACCES,
	})
	podID := runPod(t, &pod)
	vg, ng := vmtest.NewGate(t, "restart-victim"), vmtest.NewGate(t, "restart-neighbour")
	victim := vmtest.StartContainer(t, podID, pod, vmtest.Container{Name: "victim",
		Command: vmtest.MkdirLoop(100, true, ""), Mounts: []vmtest.Mount{vg.Mount()}})
	neighbour := vmtest.StartContainer(t, podID, pod, vmtest.Container{Name: "neighbour",
		Command: vmtest.MkdirLoop(100, true, ""), Mounts: []vmtest.Mount{ng.Mount()}})
	vg.Allow(1, 1)
	ng.Allow(1, 1)
	vt := vmtest.WaitTries(t, victim, 1, time.Minute)
	nt := vmtest.WaitTries(t, neighbour, 1, time.Minute)
	if vt[0].OK || !nt[0].OK {
		t.Fatalf("before the restart: victim %s (want F), neighbour %s (want ok)", vmtest.Summary(vt), vmtest.Summary(nt))
	}

	registered, synced := p.Count("registered"), p.Count("synchronized")
	start := time.Now()
	vmtest.RestartContainerd(t)
	t.Logf("containerd restarted in %.1fs", time.Since(start).Seconds())
	// While containerd is (re)starting, the rule stays armed.
	vg.Allow(2, 2)
	ng.Allow(2, 2)
	p.WaitCount(90*time.Second, "registered", registered+1)
	p.WaitCount(30*time.Second, "synchronized", synced+1)
	t.Logf("plugin reconnected %.1fs after the restart began", time.Since(start).Seconds())
	if !p.Running() {
		t.Fatal("kfault nri exited when containerd restarted")
	}
	vg.Allow(3, 4)
	ng.Allow(3, 4)
	vt = vmtest.WaitTries(t, victim, 4, time.Minute)
	nt = vmtest.WaitTries(t, neighbour, 4, time.Minute)
	t.Logf("victim %s; neighbour %s", vmtest.Summary(vt), vmtest.Summary(nt))
	if vmtest.Failed(vt) != 4 {
		t.Errorf("victim: want every try to fail across the containerd restart: %s", vmtest.Summary(vt))
	}
	if vmtest.Failed(nt) != 0 {
		t.Errorf("neighbour had failures: %s", vmtest.Summary(nt))
	}
	// And the reconnected plugin arms new containers.
	late := vmtest.StartContainer(t, podID, pod, vmtest.Container{Name: "late", Command: []string{"mkdir", "/tmp/late"}})
	code := vmtest.WaitExited(t, late, time.Minute)
	if log := vmtest.Logs(t, late); code == 0 || !strings.Contains(log, "Permission denied") {
		t.Errorf("container started after the restart: exit %d, log %q: want its open to fail", code, log)
	}
}
