package plugin

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/kfault/kfault/annotations"
	"github.com/kfault/kfault/bpf"
)

// recentPerKey is how many sampled injections status keeps per container.
const recentPerKey = 8

// maxInjectionLogsPerSecond bounds the "injected" log lines, whatever the sampling.
const maxInjectionLogsPerSecond = 20

// injections keeps the recent sampled injections per key.
type injections struct {
	mu       sync.Mutex
	recent   map[string][]bpf.Injection
	second   time.Time
	logged   int
	dropped  int
	lastDrop time.Time
}

func (in *injections) add(inj bpf.Injection) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.recent == nil {
		in.recent = map[string][]bpf.Injection{}
	}
	r := append(in.recent[inj.Key], inj)
	if len(r) > recentPerKey {
		r = slices.Clone(r[len(r)-recentPerKey:])
	}
	in.recent[inj.Key] = r
}

func (in *injections) get(key string) []bpf.Injection {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.recent[key])
}

func (in *injections) forget(key string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	delete(in.recent, key)
}

// allowLog is a per-second budget for log lines; it returns how many lines were
// suppressed since the last allowed one, for the next line to say so.
func (in *injections) allowLog(now time.Time) (ok bool, suppressed int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if now.Sub(in.second) >= time.Second {
		in.second, in.logged = now, 0
	}
	if in.logged >= maxInjectionLogsPerSecond {
		in.dropped++
		return false, 0
	}
	in.logged++
	suppressed, in.dropped = in.dropped, 0
	return true, suppressed
}

// consumeInjections logs each sampled injection with the container it hit and keeps
// the last few for status, until ctx ends or the engine closes the channel.
func (p *Plugin) consumeInjections(ctx context.Context) {
	ch := p.engine.Injections()
	if ch == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case inj, ok := <-ch:
			if !ok {
				return
			}
			p.recordInjection(inj)
		}
	}
}

func (p *Plugin) recordInjection(inj bpf.Injection) {
	store := p.Store()
	if store == nil {
		return
	}
	e, known := store.Get(inj.Key)
	if !known {
		return
	}
	if inj.Time.IsZero() {
		inj.Time = time.Now().UTC()
	}
	p.inj.add(inj)
	ok, suppressed := p.inj.allowLog(time.Now())
	if !ok {
		return
	}
	attrs := append(ident{e.Source, e.Namespace, e.Pod, e.Container, e.ContainerID}.logAttrs(),
		"fault", faultLabel(p.faultsOf(inj.Key, e), inj.Fault, e.FaultIndex), "seq", inj.Seq, "pid", inj.PID, "tgid", inj.TGID, "comm", inj.Comm)
	if suppressed > 0 {
		attrs = append(attrs, "suppressedBefore", suppressed)
	}
	p.log.Info("injected", attrs...)
}

// faultLabel is the fault label of armed fault i.
func faultLabel(faults []annotations.Fault, i int, index func(int) int) string {
	if i < 0 {
		return "?"
	}
	return faultLabels(faults, i+1, index)[i]
}
