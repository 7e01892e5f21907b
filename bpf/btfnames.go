package bpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
)

// btfFuncNames lists the names of the functions (BTF_KIND_FUNC) of a raw BTF blob, such as
// /sys/kernel/btf/vmlinux: sorted, each once. It reads only the type headers and the string
// section: a vmlinux has about 60 000 functions, and decoding its types with cilium/ebpf to
// find them (btf.Spec.All) takes half a second and keeps some 30 MB of decoded types.
func btfFuncNames(raw []byte) ([]string, error) {
	const (
		magic     = 0xeb9f
		headerLen = 24 // magic, version, flags (4 bytes), hdr_len, type_off, type_len, str_off, str_len
	)
	if len(raw) < headerLen {
		return nil, errors.New("BTF: short header")
	}
	var bo binary.ByteOrder = binary.LittleEndian
	switch {
	case binary.LittleEndian.Uint16(raw) == magic:
	case binary.BigEndian.Uint16(raw) == magic:
		bo = binary.BigEndian
	default:
		return nil, errors.New("BTF: bad magic")
	}
	hdrLen := uint64(bo.Uint32(raw[4:]))
	typeOff, typeLen := uint64(bo.Uint32(raw[8:])), uint64(bo.Uint32(raw[12:]))
	strOff, strLen := uint64(bo.Uint32(raw[16:])), uint64(bo.Uint32(raw[20:]))
	if hdrLen < headerLen || hdrLen+typeOff+typeLen > uint64(len(raw)) || hdrLen+strOff+strLen > uint64(len(raw)) {
		return nil, errors.New("BTF: sections out of bounds")
	}
	types := raw[hdrLen+typeOff : hdrLen+typeOff+typeLen]
	strs := raw[hdrLen+strOff : hdrLen+strOff+strLen]

	var names []string
	for off := 0; off < len(types); {
		if len(types)-off < 12 {
			return nil, fmt.Errorf("BTF: truncated type at offset %d", off)
		}
		nameOff := bo.Uint32(types[off:])
		info := bo.Uint32(types[off+4:])
		kind, vlen := (info>>24)&0x1f, int(info&0xffff)
		var extra int // bytes of kind-specific data after the 12-byte header
		switch kind {
		case 2, 7, 8, 9, 10, 11, 12, 16, 18: // ptr, fwd, typedef, volatile, const, restrict, func, float, type_tag
		case 1, 14, 17: // int, var, decl_tag
			extra = 4
		case 3: // array
			extra = 12
		case 4, 5, 15, 19: // struct, union, datasec, enum64
			extra = 12 * vlen
		case 6, 13: // enum, func_proto
			extra = 8 * vlen
		default:
			return nil, fmt.Errorf("BTF: unknown kind %d at offset %d", kind, off)
		}
		if kind == 12 && nameOff != 0 {
			if uint64(nameOff) >= uint64(len(strs)) {
				return nil, fmt.Errorf("BTF: name offset %d out of bounds", nameOff)
			}
			s := strs[nameOff:]
			if end := bytes.IndexByte(s, 0); end >= 0 {
				s = s[:end]
			}
			names = append(names, string(s))
		}
		off += 12 + extra
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

var kernelFuncs struct {
	once  sync.Once
	names []string
	err   error
}

// kernelFuncNames are the names of the running kernel's functions in its BTF (the file whose
// types loadKernelBTF parses), read once, the first time a function is not found.
func kernelFuncNames() ([]string, error) {
	kernelFuncs.once.Do(func() {
		raw, err := os.ReadFile(vmlinuxBTF)
		if err != nil {
			kernelFuncs.err = err
			return
		}
		kernelFuncs.names, kernelFuncs.err = btfFuncNames(raw)
	})
	return kernelFuncs.names, kernelFuncs.err
}

// suggestKernelFunc adds to err, about a function fn the kernel lacks, the kernel's functions
// whose names resemble fn ("...; did you mean vfs_read, ksys_read, __x64_sys_read?"). err is
// returned as is when fn is a failtype's function (it is not misspelt: the kernel lacks its
// config), when the kernel's BTF has fn after all (err is about something else), or when that
// BTF cannot be read.
func suggestKernelFunc(err error, fn string) error {
	if isFailPoint(fn) {
		return err
	}
	names, nerr := kernelFuncNames()
	if nerr != nil {
		return err
	}
	if _, found := slices.BinarySearch(names, fn); found {
		return err
	}
	return didYouMean(err, fn, names)
}
