package plugin

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Injection is one sampled injected fault, as an engine with a ring buffer reports it.
type Injection struct {
	Key   string    `json:"-"`     // engine key
	Fault int       `json:"fault"` // index in the annotation (the plugin maps the engine's index)
	Seq   uint64    `json:"seq"`   // the fault's injection number (1 = its first), 0 if unknown
	PID   int       `json:"pid"`   // the task the fault hit (thread id)
	TGID  int       `json:"tgid"`  // its process
	Comm  string    `json:"comm"`
	Time  time.Time `json:"time"`
}

// InjectionSource is implemented by engines that sample injections (a BPF ring
// buffer). The channel is closed when the engine closes. Fault is the index among the
// faults passed to Arm.
type InjectionSource interface {
	Injections() <-chan Injection
}

// SampleDropper is implemented by engines that count the sampled injections they could not
// deliver (their reader fell behind); the plugin exports the count as a metric.
type SampleDropper interface {
	SamplesDropped() uint64
}

// recentPerKey is how many sampled injections status keeps per container.
const recentPerKey = 8

// maxInjectionLogsPerSecond bounds the "injected" log lines, whatever the sampling.
const maxInjectionLogsPerSecond = 20

// injections keeps the recent sampled injections per key.
type injections struct {
	mu       sync.Mutex
	recent   map[string][]Injection
	second   time.Time
	logged   int
	dropped  int
	lastDrop time.Time
}

func (in *injections) add(inj Injection) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.recent == nil {
		in.recent = map[string][]Injection{}
	}
	r := append(in.recent[inj.Key], inj)
	if len(r) > recentPerKey {
		r = slices.Clone(r[len(r)-recentPerKey:])
	}
	in.recent[inj.Key] = r
}

func (in *injections) get(key string) []Injection {
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
	src, ok := p.engine.(InjectionSource)
	if !ok {
		return
	}
	ch := src.Injections()
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

func (p *Plugin) recordInjection(inj Injection) {
	store := p.Store()
	if store == nil {
		return
	}
	e, known := store.Get(inj.Key)
	if !known {
		return
	}
	if e.Active != nil && inj.Fault >= 0 && inj.Fault < len(e.Active) {
		inj.Fault = e.Active[inj.Fault]
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
		"fault", faultLabel(e.Faults, inj.Fault), "seq", inj.Seq, "pid", inj.PID, "tgid", inj.TGID, "comm", inj.Comm)
	if suppressed > 0 {
		attrs = append(attrs, "suppressedBefore", suppressed)
	}
	p.log.Info("injected", attrs...)
}

// faultLabel is the fault label of fault i of an annotation value.
func faultLabel(value string, i int) string {
	if i < 0 {
		return "?"
	}
	return faultLabels(value, i+1)[i]
}
