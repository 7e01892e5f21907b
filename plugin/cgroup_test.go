package plugin

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/kfault/kfault/bpf"
)

// fakeHost is a /proc and a cgroup v2 tree in a temporary directory.
type fakeHost struct {
	proc, cg string
}

func newFakeHost(t testing.TB) fakeHost {
	t.Helper()
	d := t.TempDir()
	h := fakeHost{proc: filepath.Join(d, "proc"), cg: filepath.Join(d, "cgroup")}
	for _, dir := range []string{h.proc, h.cg} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// cgroup creates a cgroup directory (relative to the root) and returns its path.
func (h fakeHost) cgroup(t testing.TB, rel string) string {
	t.Helper()
	dir := filepath.Join(h.cg, rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// process writes /proc/<pid>/cgroup with the given content.
func (h fakeHost) process(t testing.TB, pid int, content string) {
	t.Helper()
	dir := filepath.Join(h.proc, strconv.Itoa(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (h fakeHost) resolver() bpf.Cgroups { return bpf.Cgroups{Proc: h.proc, Root: h.cg} }

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestResolveTarget(t *testing.T) {
	h := newFakeHost(t)
	scope := h.cgroup(t, "kubepods.slice/kubepods-podA.slice/cri-containerd-A.scope")
	other := h.cgroup(t, "kubepods.slice/kubepods-podB.slice/cri-containerd-B.scope")
	h.process(t, 100, "0::/kubepods.slice/kubepods-podA.slice/cri-containerd-A.scope\n")
	h.process(t, 101, "12:cpu,cpuacct:/x\n1:name=systemd:/x\n") // cgroup v1 only
	h.process(t, 102, "0::/\n")

	tests := map[string]struct {
		pid         int
		cgroupsPath string
		want        string // path; "" = error
		level       int
		from        string // "pid" or "cgroupsPath"
		err         string
	}{
		"from pid":                      {pid: 100, want: scope, level: 3, from: "pid"},
		"pid wins over cgroupsPath":     {pid: 100, cgroupsPath: "kubepods-podB.slice:cri-containerd:B", want: scope, level: 3, from: "pid"},
		"fallback when pid is gone":     {pid: 999, cgroupsPath: "kubepods-podB.slice:cri-containerd:B", want: other, level: 3, from: "cgroupsPath"},
		"fallback on cgroup v1 pid":     {pid: 101, cgroupsPath: "/kubepods.slice/kubepods-podB.slice/cri-containerd-B.scope", want: other, level: 3, from: "cgroupsPath"},
		"no pid":                        {cgroupsPath: "kubepods-podB.slice:cri-containerd:B", want: other, level: 3, from: "cgroupsPath"},
		"root cgroup never armed":       {pid: 102, err: "root cgroup"},
		"missing directory":             {cgroupsPath: "/nope", err: "no such file"},
		"nothing to go on":              {err: "no pid and no cgroupsPath"},
		"both fail, both reasons given": {pid: 999, cgroupsPath: "bad:x:y", err: "from cgroupsPath"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, from, err := resolveTarget(h.resolver(), tc.pid, tc.cgroupsPath)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %+v, %v; want error %q", got, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if from != tc.from {
				t.Errorf("resolved from %q, want %q", from, tc.from)
			}
			if got.Path != tc.want || got.Level != tc.level || got.ID != inode(t, tc.want) {
				t.Fatalf("got %+v, want %s at level %d with id %d", got, tc.want, tc.level, inode(t, tc.want))
			}
		})
	}
}
