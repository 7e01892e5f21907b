package bpf

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/kfault/kfault/annotations"
	"github.com/kfault/kfault/bpf/predicate"
)

// validateEngine is an engine with only what Validate and planChain use: nothing is loaded, so
// this runs on any host with kernel BTF.
func validateEngine(t *testing.T, m Mechanism) *Engine {
	t.Helper()
	spec, _, err := loadKernelBTF()
	if err != nil {
		t.Skipf("no kernel BTF: %v", err)
	}
	if _, err := spec.AnyTypeByName("d_alloc_parallel"); err != nil {
		t.Skip("d_alloc_parallel not in this kernel's BTF")
	}
	return &Engine{kspec: spec, mech: m, log: slog.New(slog.DiscardHandler), chainsOn: true}
}

// An engine on a kernel without task storage refuses call chains before looking at them, and
// says which kernel they need; faults without one plan nothing.
func TestPlanChainWithoutTaskStorage(t *testing.T) {
	e := &Engine{log: slog.New(slog.DiscardHandler)}
	_, err := e.planChain(slabChain(annotations.Frame{FuncName: "vfs_statx"}), "should_failslab")
	if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "kernel 5.11+") {
		t.Errorf("planChain: %v, want ErrNotSupported naming kernel 5.11+", err)
	}
	if p, err := e.planChain(annotations.Fault{FailType: annotations.Slab, Probability: 100}, "should_failslab"); p != nil || err != nil {
		t.Errorf("planChain of a fault without a chain: %v, %v", p, err)
	}
}

func TestPlanChain(t *testing.T) {
	e := validateEngine(t, MechanismFmodRet)
	dalloc := annotations.Frame{FuncName: "d_alloc_parallel", Parameters: "struct dentry *parent, const struct qstr *name", Predicate: bananas}
	p, err := e.planChain(slabChain(annotations.Frame{FuncName: "vfs_statx"}, dalloc), "should_failslab")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.frames) != 2 || p.frames[0].prog != nil || p.frames[1].prog == nil || p.frames[1].prog.Symbol != predSymbol {
		t.Errorf("plan: %+v", p.frames)
	}
	// The same frames give the same key (shared chain); another predicate another one.
	q, _ := e.planChain(slabChain(annotations.Frame{FuncName: "vfs_statx"}, dalloc), "should_failslab")
	other := dalloc
	other.Predicate = `STRNCMP(name->name, "apples", 7)`
	r, _ := e.planChain(slabChain(annotations.Frame{FuncName: "vfs_statx"}, other), "should_failslab")
	if p.key != q.key || p.key == r.key {
		t.Errorf("chain keys: %q %q %q", p.key, q.key, r.key)
	}

	// A last frame on the hooked function without a predicate is always on the stack: dropped.
	p, err = e.planChain(slabChain(dalloc, annotations.Frame{FuncName: "should_failslab"}), "should_failslab")
	if err != nil || len(p.frames) != 1 {
		t.Errorf("hooked function without predicate: %v, %+v", err, p)
	}
	p, err = e.planChain(slabChain(annotations.Frame{FuncName: "should_failslab"}), "should_failslab")
	if err != nil || p != nil {
		t.Errorf("only the hooked function: %v, %+v", err, p)
	}
	// With a predicate it is a frame with fmod_ret, and not supported with kprobe.
	if _, err := e.kspec.AnyTypeByName("should_failslab"); err != nil {
		return // 6.11+ without CONFIG_FAILSLAB
	}
	withPred := annotations.Frame{FuncName: "should_failslab", Predicate: "gfpflags & 1"}
	if _, err := e.planChain(slabChain(withPred), "should_failslab"); err != nil {
		t.Errorf("fmod_ret, predicate on the hooked function: %v", err)
	}
	k := validateEngine(t, MechanismKprobe)
	if _, err := k.planChain(slabChain(withPred), "should_failslab"); !errors.Is(err, ErrNotSupported) {
		t.Errorf("kprobe, predicate on the hooked function: got %v, want ErrNotSupported", err)
	}
}

func TestValidate(t *testing.T) {
	e := validateEngine(t, MechanismFmodRet)
	for _, tc := range []struct {
		fault annotations.Fault
		want  string // "" = valid
	}{
		{slabChain(annotations.Frame{FuncName: "d_alloc_parallel", Predicate: bananas}), ""},
		{slabChain(annotations.Frame{FuncName: "vfs_statx"}, annotations.Frame{FuncName: "d_alloc_parallel", Predicate: `STRNCMP(name->nme, "x", 2)`}),
			`callchain[1].predicate: column 15: unknown member "nme" of struct qstr`},
		{slabChain(annotations.Frame{FuncName: "no_such_function_kfault"}), "callchain[0].funcname: function no_such_function_kfault: not in kernel BTF"},
		// The predicate safety rules (bpf/predicate/safety.go), with the frame named.
		{slabChain(annotations.Frame{FuncName: "d_alloc_parallel", Predicate: "parent->d_sb->s_op < 0xffffffff82000000"}),
			"callchain[0].predicate: column 20: a pointer can only be compared with 0 (NULL check): comparing parent->d_sb->s_op with 0xffffffff82000000 would reveal a kernel address"},
		{slabChain(annotations.Frame{FuncName: "d_alloc_parallel", Predicate: "name->name[name->len - 1] == 's'"}),
			"callchain[0].predicate: column 12: an index must be a constant"},
		{slabChain(annotations.Frame{FuncName: "d_alloc_parallel", Parameters: "struct inode *parent"}), "callchain[0].parameters: column 1"},
		{annotations.Fault{FailType: annotations.Slab, Probability: 100, CallChain: make([]annotations.Frame, 9)}, "9 frames"},
	} {
		err := e.Validate([]annotations.Fault{tc.fault})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("Validate(%+v): %v", tc.fault.CallChain, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("Validate(%+v): got %v, want %q", tc.fault.CallChain, err, tc.want)
		}
		var fe *predicate.FrameError
		if tc.want != "" && strings.Contains(tc.want, "callchain[") && !errors.As(err, &fe) {
			t.Errorf("%v: not a *predicate.FrameError", err)
		}
	}
	// In a list, paths start with the fault's index, as the annotation parser's do.
	err := e.Validate([]annotations.Fault{
		slabChain(annotations.Frame{FuncName: "d_alloc_parallel"}),
		slabChain(annotations.Frame{FuncName: "no_such_function_kfault"}),
		{FailType: 9, Probability: 100},
		slabChain(annotations.Frame{FuncName: "d_alloc_parallel", Predicate: "parent == name"}),
	})
	for _, want := range []string{"[1].callchain[0].funcname: function no_such_function_kfault", "[2].failtype: failtype 9: unknown",
		"[3].callchain[0].predicate: column 8: a pointer can only be compared with 0 (NULL check)"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("list: got %v, want %q", err, want)
		}
	}
	if err != nil && strings.Contains("\n"+err.Error(), "\n[0]") {
		t.Errorf("list: the valid fault 0 is named: %v", err)
	}
	// A cgroup holds maxSlots rules per hooked function: one more is refused at Prepare (at
	// CreateContainer), not at arming.
	slabs := make([]annotations.Fault, maxSlots+1)
	for i := range slabs {
		slabs[i] = annotations.Fault{FailType: annotations.Slab, Probability: 100}
	}
	if err := e.Validate(slabs[:maxSlots]); err != nil {
		t.Errorf("%d slab faults: %v", maxSlots, err)
	}
	err = e.Validate(slabs)
	if want := fmt.Sprintf("[%d].failtype: engine capacity exceeded: fault %d of this annotation on should_failslab; one container may have at most %d faults on one kernel function", maxSlots, maxSlots+1, maxSlots); err == nil || err.Error() != want || !errors.Is(err, ErrLimit) {
		t.Errorf("%d slab faults: got %v, want %q", maxSlots+1, err, want)
	}
	if list, err := InjectableFunctions(); err == nil {
		if _, ok := list["vfs_read"]; !ok {
			err := e.Validate([]annotations.Fault{{Function: "vfs_read", Errno: 5, Probability: 100}})
			if !errors.Is(err, ErrNotInjectable) {
				t.Errorf("vfs_read: got %v, want ErrNotInjectable", err)
			}
		}
	}
}

// TestClonedFrame: a frame on a function with a compiler clone is refused, naming the frame,
// the clone and ErrNotInjectable; without kallsyms (nil) nothing is refused.
func TestClonedFrame(t *testing.T) {
	chain := func(fns ...string) *chainPlan {
		p := &chainPlan{}
		for _, fn := range fns {
			p.frames = append(p.frames, plannedFrame{key: frameKey{fn: fn}})
		}
		return p
	}
	syms := map[string]KernelSymbol{
		"vfs_statx":        {Exists: true, Clones: []string{"vfs_statx.isra.0"}},
		"d_alloc_parallel": {Exists: true},
		"user_path_at":     {Clones: []string{"user_path_at.constprop.0", "user_path_at.isra.0"}},
	}
	for name, tc := range map[string]struct {
		chain *chainPlan
		syms  map[string]KernelSymbol
		want  string // "" = accepted
	}{
		"no chain":         {nil, syms, ""},
		"no clone":         {chain("d_alloc_parallel"), syms, ""},
		"not in kallsyms":  {chain("filename_lookup"), syms, ""}, // BTF and attach decide
		"clone":            {chain("d_alloc_parallel", "vfs_statx"), syms, "callchain[1].funcname: vfs_statx: function is not error-injectable: clone vfs_statx.isra.0 is what callers use: a frame on vfs_statx would never see them"},
		"only clones":      {chain("user_path_at"), syms, "callchain[0].funcname: user_path_at: function is not error-injectable: clones user_path_at.constprop.0, user_path_at.isra.0 are what callers use: a frame on user_path_at would never see them"},
		"the first of two": {chain("user_path_at", "vfs_statx"), syms, "callchain[0].funcname: user_path_at:"},
		"kallsyms unknown": {chain("vfs_statx"), nil, ""},
	} {
		t.Run(name, func(t *testing.T) {
			err := clonedFrame(tc.chain, tc.syms)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want) || !errors.Is(err, ErrNotInjectable)):
				t.Errorf("got %v, want ErrNotInjectable %q", err, tc.want)
			}
			var fe *predicate.FrameError
			if err != nil && !errors.As(err, &fe) {
				t.Errorf("%v: not a *predicate.FrameError", err)
			}
		})
	}
}

// TestPrepareRefusesClonedFrame: Prepare reads kallsyms (here the fixture: vfs_statx.isra.0,
// should_failslab.constprop.0) and refuses a frame on a cloned function, with the fault's
// index in a list; a last frame on the hooked function without a predicate is not a frame.
func TestPrepareRefusesClonedFrame(t *testing.T) {
	e := validateEngine(t, MechanismFmodRet)
	fixtureKallsyms(t)
	const statx = "callchain[0].funcname: vfs_statx: function is not error-injectable: clone vfs_statx.isra.0 is what callers use: a frame on vfs_statx would never see them"
	for name, tc := range map[string]struct {
		faults []annotations.Fault
		want   string // "" = valid
		needs  string // a function the case needs in the kernel's BTF
	}{
		"cloned frame": {[]annotations.Fault{slabChain(annotations.Frame{FuncName: "vfs_statx"})}, statx, ""},
		"in a list": {[]annotations.Fault{slabChain(annotations.Frame{FuncName: "d_alloc_parallel"}), slabChain(annotations.Frame{FuncName: "vfs_statx"})},
			"[1]." + statx, ""},
		"no clone":                  {[]annotations.Fault{slabChain(annotations.Frame{FuncName: "d_alloc_parallel"})}, "", ""},
		"hooked function, no frame": {[]annotations.Fault{slabChain(annotations.Frame{FuncName: "d_alloc_parallel"}, annotations.Frame{FuncName: "should_failslab"})}, "", ""},
		"hooked function with predicate": {[]annotations.Fault{slabChain(annotations.Frame{FuncName: "should_failslab", Predicate: "gfpflags & 1"})},
			"callchain[0].funcname: should_failslab: function is not error-injectable: clone should_failslab.constprop.0 is what callers use", "should_failslab"},
	} {
		t.Run(name, func(t *testing.T) {
			if tc.needs != "" {
				if _, err := e.kspec.AnyTypeByName(tc.needs); err != nil {
					t.Skipf("%s not in this kernel's BTF", tc.needs) // should_failslab: 6.11+ without CONFIG_FAILSLAB
				}
			}
			err := e.Validate(tc.faults)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want) || !errors.Is(err, ErrNotInjectable)):
				t.Errorf("got %v, want ErrNotInjectable %q", err, tc.want)
			}
		})
	}
}

// TestSymbolCache: Prepare's kallsyms answers are kept for the functions found there, so a
// later Prepare naming only those does not read kallsyms again; a function not found is looked
// up again (what is kept is bounded by the kernel's symbols, not by what annotations name).
func TestSymbolCache(t *testing.T) {
	fixtureKallsyms(t)
	var c symbolCache
	got, err := c.lookup([]string{"vfs_statx", "filename_lookup"})
	if err != nil || len(got["vfs_statx"].Clones) != 1 || got["filename_lookup"].Exists {
		t.Fatalf("first lookup: %+v, %v", got, err)
	}
	kallsymsPath = "testdata/no-such-kallsyms" // from now on a read fails
	for name, tc := range map[string]struct {
		fns     []string
		wantErr bool
	}{
		"found before: no read":        {[]string{"vfs_statx", "vfs_statx"}, false},
		"not found before: read again": {[]string{"filename_lookup"}, true},
		"never asked: read":            {[]string{"vfs_statx", "d_alloc_parallel"}, true},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := c.lookup(tc.fns)
			if (err != nil) != tc.wantErr {
				t.Fatalf("lookup(%q): %+v, %v; want an error: %v", tc.fns, got, err, tc.wantErr)
			}
			if err == nil && !slices.Equal(got["vfs_statx"].Clones, []string{"vfs_statx.isra.0"}) {
				t.Errorf("vfs_statx: %+v", got["vfs_statx"])
			}
		})
	}
}
