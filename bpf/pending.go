package bpf

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Arming by cgroup path (kfault_pending.bpf.h): for a container whose cgroup does not exist yet,
// ArmPending arms its plan under a placeholder cgroup id and has the cgroup_mkdir program copy
// the placeholder's map entries to the cgroup's id in the mkdir itself. Retarget then moves the
// key to the real cgroup once it is known. So a fault is in place before the runtime can put a
// task into the cgroup, whoever wins the race between kfault's events and the container's start.

// Fixed capacities; MAX_* and MAX_PENDING_PATH in kfault_pending.bpf.h.
const (
	maxPending     = 1024
	pendingPathLen = 256
)

// placeholderBit marks placeholder cgroup ids: a kernfs id is an inode number (with a generation
// in the upper 32 bits on 32-bit kernels only), so it never has the top bit set.
const placeholderBit = uint64(1) << 63

// pendingSet is the engine's arming-by-path bookkeeping (guarded by Engine.mu).
type pendingSet struct {
	m     *ebpf.Map // kfault_pending
	made  *ebpf.Map // kfault_pending_made
	coll  *ebpf.Collection
	link  link.Link
	next  uint64            // the last placeholder number handed out
	paths map[string]string // pending path -> key: the keys armed by path now
	idle  idleTimer         // the program's release, while no key is armed by path
}

// Retarget's refusals: a key that ArmPending did not arm (or that was retargeted already), and
// a cgroup the mkdir program did not arm (made before the path was armed: its tasks may have
// run, and exec'd, before any rule was there).
var (
	ErrNotPending = errors.New("not armed by path")
	ErrMadeBefore = errors.New("the cgroup was made before it was armed by path")
)

// CgroupPath is the path of cgroup dir relative to the cgroup2 root, as the kernel names it
// (cgroup_mkdir's path): "/default/abc".
func CgroupPath(cgroupsPath string) (Target, error) {
	dir, err := ExpandCgroupsPath("/", cgroupsPath)
	if err != nil {
		return Target{}, fmt.Errorf("%w: %v", ErrInvalidTarget, err)
	}
	dir = path.Clean(dir)
	if len(dir) >= pendingPathLen {
		return Target{}, fmt.Errorf("%w: cgroup path %s is %d bytes, at most %d can be armed before the cgroup exists", ErrInvalidTarget, dir, len(dir), pendingPathLen-1)
	}
	level := strings.Count(dir, "/")
	if level < 1 || level > maxLevel {
		return Target{}, fmt.Errorf("%w: cgroup path %s: level %d outside 1..%d", ErrInvalidTarget, dir, level, maxLevel)
	}
	return Target{Path: dir, Level: level}, nil
}

// ArmPending arms plan under key for the cgroup that will be made at t.Path (a CgroupPath:
// relative to the cgroup2 root, as the kernel names it; t.ID 0). Until Retarget, the rules are
// in the maps under a placeholder id, copied to the cgroup's id by the kernel when it is made.
func (e *Engine) ArmPending(key string, t Target, plan Plan, opts ArmOptions) error {
	if t.ID != 0 || !strings.HasPrefix(t.Path, "/") || len(t.Path) >= pendingPathLen || t.Level < 1 || t.Level > maxLevel {
		return fmt.Errorf("arm %s by path: %w: %s", key, ErrInvalidTarget, t)
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
	if other, ok := e.pending.paths[t.Path]; ok && other != key {
		return fmt.Errorf("arm %s by path: %w: %s is already armed by path for %s", key, ErrInvalidTarget, t.Path, other)
	}
	if len(e.pending.paths) >= maxPending {
		return fmt.Errorf("arm %s by path: %w: more than %d containers armed before their cgroup exists", key, ErrLimit, maxPending)
	}
	// The mkdir and exec programs first, then the entry with the exec boundary only: from here
	// on a cgroup made at the path is in the boundary's scope, however long the arm takes.
	if err := e.attachPending(); err != nil {
		return fmt.Errorf("arm %s by path: %w", key, err)
	}
	if opts.ExecBoundary && e.exec.coll == nil {
		if err := e.attachExec(); err != nil {
			e.log.Warn("exec boundary unavailable", "key", key, "err", err)
			opts.ExecBoundary = false
		}
	}
	e.pending.next++
	t.ID = placeholderBit | e.pending.next
	pk := pendingKey(t.Path)
	v := kfaultPending{Placeholder: t.ID, Level: uint32(t.Level)}
	if opts.ExecBoundary {
		v.Exec = 1
	}
	fail := func(err error) error {
		if ak := e.armed[key]; ak != nil && ak.target.ID == t.ID {
			e.disarmLocked(ak)
		}
		_ = e.pending.m.Delete(pk)
		e.dropMade(t.ID, v, 0)
		if len(e.exec.scope.cgroups) == 0 {
			e.detachExec()
		}
		e.detachPendingIfIdle()
		return err
	}
	if err := e.pending.m.Put(pk, v); err != nil {
		return fail(fmt.Errorf("arm %s by path: write kfault_pending: %w", key, err))
	}
	if err := e.armLocked(key, t, plan, opts, since); err != nil {
		return fail(err)
	}
	ak := e.armed[key]
	for _, r := range ak.rules {
		for _, h := range r.hooks {
			v.Hooks |= 1 << h.id
		}
		if r.chain != nil {
			for _, fp := range r.chain.frames[:r.scoped] {
				v.Frames |= 1 << fp.id
			}
		}
	}
	if err := e.pending.m.Put(pk, v); err != nil {
		return fail(fmt.Errorf("arm %s by path: write kfault_pending: %w", key, err))
	}
	ak.pendingPath = t.Path
	if e.pending.paths == nil {
		e.pending.paths = map[string]string{}
	}
	e.pending.paths[t.Path] = key
	// The cgroup may have been made while the rules were loading: the kernel gave it the exec
	// boundary then; give it the rules now.
	if id, ok := e.madeID(t.ID); ok {
		made := Target{Path: t.Path, ID: id, Level: t.Level}
		if err := e.moveKey(ak, made); err != nil {
			return fail(fmt.Errorf("arm %s by path: %w", key, err))
		}
		e.log.Info("armed by path after the cgroup was made", "key", key, "cgroup", t.Path, "cgroup_id", id, "level", t.Level, "faults", len(ak.rules))
		return nil
	}
	e.log.Info("armed by path", "key", key, "cgroup", t.Path, "placeholder", t.ID, "level", t.Level, "faults", len(ak.rules))
	return nil
}

// madeID is the id of the cgroup the kernel saw made for placeholder (kfault_pending_made).
func (e *Engine) madeID(placeholder uint64) (uint64, bool) {
	var id uint64
	if err := e.pending.made.Lookup(placeholder, &id); err != nil {
		return 0, false
	}
	return id, true
}

// Retarget moves key's rules, counters and call-chain state to the cgroup t, as they are: no
// count is lost and no rule is off in between. It is how a key armed by path (ArmPending) takes
// its cgroup's id once the cgroup exists; it refuses (ErrMadeBefore) a cgroup that the kernel
// did not arm as it was made, and changes nothing then.
func (e *Engine) Retarget(key string, t Target) error {
	if t.ID == 0 || t.ID&placeholderBit != 0 {
		return fmt.Errorf("retarget %s: %w: cgroup id %d (%q)", key, ErrInvalidTarget, t.ID, t.Path)
	}
	if t.Level < 0 || t.Level > maxLevel {
		return fmt.Errorf("retarget %s: %w: level %d outside 0..%d", key, ErrInvalidTarget, t.Level, maxLevel)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	ak := e.armed[key]
	if ak == nil {
		return fmt.Errorf("retarget %s: %w", key, ErrNotArmed)
	}
	if ak.pendingPath == "" {
		return fmt.Errorf("retarget %s: %w", key, ErrNotPending)
	}
	if ak.target.ID != t.ID {
		// Not moved at ArmPending: the kernel must have armed t as it was made.
		if id, ok := e.madeID(ak.target.ID); !ok || id != t.ID {
			return fmt.Errorf("retarget %s: %w (%s, id %d)", key, ErrMadeBefore, t.Path, t.ID)
		}
		if err := e.moveKey(ak, t); err != nil {
			return fmt.Errorf("retarget %s: %w", key, err)
		}
	}
	ak.target.Path = t.Path
	e.dropPending(ak, t.ID)
	e.log.Info("retargeted", "key", key, "cgroup", t.Path, "cgroup_id", t.ID, "level", t.Level)
	return nil
}

// moveKey moves ak's rules from its target to t (see Retarget); on error ak is as it was.
func (e *Engine) moveKey(ak *armedKey, t Target) error {
	old := ak.target
	// The new cgroup first, as Arm would (exec scope, frame scopes, rule sets), then the old one
	// out: in between, both hold the same rules with the same counters.
	if ak.execScoped {
		if err := e.scopeExec(t); err != nil {
			return err
		}
	}
	var done []*rule
	for _, r := range ak.rules {
		if !r.active {
			continue
		}
		if err := e.placeRule(r, t); err != nil {
			for _, d := range done {
				e.unplaceRule(d, t)
			}
			if ak.execScoped {
				e.unscopeExec(t)
			}
			return fmt.Errorf("fault %d: %w", r.index, err)
		}
		done = append(done, r)
	}
	for _, r := range done {
		e.unplaceRule(r, old)
		e.sampleOwners[r.enc.Counter].cgroup = t.ID
	}
	if ak.execScoped {
		e.unscopeExec(old)
	}
	ak.target = t
	return nil
}

// placeRule adds the active rule r, already armed on its owner's target, to cgroup t too: its
// frames' scope, then its rule sets and levels.
func (e *Engine) placeRule(r *rule, t Target) error {
	if r.chain != nil {
		for i, fp := range r.chain.frames[:r.scoped] {
			newCg, newLevel := fp.scope.add(t.ID, t.Level)
			if err := e.writeScope(fp, t.ID, newCg, newLevel, true); err != nil {
				for _, back := range r.chain.frames[:i+1] {
					goneCg, goneLevel := back.scope.remove(t.ID, t.Level)
					_ = e.writeScope(back, t.ID, goneCg, goneLevel, false)
				}
				return fmt.Errorf("callchain[%d] (%s): %w", i, fp.key.fn, err)
			}
		}
	}
	for i, h := range r.hooks {
		sk := setKey{cgroup: t.ID, hook: h.id}
		set := append(e.sets[sk], r)
		if len(set) > maxSlots {
			err := fmt.Errorf("%w: more than %d faults on %s for one cgroup", ErrLimit, maxSlots, h.fn)
			e.unplaceHooks(r, t, r.hooks[:i])
			return err
		}
		if err := e.writeSet(sk, set); err != nil {
			e.unplaceHooks(r, t, r.hooks[:i])
			return err
		}
		e.sets[sk] = set
		h.levels[t.Level]++
		if h.levels[t.Level] == 1 {
			if err := e.writeLevels(h); err != nil {
				e.unplaceHooks(r, t, r.hooks[:i+1])
				return err
			}
		}
	}
	return nil
}

// unplaceRule takes r out of cgroup t's rule sets and levels, then out of its frames' scope:
// placeRule backwards. The rule stays armed elsewhere (its counter and chain are kept).
func (e *Engine) unplaceRule(r *rule, t Target) {
	e.unplaceHooks(r, t, r.hooks)
	if r.chain != nil {
		for i := r.scoped - 1; i >= 0; i-- {
			fp := r.chain.frames[i]
			goneCg, goneLevel := fp.scope.remove(t.ID, t.Level)
			if err := e.writeScope(fp, t.ID, goneCg, goneLevel, false); err != nil {
				e.log.Warn("update frame scope", "frame", fp.key.String(), "cgroup", t.ID, "err", err)
			}
		}
	}
}

// unplaceHooks takes r out of the rule sets of cgroup t for hooks (levels first, as removeRule).
func (e *Engine) unplaceHooks(r *rule, t Target, hooks []*hook) {
	for _, h := range hooks {
		sk := setKey{cgroup: t.ID, hook: h.id}
		if !containsRule(e.sets[sk], r) {
			continue
		}
		h.levels[t.Level]--
		if h.levels[t.Level] == 0 {
			if err := e.writeLevels(h); err != nil {
				e.log.Warn("update levels", "hook", h.fn, "err", err)
			}
		}
		set := make([]*rule, 0, len(e.sets[sk]))
		for _, x := range e.sets[sk] {
			if x != r {
				set = append(set, x)
			}
		}
		if err := e.writeSet(sk, set); err != nil {
			e.log.Warn("update rules", "hook", h.fn, "cgroup", t.ID, "err", err)
		}
		if len(set) == 0 {
			delete(e.sets, sk)
		} else {
			e.sets[sk] = set
		}
	}
}

func containsRule(set []*rule, r *rule) bool {
	for _, x := range set {
		if x == r {
			return true
		}
	}
	return false
}

// dropPending ends ak's arming by path: it deletes its kfault_pending and kfault_pending_made
// entries, and what the mkdir program copied to a cgroup other than keep (a cgroup made at the
// path that the engine did not take: made before the arm, or made again after an rmdir), then
// detaches the program when no key is pending any more. ak.target is still the placeholder or
// already keep.
func (e *Engine) dropPending(ak *armedKey, keep uint64) {
	k := pendingKey(ak.pendingPath)
	var v kfaultPending
	if err := e.pending.m.Lookup(k, &v); err == nil {
		if err := e.pending.m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			e.log.Warn("delete pending path", "cgroup", ak.pendingPath, "err", err)
		}
		e.dropMade(v.Placeholder, v, keep)
	}
	delete(e.pending.paths, ak.pendingPath)
	ak.pendingPath = ""
	e.detachPendingIfIdle()
}

// dropMade deletes placeholder's kfault_pending_made entry and, unless it is keep, the entries
// the mkdir program copied to the cgroup it names (v says which), except those the engine
// itself keeps there.
func (e *Engine) dropMade(placeholder uint64, v kfaultPending, keep uint64) {
	cg, ok := e.madeID(placeholder)
	if !ok {
		return
	}
	if err := e.pending.made.Delete(placeholder); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		e.log.Warn("delete made cgroup", "cgroup", cg, "err", err)
	}
	if cg == keep {
		return
	}
	for h := uint32(0); h < maxHooks; h++ {
		if v.Hooks&(1<<h) == 0 || len(e.sets[setKey{cgroup: cg, hook: h}]) > 0 {
			continue
		}
		if err := e.rules.Delete(kfaultRuleKey{Cgroup: cg, Hook: h}); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			e.log.Warn("delete copied rules", "cgroup", cg, "err", err)
		}
	}
	if v.Exec != 0 && e.exec.scope.cgroups[cg] == 0 {
		for _, m := range []*ebpf.Map{e.exec.scopeMap, e.exec.runtimeNS} {
			if err := m.Delete(cg); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				e.log.Warn("delete copied exec scope", "cgroup", cg, "err", err)
			}
		}
	}
	if !e.chainsOn {
		return
	}
	for id := uint32(0); int(id) < maxFrameIDs; id++ {
		if v.Frames&(1<<id) == 0 || e.frameScoped(id, cg) {
			continue
		}
		if err := e.chains.frameScope.Delete(kfaultFrameScopeKey{Cgroup: cg, Frame: id}); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			e.log.Warn("delete copied frame scope", "cgroup", cg, "err", err)
		}
	}
}

// pendingKey is the kfault_pending key of a cgroup path: its bytes, NUL-padded.
func pendingKey(p string) kfaultPendingKey {
	var k kfaultPendingKey
	for i := 0; i < len(p) && i < pendingPathLen-1; i++ {
		k.Path[i] = int8(p[i])
	}
	return k
}

// attachPending loads and attaches the cgroup_mkdir program, unless it is attached.
func (e *Engine) attachPending() error {
	e.pending.idle.stop()
	if e.pending.coll != nil {
		return nil
	}
	const name = "kfault_cgroup_mkdir"
	start := time.Now()
	spec := e.spec.Copy()
	for n := range spec.Programs {
		if n != name {
			delete(spec.Programs, n)
		}
	}
	if spec.Programs[name] == nil {
		return fmt.Errorf("program %s missing from the embedded object", name)
	}
	coll, err := e.loadCollection(spec)
	if err != nil {
		return fmt.Errorf("load the cgroup_mkdir program: %w", err)
	}
	l, err := link.AttachTracing(link.TracingOptions{Program: coll.Programs[name], AttachType: ebpf.AttachTraceRawTp})
	if err != nil {
		coll.Close()
		return fmt.Errorf("attach the cgroup_mkdir program: %w", err)
	}
	e.pending.coll, e.pending.link = coll, l
	e.log.Info("cgroup_mkdir program attached", "took", time.Since(start).Round(time.Microsecond).String())
	return nil
}

// detachPendingIfIdle retires the cgroup_mkdir program when no key is armed by path.
func (e *Engine) detachPendingIfIdle() {
	if x := &e.pending; len(x.paths) == 0 && x.coll != nil {
		e.retire(&x.idle, func() bool { return len(x.paths) == 0 }, e.detachPending)
	}
}

func (e *Engine) detachPending() {
	x := &e.pending
	if x.link != nil {
		if err := x.link.Close(); err != nil {
			e.log.Warn("detach cgroup_mkdir program", "err", err)
		}
		x.link = nil
	}
	if x.coll != nil {
		x.coll.Close()
		x.coll = nil
	}
}

// frameScoped says whether the engine keeps cgroup cg in the scope of the frame with id.
func (e *Engine) frameScoped(id uint32, cg uint64) bool {
	for _, fp := range e.chains.frames {
		if fp.id == id && fp.scope.cgroups[cg] > 0 {
			return true
		}
	}
	return false
}
