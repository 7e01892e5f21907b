package plugin

import (
	"os"

	"github.com/containerd/nri/pkg/api"
	"golang.org/x/sys/unix"

	"github.com/kfault/kfault/bpf"
)

// NodeChecks are the lines of `kfault check` about the node rather than the kernel: a unified
// cgroup hierarchy, and the runtime's NRI socket.
func NodeChecks() []bpf.Check {
	var checks []bpf.Check
	var fs unix.Statfs_t
	switch err := unix.Statfs("/sys/fs/cgroup", &fs); {
	case err != nil:
		checks = append(checks, bpf.Check{Name: "cgroup v2", Detail: "no: /sys/fs/cgroup: " + err.Error()})
	case fs.Type == unix.CGROUP2_SUPER_MAGIC:
		checks = append(checks, bpf.Check{Name: "cgroup v2", OK: true, Detail: "yes: unified hierarchy at /sys/fs/cgroup"})
	default:
		checks = append(checks, bpf.Check{Name: "cgroup v2", Detail: "no: /sys/fs/cgroup is not cgroup2 (cgroup v1 or hybrid hosts are not supported yet; needs CONFIG_CGROUPS and a unified-hierarchy boot)"})
	}
	sock := api.DefaultSocketPath
	if st, err := os.Stat(sock); err == nil && st.Mode()&os.ModeSocket != 0 {
		checks = append(checks, bpf.Check{Name: "NRI socket", OK: true, Detail: "yes: " + sock})
	} else {
		checks = append(checks, bpf.Check{Name: "NRI socket", Detail: "no: " + sock + " missing: containerd is not running, or NRI is disabled (containerd 1.7: [plugins.\"io.containerd.nri.v1.nri\"] disable = false). `kfault inject` still works"})
	}
	return checks
}
