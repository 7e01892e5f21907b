package bpf

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/kfault/kfault/annotations"
	"golang.org/x/sys/unix"
)

// explainLoad turns a program load failure into an error that names the likely cause.
func explainLoad(m Mechanism, fn string, err error) error {
	var ve *ebpf.VerifierError
	msg := err.Error()
	if errors.As(err, &ve) {
		msg = strings.Join(ve.Log, "\n")
	}
	hint := ""
	switch {
	case errors.Is(err, ErrNoBTF):
		return fmt.Errorf("%w: %s on %s: %w", ErrMechanismUnavailable, m, fn, err)
	case errors.Is(err, unix.EPERM) || errors.Is(err, os.ErrPermission):
		hint = "permission denied: needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN), and a kernel or sandbox that allows tracing programs"
	case strings.Contains(msg, "bpf_override_return") || strings.Contains(msg, "unknown func") && m == MechanismKprobe:
		hint = "bpf_override_return is unavailable: the kernel lacks CONFIG_BPF_KPROBE_OVERRIDE"
	case strings.Contains(msg, "is not modifiable") && KernelConfig("CONFIG_FUNCTION_ERROR_INJECTION") == "n":
		return fmt.Errorf("%s: %w: fmod_ret refused: %s", fn, ErrNotInjectable, onlyLSMModifiable)
	case strings.Contains(msg, "is not modifiable"):
		return fmt.Errorf("%s: %w: fmod_ret refused (%s is not on the error-injection list; CONFIG_FUNCTION_ERROR_INJECTION)", fn, ErrNotInjectable, fn)
	case errors.Is(err, os.ErrNotExist) || strings.Contains(msg, "not found"):
		if m == MechanismFmodRet {
			return suggestKernelFunc(fmt.Errorf("%s: %w: no such function in the kernel BTF (missing, inlined, or CONFIG_DEBUG_INFO_BTF off): %v", fn, ErrNotInjectable, err), fn)
		}
	case errors.Is(err, unix.ENOTSUP) || errors.Is(err, ebpf.ErrNotSupported):
		switch {
		case m == MechanismFmodRet && KernelConfig("CONFIG_FUNCTION_ERROR_INJECTION") == "n":
			// 6.12 answers ENOTSUPP where 6.1 says "is not modifiable": the trampolines
			// work, the function may not be modified.
			hint = fmt.Sprintf("fmod_ret refused: %s may not be modified: %s", fn, onlyLSMModifiable)
		case m == MechanismFmodRet:
			hint = "BPF trampolines unsupported (needs 5.7+, CONFIG_BPF_JIT, CONFIG_DEBUG_INFO_BTF, CONFIG_FUNCTION_ERROR_INJECTION)"
		default:
			hint = "kprobe programs unsupported (CONFIG_KPROBES, CONFIG_BPF_EVENTS)"
		}
	}
	if hint != "" {
		return fmt.Errorf("%w: %s: load for %s: %s: %w", ErrMechanismUnavailable, m, fn, hint, err)
	}
	return fmt.Errorf("%s: load for %s: %w", m, fn, err)
}

// explainAttach turns an attach failure into an error that names the likely cause.
func explainAttach(m Mechanism, fn string, err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist):
		if m == MechanismKprobe {
			if _, serr := os.Stat("/sys/bus/event_source/devices/kprobe"); serr != nil {
				return fmt.Errorf("%w: kprobe: kprobes are unavailable (CONFIG_KPROBES, CONFIG_KPROBE_EVENTS): %w", ErrMechanismUnavailable, err)
			}
		}
		return suggestKernelFunc(fmt.Errorf("%s: %w: no such kernel function (or it is inlined/renamed): %w", fn, ErrNotInjectable, err), fn)
	case errors.Is(err, unix.EINVAL) && m == MechanismKprobe:
		return fmt.Errorf("%s: %w: the kernel refused a kprobe override on it (not on the error-injection list? CONFIG_FUNCTION_ERROR_INJECTION): %w", fn, ErrNotInjectable, err)
	case errors.Is(err, unix.EPERM) || errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%w: %s: attach to %s: permission denied: %w", ErrMechanismUnavailable, m, fn, err)
	case errors.Is(err, unix.ENOTSUP) || errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("%w: %s: attach to %s: %w", ErrMechanismUnavailable, m, fn, err)
	}
	return fmt.Errorf("%s: attach to %s: %w", m, fn, err)
}

// Check is one line of the preflight report.
type Check struct {
	Name   string
	OK     bool
	Info   bool   // informational: neither pass nor fail
	Detail string // what was found, or why not
}

// Report is the result of Preflight.
type Report struct {
	Checks []Check
	// CanInject: the engine's maps can be created, at least one mechanism works and at least
	// one kind of fault (Kinds) can be injected with it.
	CanInject bool
	// Kinds are the kinds of fault that can be injected here: "failtype 0 (slab)", ...,
	// "function (error-injection list)", "function (security_* LSM hooks)".
	Kinds []string
	// Mechanisms that work, in preference order.
	Mechanisms []Mechanism
	// LSMOnly: the only mechanism is fmod_ret on LSM hooks (no error injection).
	LSMOnly bool
	// BadFrames are the call-chain functions Preflight was asked about on which a frame would
	// never see a call: a compiler clone is what callers use, or the function is not in kallsyms.
	BadFrames []string
}

// Preflight inspects the running kernel for what kfault needs (the node's cgroups and NRI
// socket are plugin.NodeChecks). It loads and attaches (then detaches) two trivial programs to
// test the mechanisms. mountDebugfs lets it mount debugfs when it is not mounted. Each of
// chainFuncs (call-chain functions of the faults to be armed) gets a line saying whether a
// frame on it would see its calls.
func Preflight(mountDebugfs bool, chainFuncs ...string) Report {
	var rep Report
	add := func(c Check) { rep.Checks = append(rep.Checks, c) }

	var u unix.Utsname
	if unix.Uname(&u) == nil {
		add(Check{Name: "kernel", Info: true, Detail: unix.ByteSliceToString(u.Release[:]) + " " + unix.ByteSliceToString(u.Machine[:])})
	}

	// BTF
	_, _, btfErr := loadKernelBTF()
	if btfErr != nil {
		add(Check{Name: "BTF", Detail: "no: " + btfErr.Error() + " (fmod_ret needs CONFIG_DEBUG_INFO_BTF)"})
	} else {
		add(Check{Name: "BTF", OK: true, Detail: "yes: " + vmlinuxBTF})
	}

	// debugfs and the error-injection list
	list, listErr := InjectableFunctions()
	if errors.Is(listErr, errDebugfs) && mountDebugfs {
		if err := unix.Mount("debugfs", "/sys/kernel/debug", "debugfs", 0, ""); err == nil {
			add(Check{Name: "debugfs", OK: true, Info: true, Detail: "was not mounted; mounted it at /sys/kernel/debug"})
			list, listErr = InjectableFunctions()
		} else {
			add(Check{Name: "debugfs", Detail: "not mounted, and mounting it failed: " + err.Error()})
		}
	}
	switch {
	case listErr == nil:
		add(Check{Name: "error-injection list", OK: true, Detail: fmt.Sprintf("yes: %d functions in %s", len(list), errorInjectionList)})
	case errors.Is(listErr, errDebugfs):
		add(Check{Name: "error-injection list", Detail: "unknown: " + listErr.Error()})
	default:
		add(Check{Name: "error-injection list", Detail: "no: " + listErr.Error()})
	}

	// mechanisms
	target := probeTarget()
	fmodErr := HaveFmodRet()
	kpErr := HaveKprobeOverride()
	lsmErr := HaveFmodRetLSM()
	if fmodErr == nil {
		rep.Mechanisms = append(rep.Mechanisms, MechanismFmodRet)
		add(Check{Name: "mechanism fmod_ret", OK: true, Detail: "yes: loaded and attached a BPF_MODIFY_RETURN program to " + target})
	} else {
		add(Check{Name: "mechanism fmod_ret", Detail: "no: " + fmodErr.Error()})
	}
	if kpErr == nil {
		rep.Mechanisms = append(rep.Mechanisms, MechanismKprobe)
		add(Check{Name: "mechanism kprobe", OK: true, Detail: "yes: loaded and attached a kprobe with bpf_override_return to " + target})
	} else {
		add(Check{Name: "mechanism kprobe", Detail: "no: " + kpErr.Error()})
	}
	if lsmErr == nil {
		add(Check{Name: "mechanism lsm (fmod_ret on LSM hooks)", OK: true, Detail: "yes: loaded and attached a BPF_MODIFY_RETURN program to " + lsmProbeHook + "; every security_* function returning int can be failed, error injection or not"})
		if len(rep.Mechanisms) == 0 {
			rep.Mechanisms, rep.LSMOnly = []Mechanism{MechanismFmodRet}, true
		}
	} else {
		add(Check{Name: "mechanism lsm (fmod_ret on LSM hooks)", Detail: "no: " + lsmErr.Error()})
	}
	anyMech := len(rep.Mechanisms) > 0

	// The ring buffer is created when the engine starts, whatever the faults: without it the
	// engine does not run. Without task storage it runs, but refuses call chains.
	engineOK := true
	if err := HaveRingBuf(); err != nil {
		engineOK = false
		add(Check{Name: "ring buffer (sampled injections)", Detail: fmt.Sprintf("no: %v (kernel 5.8+): kfault's engine creates it at start and does not run without it", err)})
	} else {
		add(Check{Name: "ring buffer (sampled injections)", OK: true, Detail: "yes: kernel 5.8+"})
	}
	if err := HaveTaskStorage(); err != nil {
		add(Check{Name: "task storage (call chains)", Info: true, Detail: fmt.Sprintf("no: %v (kernel 5.11+): faults with a callchain are refused; the others work", err)})
	} else {
		add(Check{Name: "task storage (call chains)", OK: true, Detail: "yes: kernel 5.11+"})
	}
	// Not needed to inject: without it a fault armed at container start also hits the runtime's
	// last setup steps in the container's cgroup (docs/runtimes.md).
	if err := ProbeExecBoundary(); err != nil {
		add(Check{Name: "exec boundary (runtime setup spared)", Info: true, Detail: fmt.Sprintf("no: %v: a fault armed at container start also applies to the container runtime's setup in its cgroup", err)})
	} else {
		add(Check{Name: "exec boundary (runtime setup spared)", OK: true, Detail: "yes: a tp_btf program attaches to sched_process_exec"})
	}

	// fault points
	var names []string
	for _, fp := range annotations.FailPoints {
		names = append(names, fp.Functions...)
	}
	syms, symErr := LookupKernelSymbols(append(names, chainFuncs...)...) // one read of kallsyms
	kspec, _, _ := loadKernelBTF()
	facts := pointFacts{syms: syms, symErr: symErr, list: list, listErr: listErr, anyMech: fmodErr == nil || kpErr == nil,
		lsmErr: lsmErr, btf: kspec, config: KernelConfig}
	checks, kinds, _ := kindChecks(facts)
	rep.Checks, rep.Kinds = append(rep.Checks, checks...), kinds
	frames, bad := frameChecks(chainFuncs, syms, symErr)
	rep.Checks = append(rep.Checks, frames...)
	rep.BadFrames = bad

	// interrupt-context filter
	if _, pc, err := preemptCountAddrs(kspec); err == nil {
		add(Check{Name: "interrupt-context filter", OK: true, Detail: fmt.Sprintf("yes: preempt count readable (per-cpu %#x): allocations in interrupts are never failed", pc)})
	} else {
		add(Check{Name: "interrupt-context filter", Info: true, Detail: "off: " + err.Error() + "; an allocation in an interrupt that hits an armed task could be failed"})
	}

	rep.CanInject = anyMech && len(rep.Kinds) > 0 && engineOK
	return rep
}

// pointFacts are what Preflight found that the failtype lines are made from.
type pointFacts struct {
	syms    map[string]KernelSymbol // LookupKernelSymbols of the fault points
	symErr  error                   // why kallsyms could not be read
	list    map[string]string       // the error-injection list
	listErr error                   // why it could not be read
	anyMech bool                    // some override mechanism works on the error-injection list
	lsmErr  error                   // why fmod_ret does not work on LSM hooks
	btf     *btf.Spec               // the kernel's BTF (nil: none), where LSM hooks are looked up
	config  func(string) string     // KernelConfig; nil: unknown
}

// kindChecks are kfault check's lines of the kinds of fault (each failtype, function targets on
// the error-injection list and on LSM hooks), the kinds that work here (Report.Kinds), and for
// each of those an annotation that asks for it, for refusals to offer.
func kindChecks(k pointFacts) (checks []Check, kinds, examples []string) {
	kind := func(c Check, name, example string) {
		checks = append(checks, c)
		if c.OK {
			kinds, examples = append(kinds, name), append(examples, example)
		}
	}
	for _, fp := range annotations.FailPoints {
		kind(failPointCheck(fp, k), fmt.Sprintf("failtype %d (%s)", fp.Type, fp.Name), "failtype: "+fp.Name)
	}
	if k.listErr == nil && len(k.list) > 0 && k.anyMech {
		kind(Check{Name: "function targets", OK: true, Detail: fmt.Sprintf("yes: %d functions on the error-injection list (e.g. __x64_sys_openat)", len(k.list))},
			"function (error-injection list)", "function: __x64_sys_openat")
	}
	if k.lsmErr == nil {
		kind(Check{Name: "function targets (LSM hooks)", OK: true, Detail: "yes: any security_* function returning int, with fmod_ret (e.g. security_file_open)"},
			"function (security_* LSM hooks)", "function: security_file_permission")
	} else {
		checks = append(checks, Check{Name: "function targets (LSM hooks)", Detail: "no: fmod_ret does not attach to LSM hooks (see above)"})
	}
	return checks, kinds, examples
}

// missingHint says why a fault point is not in kallsyms. With the config readable it names the
// option this kernel lacks: 6.11+ compiles the hooks only with it, and before that an empty
// should_fail_bio (no CONFIG_FAIL_MAKE_REQUEST) is dropped by the compiler (Debian's 6.1).
func missingHint(fp annotations.FailPoint, config func(string) string) string {
	if config != nil {
		if v := config(fp.Config); v == "n" {
			return "this kernel is built without " + fp.Config
		}
	}
	return "on 6.11+ it needs " + fp.Config
}

// failPointCheck is the line of one failtype; OK when its fault point can be overridden.
func failPointCheck(fp annotations.FailPoint, k pointFacts) Check {
	if isLSMHook(fp.Functions[0]) {
		return lsmPointCheck(fp, k)
	}
	fn := fp.Functions[0]
	c := Check{Name: fmt.Sprintf("failtype %d (%s): %s", fp.Type, fp.Name, fn)}
	var problems []string
	if k.symErr != nil {
		problems = append(problems, "cannot read "+kallsymsPath+": "+k.symErr.Error())
	} else if ks := k.syms[fn]; len(ks.Clones) > 0 {
		problems = append(problems, clonesUsed(ks)+": overriding "+fn+" does nothing")
	} else if !ks.Exists {
		problems = append(problems, "not in "+kallsymsPath+" ("+missingHint(fp, k.config)+")")
	}
	switch {
	case k.listErr == nil:
		if _, ok := k.list[fn]; !ok {
			problems = append(problems, "not on the error-injection list (CONFIG_FUNCTION_ERROR_INJECTION; on 6.11+ also "+fp.Config+")")
		}
	case k.config != nil && k.config("CONFIG_FUNCTION_ERROR_INJECTION") == "n":
		// No list to read, and the config says why: nothing is on it.
		problems = append(problems, "this kernel is built without CONFIG_FUNCTION_ERROR_INJECTION, so nothing is error-injectable")
	}
	if !k.anyMech {
		problems = append(problems, "neither fmod_ret nor kprobe works on the error-injection list (see above)")
	}
	switch {
	case len(problems) > 0:
		c.Detail = "no: " + strings.Join(problems, "; ")
	case k.listErr != nil:
		c.OK = true
		c.Detail = "probably: in kallsyms, no clone; the error-injection list could not be read"
	default:
		c.OK = true
		c.Detail = "yes: in kallsyms, on the error-injection list, no .constprop/.isra clone"
	}
	return c
}

// lsmPointCheck is the line of a failtype of LSM hooks (alloc): OK when fmod_ret works on LSM
// hooks and the kernel's BTF has at least one of its hooks, returning int. The hooks it lacks
// are named: a fault leaves them out.
func lsmPointCheck(fp annotations.FailPoint, k pointFacts) Check {
	c := Check{Name: fmt.Sprintf("failtype %d (%s): LSM hooks", fp.Type, fp.Name)}
	var missing []string
	for _, fn := range fp.Functions {
		if checkLSMHook(k.btf, fn) != nil {
			missing = append(missing, fn)
		}
	}
	have := len(fp.Functions) - len(missing)
	switch {
	case k.lsmErr != nil:
		c.Detail = "no: fmod_ret does not attach to LSM hooks (see the lsm mechanism line)"
	case have == 0:
		c.Detail = "no: none of its hooks is in the kernel BTF returning int (" + missingHint(fp, k.config) + ")"
	case len(missing) > 0:
		c.OK = true
		c.Detail = fmt.Sprintf("yes: %d of its %d hooks, with fmod_ret; left out, not in the kernel BTF returning int: %s", have, len(fp.Functions), strings.Join(missing, ", "))
	default:
		c.OK = true
		c.Detail = fmt.Sprintf("yes: all %d hooks in the kernel BTF, returning int, with fmod_ret", have)
	}
	return c
}

// frameChecks are the lines of the call-chain functions fns (each once, in the order given),
// from what kallsyms says of them, and the functions on which a frame would see nothing.
func frameChecks(fns []string, syms map[string]KernelSymbol, symErr error) (checks []Check, bad []string) {
	seen := map[string]bool{}
	for _, fn := range fns {
		if seen[fn] {
			continue
		}
		seen[fn] = true
		c := frameCheck(fn, syms[fn], symErr)
		if !c.OK && !c.Info {
			bad = append(bad, fn)
		}
		checks = append(checks, c)
	}
	return checks, bad
}

// frameCheck is the line of call-chain function fn: whether a frame (fentry/fexit programs
// attached to fn) would see the calls to it.
func frameCheck(fn string, ks KernelSymbol, symErr error) Check {
	c := Check{Name: "call-chain function " + fn}
	switch {
	case symErr != nil:
		c.Info = true
		c.Detail = "unknown: cannot read " + kallsymsPath + ": " + symErr.Error()
	case len(ks.Clones) > 0:
		c.Detail = "no: " + clonesUsed(ks) + ": a frame on " + fn + " would never see them"
	case !ks.Exists:
		c.Detail = "no: not in kallsyms (inlined or absent)"
	default:
		c.OK = true
		c.Detail = "yes: in kallsyms, no .constprop/.isra clone"
	}
	return c
}

// clonesUsed says which compiler clones of a function its callers call instead of it
// ("clone f.constprop.0 is what callers use"); ks has at least one.
func clonesUsed(ks KernelSymbol) string {
	if len(ks.Clones) == 1 {
		return "clone " + ks.Clones[0] + " is what callers use"
	}
	return "clones " + strings.Join(ks.Clones, ", ") + " are what callers use"
}

// WriteTo prints the report for people.
func (r Report) WriteTo(w io.Writer) (int64, error) {
	var b strings.Builder
	for _, c := range r.Checks {
		mark := "[ok]  "
		switch {
		case c.Info:
			mark = "[info]"
		case !c.OK:
			mark = "[no]  "
		}
		fmt.Fprintf(&b, "%s %-40s %s\n", mark, c.Name, c.Detail)
	}
	if r.CanInject {
		ms := make([]string, len(r.Mechanisms))
		for i, m := range r.Mechanisms {
			ms[i] = m.String()
		}
		mechs := strings.Join(ms, ", ")
		if r.LSMOnly {
			mechs += " on LSM hooks only"
		}
		fmt.Fprintf(&b, "\nkfault can inject these faults here: %s (mechanisms: %s; auto picks %s).\n", strings.Join(r.Kinds, ", "), mechs, ms[0])
		if len(r.BadFrames) > 0 {
			fmt.Fprintf(&b, "Faults with a call chain through %s cannot work here: see the [no] lines above.\n", strings.Join(r.BadFrames, ", "))
		}
	} else {
		fmt.Fprintf(&b, "\nkfault cannot inject faults on this kernel: see the [no] lines above.\n")
	}
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}
