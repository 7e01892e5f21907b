package bpf

import (
	"fmt"
	"strings"
	"sync"

	"github.com/kfault/kfault/annotations"
)

// nodeKinds is what this node's kernel can inject, as kfault check's failtype lines say it,
// for the refusals of Prepare: a failtype whose fault point is missing, cloned or not
// overridable is refused with the reason and with the kinds of fault that do work here. It is
// computed once per engine (a kernel's fault points do not change while it runs), so that a
// stream of refused containers costs no kallsyms read each.
type nodeKinds struct {
	once   sync.Once
	points []Check  // failPointCheck of each failtype, indexed by FailType
	works  []string // the kinds that work, as annotation text ("failtype: alloc")
	facts  func() pointFacts
}

// get computes k on first use.
func (k *nodeKinds) get() *nodeKinds {
	k.once.Do(func() {
		facts := readPointFacts
		if k.facts != nil {
			facts = k.facts // tests
		}
		k.points, k.works = kindsFrom(facts())
	})
	return k
}

// thisKernel is nodeKinds for the callers without an engine (kfault validate).
var thisKernel nodeKinds

// RefuseFailType is Prepare's refusal of failtype t on the running kernel, for kfault validate
// on a node: it loads nothing, and so assumes that an override mechanism works (kfault check
// says whether one does). nil when t's fault point can be overridden, or t is unknown.
func RefuseFailType(t annotations.FailType) error {
	fp, ok := t.Point()
	if !ok {
		return nil
	}
	return thisKernel.refuse(fp)
}

// readPointFacts reads what the failtype lines are made from, loading nothing: the engine
// runs, so some override mechanism works.
func readPointFacts() pointFacts {
	list, listErr := InjectableFunctions()
	names := make([]string, len(annotations.FailPoints))
	for i, fp := range annotations.FailPoints {
		names[i] = fp.Function
	}
	syms, symErr := LookupKernelSymbols(names...)
	return pointFacts{syms: syms, symErr: symErr, list: list, listErr: listErr, anyMech: true, config: KernelConfig}
}

// kindsFrom is the failtype lines of facts, and the kinds of fault that work: each failtype
// whose line is OK, and function targets when the error-injection list has any.
func kindsFrom(facts pointFacts) (points []Check, works []string) {
	for _, fp := range annotations.FailPoints {
		c := failPointCheck(fp, facts)
		points = append(points, c)
		if c.OK {
			works = append(works, "failtype: "+fp.Name)
		}
	}
	if facts.listErr == nil && len(facts.list) > 0 {
		works = append(works, fmt.Sprintf("function: any of the %d functions on the error-injection list", len(facts.list)))
	}
	return points, works
}

// refuse is nil when fp's fault point can be overridden on this node, or else the refusal:
// why (the missing kernel option, the clone), and what works here instead. kfault never
// substitutes another fault point silently.
func (k *nodeKinds) refuse(fp annotations.FailPoint) error {
	k.get()
	c := k.points[fp.Type]
	if c.OK {
		return nil
	}
	return fmt.Errorf("%s: %w on this node: %s; %s", fp.Function, ErrNotInjectable,
		strings.TrimPrefix(c.Detail, "no: "), instead(k.works))
}

// instead says what a refused fault can be replaced with on this node.
func instead(works []string) string {
	if len(works) == 0 {
		return "this node's kernel can inject no other kind of fault either (kfault check on the node says why)"
	}
	return "this node can inject instead: " + strings.Join(works, "; ") + " (kfault check on the node lists them)"
}
