package bpf

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"

	"golang.org/x/sys/unix"

	"github.com/kfault/kfault/annotations"
)

// Mechanism is how a hooked function's return value is overridden.
type Mechanism int

const (
	// MechanismAuto picks fmod_ret when the kernel allows it, else kprobe.
	MechanismAuto Mechanism = iota
	// MechanismFmodRet uses a BPF_MODIFY_RETURN tracing program (5.7+, BTF).
	MechanismFmodRet
	// MechanismKprobe uses a kprobe and bpf_override_return (CONFIG_BPF_KPROBE_OVERRIDE).
	MechanismKprobe
)

func (m Mechanism) String() string {
	switch m {
	case MechanismAuto:
		return "auto"
	case MechanismFmodRet:
		return "fmod_ret"
	case MechanismKprobe:
		return "kprobe"
	}
	return fmt.Sprintf("Mechanism(%d)", int(m))
}

// ParseMechanism reads auto, fmod_ret or kprobe.
func ParseMechanism(s string) (Mechanism, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return MechanismAuto, nil
	case "fmod_ret", "fmodret", "fmod-ret":
		return MechanismFmodRet, nil
	case "kprobe":
		return MechanismKprobe, nil
	}
	return 0, fmt.Errorf("mechanism %q: want auto, fmod_ret or kprobe", s)
}

// Options configure an Engine.
type Options struct {
	Mechanism Mechanism    // MechanismAuto unless a test or the user forces one
	Logger    *slog.Logger // nil: no logs
	// NoCallChains loads the hot path built without call chains, as the engine does by itself
	// on kernels without task storage (before 5.11); faults with a callchain are refused.
	NoCallChains bool
	// KeepIdle keeps a program no rule needs any more attached, doing nothing, this long before
	// detaching it, so that arming it again is map writes only (idle.go). 0: detach at once.
	// The kernel's BTF and kallsyms snapshot, too, go once unused for KeepIdle (0: kept).
	KeepIdle time.Duration
}

// Engine arms and disarms fault rules. It owns the shared maps and, per hooked function, one
// program and its link, attached while some rule needs it (and Options.KeepIdle after).
// Nothing is pinned: everything goes away with the process. Methods are safe for concurrent use.
type Engine struct {
	mu   sync.Mutex
	log  *slog.Logger
	mech Mechanism
	// lsmOnly: the mechanism (fmod_ret) can override LSM hooks only, on a kernel without error
	// injection.
	lsmOnly bool
	spec    *ebpf.CollectionSpec
	// kspec is fixed kernel types (tests); nil: the running kernel's, as kernelTypes gives them.
	kspec  *btf.Spec
	nofail uint64
	// addresses for the interrupt-context filter (0: filter off)
	perCPUOffset, preemptCount uint64

	rules, levels, counters *ebpf.Map
	eventMap                *ebpf.Map // ring buffer of sampled injections (samples.go)
	eventDrops              *ebpf.Map // samples the hot path could not write (ring buffer full)
	ruleDevs                *ebpf.Map // {counter, dev} of the bio rules with devices
	protected               *ebpf.Map // dev: the node's protected block devices
	protectedDevs           []Dev     // what protected holds, sorted
	// bioNever is bio_never_flags: the bi_opf flags of bios never failed (REQ_META,
	// REQ_PREFLUSH, REQ_FUA). Tests clear it to reproduce what unrestricted bio faults do.
	bioNever uint32
	events   *events

	hooks   map[string]*hook   // by function name
	hookIDs [maxHooks]bool     // ids in use
	sets    map[setKey][]*rule // what kfault_rules holds, per {cgroup, hook}
	armed   map[string]*armedKey
	ruleIDs [maxRules]bool // counter slots in use
	// sampleOwners says, per counter slot, whose samples it carries: kept after the rule is
	// removed, so that its samples still in the ring buffer are attributed. A small record,
	// not the rule, so that thousands of container lifetimes retain next to nothing.
	sampleOwners [maxRules]*sampleOwner
	nextRule     int
	closed       bool

	chains   chainSet   // call chains: frame programs, chain ids (chain.go)
	exec     execSet    // the exec boundary: its programs and scope (exec.go)
	pending  pendingSet // arming by cgroup path: the mkdir program and placeholders (pending.go)
	chainsOn bool       // the loaded hot path has call chains (task storage is available)
	// frameSyms is what kallsyms said of call-chain functions, for Prepare (chain.go).
	frameSyms symbolCache
	// nodeKinds is what this kernel can inject, for refusals (refusal.go).
	nodeKinds nodeKinds
	// loads counts program loads (ProgramLoads).
	loads atomic.Uint64
	// sampleEvery is SampleEvery; tests lower it to fill the ring buffer.
	sampleEvery uint64
	// keepIdle is Options.KeepIdle.
	keepIdle time.Duration
	// kernelData is the pending release of the kernel's BTF and the kallsyms snapshot.
	kernelData quietTimer
}

type setKey struct {
	cgroup uint64
	hook   uint32
}

// hook is one hooked kernel function: one loaded program instance and its link.
type hook struct {
	fn     string
	kind   hookKind
	id     uint32
	coll   *ebpf.Collection
	link   link.Link
	rules  int
	levels [maxLevel + 1]int // rules per cgroup level
	idle   idleTimer         // its release, while no rule needs it
}

// rule is one armed fault.
type rule struct {
	owner  *armedKey
	index  int // position in the key's fault list
	fault  annotations.Fault
	hooks  []*hook // every hooked function shares the rule, and so its counter (failtype alloc: several)
	enc    kfaultRule
	active bool
	final  uint64 // injected count, frozen when the rule was removed
	timer  *time.Timer
	chain  *chainState // nil: no call chain
	devs   []Dev       // bio rules with devices: written to kfault_rule_devs under the counter
	scoped int         // how many frames of chain have this rule's cgroup in their scope
}

type armedKey struct {
	key    string
	target Target
	rules  []*rule
	// execScoped: the key's cgroup is in the exec boundary's scope (ArmOptions.ExecBoundary).
	execScoped bool
	// pendingPath: armed by path (ArmPending) under a placeholder id, until Retarget.
	pendingPath string
}

// NewEngine probes the override mechanisms and prepares the shared maps. It attaches nothing.
func NewEngine(opts Options) (*Engine, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	_ = rlimit.RemoveMemlock() // only matters before 5.11; harmless after

	kspec, _, err := loadKernelBTF()
	if err != nil && opts.Mechanism != MechanismKprobe {
		// fmod_ret cannot work without BTF; kprobe could, but the bio program needs CO-RE.
		log.Warn("kernel BTF unavailable", "err", err)
	}
	// Call chains keep per-task state in task storage (5.11+). Without it, the hot path built
	// without chains still serves every other fault.
	chains := !opts.NoCallChains
	if chains {
		if err := HaveTaskStorage(); err != nil {
			chains = false
			log.Warn("no task storage maps (kernel 5.11+): call chains are refused, other faults work", "err", err)
		}
	}
	load := loadKfault
	if !chains {
		load = loadKfaultNoChains
	}
	spec, err := load()
	if err != nil {
		return nil, fmt.Errorf("load embedded BPF objects: %w", err)
	}
	// unused_event only exists to give bpf2go the event type; without this every program
	// instance would get its own one-pointer .bss map.
	delete(spec.Variables, "unused_event")
	delete(spec.Maps, ".bss")

	e := &Engine{
		log:         log,
		chainsOn:    chains,
		sampleEvery: SampleEvery,
		keepIdle:    opts.KeepIdle,
		spec:        spec,
		nofail:      gfpNoFail(kspec),
		bioNever:    bioNeverFlags(kspec),
		hooks:       map[string]*hook{},
		sets:        map[setKey][]*rule{},
		armed:       map[string]*armedKey{},
	}

	if e.perCPUOffset, e.preemptCount, err = preemptCountAddrs(kspec); err != nil {
		log.Warn("cannot read the preempt count: allocations in interrupt context are not exempted from faults", "err", err)
	}

	var fmodErr error // why auto falls back to kprobe
	e.mech, e.lsmOnly, err = chooseMechanism(opts.Mechanism, probes{
		fmodRet:        func() error { fmodErr = HaveFmodRet(); return fmodErr },
		fmodRetLSM:     HaveFmodRetLSM,
		kprobeOverride: HaveKprobeOverride,
	})
	if err != nil {
		return nil, err
	}
	// What this kernel can inject, for refusals: read now, not at the first refused container,
	// whose CreateContainer must answer within containerd's 2 s (a kallsyms read under emulation
	// took longer, and containerd created the container without the plugin).
	e.nodeKinds.facts = e.engineFacts
	e.nodeKinds.get()
	if chains {
		e.frameSyms.warm() // for call chains' Prepare (symbolCache)
	}
	switch {
	case e.lsmOnly:
		log.Info("fmod_ret works on LSM hooks only: failtype alloc and function: security_* can be injected, nothing else", "reason", fmodErr)
	case e.mech == MechanismKprobe && fmodErr != nil:
		log.Info("fmod_ret unavailable, using kprobe override", "reason", fmodErr)
	}

	if err := e.createMaps(); err != nil {
		e.closeMaps()
		return nil, err
	}
	if err := e.startEvents(); err != nil {
		e.closeMaps()
		return nil, err
	}
	log.Info("kfault engine ready", "mechanism", e.mech.String(), "lsm_hooks_only", e.lsmOnly, "gfp_nofail", fmt.Sprintf("%#x", e.nofail),
		"irq_filter", e.preemptCount != 0, "call_chains", e.chainsOn)
	return e, nil
}

func (e *Engine) createMaps() error {
	var err error
	if e.rules, err = ebpf.NewMap(e.spec.Maps["kfault_rules"]); err != nil {
		return fmt.Errorf("create map kfault_rules: %w", err)
	}
	if e.levels, err = ebpf.NewMap(e.spec.Maps["kfault_levels"]); err != nil {
		return fmt.Errorf("create map kfault_levels: %w", err)
	}
	if e.counters, err = ebpf.NewMap(e.spec.Maps["kfault_counters"]); err != nil {
		return fmt.Errorf("create map kfault_counters: %w", err)
	}
	if e.eventMap, err = ebpf.NewMap(e.spec.Maps["kfault_events"]); err != nil {
		return fmt.Errorf("create ring buffer kfault_events (kernel 5.8+): %w", err)
	}
	if e.eventDrops, err = ebpf.NewMap(e.spec.Maps["kfault_event_drops"]); err != nil {
		return fmt.Errorf("create map kfault_event_drops: %w", err)
	}
	if err := e.exec.createMaps(e.spec); err != nil {
		return err
	}
	if e.pending.m, err = ebpf.NewMap(e.spec.Maps["kfault_pending"]); err != nil {
		return fmt.Errorf("create map kfault_pending: %w", err)
	}
	if e.pending.made, err = ebpf.NewMap(e.spec.Maps["kfault_pending_made"]); err != nil {
		return fmt.Errorf("create map kfault_pending_made: %w", err)
	}
	if e.ruleDevs, err = ebpf.NewMap(e.spec.Maps["kfault_rule_devs"]); err != nil {
		return fmt.Errorf("create map kfault_rule_devs: %w", err)
	}
	if e.protected, err = ebpf.NewMap(e.spec.Maps["kfault_protected_devs"]); err != nil {
		return fmt.Errorf("create map kfault_protected_devs: %w", err)
	}
	if !e.chainsOn {
		return nil
	}
	return e.chains.createMaps(e.spec)
}

func (e *Engine) closeMaps() {
	for _, m := range []*ebpf.Map{e.rules, e.levels, e.counters, e.eventMap, e.eventDrops, e.ruleDevs, e.protected, e.pending.m, e.pending.made} {
		if m != nil {
			m.Close()
		}
	}
	e.exec.closeMaps()
	e.chains.closeMaps()
}

// SetProtectedDevices replaces the node's protected block devices: no bio to one of them is
// ever failed, by any rule. Pass WithSlaves of the devices holding the node's filesystems.
// Plans prepared before keep their devices; the plugin sets these once, before admitting any.
func (e *Engine) SetProtectedDevices(devs []Dev) error {
	devs = slices.Clone(devs)
	slices.Sort(devs)
	devs = slices.Compact(devs)
	if len(devs) > MaxProtectedDevices {
		return fmt.Errorf("%w: %d protected devices, at most %d", ErrLimit, len(devs), MaxProtectedDevices)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	// Add the new ones first, then drop the old ones: no moment without either protection.
	for _, d := range devs {
		if err := e.protected.Put(uint32(d), uint8(1)); err != nil {
			return fmt.Errorf("protect device %s: %w", d, err)
		}
	}
	for _, d := range e.protectedDevs {
		if !slices.Contains(devs, d) {
			if err := e.protected.Delete(uint32(d)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("unprotect device %s: %w", d, err)
			}
		}
	}
	e.protectedDevs = devs
	e.log.Info("protected block devices", "devices", fmt.Sprint(devs))
	return nil
}

// ProtectedDevices returns the protected block devices, sorted.
func (e *Engine) ProtectedDevices() []Dev {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.protectedDevs)
}

// Mechanism is the mechanism in use: MechanismFmodRet or MechanismKprobe.
func (e *Engine) Mechanism() Mechanism { return e.mech }

// LSMOnly says whether the mechanism can override LSM hooks only (failtype alloc, function:
// security_*): fmod_ret on a kernel without error injection.
func (e *Engine) LSMOnly() bool { return e.lsmOnly }

// Arm arms a prepared plan on the cgroup subtree of t under key. Arming a key that is armed
// replaces its rules. opts continue an earlier arm (counts, durations). On error nothing of this
// call stays armed.
func (e *Engine) Arm(key string, t Target, plan Plan, opts ArmOptions) error {
	if t.ID == 0 {
		return fmt.Errorf("arm %s: %w: cgroup id 0 (%q)", key, ErrInvalidTarget, t.Path)
	}
	if t.Level < 0 || t.Level > maxLevel {
		return fmt.Errorf("arm %s: %w: level %d outside 0..%d", key, ErrInvalidTarget, t.Level, maxLevel)
	}
	since, err := checkArm(key, plan, opts)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	return e.armLocked(key, t, plan, opts, since)
}

// checkArm checks what Arm and ArmPending take besides the target, and says since when the
// faults' durations run.
func checkArm(key string, plan Plan, opts ArmOptions) (time.Time, error) {
	if len(plan.rules) == 0 || len(plan.rules) != len(plan.Faults) {
		return time.Time{}, fmt.Errorf("arm %s: the plan was not made by Prepare", key)
	}
	if opts.Injected != nil && len(opts.Injected) != len(plan.rules) {
		return time.Time{}, fmt.Errorf("arm %s: %d counters for %d faults", key, len(opts.Injected), len(plan.rules))
	}
	if opts.Since.IsZero() {
		return time.Now(), nil
	}
	return opts.Since, nil
}

// armLocked is Arm once its arguments are checked; e.mu is held.
func (e *Engine) armLocked(key string, t Target, plan Plan, opts ArmOptions, since time.Time) error {
	start := time.Now()
	if old := e.armed[key]; old != nil {
		e.disarmLocked(old)
	}
	ak := &armedKey{key: key, target: t}
	if opts.ExecBoundary {
		// Scope first: an exec into the cgroup once the rules are in the maps is seen.
		if err := e.scopeExec(t); err != nil {
			// Without the boundary (no BTF for tp_btf programs, say) the faults still work,
			// for every task of the cgroup: the runtime's setup may be faulted too.
			e.log.Warn("exec boundary unavailable: the faults apply to every task in the cgroup, including a container runtime's setup still running there",
				"key", key, "cgroup", t.Path, "err", err)
			opts.ExecBoundary = false
		} else {
			ak.execScoped = true
		}
	}
	remaining := make([]time.Duration, len(plan.rules))
	for i, p := range plan.rules {
		var seed uint64
		if opts.Injected != nil {
			seed = opts.Injected[i]
		}
		r := &rule{owner: ak, index: i, fault: plan.Faults[i], enc: p.enc, devs: p.devs}
		if opts.ExecBoundary {
			r.enc.Flags |= ruleExec
		}
		ak.rules = append(ak.rules, r)
		if d := r.fault.Duration; d > 0 {
			remaining[i] = d - time.Since(since)
			if remaining[i] <= 0 {
				r.final = seed // elapsed before this arm: stays off, its count as it was
				continue
			}
		}
		if err := e.acquireChain(r, p.chain); err != nil {
			e.disarmLocked(ak)
			return fmt.Errorf("arm %s: fault %d (%s): %w", key, i, r.fault.HookName(), err)
		}
		if err := e.addRule(r, p.fns, seed); err != nil {
			e.releaseChain(r)
			e.disarmLocked(ak)
			return fmt.Errorf("arm %s: fault %d (%s): %w", key, i, r.fault.HookName(), err)
		}
	}
	e.armed[key] = ak
	for i, r := range ak.rules {
		if r.active && remaining[i] > 0 {
			r.timer = time.AfterFunc(remaining[i], func() { e.expire(r) })
		}
	}
	e.log.Info("armed", "key", key, "cgroup", t.Path, "cgroup_id", t.ID, "level", t.Level,
		"faults", len(plan.rules), "mechanism", e.mech.String(), "exec_boundary", opts.ExecBoundary, "took", time.Since(start).Round(time.Microsecond).String())
	return nil
}

// checkHookable refuses a function the engine cannot override on this kernel, when it can tell:
// the one place that decides what may be hooked. An LSM hook takes fmod_ret, with or without
// error injection; anything else takes the error-injection list, which a kernel limited to LSM
// hooks does not have.
func (e *Engine) checkHookable(fn string) error {
	switch {
	case isLSMHook(fn) && e.mech == MechanismFmodRet:
		kspec, _, _ := e.kernelTypes() // none: checkLSMHook says so
		return checkLSMHook(kspec, fn)
	case e.lsmOnly:
		if isFailPoint(fn) {
			return fmt.Errorf("%s: %w: fmod_ret refused: %s (and %s on 6.11+)", fn, ErrNotInjectable, onlyLSMModifiable, failPointOf(fn).Config)
		}
		return fmt.Errorf("%s: %w: fmod_ret refused: %s", fn, ErrNotInjectable, onlyLSMModifiable)
	case isLSMHook(fn):
		if err := checkInjectable(fn); err != nil {
			return fmt.Errorf("%s: %w: LSM hooks can be overridden with fmod_ret only, not %s", fn, ErrNotInjectable, e.mech)
		}
		return nil
	}
	return checkInjectable(fn)
}

// checkInjectable refuses functions that are not on the error-injection list, when it can tell.
func checkInjectable(fn string) error {
	list, err := InjectableFunctions()
	if err != nil {
		return nil // cannot tell (no debugfs): the kernel refuses at load or attach time
	}
	if _, ok := list[fn]; ok {
		return nil
	}
	if isFailPoint(fn) {
		return fmt.Errorf("%s: %w: not on %s (needs CONFIG_FUNCTION_ERROR_INJECTION, and %s on 6.11+)", fn, ErrNotInjectable, errorInjectionList, failPointOf(fn).Config)
	}
	// A function target: name the injectable functions that resemble it.
	return didYouMean(fmt.Errorf("%s: %w: not on %s", fn, ErrNotInjectable, errorInjectionList), fn, slices.Collect(maps.Keys(list)))
}

// isFailPoint says whether fn is a function of a failtype (should_failslab, alloc's LSM hooks...).
func isFailPoint(fn string) bool { return failPointOf(fn).Functions != nil }

// failPointOf is the failtype that hooks fn (the zero FailPoint for none).
func failPointOf(fn string) annotations.FailPoint {
	for _, fp := range annotations.FailPoints {
		if slices.Contains(fp.Functions, fn) {
			return fp
		}
	}
	return annotations.FailPoint{}
}

// expire removes one rule whose duration elapsed.
func (e *Engine) expire(r *rule) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || !r.active || e.armed[r.owner.key] != r.owner {
		return
	}
	e.removeRule(r)
	e.log.Info("fault duration elapsed", "key", r.owner.key, "fault", r.index, "injected", r.final)
}

// Disarm removes every rule armed under key. Disarming an unknown key is not an error.
func (e *Engine) Disarm(key string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	ak := e.armed[key]
	if ak == nil {
		return nil
	}
	e.disarmLocked(ak)
	counts := make([]uint64, len(ak.rules))
	for i, r := range ak.rules {
		counts[i] = r.final
	}
	e.log.Info("disarmed", "key", key, "cgroup", ak.target.Path, "injected", counts)
	return nil
}

func (e *Engine) disarmLocked(ak *armedKey) {
	for _, r := range ak.rules {
		if r.timer != nil {
			r.timer.Stop()
		}
		e.removeRule(r)
	}
	if ak.execScoped {
		ak.execScoped = false
		e.unscopeExec(ak.target) // after the rules: no rule needs the boundary any more
	}
	if ak.pendingPath != "" {
		e.dropPending(ak, 0)
	}
	if e.armed[ak.key] == ak {
		delete(e.armed, ak.key)
	}
}

// Counts returns, per fault of key and in Arm order, how many faults were injected (including
// the alreadyInjected seed).
func (e *Engine) Counts(key string) ([]uint64, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ak := e.armed[key]
	if ak == nil {
		return nil, fmt.Errorf("counts %s: %w", key, ErrNotArmed)
	}
	out := make([]uint64, len(ak.rules))
	for i, r := range ak.rules {
		if !r.active {
			out[i] = r.final
			continue
		}
		c, err := e.readCounter(r.enc.Counter)
		if err != nil {
			return nil, fmt.Errorf("counts %s: %w", key, err)
		}
		out[i] = injected(c, r.enc.Limit)
	}
	return out, nil
}

// Active reports, per fault of key, whether it is still armed (its duration has not elapsed).
func (e *Engine) Active(key string) ([]bool, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ak := e.armed[key]
	if ak == nil {
		return nil, fmt.Errorf("active %s: %w", key, ErrNotArmed)
	}
	out := make([]bool, len(ak.rules))
	for i, r := range ak.rules {
		out[i] = r.active
	}
	return out, nil
}

// Armed lists the armed keys, sorted.
func (e *Engine) Armed() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	keys := make([]string, 0, len(e.armed))
	for k := range e.armed {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Close disarms everything, detaches every program, stops the sample reader (closing
// Injections) and frees the maps.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.kernelData.stop()
	for _, ak := range e.armed {
		e.disarmLocked(ak)
	}
	var errs []error
	for _, h := range e.hooks {
		h.idle.stop()
		errs = append(errs, e.detach(h))
	}
	e.closeChains()
	e.detachExec()
	e.detachPending()
	e.mu.Unlock()
	e.stopEvents()
	e.closeMaps()
	return errors.Join(errs...)
}

// --- rules ---

// addRule arms r on every function of fns, with one counter: a fault that hooks several
// functions (alloc) counts its times across them. On error nothing of r stays armed.
func (e *Engine) addRule(r *rule, fns []string, seed uint64) error {
	t := r.owner.target
	id, ok := e.allocRuleID()
	if !ok {
		return fmt.Errorf("%w: more than %d armed faults", ErrLimit, maxRules)
	}
	r.enc.Counter = id
	e.sampleOwners[id] = &sampleOwner{key: r.owner.key, fault: r.index, cgroup: t.ID, functions: map[uint32]string{}}
	if err := e.counters.Put(id, seed); err != nil {
		e.ruleIDs[id] = false
		return fmt.Errorf("seed counter: %w", err)
	}
	if err := e.writeDevs(id, r.devs); err != nil {
		e.deleteDevs(id, r.devs)
		e.ruleIDs[id] = false
		return err
	}
	r.active = true // from here on removeRule undoes what is done
	for _, fn := range fns {
		if err := e.addRuleHook(r, fn); err != nil {
			e.removeRule(r)
			return err
		}
	}
	return nil
}

// addRuleHook puts the active rule r in the rule set of its cgroup for fn, attaching fn's hook
// if it has none. On error r holds no more of fn than before.
func (e *Engine) addRuleHook(r *rule, fn string) error {
	t := r.owner.target
	h, err := e.acquireHook(fn, kindOf(fn))
	if err != nil {
		return err
	}
	sk := setKey{cgroup: t.ID, hook: h.id}
	// From here on the hook counts this rule, so that a failure below releases it.
	h.rules++
	undo := func() {
		h.rules--
		if h.rules == 0 {
			e.retireHook(h)
		}
	}
	if len(e.sets[sk]) >= maxSlots {
		undo()
		return fmt.Errorf("%w: more than %d faults on %s for one cgroup", ErrLimit, maxSlots, fn)
	}
	set := append(slices.Clone(e.sets[sk]), r)
	if err := e.writeSet(sk, set); err != nil {
		undo()
		return err
	}
	e.sets[sk] = set
	r.hooks = append(r.hooks, h)
	e.sampleOwners[r.enc.Counter].functions[h.id] = h.fn
	h.levels[t.Level]++
	if h.levels[t.Level] == 1 {
		return e.writeLevels(h) // on error the caller's removeRule takes r out again
	}
	return nil
}

// removeRule takes one rule out of the maps, freezes its count, and detaches each of its hooks
// of which it was the last rule.
func (e *Engine) removeRule(r *rule) {
	if !r.active {
		return
	}
	t := r.owner.target
	for _, h := range r.hooks {
		h.levels[t.Level]--
		if h.levels[t.Level] == 0 {
			if err := e.writeLevels(h); err != nil {
				e.log.Warn("update levels", "hook", h.fn, "err", err)
			}
		}
		sk := setKey{cgroup: t.ID, hook: h.id}
		set := slices.DeleteFunc(slices.Clone(e.sets[sk]), func(x *rule) bool { return x == r })
		if err := e.writeSet(sk, set); err != nil {
			e.log.Warn("update rules", "hook", h.fn, "cgroup", t.ID, "err", err)
		}
		if len(set) == 0 {
			delete(e.sets, sk)
		} else {
			e.sets[sk] = set
		}
	}
	e.releaseChain(r) // once the rule is out of kfault_rules
	e.deleteDevs(r.enc.Counter, r.devs)
	if c, err := e.readCounter(r.enc.Counter); err == nil {
		r.final = injected(c, r.enc.Limit)
	}
	e.ruleIDs[r.enc.Counter] = false
	r.active = false
	for _, h := range r.hooks {
		h.rules--
		if h.rules == 0 {
			e.retireHook(h)
		}
	}
	r.hooks = nil
}

func (e *Engine) writeSet(sk setKey, set []*rule) error {
	key := kfaultRuleKey{Cgroup: sk.cgroup, Hook: sk.hook}
	if len(set) == 0 {
		if err := e.rules.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete rules of cgroup %d: %w", sk.cgroup, err)
		}
		return nil
	}
	var v kfaultRuleSet
	v.N = uint32(len(set))
	for i, r := range set {
		v.Rules[i] = r.enc
	}
	if err := e.rules.Put(key, v); err != nil {
		return fmt.Errorf("write rules of cgroup %d: %w", sk.cgroup, err)
	}
	return nil
}

// writeDevs writes the devices of the rule with counter id (before the rule is in kfault_rules).
func (e *Engine) writeDevs(id uint32, devs []Dev) error {
	for _, d := range devs {
		if err := e.ruleDevs.Put(kfaultRuleDev{Counter: id, Dev: uint32(d)}, uint8(1)); err != nil {
			if errors.Is(err, unix.E2BIG) {
				return fmt.Errorf("%w: more than %d {fault, device} pairs armed", ErrLimit, maxRuleDevs)
			}
			return fmt.Errorf("write devices of rule %d: %w", id, err)
		}
	}
	return nil
}

// deleteDevs removes the devices of the rule with counter id (after it left kfault_rules).
func (e *Engine) deleteDevs(id uint32, devs []Dev) {
	for _, d := range devs {
		if err := e.ruleDevs.Delete(kfaultRuleDev{Counter: id, Dev: uint32(d)}); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			e.log.Warn("delete rule device", "rule", id, "device", d.String(), "err", err)
		}
	}
}

func (e *Engine) writeLevels(h *hook) error {
	var bits uint64
	for l, n := range h.levels {
		if n > 0 {
			bits |= 1 << l
		}
	}
	if err := e.levels.Put(h.id, bits); err != nil {
		return fmt.Errorf("write levels of %s: %w", h.fn, err)
	}
	return nil
}

func (e *Engine) readCounter(id uint32) (uint64, error) {
	var c uint64
	if err := e.counters.Lookup(id, &c); err != nil {
		return 0, fmt.Errorf("read counter %d: %w", id, err)
	}
	return c, nil
}

func (e *Engine) allocRuleID() (uint32, bool) {
	for i := 0; i < maxRules; i++ {
		id := (e.nextRule + i) % maxRules
		if !e.ruleIDs[id] {
			e.ruleIDs[id] = true
			e.nextRule = id + 1
			return uint32(id), true
		}
	}
	return 0, false
}

// --- hooks ---

// acquireHook returns the hook of fn, loading and attaching its program if it has none (an idle
// one is taken as it is).
func (e *Engine) acquireHook(fn string, kind hookKind) (*hook, error) {
	if h := e.hooks[fn]; h != nil {
		h.idle.stop()
		return h, nil
	}
	id := firstFree(e.hookIDs[:])
	if id < 0 && e.releaseIdleHook() {
		id = firstFree(e.hookIDs[:])
	}
	if id < 0 {
		return nil, fmt.Errorf("%w: more than %d hooked functions", ErrLimit, maxHooks)
	}
	h := &hook{fn: fn, kind: kind, id: uint32(id)}
	if err := e.writeLevels(h); err != nil { // a reused id starts with no levels
		return nil, err
	}
	start := time.Now()
	if err := e.attach(h); err != nil {
		return nil, err
	}
	e.hookIDs[id] = true
	e.hooks[fn] = h
	e.log.Info("hook attached", "function", fn, "mechanism", e.mech.String(), "hook_id", id,
		"took", time.Since(start).Round(time.Microsecond).String())
	return h, nil
}

// attach loads the program for h from a copy of the collection spec, with h's hook id as a
// load-time constant and the engine's maps in place of the object's own, and attaches it.
func (e *Engine) attach(h *hook) error {
	name := programName(e.mech, h.kind)
	spec := e.spec.Copy()
	for n := range spec.Programs {
		if n != name {
			delete(spec.Programs, n)
		}
	}
	ps := spec.Programs[name]
	if ps == nil {
		return fmt.Errorf("program %s missing from the embedded object", name)
	}
	if e.mech == MechanismFmodRet {
		ps.AttachTo = h.fn
	}
	if err := spec.Variables["hook_id"].Set(h.id); err != nil {
		return fmt.Errorf("set hook_id: %w", err)
	}
	if err := spec.Variables["bio_never_flags"].Set(e.bioNever); err != nil {
		return fmt.Errorf("set bio_never_flags: %w", err)
	}
	for name, v := range map[string]uint64{
		"gfp_nofail":          e.nofail,
		"per_cpu_offset_addr": e.perCPUOffset,
		"preempt_count_addr":  e.preemptCount,
		"sample_first":        SampleFirst,
		"sample_mask":         e.sampleEvery - 1,
	} {
		if err := spec.Variables[name].Set(v); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	coll, err := e.loadCollection(spec)
	if err != nil {
		return explainLoad(e.mech, h.fn, err)
	}
	prog := coll.Programs[name]
	var l link.Link
	switch e.mech {
	case MechanismFmodRet:
		l, err = link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachModifyReturn})
	case MechanismKprobe:
		l, err = link.Kprobe(h.fn, prog, nil)
	}
	if err != nil {
		coll.Close()
		return explainAttach(e.mech, h.fn, err)
	}
	h.coll, h.link = coll, l
	return nil
}

// detach closes h's link and program and forgets h.
func (e *Engine) detach(h *hook) error {
	var err error
	if h.link != nil {
		err = h.link.Close()
		h.link = nil
	}
	if h.coll != nil {
		h.coll.Close()
		h.coll = nil
	}
	if e.hooks[h.fn] == h {
		delete(e.hooks, h.fn)
		e.hookIDs[h.id] = false
		e.log.Info("hook detached", "function", h.fn)
	}
	if err != nil {
		return fmt.Errorf("detach %s: %w", h.fn, err)
	}
	return nil
}

// firstFree returns the index of the first unused id, or -1 when all are in use.
func firstFree(used []bool) int {
	for i, u := range used {
		if !u {
			return i
		}
	}
	return -1
}
