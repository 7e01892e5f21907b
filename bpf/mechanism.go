package bpf

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/kfault/kfault/annotations"
)

// Kernel feature probes, and the choice of override mechanism they decide. NewEngine and
// Preflight (kfault check) both ask these.

// HaveFmodRet tells whether fmod_ret (BPF_MODIFY_RETURN) works on this kernel: nil when a trivial
// program loads and attaches to probeTarget's function. Otherwise its error says why, wrapping
// ErrMechanismUnavailable, ErrNotInjectable or ErrNoBTF when the cause is known. The answer is
// kept for the process, except an error wrapping none of those (the probe itself failed), after
// which the next call probes again.
func HaveFmodRet() error { return haveFmodRet.get() }

// HaveFmodRetLSM tells whether fmod_ret works on an LSM hook (lsmProbeHook), as HaveFmodRet
// does for a function on the error-injection list. On a kernel without error injection it is
// all fmod_ret can do.
func HaveFmodRetLSM() error { return haveFmodRetLSM.get() }

// HaveKprobeOverride tells whether a kprobe with bpf_override_return works on this kernel, as
// HaveFmodRet does for fmod_ret.
func HaveKprobeOverride() error { return haveKprobeOverride.get() }

// HaveTaskStorage tells whether the kernel has task storage maps (5.11+), which call chains need.
// cilium/ebpf's features package probes and keeps the answer; an absent map type is an error
// wrapping ebpf.ErrNotSupported.
func HaveTaskStorage() error { return features.HaveMapType(ebpf.TaskStorage) }

// HaveRingBuf tells whether the kernel has ring buffer maps (5.8+), which the engine needs for its
// sampled injections, as HaveTaskStorage does.
func HaveRingBuf() error { return features.HaveMapType(ebpf.RingBuf) }

var (
	haveFmodRet        = &memo{probe: func() error { return ProbeFmodRet(probeTarget()) }}
	haveFmodRetLSM     = &memo{probe: func() error { return ProbeFmodRet(lsmProbeHook) }}
	haveKprobeOverride = &memo{probe: func() error { return ProbeKprobeOverride(probeTarget()) }}
)

// memo keeps the conclusive answer of a probe: nil, or an error wrapping one of the sentinel
// errors that say what the kernel lacks. Any other error is returned and not kept.
type memo struct {
	probe func() error

	mu   sync.Mutex
	done bool
	err  error
}

func (m *memo) get() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.done {
		return m.err
	}
	err := m.probe()
	if err == nil || conclusive(err) {
		m.done, m.err = true, err
	}
	return err
}

func conclusive(err error) bool {
	for _, s := range []error{ErrMechanismUnavailable, ErrNotInjectable, ErrNoBTF, ebpf.ErrNotSupported} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// probes are the mechanism probes chooseMechanism may run: nil means the mechanism works.
type probes struct {
	fmodRet        func() error // on a function of the error-injection list
	fmodRetLSM     func() error // on an LSM hook
	kprobeOverride func() error
}

// chooseMechanism decides the mechanism for want with the answers of have, and whether it can
// override LSM hooks only (fmod_ret on a kernel without error injection). It runs only the
// probes whose answer matters, each at most once: a forced mechanism probes only itself (fmod_ret
// on an LSM hook when the error-injection probe fails), auto probes kprobe only when fmod_ret
// fails, and fmod_ret on an LSM hook only when both fail. A failed forced mechanism's error
// wraps ErrMechanismUnavailable, as does auto's when none works.
func chooseMechanism(want Mechanism, have probes) (m Mechanism, lsmOnly bool, err error) {
	switch want {
	case MechanismKprobe:
		if err := have.kprobeOverride(); err != nil {
			return 0, false, unavailable(want, err)
		}
		return want, false, nil
	case MechanismFmodRet:
		fmodErr := have.fmodRet()
		if fmodErr == nil {
			return want, false, nil
		}
		if have.fmodRetLSM() == nil {
			return want, true, nil
		}
		return 0, false, unavailable(want, fmodErr)
	case MechanismAuto:
		fmodErr := have.fmodRet()
		if fmodErr == nil {
			return MechanismFmodRet, false, nil
		}
		kpErr := have.kprobeOverride()
		if kpErr == nil {
			return MechanismKprobe, false, nil
		}
		lsmErr := have.fmodRetLSM()
		if lsmErr == nil {
			return MechanismFmodRet, true, nil
		}
		return 0, false, fmt.Errorf("%w (fmod_ret: %v) (kprobe: %v) (fmod_ret on LSM hooks: %v)", ErrMechanismUnavailable, fmodErr, kpErr, lsmErr)
	}
	return 0, false, fmt.Errorf("%w: unknown mechanism %d", ErrMechanismUnavailable, int(want))
}

// unavailable wraps a failed mechanism probe in ErrMechanismUnavailable (once).
func unavailable(m Mechanism, err error) error {
	if errors.Is(err, ErrMechanismUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %s: %w", ErrMechanismUnavailable, m, err)
}

// probeTarget picks the function the mechanism probes attach to: should_failslab, or the first
// failtype function on the error-injection list, or a syscall every kernel with
// CONFIG_FUNCTION_ERROR_INJECTION lists.
func probeTarget() string {
	list, err := InjectableFunctions()
	if err != nil {
		return "should_failslab"
	}
	for _, fp := range annotations.FailPoints {
		if _, ok := list[fp.Functions[0]]; ok {
			return fp.Functions[0]
		}
	}
	if _, ok := list["__x64_sys_getppid"]; ok {
		return "__x64_sys_getppid"
	}
	return "should_failslab"
}

// ProbeFmodRet loads a trivial BPF_MODIFY_RETURN program (it returns 0: "call the function"),
// attaches it to fn and detaches it. nil means fmod_ret works on fn.
func ProbeFmodRet(fn string) error {
	switch step, err := probeTracing(ebpf.AttachModifyReturn, fn); step {
	case probeLoad:
		return explainLoad(MechanismFmodRet, fn, err)
	case probeAttach:
		return explainAttach(MechanismFmodRet, fn, err)
	default:
		return err
	}
}

// ProbeExecBoundary loads a BTF tracepoint program (tp_btf) for sched_process_exec, attaches it
// and detaches it: what the exec boundary needs (exec.go). nil means faults armed at container
// start can spare the runtime's setup.
func ProbeExecBoundary() error {
	switch step, err := probeTracing(ebpf.AttachTraceRawTp, "sched_process_exec"); step {
	case probeLoad:
		return fmt.Errorf("load a tp_btf program for sched_process_exec: %w", err)
	case probeAttach:
		return fmt.Errorf("attach a tp_btf program to sched_process_exec: %w", err)
	default:
		return err
	}
}

// The step of probeTracing that failed; a probeBTF error (or a failed detach) is returned as it is.
const (
	probeBTF = iota
	probeLoad
	probeAttach
)

// probeTracing loads a trivial tracing program (it returns 0) of attachType for target,
// attaches it and detaches it, and says which step failed.
func probeTracing(attachType ebpf.AttachType, target string) (step int, err error) {
	kspec, cache, err := loadKernelBTF()
	if err != nil {
		return probeBTF, err
	}
	// A collection only for its Cache option: the attach target is looked up in the process's
	// parse of the kernel's BTF, which NewProgram would parse anew.
	coll, err := ebpf.NewCollectionWithOptions(&ebpf.CollectionSpec{Programs: map[string]*ebpf.ProgramSpec{
		"kfault_probe": {
			Name:         "kfault_probe",
			Type:         ebpf.Tracing,
			AttachType:   attachType,
			AttachTo:     target,
			License:      "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		},
	}}, ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{KernelTypes: kspec}, Cache: cache})
	if err != nil {
		return probeLoad, err
	}
	defer coll.Close()
	l, err := link.AttachTracing(link.TracingOptions{Program: coll.Programs["kfault_probe"], AttachType: attachType})
	if err != nil {
		return probeAttach, err
	}
	return probeBTF, l.Close()
}

// ProbeKprobeOverride loads a kprobe program that calls bpf_override_return (with 0, and only
// for a 1-in-2^32 random draw: the probe must not change what fn returns), attaches it to fn
// and detaches it. nil means kprobe override works on fn.
func ProbeKprobeOverride(fn string) error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    "kfault_probe",
		Type:    ebpf.Kprobe,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Reg(asm.R6, asm.R1),
			asm.FnGetPrandomU32.Call(),
			asm.JNE.Imm(asm.R0, 1, "out"),
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Mov.Imm(asm.R2, 0),
			asm.FnOverrideReturn.Call(),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
			asm.Return(),
		},
	})
	if err != nil {
		return explainLoad(MechanismKprobe, fn, err)
	}
	defer prog.Close()
	l, err := link.Kprobe(fn, prog, nil)
	if err != nil {
		return explainAttach(MechanismKprobe, fn, err)
	}
	return l.Close()
}
