package bpf

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/kfault/kfault/annotations"
)

// Plan is a container's faults made ready for this kernel, before anything is loaded: per
// fault, the hooked function and its program kind, the encoded hot-path rule and the compiled
// call chain. Prepare makes it once, at admission; Arm takes it, so a container's predicates are
// compiled once however many times its spec is looked at.
type Plan struct {
	Faults []annotations.Fault // as given, in annotation order
	rules  []plannedRule       // nil in a Plan that Prepare did not make
}

type plannedRule struct {
	fns   []string // the hooked functions this kernel has (alloc: those of its hooks it has)
	enc   kfaultRule
	chain *chainPlan
	devs  []Dev // bio faults with devices: the resolved devices
}

// Only returns the plan of the faults at indexes, in that order, with their prepared rules:
// the faults a container's select rules chose. An index out of range panics.
func (p Plan) Only(indexes []int) Plan {
	out := Plan{Faults: make([]annotations.Fault, len(indexes))}
	if p.rules != nil {
		out.rules = make([]plannedRule, len(indexes))
	}
	for j, i := range indexes {
		out.Faults[j] = p.Faults[i]
		if p.rules != nil {
			out.rules[j] = p.rules[i]
		}
	}
	return out
}

// Capacities of the engine shared by every container on the node; the node config's quotas
// are checked against them.
const (
	// MaxHooks is the number of distinct hooked functions armed at once.
	MaxHooks = maxHooks
	// MaxRules is the number of faults armed at once, over all containers.
	MaxRules = maxRules
	// MaxChains is the number of distinct call chains armed at once.
	MaxChains = maxChains - 1
	// MaxFrames is the number of distinct call-chain frames (function, parameters, predicate)
	// armed at once.
	MaxFrames = maxFrameIDs
)

// Resources are the engine's shared resources that a plan takes when armed, as keys that are
// equal, across plans, exactly when the engine shares the resource: the hooked functions
// (function names), the call chains and the call-chain frames (opaque keys). Each list is
// sorted and without duplicates.
type Resources struct {
	Hooks, Chains, Frames []string
}

// Resources derives the plan's resources from its faults, so a plan that Prepare did not make
// (a test's) gets the same answer. A fault whose hook is unknown counts for nothing; alloc
// counts each of its hooks, those this kernel lacks included.
func (p Plan) Resources() Resources {
	hooks, chains, frames := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, f := range p.Faults {
		fns, err := hooksOf(f)
		if err != nil {
			continue
		}
		for _, fn := range fns {
			hooks[fn] = true
		}
		var chain strings.Builder
		for _, fr := range chainFrames(f, soleHook(fns)) {
			k := frameKeyOf(fr).id()
			frames[k] = true
			chain.WriteString(k)
		}
		if chain.Len() > 0 {
			chains[chain.String()] = true
		}
	}
	return Resources{Hooks: slices.Sorted(maps.Keys(hooks)), Chains: slices.Sorted(maps.Keys(chains)), Frames: slices.Sorted(maps.Keys(frames))}
}

// ArmOptions continue an earlier arm of the same faults, as a restarted plugin does.
type ArmOptions struct {
	// Injected seeds each fault's counter (same order as the faults), so that a times budget
	// continues. nil: all zero.
	Injected []uint64
	// Since is when the faults were first armed: a duration runs from then, and a fault whose
	// duration has elapsed is not armed again (its count stays as seeded). Zero: now.
	Since time.Time
	// ExecBoundary arms the faults for the tasks that exec a program in the cgroup from now on,
	// and for what they fork, instead of for every task in it: for a container armed before its
	// process runs the container's program (the plugin at NRI StartContainer), whose runtime
	// init is already in the cgroup and must finish its setup unfaulted. Tasks already running
	// in the cgroup that never exec again are never faulted, so it is wrong for a container
	// that already runs (Synchronize, kfault inject). When the exec programs cannot be loaded
	// (they are tp_btf programs: they need BTF) Arm logs a warning and arms without the
	// boundary. See docs/runtimes.md.
	ExecBoundary bool
}

// Prepare checks faults against the running kernel and compiles them, loading nothing: the
// hooked functions are known and can be overridden here (checkHookable; a failtype this kernel
// cannot do is refused with what works instead, refusal.go), the values are in range, and every
// call-chain frame resolves in BTF with its predicate compiling, on a function that has no
// compiler clone in kallsyms (read once per call). Errors name the field as the
// annotation parser does ("[1].callchain[0].predicate: ...", no index for a single fault), all
// of them at once.
func (e *Engine) Prepare(faults []annotations.Fault) (Plan, error) {
	if len(faults) == 0 {
		return Plan{}, errors.New("no faults")
	}
	plan := Plan{Faults: faults, rules: make([]plannedRule, len(faults))}
	var errs []error
	perHook := map[string]int{} // a cgroup holds maxSlots rules per hooked function
	syms := e.chainSymbols(faults)
	for i, f := range faults {
		r, field, err := e.planRule(f, syms)
		for _, fn := range r.fns {
			if err != nil {
				break
			}
			if perHook[fn]++; perHook[fn] > maxSlots {
				field = "failtype"
				if f.Function != "" {
					field = "function"
				}
				err = fmt.Errorf("%w: fault %d of this annotation on %s; one container may have at most %d faults on one kernel function", ErrLimit, perHook[fn], fn, maxSlots)
			}
		}
		if err != nil {
			var index string
			if len(faults) > 1 {
				index = fmt.Sprintf("[%d]", i)
			}
			switch {
			case field != "" && index != "":
				err = fmt.Errorf("%s.%s: %w", index, field, err)
			case field != "":
				err = fmt.Errorf("%s: %w", field, err)
			case index != "":
				err = fmt.Errorf("%s.%w", index, err) // the error starts with its own path
			}
			errs = append(errs, err)
			continue
		}
		plan.rules[i] = r
	}
	if len(errs) > 0 {
		return Plan{}, errors.Join(errs...)
	}
	return plan, nil
}

// planRule prepares one fault; syms are what kallsyms says of its call-chain functions (nil:
// unknown). On error, field names the annotation field at fault; it is empty where the error
// names its own path within the fault (call chains).
func (e *Engine) planRule(f annotations.Fault, syms map[string]KernelSymbol) (r plannedRule, field string, err error) {
	field = "failtype"
	if f.Function != "" {
		field = "function"
	}
	fns, err := hooksOf(f)
	if err != nil {
		return plannedRule{}, field, err
	}
	if fp, ok := f.FailType.Point(); ok && f.Function == "" {
		err = e.nodeKinds.refuse(fp)
	}
	if err == nil {
		fns, err = e.hookable(fns)
	}
	if err != nil {
		return plannedRule{}, field, err
	}
	enc, err := encodeRule(f, 0)
	if err != nil {
		return plannedRule{}, field, err
	}
	devs, field, err := e.planDevices(f, kindOf(fns[0]))
	if err != nil {
		return plannedRule{}, field, err
	}
	if len(devs) > 0 {
		enc.Flags |= ruleDevices
	}
	chain, err := e.planChain(f, soleHook(fns))
	if err == nil {
		err = clonedFrame(chain, syms)
	}
	if err != nil {
		return plannedRule{}, "", err
	}
	return plannedRule{fns: fns, enc: enc, chain: chain, devs: devs}, "", nil
}

// hookable keeps the functions of fns that can be overridden here (checkHookable). A fault
// that hooks one function is refused with its reason; one that hooks several (alloc) leaves out
// those this kernel lacks or refuses (kfault check names them), and is refused only when none
// is left.
func (e *Engine) hookable(fns []string) ([]string, error) {
	var ok []string
	var first error
	for _, fn := range fns {
		if err := e.checkHookable(fn); err != nil {
			first = cmp.Or(first, err)
			continue
		}
		ok = append(ok, fn)
	}
	switch {
	case len(ok) > 0:
		return ok, nil
	case len(fns) == 1:
		return nil, first
	}
	return nil, fmt.Errorf("none of its %d hooks can be overridden here (the first: %w)", len(fns), first)
}

// planDevices resolves the devices of a bio fault on this node: paths to their st_rdev. A
// protected device is refused (the hot path would never fail it anyway). On error, field is
// the entry ("devices[1]").
func (e *Engine) planDevices(f annotations.Fault, kind hookKind) ([]Dev, string, error) {
	if len(f.Devices) == 0 {
		return nil, "", nil
	}
	if kind != kindBio {
		return nil, "devices", fmt.Errorf("only valid on bio faults (failtype 2 or function %s)", annotations.FailPoints[annotations.Bio].Functions[0])
	}
	if len(f.Devices) > annotations.MaxDevices {
		return nil, "devices", fmt.Errorf("%d entries, at most %d allowed", len(f.Devices), annotations.MaxDevices)
	}
	protected := e.ProtectedDevices()
	var devs []Dev
	for i, s := range f.Devices {
		field := fmt.Sprintf("devices[%d]", i)
		d, err := ResolveDevice(s)
		if err != nil {
			return nil, field, err
		}
		if slices.Contains(protected, d) {
			return nil, field, fmt.Errorf("%s (%s) is %w", s, d, errProtected)
		}
		if !slices.Contains(devs, d) {
			devs = append(devs, d)
		}
	}
	return devs, "", nil
}

// Validate is Prepare without keeping the result: `kfault validate` and tests use it.
func (e *Engine) Validate(faults []annotations.Fault) error {
	_, err := e.Prepare(faults)
	return err
}
