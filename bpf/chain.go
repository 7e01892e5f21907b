package bpf

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/kfault/kfault/annotations"
	"github.com/kfault/kfault/bpf/predicate"
)

// Call chains (see kfault_chain.bpf.h for the BPF side).
//
// Every distinct frame (function, parameters, predicate) armed anywhere gets a frame id and one
// fentry + fexit program pair, whatever the number of rules, chains and containers that use it.
// Every distinct chain (list of frames) gets a chain id, which the rules of any cgroup share. A
// chain owns one user slot in each of its frames; the slot of position i names the slot of
// position i-1 as its prerequisite, which is how order is enforced. Frames and chains are
// reference counted: a frame's programs are attached while some armed rule's chain contains it
// and detached with its last user. Nothing is pinned.
//
// A frame's entry program first checks the task's cgroup, as the hook programs do, against the
// frame's scope: the cgroups (and their levels) of the armed rules whose chain goes through the
// frame (kfault_frame_scope, kfault_frame_levels). Tasks elsewhere pay that check only.

// Capacities; MAX_* in kfault_chain.bpf.h. Those that size an array of a generated type are
// taken from it; TestLimits checks maxChains against kfault_chains and the C source.
const (
	maxFrameIDs    = len(kfaultTaskChains{}.F)    // distinct frames armed at once
	maxFrameUsers  = len(kfaultFrameInfo{}.Users) // chain positions sharing one frame
	maxChains      = 256                          // distinct chains armed at once, id 0 unused
	maxChainFrames = len(kfaultChain{}.Frames)    // frames per chain
	maxFrameScopes = 16384                        // {cgroup, frame} pairs armed at once
)

const (
	frameUserValid   = 1
	frameUserHasPrev = 2
)

// predSymbol is the stub function of kfault_frame_entry that a frame's predicate replaces.
const predSymbol = "kfault_frame_pred"

// The map values are bpf2go's Go types of the C structs (gen.go): kfaultFrameInfo (struct
// frame_info, whose First is the bitmap of the valid slots without a previous frame) with its
// kfaultFrameUser slots, and kfaultChain (struct chain) with its kfaultChainFrame entries.

type frameKey struct{ fn, params, pred string }

func (k frameKey) String() string {
	s := k.fn
	if k.pred != "" {
		s += " [" + k.pred + "]"
	}
	return s
}

// frameProg is one distinct frame: its programs and links, and its user slots.
type frameProg struct {
	key   frameKey
	id    uint32
	gen   uint32
	coll  *ebpf.Collection
	links []link.Link
	users [maxFrameUsers]*chainState // slot -> the chain using it
	prevs [maxFrameUsers]kfaultFrameUser
	next  int // round-robin slot allocation (a freed slot is reused last)
	refs  int
	scope frameScope // the cgroups whose armed rules have a chain through this frame
	idle  idleTimer  // its release, while no chain uses it
}

// frameScope counts, for one frame, the armed rules whose chain goes through it: per cgroup id
// (the kfault_frame_scope keys) and per cgroup level (the kfault_frame_levels bitmap). A rule
// whose chain has the frame at two positions counts twice.
type frameScope struct {
	cgroups map[uint64]int
	levels  [maxLevel + 1]int
}

// add counts one rule on cgroup at level, and says which map entries it turns on: the cgroup's
// key, the level's bit.
func (s *frameScope) add(cgroup uint64, level int) (newCgroup, newLevel bool) {
	if s.cgroups == nil {
		s.cgroups = map[uint64]int{}
	}
	s.cgroups[cgroup]++
	s.levels[level]++
	return s.cgroups[cgroup] == 1, s.levels[level] == 1
}

// remove undoes add, and says which map entries it turns off.
func (s *frameScope) remove(cgroup uint64, level int) (goneCgroup, goneLevel bool) {
	if s.cgroups[cgroup] <= 0 || s.levels[level] <= 0 {
		return false, false // not counted: nothing to undo
	}
	s.cgroups[cgroup]--
	s.levels[level]--
	if s.cgroups[cgroup] == 0 {
		delete(s.cgroups, cgroup)
		goneCgroup = true
	}
	return goneCgroup, s.levels[level] == 0
}

// bits is the kfault_frame_levels value.
func (s *frameScope) bits() uint64 {
	var b uint64
	for l, n := range s.levels {
		if n > 0 {
			b |= 1 << l
		}
	}
	return b
}

// chainState is one distinct chain, shared by every rule with the same frames.
type chainState struct {
	key    string
	id     uint32
	frames []*frameProg
	slots  []int
	refs   int
}

// chainPlan is a fault's call chain, resolved and compiled, before anything is loaded.
type chainPlan struct {
	frames []plannedFrame
	key    string
}

type plannedFrame struct {
	key  frameKey
	prog *predicate.Program // nil: no predicate
}

// chainSet is the engine's call-chain bookkeeping (guarded by Engine.mu).
type chainSet struct {
	frames      map[frameKey]*frameProg
	frameIDs    [maxFrameIDs]bool
	gen         uint32
	chains      map[string]*chainState
	chainIDs    [maxChains]bool
	frameMap    *ebpf.Map // kfault_frames
	chainMap    *ebpf.Map // kfault_chains
	taskChains  *ebpf.Map // kfault_task_chains
	frameLevels *ebpf.Map // kfault_frame_levels
	frameScope  *ebpf.Map // kfault_frame_scope
}

func (c *chainSet) createMaps(spec *ebpf.CollectionSpec) error {
	c.frames = map[frameKey]*frameProg{}
	c.chains = map[string]*chainState{}
	var err error
	if c.frameMap, err = ebpf.NewMap(spec.Maps["kfault_frames"]); err != nil {
		return fmt.Errorf("create map kfault_frames: %w", err)
	}
	if c.chainMap, err = ebpf.NewMap(spec.Maps["kfault_chains"]); err != nil {
		return fmt.Errorf("create map kfault_chains: %w", err)
	}
	if c.taskChains, err = ebpf.NewMap(spec.Maps["kfault_task_chains"]); err != nil {
		return fmt.Errorf("create map kfault_task_chains (task storage, needs Linux 5.11+): %w", err)
	}
	if c.frameLevels, err = ebpf.NewMap(spec.Maps["kfault_frame_levels"]); err != nil {
		return fmt.Errorf("create map kfault_frame_levels: %w", err)
	}
	if c.frameScope, err = ebpf.NewMap(spec.Maps["kfault_frame_scope"]); err != nil {
		return fmt.Errorf("create map kfault_frame_scope: %w", err)
	}
	return nil
}

func (c *chainSet) closeMaps() {
	for _, m := range []*ebpf.Map{c.frameMap, c.chainMap, c.taskChains, c.frameLevels, c.frameScope} {
		if m != nil {
			m.Close()
		}
	}
}

// loadCollection loads spec's programs against the running kernel's types, with the engine's
// shared maps in place of the object's own, and counts the load (ProgramLoads).
func (e *Engine) loadCollection(spec *ebpf.CollectionSpec) (*ebpf.Collection, error) {
	e.loads.Add(1)
	kspec, cache, _ := e.kernelTypes() // none: a program that needs them fails to load and says why
	return ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
		MapReplacements: e.mapReplacements(),
		Programs:        ebpf.ProgramOptions{KernelTypes: kspec},
		Cache:           cache,
	})
}

// ProgramLoads is how many times the engine has loaded programs into the kernel (a hook, the
// frame programs of a call-chain function, the exec boundary, the cgroup_mkdir program): the
// expensive part of a first arm. Arming on a hook that is attached already loads nothing.
func (e *Engine) ProgramLoads() uint64 { return e.loads.Load() }

// mapReplacements are the engine's shared maps, for every program instance it loads.
func (e *Engine) mapReplacements() map[string]*ebpf.Map {
	m := map[string]*ebpf.Map{
		"kfault_rules":           e.rules,
		"kfault_levels":          e.levels,
		"kfault_counters":        e.counters,
		"kfault_events":          e.eventMap,
		"kfault_event_drops":     e.eventDrops,
		"kfault_exec_levels":     e.exec.levels,
		"kfault_exec_scope":      e.exec.scopeMap,
		"kfault_exec_tasks":      e.exec.tasks,
		"kfault_exec_runtime_ns": e.exec.runtimeNS,
		"kfault_rule_devs":       e.ruleDevs,
		"kfault_protected_devs":  e.protected,
		"kfault_pending":         e.pending.m,
		"kfault_pending_made":    e.pending.made,
	}
	if e.chainsOn {
		m["kfault_frames"] = e.chains.frameMap
		m["kfault_chains"] = e.chains.chainMap
		m["kfault_task_chains"] = e.chains.taskChains
		m["kfault_frame_levels"] = e.chains.frameLevels
		m["kfault_frame_scope"] = e.chains.frameScope
	}
	return m
}

// planChain resolves and compiles the call chain of fault f hooking fn (nil when it has none).
// Errors name the frame: "callchain[1].predicate: column 15: ...". It loads nothing.
func (e *Engine) planChain(f annotations.Fault, fn string) (*chainPlan, error) {
	frames := f.CallChain
	if len(frames) == 0 {
		return nil, nil
	}
	if !e.chainsOn {
		return nil, fmt.Errorf("callchain: %w: call chains need task storage maps (kernel 5.11+), which this kernel lacks", ErrNotSupported)
	}
	last := len(frames) - 1
	if frames[last].FuncName == fn && strings.TrimSpace(frames[last].Predicate) != "" && e.mech == MechanismKprobe {
		// The predicate would run in an fentry program, which the kernel calls after the
		// kprobe of the same function: too late for the kprobe's decision. (fmod_ret: the
		// frame's fentry program runs before the fmod_ret program in the same trampoline, so
		// the frame is marked, or not, by the time the hot path looks.)
		return nil, fmt.Errorf("callchain[%d].predicate: a predicate on the hooked function %s %w yet with the kprobe mechanism (use fmod_ret)", last, fn, ErrNotSupported)
	}
	frames = chainFrames(f, fn)
	if len(frames) == 0 {
		return nil, nil
	}
	if len(frames) > maxChainFrames {
		return nil, fmt.Errorf("callchain: %d frames: %w: at most %d", len(frames), ErrLimit, maxChainFrames)
	}
	kspec, _, err := e.kernelTypes()
	if err != nil {
		return nil, fmt.Errorf("callchain: %w", err)
	}
	p := &chainPlan{}
	var key strings.Builder
	for i, fr := range frames {
		_, prog, err := predicate.CompileFrame(kspec, i, fr.FuncName, fr.Parameters, fr.Predicate,
			predicate.Options{ArgSource: predicate.Tracing, Symbol: predSymbol})
		if fe := (*predicate.FrameError)(nil); errors.As(err, &fe) && errors.Is(fe.Err, predicate.ErrNotInBTF) {
			// Name the functions the kernel has instead: an inline wrapper's callee, a
			// system call's layers, a typo's fix.
			err = &predicate.FrameError{Index: fe.Index, Field: fe.Field, Err: suggestKernelFunc(fe.Err, strings.TrimSpace(fr.FuncName))}
		}
		if err != nil {
			return nil, err
		}
		k := frameKeyOf(fr)
		p.frames = append(p.frames, plannedFrame{key: k, prog: prog})
		key.WriteString(k.id())
	}
	p.key = key.String()
	return p, nil
}

// chainSymbols says what kallsyms says of the call-chain functions of faults, reading it at
// most once: nil when they have none, or when kallsyms cannot be read (the frames are then not
// checked for clones).
func (e *Engine) chainSymbols(faults []annotations.Fault) map[string]KernelSymbol {
	var fns []string
	for _, f := range faults {
		for _, fr := range f.CallChain {
			fns = append(fns, fr.FuncName)
		}
	}
	if len(fns) == 0 {
		return nil
	}
	syms, err := e.frameSyms.lookup(fns)
	if err != nil {
		e.log.Warn("call-chain frames not checked for compiler clones", "err", err)
		return nil
	}
	return syms
}

// symbolCache keeps what kallsyms said of the functions it found there (so at most the
// kernel's own symbols): a function's clones do not change while the kernel runs (short of a
// module reloaded with other code). Reading /proc/kallsyms takes about 100 ms on a 2-core host
// and 0.5 s under emulation, too long to pay at a container's Prepare: warm reads it once into
// a symbolIndex in the background, and lookups wait for that. A function the snapshot does not
// have (a module loaded since) is looked up in kallsyms again.
type symbolCache struct {
	mu    sync.Mutex
	syms  map[string]KernelSymbol
	ready chan struct{} // closed when warm is done; nil: not warming
	index *symbolIndex  // warm's snapshot (nil: none)
}

// warm starts reading kallsyms into the cache's index.
func (c *symbolCache) warm() {
	c.ready = make(chan struct{})
	go func() {
		defer close(c.ready)
		f, err := os.Open(kallsymsPath)
		if err != nil {
			return
		}
		defer f.Close()
		if idx, err := readSymbolIndex(f); err == nil {
			c.index = idx
		}
	}()
}

// dropIndex forgets warm's snapshot (about 2 MB). The functions found so far stay known; a new
// one is looked up in kallsyms itself.
func (c *symbolCache) dropIndex() {
	if c.ready != nil {
		<-c.ready
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.index = nil
}

// lookup is LookupKernelSymbols of fns, reading kallsyms only when one of them is not known.
func (c *symbolCache) lookup(fns []string) (map[string]KernelSymbol, error) {
	if c.ready != nil {
		<-c.ready
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.syms == nil {
		c.syms = map[string]KernelSymbol{}
	}
	var missing []string
	for _, fn := range fns {
		if _, ok := c.syms[fn]; ok {
			continue
		}
		if c.index != nil {
			if ks := c.index.lookup(fn); ks.Exists || len(ks.Clones) > 0 {
				c.syms[fn] = ks
				continue
			}
		}
		missing = append(missing, fn)
	}
	if len(missing) > 0 {
		found, err := LookupKernelSymbols(missing...)
		if err != nil {
			return nil, err
		}
		for fn, ks := range found {
			if ks.Exists || len(ks.Clones) > 0 {
				c.syms[fn] = ks
			}
		}
	}
	out := make(map[string]KernelSymbol, len(fns))
	for _, fn := range fns {
		out[fn] = c.syms[fn]
	}
	return out, nil
}

// clonedFrame refuses the first frame of chain on a function that the compiler cloned
// (f.constprop.0, f.isra.0): callers call the clone, so the frame's programs, attached to the
// original, would never see them, and the fault would never fire. syms nil: not checked.
func clonedFrame(chain *chainPlan, syms map[string]KernelSymbol) error {
	if chain == nil {
		return nil
	}
	for i, pf := range chain.frames {
		if ks := syms[pf.key.fn]; len(ks.Clones) > 0 {
			return &predicate.FrameError{Index: i, Field: "funcname",
				Err: fmt.Errorf("%s: %w: %s: a frame on %s would never see them", pf.key.fn, ErrNotInjectable, clonesUsed(ks), pf.key.fn)}
		}
	}
	return nil
}

// chainFrames are the frames of f's call chain that the engine tracks when f hooks fn: the
// chain as written, less a last frame on the hooked function itself without a predicate (that
// one is on the stack whenever the fault point is reached).
func chainFrames(f annotations.Fault, fn string) []annotations.Frame {
	frames := f.CallChain
	if last := len(frames) - 1; last >= 0 && frames[last].FuncName == fn && strings.TrimSpace(frames[last].Predicate) == "" {
		frames = frames[:last]
	}
	return frames
}

func frameKeyOf(fr annotations.Frame) frameKey {
	return frameKey{fn: fr.FuncName, params: strings.TrimSpace(fr.Parameters), pred: strings.TrimSpace(fr.Predicate)}
}

// id is the frame's identity in a chain key: equal for frames the engine shares.
func (k frameKey) id() string { return fmt.Sprintf("%q %q %q;", k.fn, k.params, k.pred) }

// acquireChain gives r the chain of plan (nil: none), loading and attaching the programs of
// frames that no armed rule used yet, and sets r.enc.ChainId.
func (e *Engine) acquireChain(r *rule, plan *chainPlan) error {
	if plan == nil {
		return nil
	}
	c := &e.chains
	if ch := c.chains[plan.key]; ch != nil {
		ch.refs++
		r.chain = ch
		r.enc.ChainId = ch.id
		return e.scopeRule(r)
	}
	id := -1
	for i := 1; i < maxChains; i++ {
		if !c.chainIDs[i] {
			id = i
			break
		}
	}
	if id < 0 {
		return fmt.Errorf("%w: more than %d distinct call chains", ErrLimit, maxChains-1)
	}
	ch := &chainState{key: plan.key, id: uint32(id)}
	undo := func() { e.dropChainFrames(ch) }
	for i, pf := range plan.frames {
		fp, err := e.acquireFrame(pf)
		if err != nil {
			undo()
			return fmt.Errorf("callchain[%d] (%s): %w", i, pf.key.fn, err)
		}
		slot := -1
		for j := 0; j < maxFrameUsers; j++ {
			s := (fp.next + j) % maxFrameUsers
			if fp.users[s] == nil {
				slot = s
				break
			}
		}
		if slot < 0 {
			e.releaseFrame(fp)
			undo()
			return fmt.Errorf("callchain[%d]: %w: frame %s is in more than %d distinct chains", i, ErrLimit, pf.key, maxFrameUsers)
		}
		fp.next = slot + 1
		fp.users[slot] = ch
		u := kfaultFrameUser{Flags: frameUserValid}
		if i > 0 {
			prev := ch.frames[i-1]
			u = kfaultFrameUser{Flags: frameUserValid | frameUserHasPrev, PrevFrame: prev.id, PrevSlot: uint32(ch.slots[i-1]), PrevGen: prev.gen}
		}
		fp.prevs[slot] = u
		ch.frames = append(ch.frames, fp)
		ch.slots = append(ch.slots, slot)
		if err := e.writeFrame(fp); err != nil {
			undo()
			return err
		}
	}
	var v kfaultChain
	v.N = uint32(len(ch.frames))
	for i, fp := range ch.frames {
		v.Frames[i] = kfaultChainFrame{Frame: fp.id, Slot: uint32(ch.slots[i]), Gen: fp.gen}
	}
	if err := c.chainMap.Put(ch.id, v); err != nil {
		undo()
		return fmt.Errorf("write chain %d: %w", ch.id, err)
	}
	c.chainIDs[id] = true
	c.chains[plan.key] = ch
	ch.refs = 1
	r.chain = ch
	r.enc.ChainId = ch.id
	return e.scopeRule(r)
}

// scopeRule adds r's cgroup to the scope of every frame of r's chain, so that their entry
// programs record state for its tasks. Called before r goes into kfault_rules. On error it
// releases r's chain.
func (e *Engine) scopeRule(r *rule) error {
	t := r.owner.target
	for i, fp := range r.chain.frames {
		newCg, newLevel := fp.scope.add(t.ID, t.Level)
		r.scoped = i + 1
		if err := e.writeScope(fp, t.ID, newCg, newLevel, true); err != nil {
			e.releaseChain(r)
			return fmt.Errorf("callchain[%d] (%s): %w", i, fp.key.fn, err)
		}
	}
	return nil
}

// unscopeRule undoes scopeRule (what of it was done).
func (e *Engine) unscopeRule(r *rule) {
	t := r.owner.target
	for i := r.scoped - 1; i >= 0; i-- {
		fp := r.chain.frames[i]
		goneCg, goneLevel := fp.scope.remove(t.ID, t.Level)
		if err := e.writeScope(fp, t.ID, goneCg, goneLevel, false); err != nil {
			e.log.Warn("update frame scope", "frame", fp.key.String(), "cgroup", t.ID, "err", err)
		}
	}
	r.scoped = 0
}

// writeScope writes what a frameScope change turned on or off: the {cgroup, frame} key and the
// frame's level bitmap. A key goes in before its level bit and comes out after it, as for the
// hook maps.
func (e *Engine) writeScope(fp *frameProg, cgroup uint64, key, level, on bool) error {
	c := &e.chains
	k := kfaultFrameScopeKey{Cgroup: cgroup, Frame: fp.id}
	if on && key {
		if err := c.frameScope.Put(k, uint32(fp.scope.cgroups[cgroup])); err != nil {
			return fmt.Errorf("write frame scope of cgroup %d: %w", cgroup, err)
		}
	}
	if level {
		if err := c.frameLevels.Put(fp.id, fp.scope.bits()); err != nil {
			return fmt.Errorf("write frame levels: %w", err)
		}
	}
	if !on && key {
		if err := c.frameScope.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete frame scope of cgroup %d: %w", cgroup, err)
		}
	}
	return nil
}

// releaseChain drops r's reference to its chain (idempotent); the last one frees the chain and
// releases its frames. Call it after the rule is out of kfault_rules.
func (e *Engine) releaseChain(r *rule) {
	ch := r.chain
	if ch == nil {
		return
	}
	e.unscopeRule(r)
	r.chain = nil
	ch.refs--
	if ch.refs > 0 {
		return
	}
	c := &e.chains
	if err := c.chainMap.Put(ch.id, kfaultChain{}); err != nil {
		e.log.Warn("clear chain", "chain", ch.id, "err", err)
	}
	delete(c.chains, ch.key)
	c.chainIDs[ch.id] = false
	e.dropChainFrames(ch)
}

// dropChainFrames frees ch's user slots and releases its frames.
func (e *Engine) dropChainFrames(ch *chainState) {
	for i, fp := range ch.frames {
		s := ch.slots[i]
		fp.users[s] = nil
		fp.prevs[s] = kfaultFrameUser{}
		// Also for the last user: an idle frame stays attached (idle.go).
		if err := e.writeFrame(fp); err != nil {
			e.log.Warn("update frame", "frame", fp.key.String(), "err", err)
		}
		e.releaseFrame(fp)
	}
	ch.frames, ch.slots = nil, nil
}

// acquireFrame returns the frame of pf, loading and attaching its programs if it has none (an
// idle one is taken as it is).
func (e *Engine) acquireFrame(pf plannedFrame) (*frameProg, error) {
	c := &e.chains
	if fp := c.frames[pf.key]; fp != nil {
		if fp.refs == 0 { // idle: a new generation, as a new load would have
			fp.idle.stop()
			c.gen++
			if c.gen == 0 {
				c.gen = 1
			}
			fp.gen = c.gen
			if err := e.writeFrame(fp); err != nil {
				return nil, err
			}
		}
		fp.refs++
		return fp, nil
	}
	id := firstFree(c.frameIDs[:])
	if id < 0 && e.releaseIdleFrame() {
		id = firstFree(c.frameIDs[:])
	}
	if id < 0 {
		return nil, fmt.Errorf("%w: more than %d distinct call-chain frames", ErrLimit, maxFrameIDs)
	}
	c.gen++
	if c.gen == 0 {
		c.gen = 1
	}
	fp := &frameProg{key: pf.key, id: uint32(id), gen: c.gen}
	// The new generation before the programs run: whatever a task kept from an earlier frame
	// with this id reads as stale. And an empty scope: a reused id starts with no levels.
	if err := e.writeFrame(fp); err != nil {
		return nil, err
	}
	if err := c.frameLevels.Put(fp.id, uint64(0)); err != nil {
		return nil, fmt.Errorf("write frame levels: %w", err)
	}
	start := time.Now()
	if err := e.loadFrame(fp, pf.prog); err != nil {
		return nil, err
	}
	c.frameIDs[id] = true
	c.frames[pf.key] = fp
	fp.refs = 1
	e.log.Info("frame attached", "function", pf.key.fn, "predicate", pf.key.pred, "frame_id", id,
		"took", time.Since(start).Round(time.Microsecond).String())
	return fp, nil
}

func (e *Engine) releaseFrame(fp *frameProg) {
	fp.refs--
	if fp.refs > 0 {
		return
	}
	c := &e.chains
	e.retire(&fp.idle, func() bool { return fp.refs == 0 && c.frames[fp.key] == fp }, func() { e.detachFrame(fp) })
}

func (e *Engine) writeFrame(fp *frameProg) error {
	v := kfaultFrameInfo{Gen: fp.gen, Users: fp.prevs}
	for s, u := range fp.prevs {
		if u.Flags&frameUserValid != 0 && u.Flags&frameUserHasPrev == 0 {
			v.First |= 1 << s
		}
	}
	if err := e.chains.frameMap.Put(fp.id, v); err != nil {
		return fmt.Errorf("write frame %s: %w", fp.key, err)
	}
	return nil
}

// loadFrame loads fp's fentry and fexit programs, with the predicate spliced into the entry
// program, and attaches them: exit first, so that no entry the state records lacks its exit.
func (e *Engine) loadFrame(fp *frameProg, pred *predicate.Program) error {
	const entry, exit = "kfault_frame_entry", "kfault_frame_exit"
	spec := e.spec.Copy()
	for n := range spec.Programs {
		if n != entry && n != exit {
			delete(spec.Programs, n)
		}
	}
	if spec.Programs[entry] == nil || spec.Programs[exit] == nil {
		return fmt.Errorf("frame programs missing from the embedded object")
	}
	for _, n := range []string{entry, exit} {
		spec.Programs[n].AttachTo = fp.key.fn
	}
	if pred != nil {
		insns, err := predicate.Splice(spec.Programs[entry].Instructions, pred)
		if err != nil {
			return err
		}
		spec.Programs[entry].Instructions = insns
	}
	if err := spec.Variables["frame_id"].Set(fp.id); err != nil {
		return fmt.Errorf("set frame_id: %w", err)
	}
	coll, err := e.loadCollection(spec)
	if err != nil {
		return fmt.Errorf("load frame programs for %s: %w", fp.key.fn, err)
	}
	fp.coll = coll
	for _, a := range []struct {
		name string
		typ  ebpf.AttachType
	}{{exit, ebpf.AttachTraceFExit}, {entry, ebpf.AttachTraceFEntry}} {
		l, err := link.AttachTracing(link.TracingOptions{Program: coll.Programs[a.name], AttachType: a.typ})
		if err != nil {
			e.closeFrame(fp)
			return fmt.Errorf("attach %s to %s: %w", a.name, fp.key.fn, err)
		}
		fp.links = append(fp.links, l)
	}
	return nil
}

// closeFrame closes fp's links, entry first (so that every recorded entry still gets its
// exit), then its programs.
func (e *Engine) closeFrame(fp *frameProg) error {
	var errs []error
	for i := len(fp.links) - 1; i >= 0; i-- {
		errs = append(errs, fp.links[i].Close())
	}
	fp.links = nil
	if fp.coll != nil {
		fp.coll.Close()
		fp.coll = nil
	}
	return errors.Join(errs...)
}

func (e *Engine) detachFrame(fp *frameProg) {
	if err := e.closeFrame(fp); err != nil {
		e.log.Warn("detach frame", "frame", fp.key.String(), "err", err)
	}
	c := &e.chains
	if c.frames[fp.key] == fp {
		delete(c.frames, fp.key)
		c.frameIDs[fp.id] = false
		e.log.Info("frame detached", "function", fp.key.fn, "frame_id", fp.id)
	}
}

// closeChains detaches whatever frames are left (Close).
func (e *Engine) closeChains() {
	for _, fp := range e.chains.frames {
		e.detachFrame(fp)
	}
}
