package e2e

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kfault/kfault/test/e2e/vmtest"
)

// The kernel must offer the three KernelChaos fault points for override, as themselves: a
// .constprop clone would be called instead of the original and an override would do nothing.
func TestSmokeErrorInjectionList(t *testing.T) {
	vmtest.RequireInjection(t)
	list, err := os.ReadFile("/sys/kernel/debug/error_injection/list")
	if err != nil {
		t.Fatalf("error-injection list: %v (CONFIG_FUNCTION_ERROR_INJECTION, debugfs)", err)
	}
	kallsyms, err := os.ReadFile("/proc/kallsyms")
	if err != nil {
		t.Fatal(err)
	}
	for fn, kind := range map[string]string{
		"should_failslab":        "ERRNO",
		"should_fail_alloc_page": "TRUE",
		"should_fail_bio":        "ERRNO",
	} {
		found := false
		for _, line := range strings.Split(string(list), "\n") {
			f := strings.Fields(line)
			if len(f) == 2 && f[0] == fn {
				found = true
				if f[1] != kind {
					t.Errorf("%s: injection type %s, want %s", fn, f[1], kind)
				}
			}
		}
		if !found {
			t.Errorf("%s is not on the error-injection list", fn)
		}
		for _, line := range strings.Split(string(kallsyms), "\n") {
			if f := strings.Fields(line); len(f) >= 3 && strings.HasPrefix(f[2], fn+".") {
				t.Errorf("%s has a compiler clone %s: an override on the original would not fire", fn, f[2])
			}
		}
		t.Logf("%s: on the error-injection list (%s), no clone", fn, kind)
	}
}

// A CRI pod with a kubelet-like cgroup_parent runs, and its container's cgroup is under it.
func TestSmokeCRIPod(t *testing.T) {
	vmtest.Require(t)
	vmtest.Containerd(t)
	pod := vmtest.Pod{Name: "smoke", Namespace: "default", UID: "smoke-uid"}
	pod.CgroupParent = "/kubepods/besteffort/pod" + pod.UID
	podID := vmtest.RunPod(t, pod)
	id := vmtest.StartContainer(t, podID, pod, vmtest.Container{
		Name: "sleeper", Command: []string{"sh", "-c", "echo hello from the pod; exec sleep 3600"},
	})
	cg := vmtest.CgroupOf(t, vmtest.ContainerPid(t, id))
	if !strings.HasPrefix(cg, "/sys/fs/cgroup/kubepods/besteffort/pod"+pod.UID+"/") {
		t.Errorf("container cgroup %s is not under the pod's cgroup_parent", cg)
	}
	t.Logf("container %s runs in %s", id[:12], cg)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(vmtest.Logs(t, id), "hello from the pod") {
		if time.Now().After(deadline) {
			t.Fatalf("container log: %q", vmtest.Logs(t, id))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A non-CRI container started with nerdctl runs.
func TestSmokeNerdctlRun(t *testing.T) {
	vmtest.Require(t)
	vmtest.Containerd(t)
	out := vmtest.Run(t, "nerdctl", "run", "--rm", "--net", "host", vmtest.BusyboxImage, "echo", "hello from nerdctl")
	if !strings.Contains(out, "hello from nerdctl") {
		t.Fatalf("nerdctl run output: %q", out)
	}
}
