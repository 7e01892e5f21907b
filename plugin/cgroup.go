package plugin

import (
	"errors"
	"fmt"

	"github.com/kfault/kfault/bpf"
)

// Resolver finds a container's cgroup; bpf.Cgroups is the real one.
type Resolver interface {
	FromPID(pid int) (bpf.Target, error)
	FromCgroupsPath(cgroupsPath string) (bpf.Target, error)
}

// resolveTarget finds a container's cgroup: the init pid first, then the OCI
// cgroupsPath. It never returns the root cgroup: arming there would fault the node.
// from says which one gave it ("pid" or "cgroupsPath"), for the armed log line: in a
// cgroup namespace of its own (a DaemonSet pod on cgroup v2) the plugin sees other
// containers' /proc/<pid>/cgroup as "0::/../..." and only cgroupsPath can work.
func resolveTarget(r Resolver, pid int, cgroupsPath string) (t bpf.Target, from string, err error) {
	var errs []error
	if pid > 0 {
		t, err := r.FromPID(pid)
		if err == nil && t.Level > 0 {
			return t, "pid", nil
		}
		if err == nil {
			err = fmt.Errorf("pid %d is in the root cgroup", pid)
		}
		errs = append(errs, fmt.Errorf("from pid %d: %w", pid, err))
	}
	if cgroupsPath != "" {
		t, err := r.FromCgroupsPath(cgroupsPath)
		if err == nil && t.Level > 0 {
			return t, "cgroupsPath", nil
		}
		if err == nil {
			err = fmt.Errorf("%s is the root cgroup", t.Path)
		}
		errs = append(errs, fmt.Errorf("from cgroupsPath: %w", err))
	}
	if len(errs) == 0 {
		return bpf.Target{}, "", errors.New("cannot resolve the container's cgroup: no pid and no cgroupsPath")
	}
	return bpf.Target{}, "", fmt.Errorf("cannot resolve the container's cgroup: %w", errors.Join(errs...))
}
