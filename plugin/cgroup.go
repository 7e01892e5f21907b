package plugin

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Target is the cgroup a rule is armed on: its directory, its kernfs id and its depth
// below the cgroup v2 root (the root is level 0). It mirrors bpf.Target.
type Target struct {
	Path  string
	ID    uint64
	Level int
}

// Resolver finds a container's cgroup. The kfault command plugs in bpf.TargetFromPID
// and bpf.TargetFromPath; CgroupFS is a pure-Go one for cgroup v2 hosts and for tests.
type Resolver interface {
	FromPID(pid int) (Target, error)
	FromPath(dir string) (Target, error)
}

// ResolverFuncs adapts two functions to a Resolver.
type ResolverFuncs struct {
	PID  func(pid int) (Target, error)
	Path func(dir string) (Target, error)
}

// FromPID implements Resolver.
func (r ResolverFuncs) FromPID(pid int) (Target, error) { return r.PID(pid) }

// FromPath implements Resolver.
func (r ResolverFuncs) FromPath(dir string) (Target, error) { return r.Path(dir) }

// CgroupFS resolves cgroups on a cgroup v2 (unified) host from /proc/<pid>/cgroup and
// the cgroup directory's inode number (the kernfs id on 64-bit kernels >= 5.5).
type CgroupFS struct {
	ProcRoot   string // default /proc
	CgroupRoot string // default /sys/fs/cgroup
}

func (c CgroupFS) roots() (proc, cg string) {
	proc, cg = c.ProcRoot, c.CgroupRoot
	if proc == "" {
		proc = "/proc"
	}
	if cg == "" {
		cg = "/sys/fs/cgroup"
	}
	return proc, cg
}

// FromPID reads the unified ("0::") line of /proc/<pid>/cgroup.
func (c CgroupFS) FromPID(pid int) (Target, error) {
	proc, cg := c.roots()
	if pid <= 0 {
		return Target{}, fmt.Errorf("no pid")
	}
	rel, err := unifiedCgroup(filepath.Join(proc, strconv.Itoa(pid), "cgroup"))
	if err != nil {
		return Target{}, err
	}
	return c.FromPath(filepath.Join(cg, rel))
}

// FromPath stats a cgroup directory below CgroupRoot.
func (c CgroupFS) FromPath(dir string) (Target, error) {
	_, cg := c.roots()
	dir = filepath.Clean(dir)
	rel, err := filepath.Rel(cg, dir)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return Target{}, fmt.Errorf("cgroup %s is not below %s", dir, cg)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return Target{}, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return Target{}, fmt.Errorf("cgroup %s is not a directory", dir)
	}
	level := 0
	if rel != "." {
		level = strings.Count(rel, "/") + 1
	}
	return Target{Path: dir, ID: st.Ino, Level: level}, nil
}

// unifiedCgroup returns the cgroup v2 path of a /proc/<pid>/cgroup file.
func unifiedCgroup(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			if !strings.HasPrefix(rest, "/") {
				return "", fmt.Errorf("%s: unexpected cgroup path %q", file, rest)
			}
			return rest, nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("%s: no cgroup v2 (0::) entry; cgroup v1 hosts need the bpf resolver", file)
}

// ExpandCgroupsPath turns an OCI linux.cgroupsPath into a directory below cgroupRoot.
// Two forms exist:
//   - systemd, "slice:prefix:name" (runc's systemd driver): the slice is expanded to
//     its parents (a-b-c.slice → a.slice/a-b.slice/a-b-c.slice; empty → system.slice)
//     and the unit is "prefix-name.scope", or name itself when it ends in ".slice";
//   - cgroupfs: a path, taken relative to cgroupRoot.
func ExpandCgroupsPath(cgroupRoot, cgroupsPath string) (string, error) {
	if cgroupRoot == "" {
		cgroupRoot = "/sys/fs/cgroup"
	}
	if cgroupsPath == "" {
		return "", errors.New("empty cgroupsPath")
	}
	if !strings.HasPrefix(cgroupsPath, "/") && strings.Count(cgroupsPath, ":") == 2 {
		parts := strings.SplitN(cgroupsPath, ":", 3)
		slice, prefix, name := parts[0], parts[1], parts[2]
		if slice == "" {
			slice = "system.slice"
		}
		dir, err := expandSlice(slice)
		if err != nil {
			return "", fmt.Errorf("cgroupsPath %q: %w", cgroupsPath, err)
		}
		if name == "" {
			return "", fmt.Errorf("cgroupsPath %q: empty unit name", cgroupsPath)
		}
		unit := name
		if !strings.HasSuffix(name, ".slice") {
			unit = prefix + "-" + name + ".scope" // as runc: even with an empty prefix
		}
		if strings.Contains(unit, "/") {
			return "", fmt.Errorf("cgroupsPath %q: unit name contains /", cgroupsPath)
		}
		return filepath.Join(cgroupRoot, dir, unit), nil
	}
	p := filepath.Clean("/" + cgroupsPath)
	if p == "/" {
		return "", fmt.Errorf("cgroupsPath %q is the root cgroup", cgroupsPath)
	}
	return filepath.Join(cgroupRoot, p), nil
}

// expandSlice is systemd's slice naming: "a-b-c.slice" lives at
// /a.slice/a-b.slice/a-b-c.slice; "-.slice" is the root.
func expandSlice(slice string) (string, error) {
	const suffix = ".slice"
	if !strings.HasSuffix(slice, suffix) || len(slice) == len(suffix) {
		return "", fmt.Errorf("invalid slice name %q: must end in %s", slice, suffix)
	}
	if strings.Contains(slice, "/") {
		return "", fmt.Errorf("invalid slice name %q: contains /", slice)
	}
	if slice == "-.slice" {
		return "/", nil
	}
	name := strings.TrimSuffix(slice, suffix)
	var path, prefix strings.Builder
	for i, comp := range strings.Split(name, "-") {
		if comp == "" {
			return "", fmt.Errorf("invalid slice name %q: empty component", slice)
		}
		if i > 0 {
			prefix.WriteByte('-')
		}
		prefix.WriteString(comp)
		path.WriteString("/" + prefix.String() + suffix)
	}
	return path.String(), nil
}

// resolveTarget finds a container's cgroup: the init pid first, then the OCI
// cgroupsPath. It never returns the root cgroup: arming there would fault the node.
// from says which one gave it ("pid" or "cgroupsPath"), for the armed log line: in a
// cgroup namespace of its own (a DaemonSet pod on cgroup v2) the plugin sees other
// containers' /proc/<pid>/cgroup as "0::/../..." and only cgroupsPath can work.
func resolveTarget(r Resolver, cgroupRoot string, pid int, cgroupsPath string) (t Target, from string, err error) {
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
		dir, err := ExpandCgroupsPath(cgroupRoot, cgroupsPath)
		if err == nil {
			var t Target
			t, err = r.FromPath(dir)
			if err == nil && t.Level > 0 {
				return t, "cgroupsPath", nil
			}
			if err == nil {
				err = fmt.Errorf("%s is the root cgroup", dir)
			}
		}
		errs = append(errs, fmt.Errorf("from cgroupsPath: %w", err))
	}
	if len(errs) == 0 {
		return Target{}, "", errors.New("cannot resolve the container's cgroup: no pid and no cgroupsPath")
	}
	return Target{}, "", fmt.Errorf("cannot resolve the container's cgroup: %w", errors.Join(errs...))
}
