package plugin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/kfault/kfault/annotations"
	"github.com/kfault/kfault/bpf"
)

// Engine is everything the plugin asks of the BPF engine: *bpf.Engine in the kfault command, a
// fake in tests.
type Engine interface {
	// Prepare checks faults against the running kernel and compiles them, loading nothing.
	Prepare(faults []annotations.Fault) (bpf.Plan, error)
	// Arm arms a plan on the cgroup subtree of t under key, replacing what key had; opts
	// continue an earlier arm's counts and durations.
	Arm(key string, t bpf.Target, plan bpf.Plan, opts bpf.ArmOptions) error
	// ArmPending arms a plan for the cgroup that will be made at t.Path (bpf.CgroupPath): the
	// kernel arms the cgroup as it is made. Retarget moves key to the cgroup once it exists.
	ArmPending(key string, t bpf.Target, plan bpf.Plan, opts bpf.ArmOptions) error
	Retarget(key string, t bpf.Target) error
	// Disarm removes key's rules; unknown keys are not an error.
	Disarm(key string) error
	// Counts and Active report, per fault of the plan, the injected count (seed included) and
	// whether it is still armed (false once its duration has elapsed).
	Counts(key string) ([]uint64, error)
	Active(key string) ([]bool, error)
	Mechanism() bpf.Mechanism
	// Injections are sampled injections, closed when the engine closes; SamplesDropped counts
	// those it could not deliver.
	Injections() <-chan bpf.Injection
	SamplesDropped() uint64
	// SetProtectedDevices replaces the block devices no bio fault may fail (node config bio).
	SetProtectedDevices(devs []bpf.Dev) error
	// ReleaseIdle detaches the programs kept attached, doing nothing, after their last
	// rule went (bpf.Options.KeepIdle), without waiting.
	ReleaseIdle()
}

// DefaultCountsInterval is how often injected counts are copied from the engine to the
// state file.
const DefaultCountsInterval = 5 * time.Second

// Options configure a Plugin.
type Options struct {
	Engine Engine
	// Resolver finds cgroups. Default: bpf.Cgroups{} (/proc and the cgroup2 mount).
	Resolver Resolver
	// Logger gets one JSON line per arm, disarm and rejection. Default: slog.Default().
	Logger *slog.Logger
	// File is the --config file's content (parsed); Flags are explicitly set flags.
	// The effective config is defaults ← File ← NRI Configure config ← Flags.
	File, Flags Config
	// CountsInterval: default DefaultCountsInterval.
	CountsInterval time.Duration
	// LockTimeout bounds the wait for the state directory's lock; default 3s.
	LockTimeout time.Duration
	// StartServices, when set, is called once, after the first config is applied,
	// to start the metrics server and the containerd watcher (the kfault command sets
	// it; tests leave it nil).
	StartServices func(ctx context.Context, p *Plugin, cfg Config) error
}

// Plugin is kfault's lifecycle logic, shared by the NRI handlers and the containerd
// event watcher. Arm and disarm are serialized.
type Plugin struct {
	opts    Options
	log     *slog.Logger
	engine  Engine
	metrics *Metrics

	cfgMu      sync.RWMutex
	cfg        Config
	configured bool
	store      *Store
	svcCtx     context.Context

	mu    sync.Mutex           // serializes arm/disarm/sync
	armed map[string]armedPlan // keys armed in the engine by this process, and what
	// prepared holds plans made at CreateContainer for StartContainer to arm, so that a
	// container's faults are compiled once (guarded by mu).
	prepared map[string]preparedPlan
	// syncLater holds the containers that a Synchronize left to armLater, with their token
	// (guarded by mu): a stop, a remove or a new synchronize takes a key out.
	syncLater map[string]uint64
	syncSeq   uint64
	// syncBudget bounds the arming done inside Synchronize (DefaultSyncBudget); tests set it.
	syncBudget time.Duration
	// syncLaterDone, when set (tests), gets a value when an armLater batch is done.
	syncLaterDone chan struct{}
	// syncLaterStart, when set (tests), is called before an armLater batch starts.
	syncLaterStart func()

	inj injections // recent sampled injections, for status

	headersNoted sync.Once
}

// New makes a Plugin. Nothing is read or started until the first config is applied
// (Run does that, or NRI Configure for a plugin launched by the runtime).
func New(o Options) (*Plugin, error) {
	if o.Engine == nil {
		return nil, errors.New("plugin: no engine")
	}
	if o.Resolver == nil {
		o.Resolver = bpf.Cgroups{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.CountsInterval <= 0 {
		o.CountsInterval = DefaultCountsInterval
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = 3 * time.Second
	}
	p := &Plugin{
		opts:     o,
		log:      o.Logger,
		engine:   o.Engine,
		armed:    map[string]armedPlan{},
		prepared: map[string]preparedPlan{},
		svcCtx:   context.Background(),

		syncLater:  map[string]uint64{},
		syncBudget: DefaultSyncBudget,
	}
	p.metrics = newMetrics(p)
	return p, nil
}

// Metrics returns the plugin's Prometheus metrics.
func (p *Plugin) Metrics() *Metrics { return p.metrics }

// Config returns the effective config (zero before the first applyConfig).
func (p *Plugin) Config() Config {
	p.cfgMu.RLock()
	defer p.cfgMu.RUnlock()
	return p.cfg
}

// Store returns the state store (nil before the first applyConfig).
func (p *Plugin) Store() *Store {
	p.cfgMu.RLock()
	defer p.cfgMu.RUnlock()
	return p.store
}

// applyConfig resolves defaults ← File ← nriConfig ← Flags. The first call opens the
// state store and starts the services; stateDir, containerdSocket, metrics and events
// are fixed from then on (a later config that changes them gets a warning). The
// namespace lists and the mode apply at once.
func (p *Plugin) applyConfig(nriConfig string) error {
	nri, err := ParseConfig([]byte(nriConfig))
	if err != nil {
		return err
	}
	cfg, err := Resolve(p.opts.File, nri, p.opts.Flags)
	if err != nil {
		return err
	}

	p.cfgMu.Lock()
	if p.configured {
		old := p.cfg
		fixed := func(name string, changed bool) {
			if changed {
				p.log.Warn("config change needs a restart; keeping the old value", "key", name)
			}
		}
		fixed("stateDir", old.StateDir != cfg.StateDir)
		fixed("containerdSocket", old.ContainerdSocket != cfg.ContainerdSocket)
		fixed("metricsAddress", old.MetricsAddress != cfg.MetricsAddress)
		fixed("controlSocket", old.ControlSocket != cfg.ControlSocket)
		fixed("events", old.EventsEnabled() != cfg.EventsEnabled() || !slices.Equal(old.Events.SkipNamespaces, cfg.Events.SkipNamespaces))
		cfg.StateDir, cfg.ContainerdSocket, cfg.MetricsAddress = old.StateDir, old.ContainerdSocket, old.MetricsAddress
		cfg.MetricsAllowNonLoopback, cfg.Events, cfg.ControlSocket = old.MetricsAllowNonLoopback, old.Events, old.ControlSocket
		if err := p.protectDevices(cfg); err != nil {
			p.cfgMu.Unlock()
			return err
		}
		p.cfg = cfg
		p.cfgMu.Unlock()
		return nil
	}
	store, err := OpenLockedStore(cfg.StateDir, p.opts.LockTimeout)
	if err != nil {
		p.cfgMu.Unlock()
		return err
	}
	store.OnSaveError(func(err error) {
		p.log.Error("saving state", "path", store.Path(), "error", err.Error())
	})
	// Before anything is admitted or re-armed: bio faults never fail the node's filesystems.
	if err := p.protectDevices(cfg); err != nil {
		store.Unlock()
		p.cfgMu.Unlock()
		return err
	}
	p.cfg, p.store, p.configured = cfg, store, true
	p.cfgMu.Unlock()

	p.log.Info("configured", "mode", cfg.Mode, "allowedNamespaces", cfg.AllowedNamespaces,
		"deniedNamespaces", cfg.DeniedNamespaces, "stateDir", cfg.StateDir,
		"predicates", cfg.Predicates.Default, "predicatesDenied", cfg.Predicates.Deny, "predicatesAllowed", cfg.Predicates.Allow,
		"quotaDefault", cfg.Quotas.Default.String(), "quotaNamespaces", len(cfg.Quotas.Namespaces),
		"metricsAddress", cfg.MetricsAddress, "containerdEvents", cfg.EventsEnabled(),
		"stateEntries", len(store.Keys()))
	if p.opts.StartServices != nil {
		if err := p.opts.StartServices(p.svcCtx, p, cfg); err != nil {
			return fmt.Errorf("starting services: %w", err)
		}
	}
	return nil
}

// protectDevices resolves the node config's bio section to block devices (see Config) and
// hands them to the engine.
func (p *Plugin) protectDevices(cfg Config) error {
	devs, err := ResolveProtected(append(slices.Clone(cfg.Bio.ProtectPaths), cfg.StateDir), cfg.Bio.ProtectDevices, p.log)
	if err != nil {
		return err
	}
	if err := p.opts.Engine.SetProtectedDevices(devs); err != nil {
		return fmt.Errorf("node config: bio: %w", err)
	}
	return nil
}

// ResolveProtected returns the block devices to protect from bio faults: those holding paths
// (st_dev), those of devices (major:minor or /dev paths), and the devices under them (dm, md).
// A path that does not exist is skipped (kubelet's root on a node without kubelet), one on a
// filesystem without a block device of its own is logged and skipped.
func ResolveProtected(paths, devices []string, log *slog.Logger) ([]bpf.Dev, error) {
	var devs []bpf.Dev
	for _, path := range paths {
		d, anonymous, err := bpf.PathDevice(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			log.Warn("bio.protectPaths: path does not exist, nothing to protect", "path", path)
			continue
		case err != nil:
			return nil, fmt.Errorf("node config: bio.protectPaths: %s: %w", path, err)
		case anonymous:
			log.Warn("bio.protectPaths: the filesystem has no block device of its own (tmpfs, overlay: nothing to protect; btrfs: name its disk in bio.protectDevices)", "path", path, "device", d.String())
			continue
		}
		devs = append(devs, d)
	}
	for i, s := range devices {
		d, err := bpf.ResolveDevice(s)
		if err != nil {
			return nil, fmt.Errorf("node config: bio.protectDevices[%d]: %w", i, err)
		}
		devs = append(devs, d)
	}
	return bpf.WithSlaves(devs), nil
}

// ident names a container in logs, state and metrics.
type ident struct {
	Source      Source
	Namespace   string
	Pod         string
	Container   string
	ContainerID string
}

func (id ident) logAttrs() []any {
	attrs := []any{"source", string(id.Source), "namespace", id.Namespace}
	if id.Pod != "" {
		attrs = append(attrs, "pod", id.Pod)
	}
	return append(attrs, "container", id.Container, "containerID", id.ContainerID)
}

// disarm removes the rule for key (idempotent), copying its final counts into the
// state. forget also drops the state entry.
func (p *Plugin) disarm(key, reason string, forget bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.syncLater, key) // a stopped container is not armed by armLater
	p.disarmLocked(key, reason, forget)
}

func (p *Plugin) disarmLocked(key, reason string, forget bool) {
	store := p.Store()
	_, wasArmed := p.armed[key]
	var counts []uint64
	start := time.Now()
	if wasArmed {
		if c, err := p.engine.Counts(key); err == nil {
			counts = c
		}
		if err := p.engine.Disarm(key); err != nil {
			p.log.Error("disarm failed", "key", key, "reason", reason, "error", err.Error())
		}
		delete(p.armed, key)
	}
	e, known := store.Get(key)
	if !wasArmed && !known {
		return
	}
	if counts != nil {
		e.Injected = counts
	}
	if wasArmed {
		attrs := append(ident{e.Source, e.Namespace, e.Pod, e.Container, e.ContainerID}.logAttrs(),
			"cgroup", e.CgroupPath, "cgroupID", e.CgroupID, "mechanism", p.mechanism(),
			"reason", reason, "injected", e.Injected, "disarmSeconds", time.Since(start).Seconds())
		p.log.Info("disarmed", attrs...)
	}
	if forget {
		store.Delete(key)
		p.inj.forget(key)
	} else if known {
		e.Armed = false
		store.Put(key, e)
	}
	p.save()
}

// forgetGone disarms and forgets the containers seen through source that are not in live:
// those that went away while kfault was not looking, and state left by an earlier run.
func (p *Plugin) forgetGone(source Source, live map[string]bool, reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	store := p.Store()
	gone := func(key string) bool {
		e, ok := store.Get(key)
		if !ok {
			// Armed with no state entry: only NRI's keys can be (containerd's are saved as
			// they are armed).
			e.Source = SourceNRI
		}
		return e.Source == source && !live[key]
	}
	for key := range store.Snapshot() {
		if gone(key) {
			p.disarmLocked(key, reason, true)
		}
	}
	for key := range p.armed {
		if gone(key) {
			p.disarmLocked(key, reason, true)
		}
	}
	p.save()
}

// isArmed reports whether this process armed key.
func (p *Plugin) isArmed(key string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.armed[key]
	return ok
}

// ArmedKeys returns the keys armed by this process, sorted.
func (p *Plugin) ArmedKeys() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Sorted(maps.Keys(p.armed))
}

// Halt is the emergency stop: it disarms every rule and arms nothing more (new
// containers start without their faults; strict mode does not block them) until
// Resume. The halt is kept in the state file, so it survives a plugin restart. It
// returns the keys disarmed.
func (p *Plugin) Halt(reason string) []string {
	store := p.Store()
	if store == nil {
		return nil
	}
	p.mu.Lock()
	store.SetHalted(true)
	keys := slices.Sorted(maps.Keys(p.armed))
	for _, k := range keys {
		p.disarmLocked(k, reason, false)
	}
	p.engine.ReleaseIdle() // nothing of kfault's stays attached
	p.mu.Unlock()
	// The halt must survive a crash before kfault disarm --all returns.
	p.flush()
	p.log.Warn("halted: every fault disarmed, no new faults armed", "reason", reason, "disarmed", len(keys))
	return keys
}

// Resume ends a Halt. Running containers are re-armed at the next synchronization
// (plugin or containerd restart); new containers get their faults at once.
func (p *Plugin) Resume() {
	store := p.Store()
	if store == nil {
		return
	}
	p.mu.Lock()
	resumed := store.Halted()
	store.SetHalted(false)
	p.mu.Unlock()
	if resumed {
		p.flush()
		p.log.Warn("resumed: faults are armed again for new containers")
	}
}

// DisarmKey disarms one container's faults on request (kfault disarm KEY). They stay
// off while the container lives, synchronizations included.
func (p *Plugin) DisarmKey(key, reason string) error {
	store := p.Store()
	if store == nil {
		return errors.New("not configured yet")
	}
	p.mu.Lock()
	if _, ok := store.Get(key); !ok {
		p.mu.Unlock()
		return fmt.Errorf("no container %q in the state (see kfault status)", key)
	}
	p.disarmLocked(key, reason, false)
	store.Update(key, func(e *Entry) { e.UserDisarmed = true })
	p.mu.Unlock()
	// kfault disarm KEY returns once the disarm would survive a crash.
	p.flush()
	return nil
}

// RefreshCounts copies the engine's counts of every armed rule into the state file.
func (p *Plugin) RefreshCounts() {
	p.mu.Lock()
	defer p.mu.Unlock()
	store := p.Store()
	if store == nil {
		return
	}
	changed := false
	for key := range p.armed {
		c, err := p.engine.Counts(key)
		if err != nil {
			continue
		}
		store.Update(key, func(e *Entry) {
			if !slices.Equal(e.Injected, c) {
				e.Injected = slices.Clone(c)
				changed = true
			}
		})
	}
	if changed {
		p.save()
	}
}

// countsLoop refreshes the counts every CountsInterval until ctx ends.
func (p *Plugin) countsLoop(ctx context.Context) {
	t := time.NewTicker(p.opts.CountsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.RefreshCounts()
		}
	}
}

// Shutdown copies the final counts and requests a save (NRI's Shutdown is a request: it
// does not wait for the disk). Rules stay armed until the engine is closed (the process
// owns the links; when it exits, every fault stops).
func (p *Plugin) Shutdown() {
	p.RefreshCounts()
}

// release saves the counts, waits until the state file has everything, and gives up the
// state directory (Run's end): the next instance reads a complete file.
func (p *Plugin) release() {
	p.RefreshCounts()
	if s := p.Store(); s != nil {
		p.flush()
		s.waitIdle() // no write of this instance's after the lock is given up
		s.Unlock()
	}
}

// save requests a write of the state file and returns at once: it may be called with p.mu
// held. The write happens on the store's writer goroutine, without p.mu.
func (p *Plugin) save() {
	if store := p.Store(); store != nil {
		store.RequestSave()
	}
}

// Flush waits until the state file has every change made so far (see Store.Flush). Not to
// be called with p.mu held, nor on an NRI request's path.
func (p *Plugin) Flush() error {
	store := p.Store()
	if store == nil {
		return nil
	}
	return store.Flush()
}

// flush is Flush, logging a failure (the background writer logs it too, through
// OnSaveError; this line says which operation is not durable).
func (p *Plugin) flush() {
	if err := p.Flush(); err != nil {
		p.log.Error("state file not written; the last change is not durable", "error", err.Error())
	}
}

func (p *Plugin) mechanism() string { return MechanismName(p.engine) }

// MechanismName is the engine's override mechanism, "none" on a kernel that cannot inject, and
// "fmod_ret (LSM hooks only)" on a kernel without error injection.
func MechanismName(e Engine) string {
	if _, ok := e.(Unavailable); ok {
		return "none"
	}
	// Asked of engines that can tell (bpf.Engine): a fake engine need not know.
	if l, ok := e.(interface{ LSMOnly() bool }); ok && l.LSMOnly() {
		return e.Mechanism().String() + " (LSM hooks only)"
	}
	return e.Mechanism().String()
}

// containerView is one container of the state as status and metrics show it: the state entry
// with the engine's live counts when armed, its faults, and which of them are armed now.
type containerView struct {
	key string
	Entry
	faults []annotations.Fault
	live   []bool // nil when not armed
}

// containers returns every container of the state, sorted by key.
func (p *Plugin) containers() []containerView {
	store := p.Store()
	if store == nil {
		return nil
	}
	snap := store.Snapshot()
	var out []containerView
	for _, key := range slices.Sorted(maps.Keys(snap)) {
		c := containerView{key: key, Entry: snap[key], faults: p.faultsOf(key, snap[key])}
		if p.isArmed(key) {
			if counts, err := p.engine.Counts(key); err == nil {
				c.Injected = counts
			}
			if live, err := p.engine.Active(key); err == nil {
				c.live = live
			}
		}
		out = append(out, c)
	}
	return out
}

// faultsOf returns the faults of key: the armed plan's, else the state entry's (a stopped
// container, or one armed by an earlier run).
func (p *Plugin) faultsOf(key string, e Entry) []annotations.Fault {
	p.mu.Lock()
	a, ok := p.armed[key]
	p.mu.Unlock()
	if ok {
		return a.plan.Faults
	}
	return e.Faults
}

// forgetPrepared drops a plan kept for a container that goes away unstarted.
func (p *Plugin) forgetPrepared(containerID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.prepared, containerID)
}
