package bpf

import (
	"runtime/debug"
	"sync"
	"time"

	"github.com/cilium/ebpf/btf"
)

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

// quietTimer runs a release once nothing has used what it releases for a while.
type quietTimer struct {
	mu    sync.Mutex
	timer *time.Timer
}

// touch (re)starts the wait: release runs after d without another touch.
func (q *quietTimer) touch(d time.Duration, release func()) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.timer == nil {
		q.timer = time.AfterFunc(d, release)
		return
	}
	q.timer.Reset(d)
}

func (q *quietTimer) stop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.timer != nil {
		q.timer.Stop()
	}
}

// kernelTypes is the kernel BTF the engine compiles predicates and loads programs against (and
// its cache, nil for fixed types): the running kernel's, parsed again if it was released. Each
// use keeps the parse, and the kallsyms snapshot, for another KeepIdle. With KeepIdle 0, when
// programs go at once, they are kept for good: parsing again at every arm would cost more.
func (e *Engine) kernelTypes() (*btf.Spec, *btf.Cache, error) {
	if e.kspec != nil {
		return e.kspec, nil, nil
	}
	if e.keepIdle > 0 {
		e.kernelData.touch(e.keepIdle, e.releaseKernelData)
	}
	return loadKernelBTF()
}

// releaseKernelData drops the kernel's BTF and the kallsyms snapshot, about 7 MB of a 6.1
// kernel's, half of a plugin's live heap at 100 armed containers; programs already loaded do
// not need them. The next Prepare or first arm of a hook parses the BTF again (about 200 ms
// under emulation), and a call-chain function not looked up before reads kallsyms itself. The
// heap is returned to the system at once: the runtime alone would keep it until its next
// forced collection, minutes later, on a quiet plugin.
func (e *Engine) releaseKernelData() {
	releaseKernelBTF()
	e.frameSyms.dropIndex()
	e.log.Info("released the kernel's BTF and kallsyms snapshot: unused for KeepIdle", "keepIdle", e.keepIdle.String())
	debug.FreeOSMemory()
}
