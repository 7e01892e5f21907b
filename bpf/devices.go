package bpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/kfault/kfault/annotations"
)

// Dev is a block device number as the kernel holds it in struct block_device's bd_dev
// (MKDEV: major << 20 | minor), which is what the bio hot path compares.
type Dev uint32

// MakeDev encodes major and minor as the kernel's dev_t.
func MakeDev(major, minor uint32) Dev { return Dev(major<<20 | minor&(1<<20-1)) }

// Major and Minor decode d.
func (d Dev) Major() uint32 { return uint32(d) >> 20 }
func (d Dev) Minor() uint32 { return uint32(d) & (1<<20 - 1) }

// String is major:minor.
func (d Dev) String() string { return fmt.Sprintf("%d:%d", d.Major(), d.Minor()) }

// devOf converts a stat(2) device number (glibc encoding) to the kernel's.
func devOf(statDev uint64) Dev { return MakeDev(unix.Major(statDev), unix.Minor(statDev)) }

// ResolveDevice reads one devices entry of a bio fault: major:minor as given, or a path that
// must be a block device on this node (its st_rdev). Symbolic links are followed.
func ResolveDevice(s string) (Dev, error) {
	if err := annotations.CheckDevice(s); err != nil {
		return 0, err
	}
	if ma, mi, ok, err := annotations.ParseDevNumber(s); ok {
		if err != nil {
			return 0, err
		}
		return MakeDev(ma, mi), nil
	}
	var st unix.Stat_t
	if err := unix.Stat(s, &st); err != nil {
		return 0, fmt.Errorf("%s: %w", s, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, fmt.Errorf("%s: not a block device", s)
	}
	return devOf(st.Rdev), nil
}

// PathDevice is the device holding path (its st_dev). anonymous is set for the device numbers
// with major 0 that no bio ever carries: tmpfs and overlay (which have no block device, so
// nothing to protect), but also btrfs, whose subvolumes report such a number rather than the
// disk's; the caller should then name the disk itself (protectDevices).
func PathDevice(path string) (d Dev, anonymous bool, err error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, false, err
	}
	d = devOf(st.Dev)
	return d, d.Major() == 0, nil
}

// sysBlock is where the block devices' sysfs directories are (tests point it elsewhere).
var sysBlock = "/sys/dev/block"

// WithSlaves returns devs and, recursively, the devices under them (device-mapper, md: the
// /sys/dev/block/M:m/slaves entries; a partition's whole disk is not added), sorted, without
// duplicates. A stacked device resubmits each bio to the devices below it, where should_fail_bio
// runs again: protecting dm-0 alone would let its clones to the disk below fail.
func WithSlaves(devs []Dev) []Dev {
	seen := map[Dev]bool{}
	var walk func(d Dev, depth int)
	walk = func(d Dev, depth int) {
		if seen[d] || depth > 8 {
			return
		}
		seen[d] = true
		entries, err := os.ReadDir(filepath.Join(sysBlock, d.String(), "slaves"))
		if err != nil {
			return
		}
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join(sysBlock, d.String(), "slaves", e.Name(), "dev"))
			if err != nil {
				continue
			}
			ma, mi, ok, err := annotations.ParseDevNumber(strings.TrimSpace(string(b)))
			if ok && err == nil {
				walk(MakeDev(ma, mi), depth+1)
			}
		}
	}
	for _, d := range devs {
		walk(d, 0)
	}
	out := make([]Dev, 0, len(seen))
	for d := range seen {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Fallback bit numbers of enum req_flag_bits (include/linux/blk_types.h), the same from 5.x to
// 6.18; TestBioNeverFlags pins them to the BTF of the kernel running the tests.
const (
	reqMetaBit     = 12
	reqFUABit      = 17
	reqPreflushBit = 18
)

// bioNeverFlags is REQ_META | REQ_PREFLUSH | REQ_FUA of the running kernel, from the BTF enum
// req_flag_bits when there is one, else the fallback bits.
func bioNeverFlags(spec *btf.Spec) uint32 {
	bits := map[string]uint64{"__REQ_META": reqMetaBit, "__REQ_FUA": reqFUABit, "__REQ_PREFLUSH": reqPreflushBit}
	if spec != nil {
		var enum *btf.Enum
		if err := spec.TypeByName("req_flag_bits", &enum); err == nil {
			for _, v := range enum.Values {
				if _, ok := bits[v.Name]; ok && v.Value < 32 {
					bits[v.Name] = v.Value
				}
			}
		}
	}
	var mask uint32
	for _, b := range bits {
		mask |= 1 << b
	}
	return mask
}

// errProtected is returned for a devices entry that is one of the node's protected devices.
var errProtected = errors.New("a protected device of this node (node config bio.protectPaths / protectDevices): bios to it are never failed")
