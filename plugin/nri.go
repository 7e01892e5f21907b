package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	"github.com/kfault/kfault/annotations"
)

// NRI registration defaults.
const (
	DefaultPluginName  = "kfault"
	DefaultPluginIndex = "10"
)

// Events is the NRI subscription: the four container events kfault handles, all known
// to containerd 1.7. (Pod events, UpdatePodSandbox, PostUpdatePodSandbox and
// ValidateContainerAdjustment are not subscribed: containerd 1.7 rejects plugins that
// ask for events it does not know.)
var Events = api.MustParseEventMask("CreateContainer", "StartContainer", "StopContainer", "RemoveContainer")

// nriHandlers is the object handed to the NRI stub. It implements exactly the
// interfaces for Configure, Synchronize, Shutdown and the four subscribed events: the
// stub derives the subscription from the implemented interfaces, so nothing else may
// be added here.
type nriHandlers struct{ p *Plugin }

// RunOptions say how to reach the runtime.
type RunOptions struct {
	// SocketPath of the NRI socket; default /var/run/nri/nri.sock. Ignored when the
	// runtime launched the plugin (the connection is inherited, NRI_PLUGIN_SOCKET).
	SocketPath string
	// Name and Index of the plugin; defaults "kfault", "10". When the runtime launched
	// the plugin, its environment names it.
	Name, Index string
	// MinBackoff and MaxBackoff bound the reconnection delay; defaults 1s and 30s.
	MinBackoff, MaxBackoff time.Duration

	dialer func(string) (net.Conn, error) // tests: observe and cut the connection
}

// Run serves NRI until ctx ends. A plugin started by hand or as a DaemonSet reconnects
// with backoff whenever the connection is lost (containerd restart) and is
// re-synchronized by the runtime. A plugin launched by the runtime (pre-registered,
// connection on an inherited fd) returns an error instead: the restarted runtime
// launches a new instance, which picks up the state file.
//
// Before returning, Run saves the counts and releases the state directory's lock. It
// does not close the engine.
func (p *Plugin) Run(ctx context.Context, o RunOptions) error {
	if o.SocketPath == "" {
		o.SocketPath = api.DefaultSocketPath
	}
	if o.Name == "" {
		o.Name = DefaultPluginName
	}
	if o.Index == "" {
		o.Index = DefaultPluginIndex
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = time.Second
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(30*time.Second, o.MinBackoff)
	}
	launched := os.Getenv(api.PluginSocketEnvVar) != ""

	p.svcCtx = ctx
	if !launched {
		// The config is known now (file + flags); NRI may refine it in Configure.
		if err := p.applyConfig(""); err != nil {
			return err
		}
	}
	defer p.release()
	go p.countsLoop(ctx)
	go p.consumeInjections(ctx)

	return p.reconnect(ctx, retry{min: o.MinBackoff, max: o.MaxBackoff, stable: 2 * o.MaxBackoff},
		"NRI connection lost; reconnecting", []any{"socket", o.SocketPath},
		func() error {
			err := p.serveOnce(ctx, o, launched)
			if launched {
				return errFinal{fmt.Errorf("connection to the runtime lost (the runtime starts a new instance): %w", err)}
			}
			return err
		})
}

// serveOnce makes a stub, connects, and serves until the connection ends.
func (p *Plugin) serveOnce(ctx context.Context, o RunOptions, launched bool) error {
	opts := []stub.Option{
		stub.WithLogger(nriLogger{p.log}),
		stub.WithOnClose(func() { p.log.Warn("NRI connection closed") }),
	}
	if !launched {
		opts = append(opts, stub.WithSocketPath(o.SocketPath))
	}
	if o.dialer != nil {
		opts = append(opts, stub.WithDialer(o.dialer))
	}
	if os.Getenv(api.PluginNameEnvVar) == "" {
		opts = append(opts, stub.WithPluginName(o.Name))
	}
	if os.Getenv(api.PluginIdxEnvVar) == "" {
		opts = append(opts, stub.WithPluginIdx(o.Index))
	}
	s, err := stub.New(nriHandlers{p}, opts...)
	if err != nil {
		return err
	}
	if err := s.Start(ctx); err != nil {
		s.Stop()
		return err
	}
	where := o.SocketPath
	if launched {
		where = "inherited connection"
	}
	name, idx := o.Name, o.Index
	if v := os.Getenv(api.PluginNameEnvVar); v != "" {
		name = v
	}
	if v := os.Getenv(api.PluginIdxEnvVar); v != "" {
		idx = v
	}
	p.log.Info("registered", "plugin", idx+"-"+name, "socket", where, "events", Events.PrettyString())
	stop := context.AfterFunc(ctx, s.Stop)
	defer stop()
	s.Wait()
	s.Stop()
	return errors.New("connection closed")
}

// Configure applies the node config delivered by NRI (from /etc/nri/conf.d for a
// pre-registered plugin; empty for one that connects by itself). Unknown keys fail
// the registration.
func (h nriHandlers) Configure(_ context.Context, config, runtime, version string) (api.EventMask, error) {
	h.p.log.Info("NRI configure", "runtime", runtime, "runtimeVersion", version)
	if err := h.p.applyConfig(config); err != nil {
		h.p.log.Error("bad node config", "error", err.Error())
		return 0, err
	}
	return Events, nil
}

// DefaultSyncBudget bounds the arming done inside NRI's Synchronize, which, like every NRI
// request, containerd gives 2 s (the plugin is dropped after that). Arming a container costs
// parsing and compiling its annotation (up to 64 KiB, 16 faults) and the engine's Arm: a node
// with hundreds of such containers takes longer than 2 s. The containers left when the
// budget is spent are armed right after, in the background (armLater).
const DefaultSyncBudget = 500 * time.Millisecond

// Synchronize re-arms every running container with a fault (continuing the persisted
// counts) and forgets containers that are gone. It runs on every (re)connection. The arming
// stops after syncBudget; the rest is armed in the background, in order.
func (h nriHandlers) Synchronize(_ context.Context, pods []*api.PodSandbox, ctrs []*api.Container) ([]*api.ContainerUpdate, error) {
	p := h.p
	p.mu.Lock()
	clear(p.syncLater) // an earlier synchronize's leftovers: this one decides
	p.mu.Unlock()
	byID := make(map[string]*api.PodSandbox, len(pods))
	for _, pod := range pods {
		byID[pod.GetId()] = pod
	}
	deadline := time.Now().Add(p.syncBudget)
	running := map[string]bool{}
	var later []container
	for _, c := range ctrs {
		if s := c.GetState(); s != api.ContainerState_CONTAINER_RUNNING && s != api.ContainerState_CONTAINER_PAUSED {
			continue
		}
		running[c.GetId()] = true
		if p.isArmed(c.GetId()) {
			continue
		}
		ctr := nriContainer(byID[c.GetPodSandboxId()], c)
		if _, _, ok := annotations.Effective(ctr.id.Container, ctr.podAnnotations, ctr.annotations); ok && !time.Now().Before(deadline) {
			later = append(later, ctr)
			continue
		}
		_ = p.admitContainer(ctr, phaseSynchronize)
	}
	p.forgetGone(SourceNRI, running, "gone at synchronize")
	attrs := []any{"pods", len(pods), "containers", len(ctrs), "armed", len(p.ArmedKeys())}
	if len(later) > 0 {
		attrs = append(attrs, "armingInBackground", len(later))
	}
	p.log.Info("synchronized", attrs...)
	if len(later) > 0 {
		p.armLater(later)
	}
	return nil, nil
}

// armLater arms, in the background and in order, the containers a Synchronize had no time
// for. Each gets a token: a stop or remove of the container, or another synchronize, before
// its turn cancels its arm (stillWantedLocked).
func (p *Plugin) armLater(cs []container) {
	p.mu.Lock()
	for i := range cs {
		p.syncSeq++
		cs[i].syncToken = p.syncSeq
		p.syncLater[cs[i].key] = p.syncSeq
	}
	p.mu.Unlock()
	go func() {
		if p.syncLaterStart != nil {
			p.syncLaterStart()
		}
		for _, c := range cs {
			_ = p.admitContainer(c, phaseSynchronize)
			p.mu.Lock()
			if p.syncLater[c.key] == c.syncToken {
				delete(p.syncLater, c.key) // refused before arming
			}
			p.mu.Unlock()
		}
		p.log.Info("synchronized in the background", "containers", len(cs), "armed", len(p.ArmedKeys()))
		if p.syncLaterDone != nil {
			p.syncLaterDone <- struct{}{}
		}
	}()
}

// Shutdown is the runtime shutting down: keep the rules (the containers keep running),
// save the counts, and wait to reconnect.
func (h nriHandlers) Shutdown(context.Context) {
	h.p.log.Info("runtime shutting down")
	h.p.Shutdown()
}

// CreateContainer validates the fault and prepares it for StartContainer. Strict mode fails
// the creation of a container with a bad spec or in a disallowed namespace; the message names
// the field.
func (h nriHandlers) CreateContainer(_ context.Context, pod *api.PodSandbox, c *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	return nil, nil, h.p.admitContainer(nriContainer(pod, c), phaseCreate)
}

// StartContainer arms: the init process and its cgroup exist, no user code has run.
// In strict mode a failure aborts the start.
func (h nriHandlers) StartContainer(_ context.Context, pod *api.PodSandbox, c *api.Container) error {
	return h.p.admitContainer(nriContainer(pod, c), phaseStart)
}

// StopContainer disarms (also sent when the container exits by itself) and keeps the
// final counts in the state until RemoveContainer.
func (h nriHandlers) StopContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) ([]*api.ContainerUpdate, error) {
	h.p.disarm(c.GetId(), "stop", false)
	return nil, nil
}

// RemoveContainer disarms (idempotent) and forgets the container.
func (h nriHandlers) RemoveContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) error {
	h.p.forgetPrepared(c.GetId())
	h.p.disarm(c.GetId(), "remove", true)
	return nil
}

// nriContainer is what NRI tells of a container.
func nriContainer(pod *api.PodSandbox, c *api.Container) container {
	return container{
		key: c.GetId(),
		id: ident{Source: SourceNRI, Namespace: pod.GetNamespace(), Pod: pod.GetName(),
			Container: c.GetName(), ContainerID: c.GetId()},
		podAnnotations: pod.GetAnnotations(), annotations: c.GetAnnotations(),
		pid: int(c.GetPid()), cgroupsPath: c.GetLinux().GetCgroupsPath(), runtime: pod.GetRuntimeHandler(),
		who: annotations.Target{UID: pod.GetUid(), Name: pod.GetName()},
	}
}

// nriLogger sends the NRI stub's log lines to slog.
type nriLogger struct{ l *slog.Logger }

func (n nriLogger) Debugf(ctx context.Context, f string, a ...any) {
	n.l.DebugContext(ctx, fmt.Sprintf(f, a...), "component", "nri")
}
func (n nriLogger) Infof(ctx context.Context, f string, a ...any) {
	n.l.InfoContext(ctx, fmt.Sprintf(f, a...), "component", "nri")
}
func (n nriLogger) Warnf(ctx context.Context, f string, a ...any) {
	n.l.WarnContext(ctx, fmt.Sprintf(f, a...), "component", "nri")
}
func (n nriLogger) Errorf(ctx context.Context, f string, a ...any) {
	n.l.ErrorContext(ctx, fmt.Sprintf(f, a...), "component", "nri")
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
