package bpf

import (
	"errors"
	"fmt"
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
	fn    string
	kind  hookKind
	enc   kfaultRule
	chain *chainPlan
}

// ArmOptions continue an earlier arm of the same faults, as a restarted plugin does.
type ArmOptions struct {
	// Injected seeds each fault's counter (same order as the faults), so that a times budget
	// continues. nil: all zero.
	Injected []uint64
	// Since is when the faults were first armed: a duration runs from then, and a fault whose
	// duration has elapsed is not armed again (its count stays as seeded). Zero: now.
	Since time.Time
}

// Prepare checks faults against the running kernel and compiles them, loading nothing: the
// hooked function is known and on the error-injection list, the values are in range, and every
// call-chain frame resolves in BTF with its predicate compiling. Errors name the fault and the
// field ("fault 1: callchain[0].predicate: ..."), all of them at once.
func (e *Engine) Prepare(faults []annotations.Fault) (Plan, error) {
	if len(faults) == 0 {
		return Plan{}, errors.New("no faults")
	}
	plan := Plan{Faults: faults, rules: make([]plannedRule, len(faults))}
	var errs []error
	for i, f := range faults {
		r, err := e.planRule(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("fault %d: %w", i, err))
			continue
		}
		plan.rules[i] = r
	}
	if len(errs) > 0 {
		return Plan{}, errors.Join(errs...)
	}
	return plan, nil
}

func (e *Engine) planRule(f annotations.Fault) (plannedRule, error) {
	fn, kind, err := hookOf(f)
	if err != nil {
		return plannedRule{}, err
	}
	if err := checkInjectable(fn); err != nil {
		return plannedRule{}, err
	}
	enc, err := encodeRule(f, 0)
	if err != nil {
		return plannedRule{}, err
	}
	chain, err := e.planChain(f, fn)
	if err != nil {
		return plannedRule{}, err
	}
	return plannedRule{fn: fn, kind: kind, enc: enc, chain: chain}, nil
}

// Validate is Prepare without keeping the result: `kfault validate` and tests use it.
func (e *Engine) Validate(faults []annotations.Fault) error {
	_, err := e.Prepare(faults)
	return err
}
