package bpf

import "time"

// An idle program is loaded and attached but no armed rule, scope or path needs it: its level
// bitmap, scope or path map is empty, so it returns after a map lookup and injects nothing. The
// engine keeps it for Options.KeepIdle before it detaches it, so that the next arm that needs it
// writes map entries only, instead of loading, verifying and attaching again (0.1-0.9 s under
// emulation, which a container start waits for). Containers that restart, and nerdctl runs one
// after the other, arm the same hooks again and again.

// idleTimer is the pending release of one idle program.
type idleTimer struct{ timer *time.Timer }

// stop cancels the release: the program is in use again.
func (it *idleTimer) stop() {
	if it.timer != nil {
		it.timer.Stop()
		it.timer = nil
	}
}

// retire releases a program that has just become idle: at once without KeepIdle, or after it
// unless idle says it was taken into use again by then. Called with e.mu held.
func (e *Engine) retire(it *idleTimer, idle func() bool, release func()) {
	it.stop()
	if e.keepIdle <= 0 || e.closed {
		release()
		return
	}
	it.timer = time.AfterFunc(e.keepIdle, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if !e.closed && idle() {
			it.timer = nil
			release()
		}
	})
}

// ReleaseIdle detaches every idle program now (kfault disarm --all: nothing of kfault's stays
// attached). Programs in use stay.
func (e *Engine) ReleaseIdle() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for e.releaseIdleHook() {
	}
	for e.releaseIdleFrame() {
	}
	if x := &e.exec; x.coll != nil && len(x.scope.cgroups) == 0 {
		x.idle.stop()
		e.detachExec()
	}
	if x := &e.pending; x.coll != nil && len(x.paths) == 0 {
		x.idle.stop()
		e.detachPending()
	}
}

// releaseIdleHook detaches one idle hook, if there is one, when every hook id is in use: an
// idle program never costs an arm its slot.
func (e *Engine) releaseIdleHook() bool {
	for _, h := range e.hooks {
		if h.rules == 0 {
			h.idle.stop()
			e.detachHook(h)
			return true
		}
	}
	return false
}

// releaseIdleFrame is releaseIdleHook for call-chain frames.
func (e *Engine) releaseIdleFrame() bool {
	for _, fp := range e.chains.frames {
		if fp.refs == 0 {
			fp.idle.stop()
			e.detachFrame(fp)
			return true
		}
	}
	return false
}

// retireHook retires h once its last rule is gone.
func (e *Engine) retireHook(h *hook) {
	e.retire(&h.idle, func() bool { return h.rules == 0 && e.hooks[h.fn] == h }, func() { e.detachHook(h) })
}

// detachHook is detach, logging its error (nobody waits for it).
func (e *Engine) detachHook(h *hook) {
	if err := e.detach(h); err != nil {
		e.log.Warn("detach", "hook", h.fn, "err", err)
	}
}
