package main

import (
	"strings"
	"testing"

	"github.com/kfault/kfault/bpf"
)

func TestCheckInjectTarget(t *testing.T) {
	for name, tc := range map[string]struct {
		target bpf.Target
		pid    int
		want   string // "" for accepted
	}{
		"--cgroup of the root":     {bpf.Target{Path: "/sys/fs/cgroup", ID: 1, Level: 0}, 0, "/sys/fs/cgroup is the root cgroup: a fault there would hit every process on the node; give a cgroup below it"},
		"--pid of a kernel thread": {bpf.Target{Path: "/sys/fs/cgroup", ID: 1, Level: 0}, 2, "pid 2 is in the root cgroup /sys/fs/cgroup: a fault there would hit every process on the node; ..."},
		"--cgroup one level down":  {bpf.Target{Path: "/sys/fs/cgroup/victim", ID: 7, Level: 1}, 0, ""},
		"--pid in a container":     {bpf.Target{Path: "/sys/fs/cgroup/kubepods.slice/pod/ctr", ID: 9, Level: 3}, 1234, ""},
	} {
		t.Run(name, func(t *testing.T) {
			err := checkInjectTarget(tc.target, tc.pid)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want == "":
			case err == nil:
				t.Fatalf("accepted, want %q", tc.want)
			case strings.HasSuffix(tc.want, "..."):
				if !strings.HasPrefix(err.Error(), strings.TrimSuffix(tc.want, "...")) {
					t.Fatalf("error\n got %q\nwant %q", err, tc.want)
				}
			case err.Error() != tc.want:
				t.Fatalf("error\n got %q\nwant %q", err, tc.want)
			}
		})
	}
}
