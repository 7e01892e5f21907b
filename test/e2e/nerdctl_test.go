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

// TestNerdctlSeedEveryRun: the seed's mount loop run with `nerdctl run --annotation`, which mounts
// at once (no sleep first), fails every mount in every run: 20 runs out of 20, with runc and with
// crun. The watcher arms the container by its cgroup's path at containerd's /containers/create,
// and the kernel arms the cgroup as the runtime makes it, before the runtime can exec the loop;
// the task's /tasks/create then only records the cgroup ("cgroup armed as it was made"). Arming
// at /tasks/create alone lost the first mount of 1 run in 6. A plain container run before and
// after mounts every time.
func TestNerdctlSeedEveryRun(t *testing.T) {
	vmtest.RequireInjection(t)
	for _, rt := range ociRuntimes {
		t.Run(rt.name, func(t *testing.T) {
			var runtimeArgs []string
			if rt.handler != "" {
				// nerdctl takes a runtime binary for containerd's runc shim; Debian's crun needs
				// the wrapper that containerd's crun handler uses (test/vm/crun-compat).
				runtimeArgs = []string{"--runtime", "crun-compat"}
			}
			nerdctlSeedRuns(t, rt.name, runtimeArgs)
		})
	}
}

func nerdctlSeedRuns(t *testing.T, name string, runtimeArgs []string) {
	p := withPlugin(t, "nerdctl-seed-"+name, vmtest.PluginOptions{})
	const runs, tries = 20, 6
	dev, byDev := loopExt4(t, "nerdctl-victim"), loopExt4(t, "nerdctl-bystander")
	loop := func(dev string) string {
		script := vmtest.TryLoop(fmt.Sprintf("mount -t ext4 -o ro,nosuid %s /mnt; umount /mnt", dev), tries, false, "")[2]
		return strings.Replace(script, "exec sleep 3600", "exit 0", 1)
	}
	suffix := time.Now().UnixNano() % 1000000
	run := func(name string, args ...string) []vmtest.Try {
		t.Helper()
		argv := append([]string{"run", "--rm", "--privileged", "--net", "host", "--name", name}, runtimeArgs...)
		out, err := vmtest.Output("nerdctl", append(argv, args...)...)
		if err != nil {
			// The runtime's own setup faulted would show here (runc: "error preparing rootfs").
			t.Errorf("nerdctl run %s: %v: %s", name, err, out)
			return nil
		}
		got := vmtest.Tries(out)
		if len(got) != tries {
			t.Errorf("nerdctl run %s: %d tries in its output, want %d:\n%s", name, len(got), tries, out)
		}
		return got
	}
	bystander := func(when string) {
		bt := run(fmt.Sprintf("kf-seed-plain-%s-%d", when, suffix), vmtest.BusyboxImage, "sh", "-c", loop(byDev))
		t.Logf("plain container %s: %s", when, vmtest.Summary(bt))
		if vmtest.Failed(bt) != 0 {
			t.Errorf("plain container %s: mounts failed: %s", when, vmtest.Summary(bt))
		}
	}

	bystander("before")
	everyTry := 0
	for i := 1; i <= runs; i++ {
		name := fmt.Sprintf("kf-seed-%d-%d", suffix, i)
		vt := run(name, "--annotation", "faults.kfault.dev="+seedFault, vmtest.BusyboxImage, "sh", "-c", loop(dev))
		if vt == nil {
			continue
		}
		if len(vt) == tries && vmtest.Failed(vt) == tries {
			everyTry++
		} else {
			t.Errorf("run %d (%s): %s, want every mount to fail", i, name, vmtest.Summary(vt))
			for _, e := range p.Log(false) {
				if e.Str("container") == name {
					t.Logf("  plugin: %v", e)
				}
			}
		}
	}
	t.Logf("every mount failed in %d runs out of %d", everyTry, runs)
	bystander("after")

	made := 0
	var since []string
	for _, e := range p.Log(false) {
		switch e.Msg() {
		case "cgroup armed as it was made":
			made++
		case "armed by path too late: arming the cgroup now":
			t.Logf("armed too late: %v", e)
		case "armed":
			if s, ok := e.Num("sinceEventSeconds"); ok && strings.HasPrefix(e.Str("container"), "kf-seed-") {
				prep, _ := e.Num("prepareSeconds")
				arm, _ := e.Num("armSeconds")
				since = append(since, fmt.Sprintf("%.2f (prepare %.2f, arm %.2f)", s, prep, arm))
			}
		}
		if e.Msg() == "armed" && strings.HasPrefix(e.Str("container"), "kf-seed-plain-") {
			t.Errorf("a plain container was armed: %v", e)
		}
	}
	t.Logf("%d of %d runs found their cgroup armed as it was made; armed (by path) this many seconds after /containers/create: %v", made, runs, strings.Join(since, ", "))
}
