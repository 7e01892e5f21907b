// Package vmtest holds helpers for the e2e suites that run inside the kfault test VM
// (test/vm/run): skipping elsewhere with a reason, starting containerd, and running CRI pods and
// nerdctl containers from the locally built test images.
package vmtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kfault/kfault/bpf"
)

// Images built by test/images.
const (
	BusyboxImage = "kfault.test/busybox:latest"
	PauseImage   = "kfault.test/pause:latest"
)

// Require skips the test unless it runs as root inside the test VM.
func Require(t testing.TB) {
	t.Helper()
	if os.Getenv("KFAULT_E2E") != "1" {
		t.Skip("e2e test: runs inside the test VM (make e2e, or test/vm/run -- <test binary>)")
	}
	if os.Geteuid() != 0 {
		t.Skip("e2e test: needs root")
	}
}

// RequireInjection is Require on a kernel that can override its fault points. On one without
// CONFIG_FUNCTION_ERROR_INJECTION (Debian's, Fedora's...) it skips with kfault check's reason;
// TestPluginRefusedWithoutInjection covers what kfault does there. The skip follows the
// kernel's config, not a probe, so a broken probe on a capable kernel still fails the tests.
func RequireInjection(t testing.TB) {
	t.Helper()
	Require(t)
	if c := bpf.KernelConfig("CONFIG_FUNCTION_ERROR_INJECTION"); c != "y" {
		t.Skipf("this kernel cannot inject faults (CONFIG_FUNCTION_ERROR_INJECTION=%q: kfault check finds no override mechanism); the refusal path is TestPluginRefusedWithoutInjection", c)
	}
}

// RequireLSM is Require on a kernel where fmod_ret can fail LSM hooks (failtype alloc,
// function: security_*): one with CONFIG_SECURITY and BTF, whether or not it has error injection.
// As RequireInjection, it follows the kernel's config, not a probe.
func RequireLSM(t testing.TB) {
	t.Helper()
	Require(t)
	if !LSMHooks() {
		t.Skipf("this kernel has no LSM hooks for fmod_ret (CONFIG_SECURITY=%q, CONFIG_DEBUG_INFO_BTF=%q)",
			bpf.KernelConfig("CONFIG_SECURITY"), bpf.KernelConfig("CONFIG_DEBUG_INFO_BTF"))
	}
}

// LSMHooks says whether the kernel's config lets fmod_ret fail LSM hooks.
func LSMHooks() bool {
	return bpf.KernelConfig("CONFIG_SECURITY") == "y" && bpf.KernelConfig("CONFIG_DEBUG_INFO_BTF") == "y"
}

// Run runs a command, failing the test with its output if it fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := Output(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// Output runs a command with a 2-minute limit and returns its combined output.
func Output(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var buf bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	return strings.TrimSpace(buf.String()), err
}

// Containerd starts containerd in the VM (or reuses the running one) with the test images imported.
func Containerd(t testing.TB) {
	t.Helper()
	Run(t, filepath.Join(RepoRoot(), "test/vm/containerd-up"))
}

// RepoRoot is the repository path, shared into the VM at the same place.
func RepoRoot() string {
	if r := os.Getenv("KFAULT_REPO"); r != "" {
		return r
	}
	wd, _ := os.Getwd()
	for d := wd; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	return wd
}

// Pod describes a CRI pod sandbox for crictl runp.
type Pod struct {
	Name, Namespace, UID string
	Annotations          map[string]string
	// CgroupParent defaults to a kubelet-like cgroupfs parent: /kubepods/besteffort/pod<uid>.
	CgroupParent string
	// Privileged: the sandbox may hold privileged containers.
	Privileged bool
	// Runtime is the CRI runtime handler (crictl runp --runtime; a RuntimeClass's handler):
	// one that test/vm/containerd-up configures (runc, crun, runsc). Empty: containerd's
	// default, runc.
	Runtime string
}

// RunPod starts a pod sandbox with host networking and returns its id. It is removed at cleanup.
func RunPod(t testing.TB, p Pod) string {
	t.Helper()
	if p.Namespace == "" {
		p.Namespace = "default"
	}
	if p.UID == "" {
		p.UID = fmt.Sprintf("%s-%d", p.Name, time.Now().UnixNano())
	}
	if p.CgroupParent == "" {
		p.CgroupParent = "/kubepods/besteffort/pod" + p.UID
	}
	cfg := map[string]any{
		"metadata":      map[string]any{"name": p.Name, "namespace": p.Namespace, "uid": p.UID, "attempt": 0},
		"annotations":   p.Annotations,
		"log_directory": "/tmp/pod-logs/" + p.UID,
		"linux": map[string]any{
			"cgroup_parent": p.CgroupParent,
			"security_context": map[string]any{
				"namespace_options": map[string]any{"network": 2},
				"privileged":        p.Privileged,
			},
		},
	}
	path := writeJSON(t, "pod-"+p.UID+".json", cfg)
	args := []string{"runp", path}
	if p.Runtime != "" {
		args = []string{"runp", "--runtime", p.Runtime, path}
	}
	id := Run(t, "crictl", args...)
	t.Cleanup(func() {
		Output("crictl", "stopp", id)
		Output("crictl", "rmp", "-f", id)
	})
	return id
}

// Container describes a container for crictl create.
type Container struct {
	Name        string
	Image       string // defaults to BusyboxImage
	Command     []string
	Annotations map[string]string
	Privileged  bool
	Mounts      []Mount
	LogPath     string // relative to the pod's log directory; defaults to Name.log
}

// Mount is a host directory or file bind-mounted into a container.
type Mount struct {
	HostPath, ContainerPath string
	Readonly                bool
}

// CreateContainer creates a container in a pod and returns its id, or the error crictl gave.
func CreateContainer(t testing.TB, podID string, pod Pod, c Container) (string, error) {
	t.Helper()
	id, err := CreateContainerNoCleanup(t, podID, pod, c)
	if err != nil {
		return "", err
	}
	t.Cleanup(func() {
		Output("crictl", "stop", "-t", "1", id)
		Output("crictl", "rm", "-f", id)
	})
	return id, nil
}

// CreateContainerNoCleanup is CreateContainer for tests that stop and remove the container
// themselves (removing the pod at cleanup removes it too).
func CreateContainerNoCleanup(t testing.TB, podID string, pod Pod, c Container) (string, error) {
	t.Helper()
	if c.Image == "" {
		c.Image = BusyboxImage
	}
	if c.LogPath == "" {
		c.LogPath = c.Name + ".log"
	}
	cfg := map[string]any{
		"metadata":    map[string]any{"name": c.Name},
		"image":       map[string]any{"image": c.Image},
		"command":     c.Command,
		"annotations": c.Annotations,
		"log_path":    c.LogPath,
		"linux": map[string]any{
			"security_context": map[string]any{"privileged": c.Privileged},
		},
	}
	podCfg := map[string]any{
		"metadata":      map[string]any{"name": pod.Name, "namespace": pod.Namespace, "uid": pod.UID},
		"annotations":   pod.Annotations,
		"log_directory": "/tmp/pod-logs/" + pod.UID,
		"linux": map[string]any{
			"cgroup_parent":    pod.CgroupParent,
			"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}, "privileged": pod.Privileged},
		},
	}
	if len(c.Mounts) > 0 {
		var ms []map[string]any
		for _, m := range c.Mounts {
			ms = append(ms, map[string]any{"host_path": m.HostPath, "container_path": m.ContainerPath, "readonly": m.Readonly})
		}
		cfg["mounts"] = ms
	}
	cpath := writeJSON(t, "ctr-"+pod.UID+"-"+c.Name+".json", cfg)
	ppath := writeJSON(t, "podc-"+pod.UID+".json", podCfg)
	out, err := Output("crictl", "create", podID, cpath, ppath)
	if err != nil {
		return "", fmt.Errorf("crictl create: %v: %s", err, out)
	}
	return lastLine(out), nil
}

// StartContainer creates and starts a container, failing the test on error.
func StartContainer(t testing.TB, podID string, pod Pod, c Container) string {
	t.Helper()
	id, err := CreateContainer(t, podID, pod, c)
	if err != nil {
		t.Fatal(err)
	}
	Run(t, "crictl", "start", id)
	return id
}

// ContainerPid returns the init pid of a running CRI container.
func ContainerPid(t testing.TB, id string) int {
	t.Helper()
	var info struct {
		Info struct {
			Pid int `json:"pid"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(Run(t, "crictl", "inspect", id)), &info); err != nil {
		t.Fatalf("crictl inspect %s: %v", id, err)
	}
	if info.Info.Pid == 0 {
		t.Fatalf("crictl inspect %s: no pid (container not running?)", id)
	}
	return info.Info.Pid
}

// OCIRuntime says which OCI runtime created a CRI container, by the state it keeps in its
// directory under containerd's runc shim root (/run/containerd/runc/k8s.io/<id>): runc's
// state.json, or crun's status. The container must not have been removed.
func OCIRuntime(t testing.TB, id string) string {
	t.Helper()
	dir := filepath.Join("/run/containerd/runc/k8s.io", id)
	var found []string
	for _, rt := range []struct{ name, file string }{{"runc", "state.json"}, {"crun", "status"}} {
		if _, err := os.Stat(filepath.Join(dir, rt.file)); err == nil {
			found = append(found, rt.name)
		}
	}
	if len(found) != 1 {
		entries, err := os.ReadDir(dir)
		t.Fatalf("container %s: cannot tell its OCI runtime from %s (%v, %v)", id, dir, entries, err)
	}
	return found[0]
}

// CgroupOf returns the cgroup v2 directory of a process, read with the plugin's own resolver.
func CgroupOf(t testing.TB, pid int) string {
	t.Helper()
	target, err := bpf.TargetFromPID(pid)
	if err != nil {
		t.Fatal(err)
	}
	return target.Path
}

// WaitExited waits until a CRI container has exited and returns its exit code.
func WaitExited(t testing.TB, id string, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var st struct {
			Status struct {
				State    string `json:"state"`
				ExitCode int    `json:"exitCode"`
			} `json:"status"`
		}
		if err := json.Unmarshal([]byte(Run(t, "crictl", "inspect", id)), &st); err == nil && st.Status.State == "CONTAINER_EXITED" {
			return st.Status.ExitCode
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("container %s still running after %s", id, timeout)
	return -1
}

// Logs returns a CRI container's log.
func Logs(t testing.TB, id string) string {
	t.Helper()
	return Run(t, "crictl", "logs", id)
}

func writeJSON(t testing.TB, name string, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(os.TempDir(), "kfault-e2e")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// StartInCgroup starts cmd directly in the cgroup directory dir (clone3 CLONE_INTO_CGROUP),
// keeping cmd's other SysProcAttr settings.
func StartInCgroup(cmd *exec.Cmd, dir string) error {
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, fd
	return cmd.Start()
}
