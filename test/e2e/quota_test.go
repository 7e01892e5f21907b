package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kfault/kfault/test/e2e/vmtest"
)

// quotaConfig allows every namespace and gives namespace quota-a a quota of one container with
// armed faults; quota-b has the default quotas.
const quotaConfig = vmtest.AllowEveryNamespace + `
quotas:
  namespaces:
    quota-a: {containers: 1}
`

// Per-namespace quotas: with quota-a at its quota of one armed container (a running holder
// whose mkdir fails), a second annotated container there is refused at creation with the
// quota named, an unannotated bystander of quota-a runs untouched, and a pod of quota-b still
// gets its fault while its unannotated neighbour does not.
func TestPluginNamespaceQuota(t *testing.T) {
	p := withPlugin(t, "quota", vmtest.PluginOptions{Config: quotaConfig})

	// quota-a's one container: armed, it stays running (and so keeps its share).
	holderPod := newPod("quota-a1", map[string]string{"faults.kfault.dev/container.holder": mkdirEACCES})
	holderPod.Namespace = "quota-a"
	holderPodID := runPod(t, &holderPod)
	holderCmd := []string{"sh", "-c", `if mkdir /tmp/q; then echo "try 1 ok"; else echo "try 1 FAILED"; fi; exec sleep 3600`}
	holder := vmtest.StartContainer(t, holderPodID, holderPod, vmtest.Container{Name: "holder", Command: holderCmd})
	p.WaitLog(30*time.Second, "armed (holder)", vmtest.ArmedLine("quota-a1", "holder"))
	if tries := vmtest.WaitTries(t, holder, 1, time.Minute); tries[0].OK {
		t.Errorf("holder in quota-a: its mkdir succeeded; the fault was not armed")
	}

	// A second annotated container of quota-a: over the quota, refused at creation.
	overPod := newPod("quota-a2", map[string]string{"faults.kfault.dev/container.victim": mkdirEACCES})
	overPod.Namespace = "quota-a"
	overPodID := runPod(t, &overPod)
	createRefused(t, overPodID, overPod, "a second annotated container in quota-a (quota: 1 container)",
		"kfault: namespace", "quota-a", "is at its quota of 1 container", "quotas.namespaces.quota-a.containers", "in use: 1")
	p.WaitLog(10*time.Second, "rejected (quota-a2 victim)", func(e vmtest.LogEntry) bool {
		return e.Msg() == "rejected" && e.Str("pod") == "quota-a2" && e.Str("phase") == "create" &&
			strings.Contains(e.Str("error"), "quota")
	})

	// An unannotated container of the same pod is none of kfault's business.
	bystander := vmtest.StartContainer(t, overPodID, overPod, vmtest.Container{Name: "bystander", Command: []string{"mkdir", "/tmp/first"}})
	if code := vmtest.WaitExited(t, bystander, time.Minute); code != 0 {
		t.Errorf("unannotated bystander in quota-a: exit %d, log %q", code, vmtest.Logs(t, bystander))
	}

	// quota-b is not affected by quota-a being full.
	bPod := newPod("quota-b1", map[string]string{"faults.kfault.dev/container.victim": mkdirEACCES})
	bPod.Namespace = "quota-b"
	bPodID := runPod(t, &bPod)
	cmd := []string{"mkdir", "/tmp/first"}
	victim := vmtest.StartContainer(t, bPodID, bPod, vmtest.Container{Name: "victim", Command: cmd})
	neighbour := vmtest.StartContainer(t, bPodID, bPod, vmtest.Container{Name: "neighbour", Command: cmd})
	if code, log := vmtest.WaitExited(t, victim, time.Minute), vmtest.Logs(t, victim); code == 0 || !strings.Contains(log, "Permission denied") {
		t.Errorf("victim in quota-b: exit %d, log %q: want its mkdir to fail with Permission denied", code, log)
	}
	if code := vmtest.WaitExited(t, neighbour, time.Minute); code != 0 {
		t.Errorf("unannotated neighbour in quota-b: exit %d, log %q", code, vmtest.Logs(t, neighbour))
	}
	// The plugin's own armed lines (source nri); the engine logs one more per arm.
	var armed []string
	for _, e := range p.Log(false) {
		if e.Msg() == "armed" && e.Str("source") == "nri" {
			armed = append(armed, e.Str("namespace")+"/"+e.Str("pod")+"/"+e.Str("container"))
		}
	}
	if want := []string{"quota-a/quota-a1/holder", "quota-b/quota-b1/victim"}; !slices.Equal(armed, want) {
		t.Errorf("armed %v, want %v", armed, want)
	}
}
