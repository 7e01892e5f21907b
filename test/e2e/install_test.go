package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kfault/kfault/test/e2e/vmtest"
)

const (
	preregPlugin = "/opt/nri/plugins/10-kfault"
	preregConf   = "/etc/nri/conf.d/10-kfault.conf"
	preregLog    = "/var/log/kfault.log"
)

// launchedPids lists the processes running the pre-registered plugin binary.
func launchedPids() []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || !strings.HasPrefix(exe, preregPlugin) {
			continue
		}
		var pid int
		for _, c := range e.Name() {
			pid = pid*10 + int(c-'0')
		}
		pids = append(pids, pid)
	}
	return pids
}

// containerd launches kfault as a pre-registered NRI plugin (/opt/nri/plugins/10-kfault, the
// binary itself) with the node config from /etc/nri/conf.d/10-kfault.conf (the shipped
// install/nri/10-kfault.conf, with a state dir and control socket of the test's own), and an
// annotated pod's container gets its fault while its neighbour does not. Afterwards the plugin
// is uninstalled and containerd restarted, so that later tests start their own.
func TestInstallPreRegistered(t *testing.T) {
	vmtest.RequireInjection(t)
	vmtest.Containerd(t)
	if _, err := os.Stat(preregPlugin); err == nil {
		t.Fatalf("%s already exists", preregPlugin)
	}
	dir := "/run/kfault-e2e/prereg"
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	shipped, err := os.ReadFile(filepath.Join(vmtest.RepoRoot(), "install/nri/10-kfault.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := regexp.MustCompile(`(?m)^stateDir: .*$`).ReplaceAllString(string(shipped), "stateDir: "+dir+"/state")
	conf = regexp.MustCompile(`(?m)^controlSocket: .*$`).ReplaceAllString(conf, "controlSocket: "+dir+"/control.sock")
	// As an admin turns kfault on: uncomment the allowedNamespaces example, listing the
	// test pod's namespace (the shipped default allows none).
	conf = regexp.MustCompile(`(?m)^#allowedNamespaces: .*$`).ReplaceAllString(conf, "allowedNamespaces: [default]")
	if !strings.Contains(conf, dir+"/state") || !strings.Contains(conf, dir+"/control.sock") || !strings.Contains(conf, "\nallowedNamespaces: [default]") {
		t.Fatalf("install/nri/10-kfault.conf has no stateDir/controlSocket/#allowedNamespaces lines to point at %s", dir)
	}
	bin, err := os.ReadFile(vmtest.KfaultBinary())
	if err != nil {
		t.Fatal(err)
	}
	var logStart int64
	if fi, err := os.Stat(preregLog); err == nil {
		logStart = fi.Size()
	}
	t.Cleanup(func() {
		os.Remove(preregPlugin)
		os.Remove(preregConf)
		vmtest.RestartContainerd(t)
		// The launched instance exits when its connection goes; make sure.
		deadline := time.Now().Add(20 * time.Second)
		for len(launchedPids()) > 0 && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		for _, pid := range launchedPids() {
			t.Errorf("pre-registered kfault (pid %d) still running after uninstall and containerd restart; killing it", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if t.Failed() {
			data, _ := os.ReadFile(preregLog)
			t.Logf("%s:\n%s", preregLog, string(data[min(int64(len(data)), logStart):]))
		}
	})
	if err := os.WriteFile(preregPlugin, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(preregConf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	vmtest.RestartContainerd(t)
	var entries []vmtest.LogEntry
	for {
		data, _ := os.ReadFile(preregLog)
		entries = vmtest.ParseLog(data[min(int64(len(data)), logStart):])
		if hasMsg(entries, "registered") {
			break
		}
		if time.Since(start) > time.Minute {
			ctrd, _ := os.ReadFile("/run/kfault-vm/containerd.log")
			t.Fatalf("the pre-registered plugin did not log registered within a minute; %s:\n%s\ncontainerd log tail:\n%s",
				preregLog, data[min(int64(len(data)), logStart):], lastLines(string(ctrd), 30))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("containerd restarted and kfault launched and registered in %.1fs; pids %v", time.Since(start).Seconds(), launchedPids())
	for _, e := range entries {
		if e.Msg() == "kfault nri starting" && e.Str("launchedByRuntime") != "true" {
			t.Errorf("kfault nri starting: launchedByRuntime %v, want true", e["launchedByRuntime"])
		}
		if e.Msg() == "configured" && e.Str("stateDir") != dir+"/state" {
			t.Errorf("configured: stateDir %q, want %q from %s (NRI Configure)", e.Str("stateDir"), dir+"/state", preregConf)
		}
	}
	if len(launchedPids()) != 1 {
		t.Errorf("want one running %s, have pids %v", preregPlugin, launchedPids())
	}

	pod := newPod("prereg", map[string]string{"faults.kfault.dev/container.victim": mkdirEACCES})
	podID := runPod(t, &pod)
	cmd := []string{"mkdir", "/tmp/prereg"}
	victim := vmtest.StartContainer(t, podID, pod, vmtest.Container{Name: "victim", Command: cmd})
	neighbour := vmtest.StartContainer(t, podID, pod, vmtest.Container{Name: "neighbour", Command: cmd})
	vcode := vmtest.WaitExited(t, victim, time.Minute)
	ncode := vmtest.WaitExited(t, neighbour, time.Minute)
	vlog := vmtest.Logs(t, victim)
	t.Logf("victim: exit %d %q; neighbour: exit %d", vcode, vlog, ncode)
	if vcode == 0 || !strings.Contains(vlog, "Permission denied") {
		t.Errorf("victim under the pre-registered plugin: exit %d, log %q: want mkdir to fail", vcode, vlog)
	}
	if ncode != 0 {
		t.Errorf("neighbour: exit %d, log %q", ncode, vmtest.Logs(t, neighbour))
	}
	out := vmtest.Run(t, vmtest.KfaultBinary(), "status", "--socket", dir+"/control.sock")
	t.Logf("kfault status:\n%s", out)
	if !regexp.MustCompile(`(?m)^` + victim[:12] + `\s+default\s+prereg\s+victim\s+disarmed\s+.*\s1$`).MatchString(out) {
		t.Errorf("kfault status: no line for the exited victim with 1 injected")
	}
}

func hasMsg(entries []vmtest.LogEntry, msg string) bool {
	for _, e := range entries {
		if e.Msg() == msg {
			return true
		}
	}
	return false
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
