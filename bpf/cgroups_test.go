package bpf

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestExpandCgroupsPath(t *testing.T) {
	tests := map[string]struct {
		in, want, err string
	}{
		"systemd kubelet burstable": {
			in:   "kubepods-burstable-podX.slice:cri-containerd:ID",
			want: "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podX.slice/cri-containerd-ID.scope",
		},
		"systemd guaranteed pod": {
			in:   "kubepods-pod0123.slice:cri-containerd:abc",
			want: "/sys/fs/cgroup/kubepods.slice/kubepods-pod0123.slice/cri-containerd-abc.scope",
		},
		"systemd single-level slice": {
			in:   "system.slice:docker:abc",
			want: "/sys/fs/cgroup/system.slice/docker-abc.scope",
		},
		"systemd empty slice is system.slice": {
			in:   ":nerdctl:abc",
			want: "/sys/fs/cgroup/system.slice/nerdctl-abc.scope",
		},
		"systemd root slice": {
			in:   "-.slice:p:abc",
			want: "/sys/fs/cgroup/p-abc.scope",
		},
		"systemd name is a slice": {
			in:   "machine.slice:ignored:machine-test.slice",
			want: "/sys/fs/cgroup/machine.slice/machine-test.slice",
		},
		"systemd bad slice suffix": {in: "kubepods:cri-containerd:ID", err: "must end in .slice"},
		"systemd empty component":  {in: "a--b.slice:p:ID", err: "empty component"},
		"systemd empty name":       {in: "a.slice:p:", err: "empty unit name"},
		"cgroupfs absolute": {
			in:   "/kubepods/burstable/podX/ID",
			want: "/sys/fs/cgroup/kubepods/burstable/podX/ID",
		},
		"cgroupfs relative": {
			in:   "default/abc",
			want: "/sys/fs/cgroup/default/abc",
		},
		"cgroupfs no escape": {
			in:   "/../../etc",
			want: "/sys/fs/cgroup/etc",
		},
		"cgroupfs root refused": {in: "/", err: "root cgroup"},
		"empty":                 {in: "", err: "empty cgroupsPath"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ExpandCgroupsPath("/sys/fs/cgroup", tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %q, %v; want error %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// FuzzExpandCgroupsPath: whatever the runtime sends, the expansion stays strictly below
// the cgroup root (never the root itself: arming there would fault the whole node).
func FuzzExpandCgroupsPath(f *testing.F) {
	for _, s := range []string{
		"kubepods-burstable-podX.slice:cri-containerd:ID", ":nerdctl:abc", "-.slice:p:x",
		"/kubepods/burstable/pod/ID", "default/abc", "/../..", "a.slice:p:../../..", "a.slice:p:..",
		"..", ".", "/", "a:b:c:d", "-.slice:p:.slice",
	} {
		f.Add(s)
	}
	const root = "/sys/fs/cgroup"
	f.Fuzz(func(t *testing.T, in string) {
		out, err := ExpandCgroupsPath(root, in)
		if err != nil {
			return
		}
		rel, rerr := filepath.Rel(root, out)
		if rerr != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
			t.Fatalf("ExpandCgroupsPath(%q) = %q: not strictly below %s", in, out, root)
		}
	})
}
