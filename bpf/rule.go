package bpf

import (
	"fmt"
	"math"

	"github.com/kfault/kfault/annotations"
)

// Rule flags; RULE_* in kfault.bpf.c.
const (
	ruleActive = 1 << 0
	ruleAlways = 1 << 1
	ruleExec   = 1 << 2 // only for tasks past the exec boundary (ArmOptions.ExecBoundary)
	// ruleDevices: a bio rule that fails only bios to its devices (kfault_rule_devs).
	ruleDevices = 1 << 3
)

// Fixed capacities; MAX_* in kfault.bpf.c. Those that size an array of a generated type are
// taken from it; TestLimits checks the others against the embedded objects and the C source.
const (
	maxHooks = 64                         // distinct hooked functions at once (kfault_levels)
	maxSlots = len(kfaultRuleSet{}.Rules) // rules per {cgroup, hooked function}
	maxRules = 16384                      // rules (counters) at once (kfault_counters)
	// maxRuleDevs is the number of {rule, device} pairs at once (kfault_rule_devs).
	maxRuleDevs = 16384
	// MaxProtectedDevices is the number of protected block devices (kfault_protected_devs).
	MaxProtectedDevices = 64
)

// hookKind selects the program variant: each fault point reads its own arguments (a gfp mask or
// a bio); any other function gets the generic program.
type hookKind int

// The fault points' kinds are their failtypes' numbers; kindFunc comes after them.
const (
	kindSlab = hookKind(annotations.Slab) // should_failslab(struct kmem_cache *, gfp_t)
	kindPage = hookKind(annotations.Page) // should_fail_alloc_page(gfp_t, unsigned int)
	kindBio  = hookKind(annotations.Bio)  // should_fail_bio(struct bio *)
	// kindFunc is the generic program, which reads no argument: function targets and LSM
	// hooks (failtype alloc's among them).
	kindFunc = kindBio + 1
)

// String is the suffix of the kind's programs in kfault.bpf.c: the failtype's name, or func.
func (k hookKind) String() string {
	if k < kindFunc {
		return annotations.FailType(k).String()
	}
	return "func"
}

// programName is the program of kfault.bpf.c that implements a hook kind with a mechanism.
func programName(m Mechanism, k hookKind) string {
	prefix := "kfault_fm_"
	if m == MechanismKprobe {
		prefix = "kfault_kp_"
	}
	return prefix + k.String()
}

// kindOf is the kind of program that hooks fn: a fault point's own, whether the fault names it
// by failtype or as a function, else the generic one.
func kindOf(fn string) hookKind {
	for k := kindSlab; k < kindFunc; k++ {
		if annotations.FailType(k).HookFunctions()[0] == fn {
			return k
		}
	}
	return kindFunc
}

// hooksOf names the kernel functions a fault overrides: its function, or its failtype's (all of
// alloc's LSM hooks, whether or not this kernel has them).
func hooksOf(f annotations.Fault) ([]string, error) {
	if f.Function != "" {
		return []string{f.Function}, nil
	}
	fns := f.FailType.HookFunctions()
	if len(fns) == 0 {
		return nil, fmt.Errorf("failtype %d: unknown (want 0 slab, 1 page, 2 bio or 3 alloc)", int(f.FailType))
	}
	return fns, nil
}

// soleHook is the hooked function of a fault that hooks one, "" for one that hooks several: a
// call-chain frame on the hooked function itself means something only for the former.
func soleHook(fns []string) string {
	if len(fns) == 1 {
		return fns[0]
	}
	return ""
}

// returnValue is what the hooked function returns while the fault fires
// (annotations.Fault.ReturnValue), checked.
func returnValue(f annotations.Fault) (int64, error) {
	if _, err := hooksOf(f); err != nil {
		return 0, err
	}
	if f.Function != "" && (f.Errno <= 0 || f.Errno > annotations.MaxErrno) {
		return 0, fmt.Errorf("function %s: errno %d out of range 1..%d", f.Function, f.Errno, annotations.MaxErrno)
	}
	return f.ReturnValue(), nil
}

// threshold maps a probability in percent to the bound the hot path compares
// bpf_get_prandom_u32() with: inject when draw < threshold. always is set for 100%, which skips
// the draw. A positive probability never rounds down to "never".
func threshold(percent float64) (thr uint64, always bool, err error) {
	if math.IsNaN(percent) || percent <= 0 || percent > 100 {
		return 0, false, fmt.Errorf("probability %v: want a percentage in (0, 100]", percent)
	}
	if percent == 100 {
		return 1 << 32, true, nil
	}
	thr = uint64(math.Round(percent / 100 * (1 << 32)))
	if thr == 0 {
		thr = 1
	}
	if thr >= 1<<32 {
		return 1 << 32, true, nil
	}
	return thr, false, nil
}

// encodeRule builds the hot-path rule of a fault; counter is its slot in kfault_counters.
func encodeRule(f annotations.Fault, counter uint32) (kfaultRule, error) {
	ret, err := returnValue(f)
	if err != nil {
		return kfaultRule{}, err
	}
	p := f.Probability
	if p == 0 {
		p = 100 // the zero Fault means "always", as the annotation default
	}
	thr, always, err := threshold(p)
	if err != nil {
		return kfaultRule{}, err
	}
	r := kfaultRule{
		Threshold: thr,
		Limit:     f.Times,
		Retval:    ret,
		Counter:   counter,
		Flags:     ruleActive,
	}
	if always {
		r.Flags |= ruleAlways
	}
	return r, nil
}

// injected is the number of faults a rule injected, from its counter: the counter also counts
// the callers that lost the race for the last of the budget.
func injected(count, limit uint64) uint64 {
	if limit != 0 && count > limit {
		return limit
	}
	return count
}
