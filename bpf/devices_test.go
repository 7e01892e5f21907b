package bpf

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/kfault/kfault/annotations"
)

func TestDevEncoding(t *testing.T) {
	d := MakeDev(259, 3)
	if uint32(d) != 259<<20|3 || d.Major() != 259 || d.Minor() != 3 || d.String() != "259:3" {
		t.Fatalf("MakeDev(259, 3) = %#x (%s)", uint32(d), d)
	}
	// stat(2)'s encoding of 8:1 is 0x801; the kernel's is 8<<20|1.
	if got := devOf(0x801); got != MakeDev(8, 1) {
		t.Fatalf("devOf(0x801) = %s", got)
	}
}

func TestResolveDevice(t *testing.T) {
	if d, err := ResolveDevice("7:0"); err != nil || d != MakeDev(7, 0) {
		t.Fatalf("7:0: %v, %v", d, err)
	}
	for in, want := range map[string]string{
		"/dev/null":                        "/dev/null: not a block device",
		"/dev/kfault-no-such":              "/dev/kfault-no-such: no such file or directory",
		"sda":                              "want a block device path under /dev",
		"4096:1":                           "out of range",
		"/dev/../etc/passwd":               "want a block device path under /dev",
		"/dev/ok\nbad":                     "non-printable",
		"/dev/" + strings.Repeat("x", 200): "bytes long",
	} {
		if _, err := ResolveDevice(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ResolveDevice(%q) = %v, want an error containing %q", in, err, want)
		}
	}
}

// TestPlanDevices: devices resolve into the plan and set ruleDevices; a protected device, or a
// bad entry, is refused naming the entry.
func TestPlanDevices(t *testing.T) {
	e := &Engine{protectedDevs: []Dev{MakeDev(8, 1)}}
	devs, field, err := e.planDevices(annotations.Fault{FailType: annotations.Bio, Devices: []string{"7:0", "7:0", "252:1"}}, kindBio)
	if err != nil || field != "" || !reflect.DeepEqual(devs, []Dev{MakeDev(7, 0), MakeDev(252, 1)}) {
		t.Fatalf("planDevices = %v, %q, %v", devs, field, err)
	}
	_, field, err = e.planDevices(annotations.Fault{FailType: annotations.Bio, Devices: []string{"7:0", "8:1"}}, kindBio)
	if !errors.Is(err, errProtected) || field != "devices[1]" {
		t.Fatalf("protected device: %q, %v", field, err)
	}
	_, field, err = e.planDevices(annotations.Fault{Function: "vfs_read", Errno: 5, Devices: []string{"7:0"}}, kindFunc)
	if err == nil || field != "devices" {
		t.Fatalf("devices on a non-bio hook: %q, %v", field, err)
	}
	if devs, _, err := e.planDevices(annotations.Fault{FailType: annotations.Bio}, kindBio); err != nil || devs != nil {
		t.Fatalf("no devices: %v, %v", devs, err)
	}
}

// TestWithSlaves: a protected device-mapper device brings the devices under it, recursively.
func TestWithSlaves(t *testing.T) {
	dir := t.TempDir()
	slave := func(parent, name, dev string) {
		p := filepath.Join(dir, parent, "slaves", name)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "dev"), []byte(dev+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	slave("253:0", "md0", "9:0")
	slave("9:0", "sda2", "8:2")
	slave("9:0", "sdb2", "8:18")
	old := sysBlock
	sysBlock = dir
	defer func() { sysBlock = old }()
	got := WithSlaves([]Dev{MakeDev(253, 0), MakeDev(259, 1), MakeDev(8, 2)})
	want := []Dev{MakeDev(8, 2), MakeDev(8, 18), MakeDev(9, 0), MakeDev(253, 0), MakeDev(259, 1)}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("WithSlaves = %v, want %v", got, want)
	}
}

// TestBioNeverFlags pins the fallback bits of REQ_META, REQ_FUA and REQ_PREFLUSH to the BTF of
// the kernel running the tests (reading /sys/kernel/btf/vmlinux loads nothing).
func TestBioNeverFlags(t *testing.T) {
	const fallback = 1<<reqMetaBit | 1<<reqFUABit | 1<<reqPreflushBit
	if got := bioNeverFlags(nil); got != fallback {
		t.Fatalf("bioNeverFlags(nil) = %#x, want %#x", got, fallback)
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Skipf("no kernel BTF: %v", err)
	}
	var enum *btf.Enum
	if err := spec.TypeByName("req_flag_bits", &enum); err != nil {
		t.Skipf("kernel BTF has no enum req_flag_bits: %v", err)
	}
	want := map[string]uint64{"__REQ_META": reqMetaBit, "__REQ_FUA": reqFUABit, "__REQ_PREFLUSH": reqPreflushBit}
	for _, v := range enum.Values {
		if w, ok := want[v.Name]; ok {
			if v.Value != w {
				t.Errorf("%s is %d in this kernel's BTF, the fallback is %d", v.Name, v.Value, w)
			}
			delete(want, v.Name)
		}
	}
	if len(want) > 0 {
		t.Errorf("missing from req_flag_bits: %v", want)
	}
	if got := bioNeverFlags(spec); got != fallback {
		t.Errorf("bioNeverFlags(kernel) = %#x, want %#x", got, fallback)
	}
}
