package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// Sampling of injections (the hot path's sample_first and sample_mask): every rule reports its
// first SampleFirst injections, then every SampleEvery-th (1024th, 2048th, ...). The rest are
// only counted. A fault firing at full speed thus costs the ring buffer almost nothing.
const (
	SampleFirst = 8
	SampleEvery = 1024 // a power of two
)

// Injection is one sampled injected fault, read from the kfault_events ring buffer.
type Injection struct {
	Key      string    `json:"-"`        // the key the fault was armed under
	Fault    int       `json:"fault"`    // index among the plan's faults (annotation order)
	Function string    `json:"function"` // the hooked function
	Seq      uint64    `json:"seq"`      // the rule's injection number: 1 for its first (a re-arm's seed counts)
	PID      int       `json:"pid"`      // the task the fault hit (thread id)
	TGID     int       `json:"tgid"`     // its process
	Comm     string    `json:"comm"`     // its name
	Retval   int64     `json:"retval"`   // what the hooked function returned instead
	Time     time.Time `json:"time"`     // when it happened
}

// injectionBuffer is how many sampled injections wait for a slow reader before new ones are
// dropped (counted by SamplesDropped).
const injectionBuffer = 256

// events reads kfault_events. The reader goroutine attributes each sample to the rule that
// injected it and hands it on without ever blocking.
type events struct {
	reader  *ringbuf.Reader
	out     chan Injection
	done    chan struct{}
	dropped atomic.Uint64 // samples not delivered: unattributable, or the channel was full
	// monoToWall converts bpf_ktime_get_ns (CLOCK_MONOTONIC) to wall-clock time.
	monoToWall time.Duration
}

func (e *Engine) startEvents() error {
	r, err := ringbuf.NewReader(e.eventMap)
	if err != nil {
		return fmt.Errorf("read ring buffer kfault_events: %w", err)
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		r.Close()
		return fmt.Errorf("clock_gettime: %w", err)
	}
	e.events = &events{
		reader:     r,
		out:        make(chan Injection, injectionBuffer),
		done:       make(chan struct{}),
		monoToWall: time.Duration(time.Now().UnixNano() - ts.Nano()),
	}
	go e.readEvents(e.events)
	return nil
}

// Injections delivers sampled injections until the engine closes, then is closed. Samples
// that arrive while the channel is full are dropped, never the faults themselves.
func (e *Engine) Injections() <-chan Injection {
	if e.events == nil {
		return nil
	}
	return e.events.out
}

// SamplesDropped is how many sampled injections were not delivered on Injections: lost to a
// full ring buffer (counted by the hot path), unattributable, or refused by a full channel.
func (e *Engine) SamplesDropped() uint64 {
	if e.events == nil {
		return 0
	}
	var inKernel uint64
	if e.eventDrops != nil {
		_ = e.eventDrops.Lookup(uint32(0), &inKernel) // after Close: the Go-side count only
	}
	return inKernel + e.events.dropped.Load()
}

func (e *Engine) readEvents(ev *events) {
	defer close(ev.done)
	defer close(ev.out)
	var rec ringbuf.Record
	for {
		if err := ev.reader.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) {
				return
			}
			e.log.Warn("reading sampled injections", "err", err)
			continue
		}
		var raw kfaultEvent
		if _, err := binary.Decode(rec.RawSample, binary.NativeEndian, &raw); err != nil {
			ev.dropped.Add(1)
			continue
		}
		inj, ok := e.attribute(raw, ev.monoToWall)
		if !ok {
			ev.dropped.Add(1)
			continue
		}
		select {
		case ev.out <- inj:
		default:
			ev.dropped.Add(1)
		}
	}
}

// sampleOwner is what attributing a sample needs of the rule that injected it.
type sampleOwner struct {
	key       string
	fault     int
	cgroup    uint64
	functions map[uint32]string // hook id -> hooked function, for each hook of the rule
}

// attribute finds the rule a sample came from. The counter index alone could name a newer rule
// that reused the slot, so the cgroup and hook must match too.
func (e *Engine) attribute(raw kfaultEvent, monoToWall time.Duration) (Injection, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if raw.Counter >= maxRules {
		return Injection{}, false
	}
	o := e.sampleOwners[raw.Counter]
	if o == nil || o.cgroup != raw.Cgroup {
		return Injection{}, false
	}
	function, ok := o.functions[raw.Hook]
	if !ok {
		return Injection{}, false
	}
	comm := make([]byte, 0, len(raw.Comm))
	for _, c := range raw.Comm {
		if c == 0 {
			break
		}
		comm = append(comm, byte(c))
	}
	return Injection{
		Key:      o.key,
		Fault:    o.fault,
		Function: function,
		Seq:      raw.Seq,
		PID:      int(uint32(raw.PidTgid)),
		TGID:     int(raw.PidTgid >> 32),
		Comm:     string(comm),
		Retval:   raw.Retval,
		Time:     time.Unix(0, int64(raw.TimeNs)+int64(monoToWall)).UTC(),
	}, true
}

// stopEvents stops the reader and waits for its goroutine. The goroutine takes e.mu to
// attribute samples, so this must not run under it.
func (e *Engine) stopEvents() {
	if e.events == nil {
		return
	}
	e.events.reader.Close()
	<-e.events.done
}
