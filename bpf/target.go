package bpf

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Target is a cgroup v2 directory whose whole subtree a fault applies to.
type Target struct {
	Path  string // the cgroup directory, e.g. /sys/fs/cgroup/k8s.io/<id>
	ID    uint64 // its cgroup id: the kernfs id, which is the directory's inode number
	Level int    // its depth below the cgroup2 root (the root is level 0)
}

func (t Target) String() string {
	return fmt.Sprintf("%s (id %d, level %d)", t.Path, t.ID, t.Level)
}

// maxLevel is the deepest cgroup the hot path can match: MAX_LEVELS - 1 (kfault.bpf.c), which
// only appears in the C source as a loop bound; TestLimits checks the two agree.
const maxLevel = 31

// TargetFromPath resolves a cgroup v2 directory.
func TargetFromPath(dir string) (Target, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Target{}, fmt.Errorf("cgroup %s: %w: %v", dir, ErrInvalidTarget, err)
	}
	root, err := cgroup2RootOf(abs)
	if err != nil {
		return Target{}, err
	}
	return targetFromPath(abs, root)
}

// targetFromPath resolves dir below root, the cgroup2 mount point; split out for tests.
func targetFromPath(dir, root string) (Target, error) {
	dir, root = filepath.Clean(dir), filepath.Clean(root)
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return Target{}, fmt.Errorf("cgroup %s: %w: %v", dir, ErrInvalidTarget, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return Target{}, fmt.Errorf("cgroup %s: %w: not a directory", dir, ErrInvalidTarget)
	}
	rel, err := filepath.Rel(root, dir)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return Target{}, fmt.Errorf("cgroup %s: %w: not below the cgroup2 root %s", dir, ErrInvalidTarget, root)
	}
	level := 0
	if rel != "." {
		level = strings.Count(rel, "/") + 1
	}
	if level > maxLevel {
		return Target{}, fmt.Errorf("cgroup %s: %w: level %d is deeper than the supported %d", dir, ErrInvalidTarget, level, maxLevel)
	}
	return Target{Path: dir, ID: st.Ino, Level: level}, nil
}

// cgroup2RootOf finds the cgroup2 mount point that holds dir, by walking up while the file
// system is cgroup2.
func cgroup2RootOf(dir string) (string, error) {
	isCg2 := func(p string) bool {
		var fs unix.Statfs_t
		return unix.Statfs(p, &fs) == nil && fs.Type == unix.CGROUP2_SUPER_MAGIC
	}
	if !isCg2(dir) {
		return "", fmt.Errorf("cgroup %s: %w: not on a cgroup v2 file system (cgroup v1 hosts are not supported yet)", dir, ErrInvalidTarget)
	}
	root := dir
	for root != "/" {
		parent := filepath.Dir(root)
		if !isCg2(parent) {
			break
		}
		// A cgroup2 mounted on a directory of another cgroup2 mount is not a thing; but a
		// parent on the same mount has the same device.
		var a, b unix.Stat_t
		if unix.Stat(root, &a) != nil || unix.Stat(parent, &b) != nil || a.Dev != b.Dev {
			break
		}
		root = parent
	}
	return root, nil
}

// Cgroup2Mount is the cgroup2 mount point of this mount namespace, from /proc/self/mountinfo,
// or /sys/fs/cgroup when none is found.
func Cgroup2Mount() string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "/sys/fs/cgroup"
	}
	if p := cgroup2MountFromMountinfo(data); p != "" {
		return p
	}
	return "/sys/fs/cgroup"
}

func cgroup2MountFromMountinfo(data []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		// 36 35 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw
		line := sc.Text()
		sep := strings.Index(line, " - ")
		if sep < 0 {
			continue
		}
		pre, post := strings.Fields(line[:sep]), strings.Fields(line[sep+3:])
		if len(pre) >= 5 && len(post) >= 1 && post[0] == "cgroup2" && pre[3] == "/" {
			return unescapeMountinfo(pre[4])
		}
	}
	return ""
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// TargetFromPID resolves the cgroup v2 cgroup of a process from /proc/<pid>/cgroup.
func TargetFromPID(pid int) (Target, error) { return Cgroups{}.FromPID(pid) }

// Cgroups resolves a container's cgroup on a cgroup v2 host, from its init pid or from its OCI
// linux.cgroupsPath. The zero value reads /proc and this mount namespace's cgroup2 mount; tests
// point both at a fake tree.
type Cgroups struct {
	Proc string // default /proc
	Root string // the cgroup2 mount; default Cgroup2Mount()
}

func (c Cgroups) roots() (proc, root string) {
	proc, root = c.Proc, c.Root
	if proc == "" {
		proc = "/proc"
	}
	if root == "" {
		root = Cgroup2Mount()
	}
	return proc, root
}

// FromPID resolves the cgroup of a process from the "0::" line of /proc/<pid>/cgroup.
func (c Cgroups) FromPID(pid int) (Target, error) {
	proc, root := c.roots()
	if pid <= 0 {
		return Target{}, fmt.Errorf("pid %d: %w: no such process", pid, ErrInvalidTarget)
	}
	data, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "cgroup"))
	if err != nil {
		return Target{}, fmt.Errorf("pid %d: %w: %v", pid, ErrInvalidTarget, err)
	}
	rel, err := cgroupV2Path(data)
	if err != nil {
		return Target{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	return targetFromPath(filepath.Join(root, rel), root)
}

// FromPath resolves a cgroup directory below the cgroup2 mount.
func (c Cgroups) FromPath(dir string) (Target, error) {
	_, root := c.roots()
	return targetFromPath(dir, root)
}

// FromCgroupsPath resolves an OCI linux.cgroupsPath (see ExpandCgroupsPath).
func (c Cgroups) FromCgroupsPath(cgroupsPath string) (Target, error) {
	_, root := c.roots()
	dir, err := ExpandCgroupsPath(root, cgroupsPath)
	if err != nil {
		return Target{}, fmt.Errorf("%w: %v", ErrInvalidTarget, err)
	}
	return targetFromPath(dir, root)
}

// cgroupV2Path returns the path of the "0::" line of a /proc/<pid>/cgroup file.
func cgroupV2Path(data []byte) (string, error) {
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			if rest == "" || !strings.HasPrefix(rest, "/") {
				break
			}
			return rest, nil
		}
	}
	return "", fmt.Errorf("%w: no cgroup v2 (\"0::/...\") line in /proc/<pid>/cgroup (cgroup v1 hosts are not supported yet)", ErrInvalidTarget)
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
