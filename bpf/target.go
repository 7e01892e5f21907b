package bpf

import (
	"bufio"
	"bytes"
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
func TargetFromPID(pid int) (Target, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return Target{}, fmt.Errorf("pid %d: %w: %v", pid, ErrInvalidTarget, err)
	}
	rel, err := cgroupV2Path(data)
	if err != nil {
		return Target{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	root := Cgroup2Mount()
	return targetFromPath(filepath.Join(root, rel), root)
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
