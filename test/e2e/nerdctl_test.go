package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kfault/kfault/test/e2e/vmtest"
)

// nerdctl containers get no NRI events; the plugin's containerd event watcher arms them on
// /tasks/create, racing with the start. The container sleeps 6 s first (the window is about
// 3 s under TCG, most of it the first BPF program load), then tries mkdir 5 times:
// every try fails in the annotated container and none in a plain one run beside it. The arming
// window (sinceEventSeconds of the armed line) is logged.
func TestNerdctlAnnotatedRun(t *testing.T) {
	p := withPlugin(t, "nerdctl", vmtest.PluginOptions{})
	suffix := time.Now().UnixNano() % 1000000
	victim, plain := fmt.Sprintf("kf-victim-%d", suffix), fmt.Sprintf("kf-plain-%d", suffix)
	script := vmtest.TryLoop(vmtest.MkdirOp, 5, false, "0.2")[2]
	script = "sleep 6; " + strings.Replace(script, "exec sleep 3600", "exit 0", 1)
	t.Cleanup(func() { vmtest.Output("nerdctl", "rm", "-f", victim, plain) })

	start := time.Now()
	vmtest.Run(t, "nerdctl", "run", "-d", "--name", victim, "--net", "host",
		"--annotation", "faults.kfault.dev="+mkdirEACCES, vmtest.BusyboxImage, "sh", "-c", script)
	vmtest.Run(t, "nerdctl", "run", "-d", "--name", plain, "--net", "host", vmtest.BusyboxImage, "sh", "-c", script)
	t.Logf("both nerdctl run -d returned after %.1fs", time.Since(start).Seconds())

	logs := func(name string) func() string {
		return func() string { out, _ := vmtest.Output("nerdctl", "logs", name); return out }
	}
	vt := vmtest.WaitTriesFunc(t, victim, 5, 2*time.Minute, logs(victim))
	pt := vmtest.WaitTriesFunc(t, plain, 5, 2*time.Minute, logs(plain))
	t.Logf("%s (annotated): %s", victim, vmtest.Summary(vt))
	t.Logf("%s (plain): %s", plain, vmtest.Summary(pt))
	if vmtest.Failed(vt) != 5 {
		t.Errorf("annotated nerdctl container: want all 5 mkdirs to fail: %s\n%s", vmtest.Summary(vt), logs(victim)())
	}
	if vmtest.Failed(pt) != 0 {
		t.Errorf("plain nerdctl container had failures: %s", vmtest.Summary(pt))
	}

	armed := p.WaitLog(10*time.Second, "armed ("+victim+")", func(e vmtest.LogEntry) bool {
		return e.Msg() == "armed" && e.Str("source") == "containerd" && e.Str("container") == victim
	})
	since, ok := armed.Num("sinceEventSeconds")
	if !ok {
		t.Errorf("the armed line has no sinceEventSeconds: %v", armed)
	}
	t.Logf("nerdctl arming window: armed %.3fs after the /tasks/create event (armSeconds %v, namespace %s)",
		since, armed["armSeconds"], armed.Str("namespace"))
	for _, e := range p.Log(false) {
		if e.Msg() == "armed" && e.Str("container") == plain {
			t.Errorf("the plain container was armed: %v", e)
		}
	}
	// The task's exit disarms it.
	p.WaitLog(time.Minute, "disarmed ("+victim+")", func(e vmtest.LogEntry) bool {
		return e.Msg() == "disarmed" && e.Str("source") == "containerd" && e.Str("container") == victim
	})
}
