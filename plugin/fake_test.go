package plugin

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kfault/kfault/annotations"
	"github.com/kfault/kfault/bpf"
)

// fakeEngine records Arm/Disarm calls and keeps per-rule counters that tests bump.
type fakeEngine struct {
	protected []bpf.Dev // last SetProtectedDevices
	mu        sync.Mutex
	rules     map[string]*fakeRule
	calls     []string // "arm <key>", "disarm <key>"
	armErr    error
	// retargetErr: Retarget fails with it (the kernel did not arm the cgroup as it was made).
	retargetErr error
	inj         chan bpf.Injection // sampled injections, when a test sets it
	drops       uint64             // what SamplesDropped reports
	// prepared counts Prepare calls per first fault's function, so tests can tell that a
	// container's faults are compiled once.
	prepared int
	// releasedIdle counts ReleaseIdle calls.
	releasedIdle int
}

type fakeRule struct {
	target  bpf.Target
	faults  []annotations.Fault
	already []uint64
	since   time.Time
	counts  []uint64
	// execBoundary: armed with bpf.ArmOptions.ExecBoundary.
	execBoundary bool
	// pending: armed by path (ArmPending), not retargeted yet.
	pending bool
}

func newFakeEngine() *fakeEngine { return &fakeEngine{rules: map[string]*fakeRule{}} }

// Prepare refuses functions named "not_injectable", as a kernel without them on the
// error-injection list would.
func (f *fakeEngine) Prepare(faults []annotations.Fault) (bpf.Plan, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.prepared++
	for i, fl := range faults {
		if fl.Function == "not_injectable" {
			return bpf.Plan{}, fmt.Errorf("[%d].function: not_injectable is not on the error-injection list", i)
		}
	}
	return bpf.Plan{Faults: faults}, nil
}

func (f *fakeEngine) prepareCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.prepared
}

func (f *fakeEngine) Arm(key string, t bpf.Target, plan bpf.Plan, opts bpf.ArmOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "arm "+key)
	if f.armErr != nil {
		return f.armErr
	}
	if _, dup := f.rules[key]; dup {
		return fmt.Errorf("fake engine: %s already armed", key)
	}
	since := opts.Since
	if since.IsZero() {
		since = time.Now()
	}
	counts := make([]uint64, len(plan.Faults))
	copy(counts, opts.Injected)
	f.rules[key] = &fakeRule{target: t, faults: plan.Faults, already: slices.Clone(opts.Injected), since: since, counts: counts, execBoundary: opts.ExecBoundary}
	return nil
}

func (f *fakeEngine) ArmPending(key string, t bpf.Target, plan bpf.Plan, opts bpf.ArmOptions) error {
	if err := f.Arm(key, t, plan, opts); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[len(f.calls)-1] = "arm by path " + key
	f.rules[key].pending = true
	return nil
}

func (f *fakeEngine) Retarget(key string, t bpf.Target) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "retarget "+key)
	r, ok := f.rules[key]
	if !ok || !r.pending {
		return fmt.Errorf("fake engine: %s: %w", key, bpf.ErrNotPending)
	}
	if f.retargetErr != nil {
		return f.retargetErr
	}
	r.target, r.pending = t, false
	return nil
}

func (f *fakeEngine) Disarm(key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "disarm "+key)
	delete(f.rules, key)
	return nil
}

func (f *fakeEngine) Counts(key string) ([]uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.rules[key]
	if !ok {
		return nil, fmt.Errorf("fake engine: %s not armed", key)
	}
	return slices.Clone(r.counts), nil
}

func (f *fakeEngine) Mechanism() bpf.Mechanism { return bpf.MechanismFmodRet }

func (f *fakeEngine) SetProtectedDevices(devs []bpf.Dev) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.protected = devs
	return nil
}

// ReleaseIdle counts its calls (releasedIdle): the fake keeps nothing idle.
func (f *fakeEngine) ReleaseIdle() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.releasedIdle++
}

func (f *fakeEngine) Injections() <-chan bpf.Injection { return f.inj }

func (f *fakeEngine) SamplesDropped() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.drops
}

// Active: as the engine, a fault is off once its duration has elapsed since the first arm.
func (f *fakeEngine) Active(key string) ([]bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.rules[key]
	if !ok {
		return nil, fmt.Errorf("fake engine: %s not armed", key)
	}
	out := make([]bool, len(r.faults))
	for i, fl := range r.faults {
		out[i] = fl.Duration == 0 || fl.Duration > time.Since(r.since)
	}
	return out, nil
}

// inject pretends the kernel hit fault i of key n times.
func (f *fakeEngine) inject(t *testing.T, key string, i int, n uint64) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.rules[key]
	if !ok {
		t.Fatalf("inject: %s not armed", key)
	}
	r.counts[i] += n
}

func (f *fakeEngine) rule(key string) (fakeRule, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.rules[key]
	if !ok {
		return fakeRule{}, false
	}
	return *r, true
}

func (f *fakeEngine) armedKeys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var keys []string
	for k := range f.rules {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (f *fakeEngine) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// logBuffer collects the plugin's JSON log lines.
type logBuffer struct {
	mu    sync.Mutex
	lines []byte
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines = append(b.lines, p...)
	return len(p), nil
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.lines)
}

func testLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// unitPlugin is a configured Plugin without NRI, on a fake host.
type unitPlugin struct {
	*Plugin
	eng  *fakeEngine
	logs *logBuffer
	host fakeHost
}

func newTestPlugin(t testing.TB, config string) *unitPlugin {
	t.Helper()
	file, err := ParseConfig([]byte(config))
	if err != nil {
		t.Fatal(err)
	}
	if file.AllowedNamespaces == nil {
		// Every namespace, unless the test says otherwise ("allowedNamespaces: []" is the
		// shipped default: none).
		file.AllowedNamespaces = []string{AllNamespaces}
	}
	if file.StateDir == "" {
		file.StateDir = t.TempDir()
	}
	u := &unitPlugin{eng: newFakeEngine(), logs: &logBuffer{}, host: newFakeHost(t)}
	u.Plugin, err = New(Options{Engine: u.eng, Resolver: u.host.resolver(),
		Logger: testLogger(u.logs), File: file})
	if err != nil {
		t.Fatal(err)
	}
	if err := u.applyConfig(""); err != nil {
		t.Fatal(err)
	}
	// Before the state directory is removed: the last background write is done.
	t.Cleanup(func() {
		_ = u.Flush()
		u.Store().waitIdle()
	})
	return u
}

var testPid = 5000

// armForTest arms key on a fresh cgroup of the fake host, as a start would.
func (u *unitPlugin) armForTest(t testing.TB, key string, id ident, value string) {
	t.Helper()
	faults, err := annotations.Parse(value)
	if err != nil {
		t.Fatal(err)
	}
	testPid++
	rel := fmt.Sprintf("test.slice/c%d", testPid)
	u.host.cgroup(t, rel)
	u.host.process(t, testPid, "0::/"+rel+"\n")
	plan, err := u.eng.Prepare(faults)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.arm(armRequest{key: key, id: id, annotationKey: annotations.Key, plan: plan, pid: testPid}); err != nil {
		t.Fatal(err)
	}
}

// mustFaults parses an annotation value for a state entry.
func mustFaults(value string) annotations.Faults {
	faults, err := annotations.Parse(value)
	if err != nil {
		panic(err)
	}
	return faults
}
