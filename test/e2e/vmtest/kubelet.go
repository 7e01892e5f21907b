package vmtest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// NodeName is the kubelet's node name; a static pod's name is "<name>-<node name>".
const NodeName = "kfault-vm"

// Kubelet is a standalone kubelet (no API server) started by a test against the VM's containerd.
// It runs the static pods whose manifests the test puts into ManifestDir (AddPod), as kubelet
// does on a node, and is stopped at cleanup after every pod it ran is gone.
type Kubelet struct {
	t                              testing.TB
	Dir, ManifestDir, RootDir, Log string
	cmd                            *exec.Cmd
	done                           chan struct{}
}

// kubeletConfig is the KubeletConfiguration for the VM. Standalone: no API server, no serving
// port (crictl exec goes through containerd's own streaming server). cgroupfs, as containerd's
// runc runtime is configured. cpuCFSQuota false: the VM's built kernel has no
// CONFIG_CFS_BANDWIDTH, so runc could not write a container's cpu.max (no pod here has a CPU
// limit). Eviction thresholds at zero: the VM's file systems are small tmpfs.
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: %s
fileCheckFrequency: 1s
syncFrequency: 5s
cgroupDriver: cgroupfs
cpuCFSQuota: false
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
failSwapOn: false
enableServer: false
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
evictionHard: {memory.available: "1Mi", nodefs.available: "0%%", imagefs.available: "0%%"}
imageGCHighThresholdPercent: 100
resolvConf: ""
`

// RequireKubelet skips unless this is the test VM and the pinned kubelet was built into it
// (test/vm/build-kubelet; make test builds it, test/vm/run puts it on PATH).
func RequireKubelet(t testing.TB) {
	t.Helper()
	Require(t)
	if _, err := exec.LookPath("kubelet"); err != nil {
		t.Skip("no kubelet on PATH: build it with test/vm/build-kubelet (make test does), then test/vm/run finds it")
	}
}

// StartKubelet starts a kubelet with its own root and manifest directories under
// /run/kfault-e2e/<name>.kubelet (apart from a plugin's /run/kfault-e2e/<name>). Containerd must be up.
func StartKubelet(t testing.TB, name string) *Kubelet {
	t.Helper()
	dir := filepath.Join("/run/kfault-e2e", name+".kubelet")
	os.RemoveAll(dir)
	k := &Kubelet{t: t, Dir: dir, ManifestDir: filepath.Join(dir, "manifests"), RootDir: filepath.Join(dir, "root"),
		Log: filepath.Join(dir, "kubelet.log")}
	for _, d := range []string{k.ManifestDir, k.RootDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// On a node, systemd makes every mount shared; the VM's init does not. A pod's HostToContainer
	// mounts (install/'s DaemonSet has them) need their host path on a shared or slave mount.
	// Made private again at cleanup, as the other suites expect.
	Run(t, "mount", "--make-rshared", "/")
	t.Cleanup(func() { Output("mount", "--make-rprivate", "/") })
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, kubeletConfig, k.ManifestDir), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(k.Log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	k.cmd = exec.Command("kubelet", "--config", cfg, "--root-dir", k.RootDir, "--hostname-override", NodeName, "-v", "1")
	k.cmd.Stdout, k.cmd.Stderr = logf, logf
	k.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := k.cmd.Start(); err != nil {
		t.Fatalf("starting kubelet: %v", err)
	}
	k.done = make(chan struct{})
	go func() { k.cmd.Wait(); close(k.done) }()
	t.Cleanup(k.stop)
	t.Logf("kubelet %s (pid %d) started in %.2fs", strings.TrimSpace(Run(t, "kubelet", "--version")), k.cmd.Process.Pid, time.Since(start).Seconds())
	return k
}

// AddPod writes a static pod's manifest; the kubelet picks it up within fileCheckFrequency.
func (k *Kubelet) AddPod(p *corev1.Pod) {
	k.t.Helper()
	if p.APIVersion == "" {
		p.APIVersion, p.Kind = "v1", "Pod"
	}
	data, err := yaml.Marshal(p)
	if err != nil {
		k.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(k.ManifestDir, p.Name+".yaml"), data, 0o644); err != nil {
		k.t.Fatal(err)
	}
}

// RemovePod deletes a static pod's manifest and waits until the kubelet has removed its sandbox.
func (k *Kubelet) RemovePod(name string, timeout time.Duration) {
	k.t.Helper()
	os.Remove(filepath.Join(k.ManifestDir, name+".yaml"))
	k.waitPodsGone(timeout, name)
}

// waitPodsGone waits until no sandbox of the named static pods is ready.
func (k *Kubelet) waitPodsGone(timeout time.Duration, names ...string) error {
	deadline := time.Now().Add(timeout)
	for {
		var left []string
		for _, n := range names {
			if out, _ := Output("crictl", "pods", "-q", "--state", "ready", "--label", "io.kubernetes.pod.name="+n+"-"+NodeName); strings.TrimSpace(out) != "" {
				left = append(left, n)
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("static pods %v still ready after %s", left, timeout)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// stop removes every manifest, waits for the kubelet to stop their pods, then stops the kubelet
// and removes whatever sandboxes are left (a kubelet stopped mid-way leaves them).
func (k *Kubelet) stop() {
	t := k.t
	entries, _ := os.ReadDir(k.ManifestDir)
	var names []string
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".yaml"))
		os.Remove(filepath.Join(k.ManifestDir, e.Name()))
	}
	if err := k.waitPodsGone(2*time.Minute, names...); err != nil {
		t.Logf("kubelet: %v", err)
	}
	syscall.Kill(-k.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-k.done:
	case <-time.After(20 * time.Second):
		syscall.Kill(-k.cmd.Process.Pid, syscall.SIGKILL)
		<-k.done
	}
	for _, n := range names {
		out, _ := Output("crictl", "pods", "-q", "--label", "io.kubernetes.pod.name="+n+"-"+NodeName)
		for _, id := range strings.Fields(out) {
			Output("crictl", "stopp", id)
			Output("crictl", "rmp", "-f", id)
		}
	}
	// The kubelet's QoS cgroups keep the CPU weights it set (besteffort: the lowest): remove them,
	// empty now, so that the other suites' pods under /kubepods get fresh ones.
	for _, dir := range []string{"kubepods/besteffort", "kubepods/burstable", "kubepods"} {
		os.Remove(filepath.Join("/sys/fs/cgroup", dir))
	}
	if t.Failed() {
		data, _ := os.ReadFile(k.Log)
		t.Logf("kubelet log (%s), errors and the last lines:\n%s", k.Log, kubeletLogExcerpt(string(data)))
	}
}

// kubeletLogExcerpt keeps the kubelet's error lines and its last 30 lines: its log is long.
func kubeletLogExcerpt(log string) string {
	lines := strings.Split(strings.TrimSpace(log), "\n")
	var keep []string
	for i, l := range lines {
		if strings.HasPrefix(l, "E") || strings.HasPrefix(l, "F") || i >= len(lines)-30 {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// StaticContainer is one container instance that the kubelet made for a static pod.
type StaticContainer struct {
	ID, Name, State string
	Attempt         int
}

// Containers lists the containers of a static pod, every attempt, oldest first.
func (k *Kubelet) Containers(pod string) []StaticContainer {
	k.t.Helper()
	var out struct {
		Containers []struct {
			ID       string `json:"id"`
			State    string `json:"state"`
			Metadata struct {
				Name    string `json:"name"`
				Attempt int    `json:"attempt"`
			} `json:"metadata"`
		} `json:"containers"`
	}
	data := Run(k.t, "crictl", "ps", "-a", "-o", "json", "--label", "io.kubernetes.pod.name="+pod+"-"+NodeName)
	if err := json.Unmarshal([]byte(data), &out); err != nil {
		k.t.Fatalf("crictl ps: %v: %s", err, data)
	}
	var cs []StaticContainer
	for _, c := range out.Containers {
		cs = append(cs, StaticContainer{ID: c.ID, Name: c.Metadata.Name, State: c.State, Attempt: c.Metadata.Attempt})
	}
	slices.SortFunc(cs, func(a, b StaticContainer) int { return a.Attempt - b.Attempt })
	return cs
}

// WaitContainer waits until the kubelet has made attempt (0: the first) of a static pod's
// container, and returns it.
func (k *Kubelet) WaitContainer(pod, container string, attempt int, timeout time.Duration) StaticContainer {
	k.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, c := range k.Containers(pod) {
			if c.Name == container && c.Attempt == attempt {
				return c
			}
		}
		if time.Now().After(deadline) {
			k.t.Fatalf("static pod %s: no container %s attempt %d after %s; it has %+v", pod, container, attempt, timeout, k.Containers(pod))
		}
		time.Sleep(500 * time.Millisecond)
	}
}
