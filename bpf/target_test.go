package bpf

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestTargetFromFakeCgroupDir(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "kubepods.slice", "pod1", "ctr")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tg, err := targetFromPath(dir, root)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(dir)
	if tg.ID != fi.Sys().(*syscall.Stat_t).Ino || tg.Level != 3 || tg.Path != dir {
		t.Errorf("target = %+v", tg)
	}
	if tg, err := targetFromPath(root, root); err != nil || tg.Level != 0 {
		t.Errorf("root: %+v, %v", tg, err)
	}
	if _, err := targetFromPath(filepath.Join(root, "nope"), root); !errors.Is(err, ErrInvalidTarget) {
		t.Errorf("missing dir: %v", err)
	}
	if _, err := targetFromPath(t.TempDir(), root); !errors.Is(err, ErrInvalidTarget) {
		t.Errorf("outside the root: %v", err)
	}
	f := filepath.Join(root, "file")
	os.WriteFile(f, nil, 0o644)
	if _, err := targetFromPath(f, root); !errors.Is(err, ErrInvalidTarget) {
		t.Errorf("file: %v", err)
	}
}

func TestTargetFromPathNotCgroup2(t *testing.T) {
	if _, err := TargetFromPath(t.TempDir()); !errors.Is(err, ErrInvalidTarget) {
		t.Errorf("a tmp dir is not a cgroup: %v", err)
	}
}

func TestCgroupV2Path(t *testing.T) {
	p, err := cgroupV2Path([]byte("12:pids:/x\n0::/kubepods.slice/pod1/ctr\n"))
	if err != nil || p != "/kubepods.slice/pod1/ctr" {
		t.Errorf("got %q, %v", p, err)
	}
	if _, err := cgroupV2Path([]byte("12:pids:/x\n1:name=systemd:/y\n")); !errors.Is(err, ErrInvalidTarget) {
		t.Errorf("v1 only: %v", err)
	}
}

func TestCgroup2MountFromMountinfo(t *testing.T) {
	mi := "22 1 0:21 / / rw - ext4 /dev/sda1 rw\n" +
		"35 22 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
	if got := cgroup2MountFromMountinfo([]byte(mi)); got != "/sys/fs/cgroup" {
		t.Errorf("got %q", got)
	}
	mi = "35 22 0:30 / /my\\040cgroups rw - cgroup2 none rw\n"
	if got := cgroup2MountFromMountinfo([]byte(mi)); got != "/my cgroups" {
		t.Errorf("escaped: got %q", got)
	}
}

func TestTargetFromPIDSelf(t *testing.T) {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err != nil {
		t.Skip("no cgroup v2 here")
	}
	tg, err := TargetFromPID(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if tg.ID == 0 {
		t.Errorf("target %+v", tg)
	}
}
