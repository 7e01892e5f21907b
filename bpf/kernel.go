package bpf

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// Paths of the kernel interfaces read here; variables so that tests can point them elsewhere.
var (
	errorInjectionList = "/sys/kernel/debug/error_injection/list"
	kallsymsPath       = "/proc/kallsyms"
	vmlinuxBTF         = "/sys/kernel/btf/vmlinux"
)

// errDebugfs: the error-injection list cannot be read because debugfs is not mounted.
var errDebugfs = errors.New("debugfs is not mounted at /sys/kernel/debug (mount -t debugfs none /sys/kernel/debug)")

// InjectableFunctions reads the kernel's error-injection list: function name -> type (ERRNO,
// TRUE, NULL, EI_ETYPE_...). It needs debugfs; without it the error wraps a clear message.
func InjectableFunctions() (map[string]string, error) {
	f, err := os.Open(errorInjectionList)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			if _, serr := os.Stat("/sys/kernel/debug/tracing"); serr != nil {
				if ents, _ := os.ReadDir("/sys/kernel/debug"); len(ents) == 0 {
					return nil, errDebugfs
				}
			}
			return nil, fmt.Errorf("%s missing: the kernel lacks CONFIG_FUNCTION_ERROR_INJECTION", errorInjectionList)
		}
		return nil, err
	}
	defer f.Close()
	return parseInjectionList(f)
}

func parseInjectionList(r io.Reader) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		typ := ""
		if len(fields) > 1 {
			typ = fields[1]
		}
		out[fields[0]] = typ
	}
	return out, sc.Err()
}

// KernelSymbol is what /proc/kallsyms says about a function.
type KernelSymbol struct {
	Exists bool // the symbol itself is there
	// Clones are the compiler's copies of the function that callers may call instead of it,
	// such as name.constprop.0, name.isra.0 or name.part.0, each once, in kallsyms order. The
	// cold part of a function (name.cold, name.isra.0.cold) is not one: it is only jumped to
	// from the function's own body.
	Clones []string
}

// LookupKernelSymbols scans /proc/kallsyms once for the given function names.
func LookupKernelSymbols(names ...string) (map[string]KernelSymbol, error) {
	f, err := os.Open(kallsymsPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return scanKallsyms(f, names)
}

func scanKallsyms(r io.Reader, names []string) (map[string]KernelSymbol, error) {
	idx, err := readSymbolIndex(r)
	if err != nil {
		return nil, err
	}
	out := make(map[string]KernelSymbol, len(names))
	for _, n := range names {
		out[n] = idx.lookup(n)
	}
	return out, nil
}

// symbolIndex is a snapshot of the names in /proc/kallsyms, kept in one string and sorted, so
// that a lookup is a binary search. Reading kallsyms takes about 0.5 s under emulation, which
// the first container with a call chain paid while nerdctl's runtime was already making its
// cgroup; the engine reads it once, in the background, at start (symbolCache.warm). About 2 MB
// for the 80,000 symbols of a 6.1 kernel.
type symbolIndex struct {
	blob   string
	starts []uint32 // name i is blob[starts[i]:starts[i+1]], in kallsyms order
	sorted []uint32 // the names' indices, sorted by name, then by position
}

func readSymbolIndex(r io.Reader) (*symbolIndex, error) {
	var blob []byte
	var starts []uint32
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		// ffffffff81234560 T should_failslab	[module]
		name := kallsymsName(sc.Bytes())
		if len(name) == 0 {
			continue
		}
		starts = append(starts, uint32(len(blob)))
		blob = append(blob, name...)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	x := &symbolIndex{blob: string(blob), starts: starts, sorted: make([]uint32, len(starts))}
	for i := range x.sorted {
		x.sorted[i] = uint32(i)
	}
	slices.SortStableFunc(x.sorted, func(a, b uint32) int { return strings.Compare(x.name(a), x.name(b)) })
	return x, nil
}

// kallsymsName is the third field of a kallsyms line (nil when it has fewer).
func kallsymsName(line []byte) []byte {
	for f := 0; f < 2; f++ {
		i := bytes.IndexAny(line, " \t")
		if i < 0 {
			return nil
		}
		line = bytes.TrimLeft(line[i:], " \t")
	}
	if i := bytes.IndexAny(line, " \t"); i >= 0 {
		line = line[:i]
	}
	return line
}

func (x *symbolIndex) name(i uint32) string {
	end := uint32(len(x.blob))
	if int(i)+1 < len(x.starts) {
		end = x.starts[i+1]
	}
	return x.blob[x.starts[i]:end]
}

// lookup is what kallsyms says of fn. Its clones (fn.constprop.0...) sort right after it: '.'
// sorts before every character of a C identifier.
func (x *symbolIndex) lookup(fn string) KernelSymbol {
	var ks KernelSymbol
	k, _ := slices.BinarySearchFunc(x.sorted, fn, func(i uint32, fn string) int { return strings.Compare(x.name(i), fn) })
	for ; k < len(x.sorted) && x.name(x.sorted[k]) == fn; k++ {
		ks.Exists = true
	}
	var clones []uint32
	for ; k < len(x.sorted) && strings.HasPrefix(x.name(x.sorted[k]), fn+"."); k++ {
		if !strings.HasSuffix(x.name(x.sorted[k]), ".cold") {
			clones = append(clones, x.sorted[k])
		}
	}
	slices.Sort(clones) // kallsyms order
	for _, i := range clones {
		if !slices.Contains(ks.Clones, x.name(i)) {
			ks.Clones = append(ks.Clones, x.name(i))
		}
	}
	return ks
}

// gfpNoFail returns __GFP_NOFAIL of the running kernel: 1 << ___GFP_NOFAIL_BIT when its BTF has
// that enum (kernels from 6.10 on number the GFP bits in an enum), else 0x8000, the value of
// every kernel before that.
func gfpNoFail(spec *btf.Spec) uint64 {
	const legacy = 0x8000
	if spec == nil || !kernelAtLeast(6, 10) {
		return legacy // the enum is absent, and walking all of BTF is slow under emulation
	}
	for typ, err := range spec.All() {
		if err != nil {
			break
		}
		enum, ok := typ.(*btf.Enum)
		if !ok {
			continue
		}
		for _, v := range enum.Values {
			if v.Name == "___GFP_NOFAIL_BIT" && v.Value < 32 {
				return 1 << v.Value
			}
		}
	}
	return legacy
}

// kernelBTF is the process's one parse of the running kernel's BTF, shared by every program
// load (as CollectionOptions.Cache: fmod_ret and fentry attach targets are looked up in it) and
// by predicate compilation. Parsing it takes about 200 ms under emulation; with a cache per
// engine, or none, the first Arm paid for a second parse. It is also most of a quiet plugin's
// heap (a 6.1 kernel's 3.7 MB of raw BTF, kept for lazy decoding, plus the decoded types), so
// an engine that has not needed it for KeepIdle releases it (releaseKernelBTF) and the next
// user parses it again.
var kernelBTF struct {
	mu    sync.Mutex
	cache *btf.Cache // holds the parse; nil when released or never loaded
}

// loadKernelBTF returns the running kernel's BTF and the cache that holds it, parsing it unless
// it is held already.
func loadKernelBTF() (*btf.Spec, *btf.Cache, error) {
	kernelBTF.mu.Lock()
	defer kernelBTF.mu.Unlock()
	if kernelBTF.cache == nil {
		if _, err := os.Stat(vmlinuxBTF); err != nil {
			return nil, nil, fmt.Errorf("%w: %s: %v (the kernel needs CONFIG_DEBUG_INFO_BTF)", ErrNoBTF, vmlinuxBTF, err)
		}
		kernelBTF.cache = btf.NewCache()
	}
	s, err := kernelBTF.cache.Kernel()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrNoBTF, err)
	}
	return s, kernelBTF.cache, nil
}

// releaseKernelBTF drops the process's parse of the kernel's BTF; users that still hold it
// keep it alive until they are done.
func releaseKernelBTF() {
	kernelBTF.mu.Lock()
	defer kernelBTF.mu.Unlock()
	kernelBTF.cache = nil
}

// kernelAtLeast compares the running kernel's release with major.minor.
func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return true
	}
	return releaseAtLeast(unix.ByteSliceToString(u.Release[:]), major, minor)
}

func releaseAtLeast(release string, major, minor int) bool {
	var ma, mi int
	if _, err := fmt.Sscanf(release, "%d.%d", &ma, &mi); err != nil {
		return true
	}
	return ma > major || (ma == major && mi >= minor)
}

// preemptCountAddrs finds what the hot path needs to read this CPU's preempt count: the address
// of __per_cpu_offset and the per-cpu address of the preempt count. Zeros and an error when not
// found (no SMP, restricted kallsyms): the interrupt-context filter is then off.
func preemptCountAddrs(spec *btf.Spec) (perCPUOffset, preemptCount uint64, err error) {
	f, err := os.Open(kallsymsPath)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	return findPreemptCount(f, spec)
}

// findPreemptCount is preemptCountAddrs on a kallsyms file. x86-64 has kept the preempt count in
// three places:
//
//   - up to 6.1: the per-cpu variable __preempt_count (asm/preempt.h);
//   - 6.2 to 6.14: the member preempt_count of the per-cpu struct pcpu_hot (asm/current.h),
//     in an anonymous struct inside an anonymous union that pads it to a cache line; there is
//     no __preempt_count symbol, and the member's offset comes from BTF;
//   - from 6.15: pcpu_hot is gone, its members are per-cpu variables of their own again
//     (DECLARE_PER_CPU_CACHE_HOT), and __preempt_count is back.
//
// __preempt_count is preferred, so 6.15 and later take the first path again. kallsyms lists a
// per-cpu symbol as an offset into the per-cpu area while x86-64 links that area at 0, and as a
// kernel address once it is linked like the rest of the kernel (6.15); either way the symbol plus
// __per_cpu_offset[cpu] is that CPU's copy, which is what the hot path reads.
func findPreemptCount(kallsyms io.Reader, spec *btf.Spec) (perCPUOffset, preemptCount uint64, err error) {
	addrs, err := symbolAddrs(kallsyms, "__per_cpu_offset", "__preempt_count", "pcpu_hot")
	if err != nil {
		return 0, 0, err
	}
	perCPUOffset = addrs["__per_cpu_offset"]
	switch {
	case perCPUOffset == 0:
		return 0, 0, errors.New("__per_cpu_offset not in kallsyms (restricted kallsyms or !SMP)")
	case addrs["__preempt_count"] != 0:
		return perCPUOffset, addrs["__preempt_count"], nil
	case addrs["pcpu_hot"] != 0 && spec != nil:
		var hot *btf.Struct
		if err := spec.TypeByName("pcpu_hot", &hot); err != nil {
			return 0, 0, fmt.Errorf("struct pcpu_hot: %w", err)
		}
		off, ok := memberOffset(hot, "preempt_count")
		if !ok {
			return 0, 0, errors.New("struct pcpu_hot has no preempt_count")
		}
		return perCPUOffset, addrs["pcpu_hot"] + uint64(off.Bytes()), nil
	case addrs["pcpu_hot"] != 0:
		return 0, 0, errors.New("pcpu_hot in kallsyms but no kernel BTF to find its preempt_count")
	}
	return 0, 0, errors.New("no __preempt_count nor pcpu_hot in kallsyms")
}

// memberOffset finds a member of a struct or union by name, looking into anonymous members as
// C does: from 6.2 to 6.14, x86's struct pcpu_hot keeps preempt_count in an anonymous struct
// inside an anonymous union.
func memberOffset(t btf.Type, name string) (btf.Bits, bool) {
	var members []btf.Member
	switch c := btf.UnderlyingType(t).(type) {
	case *btf.Struct:
		members = c.Members
	case *btf.Union:
		members = c.Members
	default:
		return 0, false
	}
	for _, m := range members {
		if m.Name == name {
			return m.Offset, true
		}
		if m.Name == "" {
			if off, ok := memberOffset(m.Type, name); ok {
				return m.Offset + off, true
			}
		}
	}
	return 0, false
}

// symbolAddrs reads the addresses of some symbols from a kallsyms file (0: absent or hidden).
func symbolAddrs(r io.Reader, names ...string) (map[string]uint64, error) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]uint64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		name := line[sp+1:]
		if tab := strings.IndexByte(name, '\t'); tab >= 0 {
			continue // module symbol
		}
		if !want[name] {
			continue
		}
		var addr uint64
		if _, err := fmt.Sscanf(line, "%x", &addr); err == nil {
			out[name] = addr
		}
	}
	return out, sc.Err()
}
