package bpf

import (
	"fmt"
	"strings"
	"sync"

	"github.com/cilium/ebpf/btf"

	"github.com/kfault/kfault/annotations"
)

// nodeKinds is what this node's kernel can inject, as kfault check's lines of the kinds of fault
// say it (kindChecks), for the refusals of Prepare: a failtype that this kernel cannot do (its
// fault point missing, cloned, off the error-injection list) is refused with the reason and
// with the kinds of fault that do work here. It is computed once (a kernel's fault points do not
// change while it runs), so that a stream of refused containers costs no kallsyms read each.
type nodeKinds struct {
	once     sync.Once
	points   []Check  // the failtype lines, indexed by FailType
	kinds    []string // the kinds that work (Report.Kinds)
	examples []string // for each, an annotation that asks for it
	facts    func() pointFacts
}

// get computes k on first use, from k.facts; with none (an engine made in a test) nothing is
// known, and nothing refused.
func (k *nodeKinds) get() *nodeKinds {
	k.once.Do(func() {
		if k.facts == nil {
			return
		}
		checks, kinds, examples := kindChecks(k.facts())
		k.points, k.kinds, k.examples = checks[:len(annotations.FailPoints)], kinds, examples
	})
	return k
}

// engineFacts is readPointFacts for engine e: its mechanism says what can be overridden.
func (e *Engine) engineFacts() pointFacts {
	lsmErr := fmt.Errorf("the engine's mechanism is %s: LSM hooks need fmod_ret", e.mech)
	if e.mech == MechanismFmodRet {
		lsmErr = HaveFmodRetLSM()
	}
	return readPointFacts(!e.lsmOnly, lsmErr, e.kspec) // nil kspec: the running kernel's
}

// thisKernel is nodeKinds for the callers without an engine (kfault validate).
var thisKernel = nodeKinds{facts: assumeMechanisms}

// RefuseFailType is Prepare's refusal of failtype t on the running kernel, for kfault validate
// on a node: it loads nothing, and so assumes that the override mechanisms work (kfault check
// says whether they do). nil when t can be injected here, or t is unknown.
func RefuseFailType(t annotations.FailType) error {
	fp, ok := t.Point()
	if !ok {
		return nil
	}
	return thisKernel.refuse(fp)
}

// assumeMechanisms reads what the kinds of fault are made from, loading nothing: the
// mechanisms are taken to work, on the error-injection list and on LSM hooks alike.
func assumeMechanisms() pointFacts {
	return readPointFacts(true, nil, nil)
}

// readPointFacts reads the fault points' symbols, the error-injection list, the kernel's BTF
// (spec, when nil) and config; anyMech and lsmErr say what the mechanisms do.
func readPointFacts(anyMech bool, lsmErr error, spec *btf.Spec) pointFacts {
	list, listErr := InjectableFunctions()
	var names []string
	for _, fp := range annotations.FailPoints {
		names = append(names, fp.Functions...)
	}
	syms, symErr := LookupKernelSymbols(names...)
	if spec == nil {
		spec, _, _ = loadKernelBTF()
	}
	return pointFacts{syms: syms, symErr: symErr, list: list, listErr: listErr, anyMech: anyMech,
		lsmErr: lsmErr, btf: spec, config: KernelConfig}
}

// refuse is nil when fp can be injected on this node, or else the refusal: why (the missing
// kernel option, the clone), and what works here instead. kfault never substitutes another
// fault point silently. Only the failtypes of one fault point are refused here: alloc's hooks
// are each checked where they are planned (hookable), which leaves out those the kernel lacks.
func (k *nodeKinds) refuse(fp annotations.FailPoint) error {
	k.get()
	if k.points == nil || len(fp.Functions) != 1 {
		return nil
	}
	c := k.points[fp.Type]
	if c.OK {
		return nil
	}
	// kfault check's words, less its pointers to its other lines.
	why := strings.ReplaceAll(strings.TrimPrefix(c.Detail, "no: "), " (see above)", "")
	return fmt.Errorf("%s: %w on this node: %s; %s", fp.Functions[0], ErrNotInjectable, why, k.instead())
}

// instead says what a refused fault can be replaced with on this node.
func (k *nodeKinds) instead() string {
	if len(k.kinds) == 0 {
		return "this node's kernel can inject no other kind of fault either (kfault check on the node says why)"
	}
	return fmt.Sprintf("this node can inject instead: %s, e.g. %s (kfault check on the node lists them)",
		strings.Join(k.kinds, ", "), strings.Join(k.examples, " or "))
}
