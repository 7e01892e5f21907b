package plugin

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/kfault/kfault/annotations"
	"github.com/kfault/kfault/bpf"
)

// Every way a container reaches kfault (NRI CreateContainer, StartContainer and Synchronize,
// and containerd's event stream for containers outside CRI) goes through admitContainer, with
// a phase that says what that way may do.

// container is what a lifecycle event tells of a container.
type container struct {
	key                         string // state and engine key
	id                          ident
	podAnnotations, annotations map[string]string
	pid                         int
	cgroupsPath                 string
	// runtime: the pod's CRI runtime handler (NRI) or the container's containerd runtime name
	// (events); empty when unknown (the default runtime). Checked against sandboxRuntimes.
	runtime   string
	eventTime time.Time // when the containerd event was published (zero for NRI)
	// who decides the faults' select rules: the pod UID and pod name (NRI), or the
	// container ID and name (containerd events, which know no pod).
	who annotations.Target
	// syncToken: armed in the background after a Synchronize (see armLater); the arm happens
	// only if the key's token is still this one (no stop, remove or new synchronize since).
	syncToken uint64
}

// phase is one way into admission.
type phase struct {
	name string
	// blockable: a refusal can fail the request (strict mode). Only NRI's create and start
	// can: nothing can refuse a container that already runs.
	blockable bool
	// arm after admitting; otherwise the plan is kept for the start (CreateContainer).
	arm bool
	// carryCounts: continue from the state's counts and durations (the container ran
	// before this plugin process saw it).
	carryCounts bool
	// execBoundary: the container's process has not exec'd its program yet (the runtime's
	// init is still doing its setup in the cgroup): arm with bpf.ArmOptions.ExecBoundary, so
	// that faults hit the tasks that exec in the container from now on and what they fork,
	// not the runtime's setup. The other arming phases find the container running and fault
	// every task in it (see docs/runtimes.md).
	execBoundary bool
	// byPath: the container's cgroup does not exist yet (containerd's container create, before
	// its task): arm by the cgroup's path, so that the kernel arms the cgroup as it is made
	// (bpf.Engine.ArmPending), with the exec boundary. The task's own event then finds the
	// cgroup armed and only records its id.
	byPath bool
}

var (
	phaseCreate          = phase{name: "create", blockable: true}
	phaseStart           = phase{name: "start", blockable: true, arm: true, execBoundary: true}
	phaseSynchronize     = phase{name: "synchronize", arm: true, carryCounts: true}
	phaseContainerCreate = phase{name: "container create", arm: true, execBoundary: true, byPath: true}
	phaseTaskCreate      = phase{name: "task create", arm: true, carryCounts: true}
	phaseSync            = phase{name: "sync", arm: true, carryCounts: true}
)

// admitContainer runs the admission steps that every phase shares: the namespace, misspelt
// kfault keys, the effective annotation, parsing and preparing the faults, deciding their
// select rules; then arms the selected faults (or records that none was selected). It returns
// the error to fail the request with: only in strict mode, only in blockable phases.
func (p *Plugin) admitContainer(c container, ph phase) error {
	value, annotationKey, ok := annotations.Effective(c.id.Container, c.podAnnotations, c.annotations)
	// A misspelt kfault annotation key would otherwise be ignored without a word.
	keyErr := keyErrors(c.podAnnotations, c.annotations)
	if !ok && keyErr == nil {
		return nil // not ours
	}
	if err := p.Config().NamespaceAllowed(c.id.Namespace); err != nil {
		if errors.Is(err, ErrNoNamespaceAllowed) {
			p.log.Info("not injected", append(c.id.logAttrs(), "annotation", annotationKey, "phase", ph.name, "reason", err.Error())...)
			return nil
		}
		return p.reject(c.id, annotationKey, ph.name, &RejectError{Err: err}, ph.blockable)
	}
	// A sandboxed runtime's container runs on a kernel of its own: refused in every phase.
	if err := p.Config().RuntimeAllowed(c.runtime); err != nil {
		return p.reject(c.id, annotationKey, ph.name, &RejectError{Annotation: annotationKey, Err: err}, ph.blockable)
	}
	if keyErr != nil {
		if rerr := p.reject(c.id, "", ph.name, &RejectError{Err: keyErr}, ph.blockable); rerr != nil {
			return rerr
		}
	}
	if !ok {
		return nil
	}
	pp, prepared := p.takePrepared(c.key, value)
	var prepareTime time.Duration // parsing and Prepare, when done here (for the armed line)
	if prepared {
		// The config may have changed since the plan was made (NRI Configure).
		cfg := p.Config()
		if err := cfg.checkPredicates(c.id.Namespace, pp.plan.Faults); err != nil {
			return p.reject(c.id, annotationKey, ph.name, &RejectError{Annotation: annotationKey, Err: err}, ph.blockable)
		}
		if err := cfg.checkFrames(pp.plan.Faults); err != nil {
			return p.reject(c.id, annotationKey, ph.name, &RejectError{Annotation: annotationKey, Err: err}, ph.blockable)
		}
	} else {
		var err error
		start := time.Now()
		if pp.plan, pp.selection, err = p.admit(c.id, annotationKey, value, c.who); err != nil {
			return p.reject(c.id, annotationKey, ph.name, err, ph.blockable)
		}
		prepareTime = time.Since(start)
	}
	if !ph.arm {
		// Creation: refuse early a container that its namespace's quotas cannot take now (the
		// start, under the lock, has the last word). Only when the refusal can fail the
		// creation (strict): in lenient mode the start decides, and logs it once.
		if sel := selectedPlan(pp); ph.blockable && p.Config().Mode == Strict && len(sel.Faults) > 0 {
			if err := p.checkQuota(c.id.Namespace, c.key, sel.Resources()); err != nil {
				return p.reject(c.id, annotationKey, ph.name, &RejectError{Err: err}, ph.blockable)
			}
		}
		p.keepPrepared(c.key, value, pp.plan, pp.selection)
		return nil
	}
	r := armRequest{
		key: c.key, id: c.id, annotationKey: annotationKey, plan: pp.plan,
		pid: c.pid, cgroupsPath: c.cgroupsPath, carryCounts: ph.carryCounts, eventTime: c.eventTime,
		execBoundary: ph.execBoundary, byPath: ph.byPath, prepareTime: prepareTime,
		syncToken: c.syncToken,
	}
	if hasSelect(pp.selection) {
		r.selection = pp.selection
		selected := annotations.Selected(pp.selection)
		for _, d := range pp.selection {
			if !d.Selected {
				r.notSelected = append(r.notSelected, pp.plan.Faults[d.Fault])
			}
		}
		r.plan = pp.plan.Only(selected)
		if len(selected) == 0 {
			p.notSelected(r)
			return nil
		}
	}
	err := p.arm(r)
	var rejected *RejectError
	if errors.As(err, &rejected) {
		return p.reject(c.id, annotationKey, ph.name, err, ph.blockable)
	}
	if err != nil && ph.blockable && p.Config().Mode == Strict {
		return err
	}
	return nil
}

// selectedPlan is the plan of the faults that their select rules chose (all of them when
// none has a select rule).
func selectedPlan(pp preparedPlan) bpf.Plan {
	if !hasSelect(pp.selection) {
		return pp.plan
	}
	return pp.plan.Only(annotations.Selected(pp.selection))
}

// hasSelect reports whether some fault has a select rule.
func hasSelect(ds []annotations.Decision) bool {
	for _, d := range ds {
		if d.Rule != "" {
			return true
		}
	}
	return false
}

// RejectError is a refusal to honour an annotation: a bad spec or a disallowed
// namespace. Its message is what crictl / kubectl describe show in strict mode.
type RejectError struct {
	Annotation string // the key
	Err        error
}

func (e *RejectError) Error() string {
	if e.Annotation == "" {
		return "kfault: " + e.Err.Error()
	}
	return "kfault: annotation " + e.Annotation + ": " + e.Err.Error()
}

func (e *RejectError) Unwrap() error { return e.Err }

// admit parses the annotation value, prepares all its faults for the kernel (a fault that
// its select rule leaves out is checked too, so that every pod of a template is refused
// alike) and decides their select rules for who.
func (p *Plugin) admit(id ident, annotationKey, value string, who annotations.Target) (bpf.Plan, []annotations.Decision, error) {
	faults, err := annotations.Parse(value)
	if err != nil {
		return bpf.Plan{}, nil, &RejectError{Annotation: annotationKey, Err: err}
	}
	// Before Prepare: a predicate in a namespace that may not have any is not even compiled.
	if err := p.Config().checkPredicates(id.Namespace, faults); err != nil {
		return bpf.Plan{}, nil, &RejectError{Annotation: annotationKey, Err: err}
	}
	// Likewise a frame on a function the node denies (frames.deny, frames.denyExtra).
	if err := p.Config().checkFrames(faults); err != nil {
		return bpf.Plan{}, nil, &RejectError{Annotation: annotationKey, Err: err}
	}
	for _, f := range faults {
		if len(f.Headers) > 0 {
			p.headersNoted.Do(func() {
				p.log.Info("note: the headers field is accepted for KernelChaos compatibility and not needed: kfault reads types from the kernel's BTF",
					append(id.logAttrs(), "annotation", annotationKey, "headers", len(f.Headers))...)
			})
			break
		}
	}
	plan, err := p.engine.Prepare(faults)
	if err != nil {
		return bpf.Plan{}, nil, &RejectError{Annotation: annotationKey, Err: err}
	}
	selection, err := annotations.Decide(faults, who)
	if err != nil {
		return bpf.Plan{}, nil, &RejectError{Annotation: annotationKey, Err: err}
	}
	return plan, selection, nil
}

// maxPrepared bounds the plans kept between CreateContainer and StartContainer (containers
// created and never started would otherwise pile up).
const maxPrepared = 1024

// preparedPlan is a plan made at CreateContainer (every fault of the annotation), with the
// annotation text it came from and the decisions of its select rules.
type preparedPlan struct {
	value     string
	plan      bpf.Plan
	selection []annotations.Decision
}

// keepPrepared keeps the plan of a created container for its start.
func (p *Plugin) keepPrepared(containerID, value string, plan bpf.Plan, selection []annotations.Decision) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.prepared) >= maxPrepared {
		clear(p.prepared) // StartContainer prepares again: slower, not wrong
	}
	p.prepared[containerID] = preparedPlan{value, plan, selection}
}

// takePrepared returns (and forgets) the plan kept for a container, if it was made from value.
func (p *Plugin) takePrepared(containerID, value string) (preparedPlan, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pp, ok := p.prepared[containerID]
	delete(p.prepared, containerID)
	if !ok || pp.value != value {
		return preparedPlan{}, false
	}
	return pp, true
}

// keyErrors reports annotation keys in kfault's domain that kfault does not understand
// (faults.kfault.dev/containers.app, faults.kfault.io, ...).
func keyErrors(sets ...map[string]string) error {
	var errs []string
	for _, m := range sets {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if _, ours, err := annotations.ParseKey(k); ours && err != nil {
				errs = append(errs, err.Error())
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return errors.New(strings.Join(errs, "; "))
}

// reject logs a refusal. It returns the error to fail the request with in strict mode,
// nil in lenient mode (or when the caller cannot fail anything: blockable false).
func (p *Plugin) reject(id ident, annotationKey, phase string, err error, blockable bool) error {
	mode := p.Config().Mode
	attrs := append(id.logAttrs(), "annotation", annotationKey, "phase", phase, "mode", string(mode), "error", err.Error())
	if !blockable {
		attrs = append(attrs, "note", "non-CRI containers cannot be blocked; running without the fault")
	}
	p.log.Warn("rejected", attrs...)
	if mode == Strict && blockable {
		return err
	}
	return nil
}

// armedPlan is what a key armed in the engine holds: the plan, and for the quotas its
// namespace and the engine resources the plan takes.
type armedPlan struct {
	plan      bpf.Plan
	namespace string
	res       bpf.Resources
	// byPath: armed by cgroup path before the cgroup existed (armRequest.byPath); the
	// task's arm then moves it to the cgroup (retargetLocked) instead of arming anew.
	byPath bool
}

// armRequest is everything arm needs.
type armRequest struct {
	key           string
	id            ident
	annotationKey string // which annotation key the faults came from
	plan          bpf.Plan
	pid           int
	cgroupsPath   string
	// carryCounts: continue from the counts in the state entry (same annotation text).
	carryCounts bool
	// eventTime: when the containerd event that triggered this was published.
	eventTime time.Time
	// execBoundary: arm with bpf.ArmOptions.ExecBoundary (phase.execBoundary).
	execBoundary bool
	// byPath: the cgroup does not exist yet; arm by its path (phase.byPath).
	byPath bool
	// prepareTime: how long parsing and Prepare took, when this request did them.
	prepareTime time.Duration
	// selection: the decisions of the annotation's select rules (nil when it has none);
	// plan then holds the selected faults only, and notSelected the others.
	selection   []annotations.Decision
	notSelected annotations.Faults
	// syncToken: see container.syncToken.
	syncToken uint64
}

// stillWantedLocked reports whether r may go ahead: an arm left by a Synchronize to
// armLater is dropped when the container was stopped or removed, or synchronized again,
// since. It forgets the token. p.mu must be held.
func (p *Plugin) stillWantedLocked(r armRequest) bool {
	if r.syncToken == 0 {
		return true
	}
	if p.syncLater[r.key] != r.syncToken {
		return false
	}
	delete(p.syncLater, r.key)
	return true
}

// arm resolves the cgroup and arms the rule, then records it. A rule already armed
// under the same key is disarmed first. A *RejectError is a refusal (a quota) that the
// caller reports as such; other errors are arming failures, already logged.
func (p *Plugin) arm(r armRequest) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.armLocked(r)
}

func (p *Plugin) armLocked(r armRequest) error {
	if !p.stillWantedLocked(r) {
		return nil
	}
	store := p.Store()
	if a, ok := p.armed[r.key]; ok && a.byPath && !r.byPath && annotations.Faults(a.plan.Faults).Equal(r.plan.Faults) {
		if p.retargetLocked(r) {
			return nil
		}
	}
	if _, ok := p.armed[r.key]; ok {
		p.disarmLocked(r.key, "rearm", false)
	}
	prev, hadPrev := store.Get(r.key)
	if store.Halted() {
		p.log.Warn("not arming: halted by kfault disarm --all (kfault disarm --resume ends it)",
			append(r.id.logAttrs(), "annotation", r.annotationKey)...)
		return nil
	}
	if hadPrev && prev.UserDisarmed && prev.Faults.Equal(r.plan.Faults) {
		p.log.Info("not arming: disarmed by kfault disarm", append(r.id.logAttrs(), "annotation", r.annotationKey)...)
		return nil
	}
	// The authoritative quota check: under the lock, against what is armed now (r.key's
	// earlier arm, if any, is already disarmed above, so it does not count twice).
	res := r.plan.Resources()
	if err := p.checkQuotaLocked(r.id.Namespace, r.key, res); err != nil {
		return &RejectError{Err: err}
	}
	var target bpf.Target
	var cgroupFrom string
	var err error
	if r.byPath {
		if _, _, err := resolveTarget(p.opts.Resolver, 0, r.cgroupsPath); err == nil {
			// The cgroup exists already: its task may be past its exec, which an arm with
			// the exec boundary would never fault. The task's own event arms it.
			p.log.Debug("not arming by path: the cgroup exists already", append(r.id.logAttrs(), "annotation", r.annotationKey)...)
			return nil
		}
		target, err = bpf.CgroupPath(r.cgroupsPath)
		cgroupFrom = "cgroupsPath, before the cgroup exists"
	} else {
		target, cgroupFrom, err = resolveTarget(p.opts.Resolver, r.pid, r.cgroupsPath)
	}
	if err != nil {
		p.metrics.armErrors.Inc()
		p.log.Error("arm failed", append(r.id.logAttrs(), "annotation", r.annotationKey, "error", err.Error())...)
		return fmt.Errorf("kfault: %w", err)
	}

	// Continue from the state: the counts (times budgets) and, for faults with a
	// duration, what is left of it since the first arm (the engine leaves off the faults
	// whose duration has elapsed).
	opts := bpf.ArmOptions{ExecBoundary: r.execBoundary}
	armedAt := time.Now().UTC()
	if r.carryCounts && hadPrev && prev.Faults.Equal(r.plan.Faults) && len(prev.Injected) == len(r.plan.Faults) {
		opts.Injected = slices.Clone(prev.Injected)
		if !prev.ArmedAt.IsZero() {
			armedAt = prev.ArmedAt
		}
		opts.Since = armedAt
	}

	start := time.Now()
	if r.byPath {
		err = p.engine.ArmPending(r.key, target, r.plan, opts)
	} else {
		err = p.engine.Arm(r.key, target, r.plan, opts)
	}
	elapsed := time.Since(start)
	p.metrics.armDuration.Observe(elapsed.Seconds())
	if err != nil {
		p.metrics.armErrors.Inc()
		p.log.Error("arm failed", append(r.id.logAttrs(), "annotation", r.annotationKey,
			"cgroup", target.Path, "cgroupID", target.ID, "mechanism", p.mechanism(), "error", err.Error())...)
		return fmt.Errorf("kfault: arming annotation %s: %w", r.annotationKey, err)
	}
	active, _ := p.engine.Active(r.key)
	if !slices.Contains(active, true) {
		_ = p.engine.Disarm(r.key)
		prev.Armed = false
		store.Put(r.key, prev)
		p.save()
		p.log.Info("not arming: every fault's duration has elapsed",
			append(r.id.logAttrs(), "annotation", r.annotationKey, "armedAt", armedAt)...)
		return nil
	}
	p.armed[r.key] = armedPlan{plan: r.plan, namespace: r.id.Namespace, res: res, byPath: r.byPath}

	injected := opts.Injected
	if injected == nil {
		injected = make([]uint64, len(r.plan.Faults))
	}
	store.Put(r.key, Entry{
		Source: r.id.Source, Namespace: r.id.Namespace, Pod: r.id.Pod, Container: r.id.Container,
		ContainerID: r.id.ContainerID, CgroupPath: target.Path, CgroupID: target.ID,
		Annotation: r.annotationKey, Faults: r.plan.Faults, Injected: injected, Armed: true,
		ArmedAt: armedAt, Mechanism: p.mechanism(), NotSelected: r.notSelected, Selection: r.selection,
	})
	p.save()

	described := make([]string, len(r.plan.Faults))
	for i, f := range r.plan.Faults {
		described[i] = f.String()
	}
	attrs := append(r.id.logAttrs(), "annotation", r.annotationKey, "cgroup", target.Path, "cgroupFrom", cgroupFrom,
		"cgroupID", target.ID, "cgroupLevel", target.Level, "mechanism", p.mechanism(),
		"faults", described, "alreadyInjected", opts.Injected, "execBoundary", opts.ExecBoundary, "armSeconds", elapsed.Seconds())
	if r.byPath {
		attrs = append(attrs, "byPath", true)
	}
	if r.prepareTime > 0 {
		attrs = append(attrs, "prepareSeconds", r.prepareTime.Seconds())
	}
	if slices.Contains(active, false) {
		attrs = append(attrs, "activeFaults", active)
	}
	if !r.eventTime.IsZero() {
		attrs = append(attrs, "sinceEventSeconds", time.Since(r.eventTime).Seconds())
	}
	if r.selection != nil {
		attrs = append(attrs, "selection", r.selection)
	}
	p.log.Info("armed", attrs...)
	return nil
}

// retargetLocked moves a key armed by path to its cgroup, which now exists, keeping its rules
// and counts: the kernel armed the cgroup as it was made. It reports false when that cannot be
// done (the cgroup was made before the path was armed, so its task may have exec'd unseen):
// the caller then arms anew, without the exec boundary. p.mu must be held.
func (p *Plugin) retargetLocked(r armRequest) bool {
	target, cgroupFrom, err := resolveTarget(p.opts.Resolver, r.pid, r.cgroupsPath)
	if err == nil {
		err = p.engine.Retarget(r.key, target)
	}
	if err != nil {
		p.log.Info("armed by path too late: arming the cgroup now", append(r.id.logAttrs(), "annotation", r.annotationKey, "reason", err.Error())...)
		return false
	}
	a := p.armed[r.key]
	a.byPath = false
	p.armed[r.key] = a
	store := p.Store()
	if e, ok := store.Get(r.key); ok {
		e.CgroupPath, e.CgroupID = target.Path, target.ID
		store.Put(r.key, e)
		p.save()
	}
	attrs := append(r.id.logAttrs(), "annotation", r.annotationKey, "cgroup", target.Path, "cgroupFrom", cgroupFrom,
		"cgroupID", target.ID, "cgroupLevel", target.Level)
	if !r.eventTime.IsZero() {
		attrs = append(attrs, "sinceEventSeconds", time.Since(r.eventTime).Seconds())
	}
	p.log.Info("cgroup armed as it was made", attrs...)
	return true
}

// notSelected records a container whose faults their select rules all left out: nothing is
// armed; the state keeps an entry (Armed false, the faults in NotSelected) so that status
// lists it, and the log line gives every decision (hash, draw and threshold, or ordinal).
func (p *Plugin) notSelected(r armRequest) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.stillWantedLocked(r) {
		return
	}
	if _, ok := p.armed[r.key]; ok {
		p.disarmLocked(r.key, "not selected", false)
	}
	store := p.Store()
	prev, _ := store.Get(r.key)
	store.Put(r.key, Entry{
		Source: r.id.Source, Namespace: r.id.Namespace, Pod: r.id.Pod, Container: r.id.Container,
		ContainerID: r.id.ContainerID, Annotation: r.annotationKey, Faults: annotations.Faults{}, Injected: []uint64{},
		NotSelected: r.notSelected, Selection: r.selection, UserDisarmed: prev.UserDisarmed,
	})
	p.save()
	described := make([]string, len(r.notSelected))
	for i, f := range r.notSelected {
		described[i] = f.String()
	}
	p.log.Info("not selected", append(r.id.logAttrs(), "annotation", r.annotationKey,
		"faults", described, "selection", r.selection)...)
}

// Resolver finds a container's cgroup; bpf.Cgroups is the real one.
type Resolver interface {
	FromPID(pid int) (bpf.Target, error)
	FromCgroupsPath(cgroupsPath string) (bpf.Target, error)
}

// resolveTarget finds a container's cgroup: the init pid first, then the OCI
// cgroupsPath. It never returns the root cgroup: arming there would fault the node.
// from says which one gave it ("pid" or "cgroupsPath"), for the armed log line: in a
// cgroup namespace of its own (a DaemonSet pod on cgroup v2) the plugin sees other
// containers' /proc/<pid>/cgroup as "0::/../..." and only cgroupsPath can work.
func resolveTarget(r Resolver, pid int, cgroupsPath string) (t bpf.Target, from string, err error) {
	var errs []error
	if pid > 0 {
		t, err := r.FromPID(pid)
		if err == nil && t.Level > 0 {
			return t, "pid", nil
		}
		if err == nil {
			err = fmt.Errorf("pid %d is in the root cgroup", pid)
		}
		errs = append(errs, fmt.Errorf("from pid %d: %w", pid, err))
	}
	if cgroupsPath != "" {
		t, err := r.FromCgroupsPath(cgroupsPath)
		if err == nil && t.Level > 0 {
			return t, "cgroupsPath", nil
		}
		if err == nil {
			err = fmt.Errorf("%s is the root cgroup", t.Path)
		}
		errs = append(errs, fmt.Errorf("from cgroupsPath: %w", err))
	}
	if len(errs) == 0 {
		return bpf.Target{}, "", errors.New("cannot resolve the container's cgroup: no pid and no cgroupsPath")
	}
	return bpf.Target{}, "", fmt.Errorf("cannot resolve the container's cgroup: %w", errors.Join(errs...))
}
