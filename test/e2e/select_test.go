package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kfault/kfault/annotations"
	"github.com/kfault/kfault/test/e2e/vmtest"
)

// selectPods is the number of pods of TestPluginSelectPercent: a Deployment's replicas.
const selectPods = 20

// One pod template, 20 pods, select: {percent: 50}: each pod decides alone from its UID. The
// number armed is binomial(20, 0.5): 10 ± 3σ (6.7), so 4..16. Every pod's decision is in the log
// (armed or not selected) with the draw the test computes itself from the pod's UID; an armed
// pod's mkdir fails and a pod left out runs untouched, as does an unannotated neighbour.
func TestPluginSelectPercent(t *testing.T) {
	p := withPlugin(t, "select", vmtest.PluginOptions{})
	value := "{function: __x64_sys_mkdir, errno: EACCES, select: {percent: 50}}"
	cmd := []string{"mkdir", "/tmp/first"}

	type replica struct {
		pod     vmtest.Pod
		id      string // the app container
		drawnIn bool   // the test's own draw from the pod UID
		draw    float64
		code    int
		line    string // the plugin's decision line
	}
	replicas := make([]*replica, selectPods)
	var neighbour string
	for i := range replicas {
		name := fmt.Sprintf("select-%d", i)
		r := &replica{pod: newPod(name, map[string]string{"faults.kfault.dev/container.app": value})}
		_, r.draw = annotations.SelectDraw(r.pod.UID, 0, "")
		r.drawnIn = r.draw < 50
		podID := runPod(t, &r.pod)
		r.id = vmtest.StartContainer(t, podID, r.pod, vmtest.Container{Name: "app", Command: cmd})
		if i == 0 { // the bystander: same pod, no annotation of its own
			neighbour = vmtest.StartContainer(t, podID, r.pod, vmtest.Container{Name: "neighbour", Command: cmd})
		}
		replicas[i] = r
	}

	armed := 0
	for _, r := range replicas {
		// The exit code says enough (mkdir fails only under the fault); the log is read only
		// to report a failure: crictl calls are slow under TCG.
		r.code = vmtest.WaitExited(t, r.id, 2*time.Minute)
		e := p.WaitLog(10*time.Second, "decision of "+r.pod.Name, func(e vmtest.LogEntry) bool {
			return (e.Msg() == "armed" || e.Msg() == "not selected") && e.Str("pod") == r.pod.Name && e.Str("container") == "app"
		})
		r.line = e.Msg()
		var d map[string]any
		if sel, _ := e["selection"].([]any); len(sel) == 1 {
			d, _ = sel[0].(map[string]any)
		}
		if d == nil || d["rule"] != "percent" || d["percent"] != 50.0 || d["identity"] != r.pod.UID || d["draw"] == nil || d["hash"] == nil {
			t.Errorf("%s: %s line without the decision (percent 50, identity %s, hash, draw): %v", r.pod.Name, r.line, r.pod.UID, e)
		} else if got := d["draw"].(float64); got != r.draw {
			t.Errorf("%s: the plugin drew %v from UID %s, the test %v", r.pod.Name, got, r.pod.UID, r.draw)
		}
		if (r.line == "armed") != r.drawnIn {
			t.Errorf("%s: %s, but the test's draw from its UID is %v (armed when below 50)", r.pod.Name, r.line, r.draw)
		}
		switch r.line {
		case "armed":
			armed++
			if r.code == 0 {
				t.Errorf("%s (armed): exit 0: want mkdir to fail with Permission denied", r.pod.Name)
			} else if log := vmtest.Logs(t, r.id); !strings.Contains(log, "Permission denied") {
				t.Errorf("%s (armed): exit %d, log %q: want mkdir to fail with Permission denied", r.pod.Name, r.code, log)
			}
		default:
			if r.code != 0 {
				t.Errorf("%s (not selected): exit %d, log %q: want mkdir to succeed", r.pod.Name, r.code, vmtest.Logs(t, r.id))
			}
		}
	}
	t.Logf("%d of %d pods armed", armed, selectPods)
	if armed < 4 || armed > 16 {
		t.Errorf("%d of %d pods armed with percent: 50, outside the 3σ band 4..16", armed, selectPods)
	}

	// The bystander: its mkdir succeeds, and it was never armed.
	if code := vmtest.WaitExited(t, neighbour, time.Minute); code != 0 {
		t.Errorf("neighbour: exit %d, log %q: want success", code, vmtest.Logs(t, neighbour))
	}
	for _, e := range p.Log(false) {
		if e.Msg() == "armed" && e.Str("container") == "neighbour" {
			t.Errorf("the neighbour was armed: %v", e)
		}
	}

	// kfault status lists the pods left out as not selected.
	notSelected := 0
	for _, c := range p.Status().Containers {
		if strings.HasPrefix(c.Pod, "select-") && len(c.Injected) == 0 && len(c.NotSelectedList) == 1 {
			notSelected++
		}
	}
	if notSelected != selectPods-armed {
		t.Errorf("kfault status lists %d containers not selected, want %d", notSelected, selectPods-armed)
	}
}
