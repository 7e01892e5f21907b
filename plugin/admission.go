package plugin

import (
	"errors"
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
	value, key, ok := annotations.Effective(c.id.Container, c.podAnnotations, c.annotations)
	// A misspelt kfault key would otherwise be ignored without a word.
	keyErr := keyErrors(c.podAnnotations, c.annotations)
	if !ok && keyErr == nil {
		return nil // not ours
	}
	if err := p.Config().NamespaceAllowed(c.id.Namespace); err != nil {
		if errors.Is(err, ErrNoNamespaceAllowed) {
			p.log.Info("not injected", append(c.id.logAttrs(), "annotation", key, "phase", ph.name, "reason", err.Error())...)
			return nil
		}
		return p.reject(c.id, key, ph.name, &RejectError{Err: err}, ph.blockable)
	}
	// A sandboxed runtime's container runs on a kernel of its own: refused in every phase.
	if err := p.Config().RuntimeAllowed(c.runtime); err != nil {
		return p.reject(c.id, key, ph.name, &RejectError{Annotation: key, Err: err}, ph.blockable)
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
			return p.reject(c.id, key, ph.name, &RejectError{Annotation: key, Err: err}, ph.blockable)
		}
		if err := cfg.checkFrames(pp.plan.Faults); err != nil {
			return p.reject(c.id, key, ph.name, &RejectError{Annotation: key, Err: err}, ph.blockable)
		}
	} else {
		var err error
		start := time.Now()
		if pp.plan, pp.selection, err = p.admit(c.id, key, value, c.who); err != nil {
			return p.reject(c.id, key, ph.name, err, ph.blockable)
		}
		prepareTime = time.Since(start)
	}
	if !ph.arm {
		// Creation: refuse early a container that its namespace's quotas cannot take now (the
		// start, under the lock, has the last word). Only when the refusal can fail the
		// creation (strict): in lenient mode the start decides, and logs it once.
		if sel := selectedPlan(pp); ph.blockable && p.Config().Mode == Strict && len(sel.Faults) > 0 {
			if err := p.checkQuota(c.id.Namespace, c.key, sel.Resources()); err != nil {
				return p.reject(c.id, key, ph.name, &RejectError{Err: err}, ph.blockable)
			}
		}
		p.keepPrepared(c.key, value, pp.plan, pp.selection)
		return nil
	}
	r := armRequest{
		key: c.key, id: c.id, annotation: key, plan: pp.plan,
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
		return p.reject(c.id, key, ph.name, err, ph.blockable)
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
