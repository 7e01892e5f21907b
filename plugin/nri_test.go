package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	nri "github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	"github.com/kfault/kfault/annotations"
	"github.com/kfault/kfault/bpf"
	"github.com/sirupsen/logrus"
)

// The NRI tests run kfault's real stub-based plugin against containerd/nri's own
// runtime side (pkg/adaptation) over a unix socket in a temporary directory, as the
// NRI repository's tests do, with a fake engine and a fake /proc + cgroupfs.

const syncTimeout = 10 * time.Second

// testRuntime is the runtime side: an nri.Adaptation plus the pods and containers it
// reports at synchronization.
type testRuntime struct {
	t      *testing.T
	sock   string
	confD  string
	plugs  string
	mu     sync.Mutex
	r      *nri.Adaptation
	pods   map[string]*api.PodSandbox
	ctrs   map[string]*api.Container
	synced chan struct{}
	conns  []net.Conn // plugin connections, closed by crash
}

func newTestRuntime(t *testing.T, dir string) *testRuntime {
	logrus.SetLevel(logrus.FatalLevel)
	rt := &testRuntime{
		t:      t,
		sock:   filepath.Join(dir, "nri.sock"),
		confD:  filepath.Join(dir, "conf.d"),
		plugs:  filepath.Join(dir, "plugins"),
		pods:   map[string]*api.PodSandbox{},
		ctrs:   map[string]*api.Container{},
		synced: make(chan struct{}, 16),
	}
	t.Cleanup(rt.stop)
	return rt
}

func (rt *testRuntime) start() {
	rt.t.Helper()
	r, err := nri.New("kfault-test-runtime", "0.0.1", rt.synchronize,
		func(context.Context, []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) { return nil, nil },
		nri.WithSocketPath(rt.sock), nri.WithPluginPath(rt.plugs), nri.WithPluginConfigPath(rt.confD))
	if err != nil {
		rt.t.Fatal(err)
	}
	if err := r.Start(); err != nil {
		rt.t.Fatal(err)
	}
	// Start synchronizes the pre-installed plugins (none, unless a test installs one)
	// before it returns: that is not an external plugin's synchronization.
	select {
	case <-rt.synced:
	default:
	}
	rt.mu.Lock()
	rt.r = r
	rt.mu.Unlock()
}

func (rt *testRuntime) stop() {
	rt.mu.Lock()
	r := rt.r
	rt.r = nil
	rt.mu.Unlock()
	if r != nil {
		r.Stop()
	}
}

func (rt *testRuntime) synchronize(ctx context.Context, cb nri.SyncCB) error {
	rt.mu.Lock()
	var pods []*api.PodSandbox
	var ctrs []*api.Container
	for _, p := range rt.pods {
		pods = append(pods, p)
	}
	for _, c := range rt.ctrs {
		ctrs = append(ctrs, c)
	}
	rt.mu.Unlock()
	sort.Slice(pods, func(i, j int) bool { return pods[i].Id < pods[j].Id })
	sort.Slice(ctrs, func(i, j int) bool { return ctrs[i].Id < ctrs[j].Id })
	_, err := cb(ctx, pods, ctrs)
	rt.synced <- struct{}{}
	return err
}

// waitSynced waits for a plugin to be synchronized and fully registered.
func (rt *testRuntime) waitSynced() {
	rt.t.Helper()
	select {
	case <-rt.synced:
	case <-time.After(syncTimeout):
		rt.t.Fatal("plugin did not synchronize")
	}
	rt.mu.Lock()
	r := rt.r
	rt.mu.Unlock()
	r.BlockPluginSync().Unblock() // wait until the registration is complete
}

func (rt *testRuntime) adaptation() *nri.Adaptation {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.r
}

func (rt *testRuntime) create(pod *api.PodSandbox, c *api.Container) error {
	rt.mu.Lock()
	rt.pods[pod.Id] = pod
	c.State = api.ContainerState_CONTAINER_CREATED
	rt.mu.Unlock()
	r := rt.adaptation()
	b := r.BlockPluginSync()
	defer b.Unblock()
	_, err := r.CreateContainer(context.Background(), &api.CreateContainerRequest{Pod: pod, Container: c})
	if err == nil {
		rt.mu.Lock()
		rt.ctrs[c.Id] = c
		rt.mu.Unlock()
	}
	return err
}

func (rt *testRuntime) startCtr(pod *api.PodSandbox, c *api.Container) error {
	r := rt.adaptation()
	b := r.BlockPluginSync()
	defer b.Unblock()
	err := r.StartContainer(context.Background(), &api.StartContainerRequest{Pod: pod, Container: c})
	if err == nil {
		rt.mu.Lock()
		c.State = api.ContainerState_CONTAINER_RUNNING
		rt.mu.Unlock()
	}
	return err
}

func (rt *testRuntime) stopCtr(pod *api.PodSandbox, c *api.Container) error {
	r := rt.adaptation()
	b := r.BlockPluginSync()
	defer b.Unblock()
	_, err := r.StopContainer(context.Background(), &api.StopContainerRequest{Pod: pod, Container: c})
	rt.mu.Lock()
	c.State = api.ContainerState_CONTAINER_STOPPED
	rt.mu.Unlock()
	return err
}

func (rt *testRuntime) removeCtr(pod *api.PodSandbox, c *api.Container) error {
	r := rt.adaptation()
	b := r.BlockPluginSync()
	defer b.Unblock()
	err := r.RemoveContainer(context.Background(), &api.RemoveContainerRequest{Pod: pod, Container: c})
	rt.mu.Lock()
	delete(rt.ctrs, c.Id)
	rt.mu.Unlock()
	return err
}

// crash is a containerd restart as plugins see it: the runtime goes away and every
// plugin connection drops. start brings it back.
func (rt *testRuntime) crash() {
	rt.stop()
	rt.mu.Lock()
	conns := rt.conns
	rt.conns = nil
	rt.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// forget drops a container without telling plugins (it went away while they were
// disconnected).
func (rt *testRuntime) forget(c *api.Container) {
	rt.mu.Lock()
	delete(rt.ctrs, c.Id)
	rt.mu.Unlock()
}

// harness is a runtime, a fake host and a state directory shared by successive
// plugin instances.
type harness struct {
	t        *testing.T
	rt       *testRuntime
	host     fakeHost
	stateDir string
	nextPid  uint32
	plugins  []*testPlugin // started in this process, flushed by readState
}

func newHarness(t *testing.T) *harness {
	// Not t.TempDir(): unix socket paths must stay short.
	dir, err := os.MkdirTemp("", "kf-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h := &harness{t: t, host: newFakeHost(t), stateDir: filepath.Join(dir, "state"), nextPid: 1000}
	h.rt = newTestRuntime(t, dir)
	h.rt.start()
	return h
}

// testPlugin is one running kfault plugin instance.
type testPlugin struct {
	p      *Plugin
	eng    *fakeEngine
	logs   *logBuffer
	cancel context.CancelFunc
	done   chan error
}

// startPlugin runs a plugin with the given node config (YAML, as a --config file)
// and waits for its first synchronization.
func (h *harness) startPlugin(config string) *testPlugin {
	h.t.Helper()
	return h.startPluginWith(config, nil)
}

// startPluginWith is startPlugin with an engine other than a fresh fakeEngine (tp.eng is then nil).
func (h *harness) startPluginWith(config string, engine Engine) *testPlugin {
	h.t.Helper()
	file, err := ParseConfig([]byte(config))
	if err != nil {
		h.t.Fatal(err)
	}
	if file.AllowedNamespaces == nil {
		// Every namespace, unless the test says otherwise ("allowedNamespaces: []" is the
		// shipped default: none).
		file.AllowedNamespaces = []string{AllNamespaces}
	}
	if file.StateDir == "" {
		file.StateDir = h.stateDir
	}
	disabled := false
	file.Events.Enabled = &disabled
	tp := &testPlugin{logs: &logBuffer{}, done: make(chan error, 1)}
	if engine == nil {
		tp.eng = newFakeEngine()
		engine = tp.eng
	}
	tp.p, err = New(Options{
		Engine: engine, Resolver: h.host.resolver(),
		Logger: testLogger(tp.logs), File: file, CountsInterval: time.Hour,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tp.cancel = cancel
	ro := RunOptions{SocketPath: h.rt.sock, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		dialer: func(path string) (net.Conn, error) {
			c, err := net.Dial("unix", path)
			if err == nil {
				h.rt.mu.Lock()
				h.rt.conns = append(h.rt.conns, c)
				h.rt.mu.Unlock()
			}
			return c, err
		}}
	h.plugins = append(h.plugins, tp)
	go func() { tp.done <- tp.p.Run(ctx, ro) }()
	h.t.Cleanup(tp.stop)
	h.t.Cleanup(func() {
		if h.t.Failed() {
			h.t.Logf("plugin log:\n%s", tp.logs)
		}
	})
	h.rt.waitSynced()
	return tp
}

// stop ends the plugin as a SIGTERM would: Run returns after saving the counts.
func (tp *testPlugin) stop() {
	if tp.cancel == nil {
		return
	}
	tp.cancel()
	tp.cancel = nil
	select {
	case <-tp.done:
	case <-time.After(syncTimeout):
		panic("plugin did not stop")
	}
}

// pod makes a pod with the given annotations.
func pod(ns, name string, ann map[string]string) *api.PodSandbox {
	return &api.PodSandbox{Id: "pod-" + ns + "-" + name, Name: name, Namespace: ns, Uid: "uid-" + name, Annotations: ann}
}

// container makes a container of pod whose init process (a fresh pid) lives in a
// systemd-style scope that exists on the fake host. It returns the scope directory.
func (h *harness) container(p *api.PodSandbox, name string) (*api.Container, string) {
	h.t.Helper()
	h.nextPid++
	id := fmt.Sprintf("%s-%s-%d", p.Name, name, h.nextPid)
	slice := "kubepods-besteffort-pod" + strings.ReplaceAll(p.Uid, "-", "_") + ".slice"
	rel := "kubepods.slice/kubepods-besteffort.slice/" + slice + "/cri-containerd-" + id + ".scope"
	dir := h.host.cgroup(h.t, rel)
	h.host.process(h.t, int(h.nextPid), "0::/"+rel+"\n")
	return &api.Container{
		Id: id, PodSandboxId: p.Id, Name: name, Pid: h.nextPid,
		Linux: &api.LinuxContainer{CgroupsPath: slice + ":cri-containerd:" + id},
	}, dir
}

// readState reads the state file after the plugins of this process have written every
// change (saves are asynchronous; Flush waits for them).
func (h *harness) readState() map[string]Entry {
	h.t.Helper()
	for _, tp := range h.plugins {
		if err := tp.p.Flush(); err != nil {
			h.t.Fatal(err)
		}
	}
	data, err := os.ReadFile(filepath.Join(h.stateDir, StateFileName))
	if err != nil {
		h.t.Fatal(err)
	}
	var f stateFile
	if err := json.Unmarshal(data, &f); err != nil {
		h.t.Fatal(err)
	}
	out := map[string]Entry{}
	for k, e := range f.Containers {
		out[k] = *e
	}
	return out
}

// logLines returns the decoded log lines whose msg is msg.
func (tp *testPlugin) logLines(msg string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(tp.logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

const slabFault = `{failtype: 0, callchain: [{funcname: __x64_sys_mount}], times: 10}`

func TestNRILifecycle(t *testing.T) {
	h := newHarness(t)
	tp := h.startPlugin("")

	web := pod("default", "web", map[string]string{"faults.kfault.dev/container.app": slabFault})
	app, appDir := h.container(web, "app")
	side, _ := h.container(web, "sidecar")

	for _, c := range []*api.Container{app, side} {
		if err := h.rt.create(web, c); err != nil {
			t.Fatalf("create %s: %v", c.Name, err)
		}
	}
	if got := tp.eng.armedKeys(); len(got) != 0 {
		t.Fatalf("armed at create: %v", got)
	}
	if rl := tp.logLines("registered"); len(rl) != 1 || rl[0]["plugin"] != "10-kfault" || rl[0]["socket"] != h.rt.sock {
		t.Errorf("registered log lines: %v", rl)
	}
	for _, c := range []*api.Container{app, side} {
		if err := h.rt.startCtr(web, c); err != nil {
			t.Fatalf("start %s: %v", c.Name, err)
		}
	}

	// Armed on the app container's own cgroup, only.
	if got := tp.eng.armedKeys(); !slices.Equal(got, []string{app.Id}) {
		t.Fatalf("armed %v, want only %s", got, app.Id)
	}
	r, _ := tp.eng.rule(app.Id)
	if r.target.Path != appDir || r.target.ID != inode(t, appDir) || r.target.Level != 4 {
		t.Errorf("target %+v, want %s (id %d, level 4)", r.target, appDir, inode(t, appDir))
	}
	if len(r.faults) != 1 || r.faults[0].CallChain[0].FuncName != "__x64_sys_mount" || r.already != nil {
		t.Errorf("faults %+v already %v", r.faults, r.already)
	}
	// Armed at StartContainer, before the container's program runs: with the exec boundary,
	// so that the runtime's init finishes its setup unfaulted.
	if !r.execBoundary {
		t.Error("armed at StartContainer without the exec boundary")
	}
	st := h.readState()[app.Id]
	if !st.Armed || st.Namespace != "default" || st.Pod != "web" || st.Container != "app" ||
		st.CgroupPath != appDir || !st.Faults.Equal(mustFaults(slabFault)) || st.Annotation != "faults.kfault.dev/container.app" {
		t.Errorf("state entry %+v", st)
	}
	armed := tp.logLines("armed")
	if len(armed) != 1 || armed[0]["namespace"] != "default" || armed[0]["pod"] != "web" ||
		armed[0]["container"] != "app" || armed[0]["cgroup"] != appDir || armed[0]["mechanism"] != "fmod_ret" {
		t.Errorf("armed log lines: %v", armed)
	}

	// Stop disarms and keeps the final counts; remove forgets; disarm happens once.
	tp.eng.inject(t, app.Id, 0, 2)
	if err := h.rt.stopCtr(web, app); err != nil {
		t.Fatal(err)
	}
	if _, ok := tp.eng.rule(app.Id); ok {
		t.Fatal("still armed after stop")
	}
	st = h.readState()[app.Id]
	if st.Armed || !slices.Equal(st.Injected, []uint64{2}) {
		t.Errorf("after stop: %+v", st)
	}
	if err := h.rt.removeCtr(web, app); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.readState()[app.Id]; ok {
		t.Error("state entry kept after remove")
	}
	disarms := 0
	for _, c := range tp.eng.callLog() {
		if c == "disarm "+app.Id {
			disarms++
		}
	}
	if disarms != 1 {
		t.Errorf("engine disarmed %d times, want 1: %v", disarms, tp.eng.callLog())
	}
	dl := tp.logLines("disarmed")
	if len(dl) != 1 || dl[0]["reason"] != "stop" || dl[0]["container"] != "app" {
		t.Errorf("disarmed log lines: %v", dl)
	}
}

// TestNRIPreparesOnce: a container's faults (and so its call-chain predicates) are compiled
// once from create to start: the plan made at CreateContainer is the one StartContainer arms.
// A start whose create this plugin did not see (another plugin process) prepares by itself.
func TestNRIPreparesOnce(t *testing.T) {
	h := newHarness(t)
	tp := h.startPlugin("")
	web := pod("default", "web", map[string]string{"faults.kfault.dev/container.app": slabFault})
	app, _ := h.container(web, "app")
	if err := h.rt.create(web, app); err != nil {
		t.Fatal(err)
	}
	if n := tp.eng.prepareCalls(); n != 1 {
		t.Fatalf("%d Prepare calls at create, want 1", n)
	}
	if err := h.rt.startCtr(web, app); err != nil {
		t.Fatal(err)
	}
	if n := tp.eng.prepareCalls(); n != 1 {
		t.Errorf("%d Prepare calls after create and start, want 1", n)
	}
	if got := tp.eng.armedKeys(); !slices.Equal(got, []string{app.Id}) {
		t.Fatalf("armed %v", got)
	}
	tp.p.forgetPrepared(app.Id) // as if created by an earlier plugin process
	other, _ := h.container(web, "app")
	tp.p.keepPrepared(other.Id, "{failtype: 1}", bpf.Plan{}, nil) // made from another text
	if err := h.rt.startCtr(web, other); err != nil {
		t.Fatal(err)
	}
	if n := tp.eng.prepareCalls(); n != 2 {
		t.Errorf("%d Prepare calls, want 2: a plan from another annotation text must not be armed", n)
	}
	if r, _ := tp.eng.rule(other.Id); len(r.faults) != 1 || r.faults[0].FailType != annotations.Slab {
		t.Errorf("armed %+v, want the slab fault of the annotation", r.faults)
	}
}

func TestNRIIdempotentDisarm(t *testing.T) {
	tests := map[string][]string{
		"stop then remove": {"stop", "remove"},
		"remove only":      {"remove"},
		"stop twice":       {"stop", "stop", "remove"},
		"remove then stop": {"remove", "stop"},
		"remove twice":     {"remove", "remove"},
	}
	for name, steps := range tests {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			tp := h.startPlugin("")
			p := pod("default", "web", map[string]string{"faults.kfault.dev/pod": slabFault})
			c, _ := h.container(p, "app")
			if err := h.rt.create(p, c); err != nil {
				t.Fatal(err)
			}
			if err := h.rt.startCtr(p, c); err != nil {
				t.Fatal(err)
			}
			for _, s := range steps {
				var err error
				if s == "stop" {
					err = h.rt.stopCtr(p, c)
				} else {
					err = h.rt.removeCtr(p, c)
				}
				if err != nil {
					t.Fatalf("%s: %v", s, err)
				}
			}
			if got := tp.eng.armedKeys(); len(got) != 0 {
				t.Errorf("still armed: %v", got)
			}
			if got := tp.p.ArmedKeys(); len(got) != 0 {
				t.Errorf("plugin thinks armed: %v", got)
			}
			if want := []string{"arm " + c.Id, "disarm " + c.Id}; !slices.Equal(tp.eng.callLog(), want) {
				t.Errorf("engine calls %v, want %v", tp.eng.callLog(), want)
			}
		})
	}
}

func TestNRIStrictRejection(t *testing.T) {
	tests := map[string]struct {
		annotations map[string]string
		want        []string // substrings of the creation error
	}{
		"bad failtype": {
			annotations: map[string]string{"faults.kfault.dev/pod": `{failtype: 7}`},
			want:        []string{"kfault: annotation faults.kfault.dev/pod: failtype:"},
		},
		"probability out of range": {
			annotations: map[string]string{"faults.kfault.dev/container.app": `{failtype: 0, probability: 150}`},
			want:        []string{"annotation faults.kfault.dev/container.app", "probability:"},
		},
		"empty funcname in a list": {
			annotations: map[string]string{"faults.kfault.dev/pod": `[{failtype: 1}, {failtype: 0, callchain: [{funcname: ""}]}]`},
			want:        []string{"[1].callchain[0].funcname:"},
		},
		"unknown field": {
			annotations: map[string]string{"faults.kfault.dev": `{failtype: 0, probabilty: 5}`},
			want:        []string{"annotation faults.kfault.dev:", "probabilty"},
		},
		"refused by the engine's validator": {
			annotations: map[string]string{"faults.kfault.dev/pod": `{function: not_injectable, errno: EIO}`},
			want:        []string{"kfault: annotation faults.kfault.dev/pod: [0].function: not_injectable is not on the error-injection list"},
		},
		"misspelt key": {
			annotations: map[string]string{"faults.kfault.dev/containers.app": `{failtype: 0}`},
			want:        []string{"kfault: annotation faults.kfault.dev/containers.app: unknown key"},
		},
		"not yaml": {
			annotations: map[string]string{"faults.kfault.dev/pod": `{failtype: [`},
			want:        []string{"not valid YAML or JSON"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			tp := h.startPlugin("")
			p := pod("default", "web", tc.annotations)
			c, _ := h.container(p, "app")
			err := h.rt.create(p, c)
			if err == nil {
				t.Fatal("creation succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if rl := tp.logLines("rejected"); len(rl) != 1 || rl[0]["phase"] != "create" || rl[0]["pod"] != "web" {
				t.Errorf("rejected log lines: %v", rl)
			}
			if got := tp.eng.callLog(); len(got) != 0 {
				t.Errorf("engine called: %v", got)
			}
		})
	}
}

// TestNRIKernelCannotInject: on a kernel without an override mechanism (Debian's, Fedora's...)
// the plugin runs with the Unavailable engine. Each annotated container is refused at creation
// with the kernel's reason, so nobody is left believing a fault runs; the others start.
func TestNRIKernelCannotInject(t *testing.T) {
	h := newHarness(t)
	reason := fmt.Errorf("%w (fmod_ret: should_failslab is not on the error-injection list; CONFIG_FUNCTION_ERROR_INJECTION)", bpf.ErrMechanismUnavailable)
	tp := h.startPluginWith("", Unavailable{Err: reason})
	p := pod("default", "web", map[string]string{"faults.kfault.dev/container.app": `{failtype: 0}`})
	c, _ := h.container(p, "app")
	err := h.rt.create(p, c)
	if err == nil {
		t.Fatal("an annotated container was created on a kernel that cannot inject")
	}
	for _, w := range []string{"annotation faults.kfault.dev/container.app", "this node's kernel cannot inject faults", "kfault check", "CONFIG_FUNCTION_ERROR_INJECTION"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
	if rl := tp.logLines("rejected"); len(rl) != 1 || rl[0]["pod"] != "web" {
		t.Errorf("rejected log lines: %v", rl)
	}
	plain := pod("default", "plain", nil)
	pc, _ := h.container(plain, "app")
	if err := h.rt.create(plain, pc); err != nil {
		t.Errorf("an unannotated container was refused: %v", err)
	}
	if err := h.rt.startCtr(plain, pc); err != nil {
		t.Errorf("an unannotated container did not start: %v", err)
	}
	if m := tp.p.mechanism(); m != "none" {
		t.Errorf("mechanism %q, want none", m)
	}
}

func TestNRINamespaceAllowlist(t *testing.T) {
	tests := map[string]struct {
		config  string
		ns      string
		wantErr string // "" = created and armed
	}{
		"default config refuses kube-system": {ns: "kube-system", wantErr: `kfault: namespace "kube-system" is denied`},
		"default config allows default":      {ns: "default"},
		"allow list refuses others":          {config: "allowedNamespaces: [team-a]", ns: "team-b", wantErr: `namespace "team-b" is not in the kfault node config's allowedNamespaces (team-a)`},
		"allow list admits its own":          {config: "allowedNamespaces: [team-a]", ns: "team-a"},
		"deny list":                          {config: "deniedNamespaces: [prod]", ns: "prod", wantErr: `namespace "prod" is denied`},
		"deny list replaces the default":     {config: "deniedNamespaces: [prod]", ns: "kube-system"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			tp := h.startPlugin(tc.config)
			p := pod(tc.ns, "web", map[string]string{"faults.kfault.dev/pod": slabFault})
			c, _ := h.container(p, "app")
			err := h.rt.create(p, c)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("create error %v, want %q", err, tc.wantErr)
				}
				// Also refused at start, should a start come without a create
				// (plugin started in between).
				if err := h.rt.startCtr(p, c); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("start error %v, want %q", err, tc.wantErr)
				}
				if got := tp.eng.armedKeys(); len(got) != 0 {
					t.Fatalf("armed: %v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := h.rt.startCtr(p, c); err != nil {
				t.Fatal(err)
			}
			if got := tp.eng.armedKeys(); !slices.Equal(got, []string{c.Id}) {
				t.Fatalf("armed %v", got)
			}
		})
	}
}

// TestNRIPredicatesSwitch: the node config's predicates switch refuses faults that carry a
// call-chain predicate in the namespaces it denies, before the engine compiles anything.
func TestNRIPredicatesSwitch(t *testing.T) {
	const (
		predFault = `{failtype: 0, callchain: [{funcname: d_alloc_parallel, predicate: 'STRNCMP(name->name, "bananas", 8)'}]}`
		listFault = `[{failtype: 1}, {failtype: 0, callchain: [{funcname: __x64_sys_mount}, {funcname: d_alloc_parallel, predicate: 'name->len == 7'}]}]`
	)
	tests := map[string]struct {
		config  string
		ns      string
		fault   string
		wantErr string // strict: substring of the creation error; "" = created and armed
		refused bool   // lenient: rejected (logged), runs without the fault
	}{
		"default allows predicates": {ns: "tenant-x", fault: predFault},
		"deny list refuses a predicate": {
			config: "predicates: {deny: [tenant-x]}", ns: "tenant-x", fault: predFault,
			wantErr: `kfault: annotation faults.kfault.dev/pod: callchain[0].predicate: predicates are denied in namespace "tenant-x" by the kfault node config (predicates.deny: tenant-x); remove tenant-x from predicates.deny to allow them`,
		},
		"deny list, other namespace":           {config: "predicates: {deny: [tenant-x]}", ns: "team-a", fault: predFault},
		"deny list, fault without a predicate": {config: "predicates: {deny: [tenant-x]}", ns: "tenant-x", fault: slabFault},
		"default deny names the frame in a list": {
			config: "predicates: {default: deny}", ns: "team-a", fault: listFault,
			wantErr: `[1].callchain[1].predicate: predicates are denied in namespace "team-a" by the kfault node config (predicates.default: deny); add team-a to predicates.allow to allow them`,
		},
		"default deny, allow list": {config: "predicates: {default: deny, allow: [team-a]}", ns: "team-a", fault: listFault},
		"lenient: refused, runs without the fault": {
			config: "mode: lenient\npredicates: {default: deny}", ns: "team-a", fault: predFault, refused: true,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			tp := h.startPlugin(tc.config)
			p := pod(tc.ns, "web", map[string]string{"faults.kfault.dev/pod": tc.fault})
			c, _ := h.container(p, "app")
			err := h.rt.create(p, c)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("create error %v, want %q", err, tc.wantErr)
				}
				if n := tp.eng.prepareCalls(); n != 0 {
					t.Errorf("the engine prepared (compiled) the refused faults %d times", n)
				}
				if got := tp.eng.armedKeys(); len(got) != 0 {
					t.Fatalf("armed: %v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := h.rt.startCtr(p, c); err != nil {
				t.Fatal(err)
			}
			if tc.refused {
				rl := tp.logLines("rejected")
				if len(rl) != 2 || !strings.Contains(fmt.Sprint(rl[0]["error"]), "predicates.default: deny") {
					t.Fatalf("rejected lines: %v", rl)
				}
				if got := tp.eng.armedKeys(); len(got) != 0 || tp.eng.prepareCalls() != 0 {
					t.Fatalf("armed %v, prepared %d times", got, tp.eng.prepareCalls())
				}
				return
			}
			if got := tp.eng.armedKeys(); !slices.Equal(got, []string{c.Id}) {
				t.Fatalf("armed %v", got)
			}
		})
	}
}

// TestNRIFramesDenied: a fault whose call chain names a function the node config denies
// (frames.deny, default list; frames.denyExtra) is refused at admission, naming the field and
// the setting, before the engine compiles anything; in every namespace.
func TestNRIFramesDenied(t *testing.T) {
	const (
		schedFault = `{failtype: 0, callchain: [{funcname: schedule_timeout}, {funcname: d_alloc_parallel}]}`
		listFault  = `[{failtype: 1}, {failtype: 0, callchain: [{funcname: vfs_read}]}]`
	)
	tests := map[string]struct {
		config  string
		fault   string
		wantErr string // strict: substring of the creation error; "" = created and armed
		refused bool   // lenient: rejected (logged), runs without the fault
	}{
		"default list": {
			fault:   schedFault,
			wantErr: `kfault: annotation faults.kfault.dev/pod: callchain[0].funcname: frame function "schedule_timeout" is denied by the kfault node config: it matches "schedule_*" in frames.deny (the default list`,
		},
		"allowed frames":       {fault: listFault},
		"fault without frames": {fault: `{failtype: 0}`},
		"denyExtra names the fault in a list": {
			config:  "frames: {denyExtra: [vfs_*]}",
			fault:   listFault,
			wantErr: `kfault: annotation faults.kfault.dev/pod: [1].callchain[0].funcname: frame function "vfs_read" is denied by the kfault node config: it matches "vfs_*" in frames.denyExtra; remove "vfs_*" from frames.denyExtra to allow it`,
		},
		"deny replaces the default list": {config: "frames: {deny: [vfs_write]}", fault: schedFault},
		"lenient: refused, runs without the fault": {
			config: "mode: lenient", fault: schedFault, refused: true,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			tp := h.startPlugin(tc.config)
			p := pod("team-a", "web", map[string]string{"faults.kfault.dev/pod": tc.fault})
			c, _ := h.container(p, "app")
			err := h.rt.create(p, c)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("create error %v, want %q", err, tc.wantErr)
				}
				if n := tp.eng.prepareCalls(); n != 0 {
					t.Errorf("the engine prepared (compiled) the refused faults %d times", n)
				}
				if got := tp.eng.armedKeys(); len(got) != 0 {
					t.Fatalf("armed: %v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := h.rt.startCtr(p, c); err != nil {
				t.Fatal(err)
			}
			if tc.refused {
				rl := tp.logLines("rejected")
				if len(rl) != 2 || !strings.Contains(fmt.Sprint(rl[0]["error"]), `in frames.deny`) {
					t.Fatalf("rejected lines: %v", rl)
				}
				if got := tp.eng.armedKeys(); len(got) != 0 || tp.eng.prepareCalls() != 0 {
					t.Fatalf("armed %v, prepared %d times", got, tp.eng.prepareCalls())
				}
				return
			}
			if got := tp.eng.armedKeys(); !slices.Equal(got, []string{c.Id}) {
				t.Fatalf("armed %v", got)
			}
		})
	}
}

func TestNRIArmFailure(t *testing.T) {
	tests := map[string]struct {
		mode      string
		engineErr error
		noCgroup  bool
		wantErr   string // "" = start succeeds (unarmed)
	}{
		"strict: engine error aborts the start": {mode: "strict", engineErr: fmt.Errorf("verifier says no"), wantErr: "verifier says no"},
		"strict: no cgroup aborts the start":    {mode: "strict", noCgroup: true, wantErr: "cannot resolve the container's cgroup"},
		"lenient: engine error lets it run":     {mode: "lenient", engineErr: fmt.Errorf("verifier says no")},
		"lenient: no cgroup lets it run":        {mode: "lenient", noCgroup: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			tp := h.startPlugin("mode: " + tc.mode)
			tp.eng.armErr = tc.engineErr
			p := pod("default", "web", map[string]string{"faults.kfault.dev/pod": slabFault})
			c, _ := h.container(p, "app")
			if tc.noCgroup {
				c.Pid = 99999
				c.Linux.CgroupsPath = "kubepods-nope.slice:cri-containerd:nope"
			}
			if err := h.rt.create(p, c); err != nil {
				t.Fatal(err)
			}
			err := h.rt.startCtr(p, c)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("start failed in %s mode: %v", tc.mode, err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("start error %v, want %q", err, tc.wantErr)
			}
			if got := tp.eng.armedKeys(); len(got) != 0 {
				t.Errorf("armed: %v", got)
			}
			if n := counterValue(t, tp.p, "kfault_arm_errors_total"); n != 1 {
				t.Errorf("kfault_arm_errors_total = %v, want 1", n)
			}
			if len(tp.logLines("arm failed")) != 1 {
				t.Errorf("want one 'arm failed' log line:\n%s", tp.logs)
			}
		})
	}
}

// With the shipped default (allowedNamespaces empty) kfault injects nothing, in strict mode
// too: the annotated container is created and started, nothing reaches the engine, and the
// log says which setting turns kfault on.
func TestNRIDefaultDeny(t *testing.T) {
	h := newHarness(t)
	tp := h.startPlugin("allowedNamespaces: []\nmode: strict")
	p := pod("default", "web", map[string]string{"faults.kfault.dev/pod": slabFault})
	c, _ := h.container(p, "app")
	if err := h.rt.create(p, c); err != nil {
		t.Fatalf("create refused under the default config: %v", err)
	}
	if err := h.rt.startCtr(p, c); err != nil {
		t.Fatalf("start refused under the default config: %v", err)
	}
	if got := tp.eng.callLog(); len(got) != 0 {
		t.Errorf("engine called: %v", got)
	}
	lines := tp.logLines("not injected")
	if len(lines) != 2 { // create and start
		t.Fatalf("want 2 'not injected' lines, got %d:\n%s", len(lines), tp.logs)
	}
	for _, l := range lines {
		if reason := fmt.Sprint(l["reason"]); !strings.Contains(reason, `add "default"`) || !strings.Contains(reason, "allowedNamespaces") {
			t.Errorf("not injected line does not say which setting to change: %v", l)
		}
	}
	if got := tp.logLines("rejected"); len(got) != 0 {
		t.Errorf("rejected lines: %v", got)
	}
}

func TestNRILenient(t *testing.T) {
	h := newHarness(t)
	tp := h.startPlugin("mode: lenient")
	bad := pod("default", "bad", map[string]string{"faults.kfault.dev/pod": `{failtype: 9}`})
	denied := pod("kube-system", "sys", map[string]string{"faults.kfault.dev/pod": slabFault})
	for _, p := range []*api.PodSandbox{bad, denied} {
		c, _ := h.container(p, "app")
		if err := h.rt.create(p, c); err != nil {
			t.Fatalf("%s: create failed in lenient mode: %v", p.Name, err)
		}
		if err := h.rt.startCtr(p, c); err != nil {
			t.Fatalf("%s: start failed in lenient mode: %v", p.Name, err)
		}
	}
	if got := tp.eng.callLog(); len(got) != 0 {
		t.Errorf("engine called: %v", got)
	}
	rl := tp.logLines("rejected")
	if len(rl) != 4 { // create and start of each
		t.Fatalf("want 4 rejected lines, got %d:\n%s", len(rl), tp.logs)
	}
	for _, l := range rl {
		if l["mode"] != "lenient" || !strings.Contains(fmt.Sprint(l["error"]), "kfault:") {
			t.Errorf("rejected line %v", l)
		}
	}
}

func TestNRISynchronizeAfterRestart(t *testing.T) {
	h := newHarness(t)
	tp1 := h.startPlugin("")

	web := pod("default", "web", map[string]string{"faults.kfault.dev/pod": `[{failtype: 0, times: 10}, {failtype: 1}]`})
	keep, keepDir := h.container(web, "keep")
	gone, _ := h.container(web, "gone")
	for _, c := range []*api.Container{keep, gone} {
		if err := h.rt.create(web, c); err != nil {
			t.Fatal(err)
		}
		if err := h.rt.startCtr(web, c); err != nil {
			t.Fatal(err)
		}
	}
	tp1.eng.inject(t, keep.Id, 0, 3)
	tp1.eng.inject(t, keep.Id, 1, 5)
	tp1.p.RefreshCounts() // what the 5s ticker does; a kill -9 keeps the last one
	tp1.stop()

	// While kfault is away, "gone" disappears without any event.
	h.rt.forget(gone)

	tp2 := h.startPlugin("")
	if got := tp2.eng.armedKeys(); !slices.Equal(got, []string{keep.Id}) {
		t.Fatalf("re-armed %v, want only %s", got, keep.Id)
	}
	r, _ := tp2.eng.rule(keep.Id)
	if !slices.Equal(r.already, []uint64{3, 5}) {
		t.Errorf("alreadyInjected %v, want [3 5]", r.already)
	}
	// A running container's processes will not exec again: every task in it is faulted.
	if r.execBoundary {
		t.Error("re-armed at Synchronize with the exec boundary: the running container's processes would never be faulted")
	}
	if r.target.Path != keepDir {
		t.Errorf("target %+v, want %s", r.target, keepDir)
	}
	st := h.readState()
	if _, ok := st[gone.Id]; ok {
		t.Error("stale entry kept")
	}
	if e := st[keep.Id]; !e.Armed || !slices.Equal(e.Injected, []uint64{3, 5}) || e.Pod != "web" {
		t.Errorf("entry %+v", e)
	}
	// The budget continues: the counters go on from 3.
	tp2.eng.inject(t, keep.Id, 0, 1)
	if err := h.rt.stopCtr(web, keep); err != nil {
		t.Fatal(err)
	}
	if e := h.readState()[keep.Id]; !slices.Equal(e.Injected, []uint64{4, 5}) {
		t.Errorf("final counts %v, want [4 5]", e.Injected)
	}
}

func TestNRIReconnect(t *testing.T) {
	h := newHarness(t)
	tp := h.startPlugin("")
	web := pod("default", "web", map[string]string{"faults.kfault.dev/pod": slabFault})
	a, _ := h.container(web, "a")
	b, _ := h.container(web, "b")
	for _, c := range []*api.Container{a, b} {
		if err := h.rt.create(web, c); err != nil {
			t.Fatal(err)
		}
		if err := h.rt.startCtr(web, c); err != nil {
			t.Fatal(err)
		}
	}

	// containerd restarts; meanwhile b exits.
	h.rt.crash()
	h.rt.forget(b)
	h.rt.start()
	h.rt.waitSynced()

	// a stayed armed (not re-armed), b was disarmed at synchronization.
	if got := tp.eng.armedKeys(); !slices.Equal(got, []string{a.Id}) {
		t.Fatalf("armed %v, want [%s]", got, a.Id)
	}
	arms := 0
	for _, c := range tp.eng.callLog() {
		if c == "arm "+a.Id {
			arms++
		}
	}
	if arms != 1 {
		t.Errorf("a armed %d times: %v", arms, tp.eng.callLog())
	}
	if len(tp.logLines("NRI connection lost; reconnecting")) == 0 {
		t.Errorf("no reconnect logged:\n%s", tp.logs)
	}
	// The new connection works.
	c, _ := h.container(web, "c")
	if err := h.rt.create(web, c); err != nil {
		t.Fatal(err)
	}
	if err := h.rt.startCtr(web, c); err != nil {
		t.Fatal(err)
	}
	if got := tp.eng.armedKeys(); !slices.Equal(got, []string{a.Id, c.Id}) {
		t.Fatalf("armed %v", got)
	}
}

func TestNRIConfigureAndSubscription(t *testing.T) {
	dir := t.TempDir()
	p, err := New(Options{Engine: newFakeEngine(), Logger: testLogger(&logBuffer{}), File: Config{StateDir: dir}})
	if err != nil {
		t.Fatal(err)
	}
	h := nriHandlers{p}
	tests := map[string]struct {
		config  string
		wantErr string
	}{
		"empty":       {},
		"valid":       {config: "mode: lenient\ndeniedNamespaces: [a]"},
		"unknown key": {config: "bogus: 1", wantErr: `unknown key "bogus"`},
		"bad value":   {config: "mode: maybe", wantErr: "mode:"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			mask, err := h.Configure(context.Background(), tc.config, "containerd", "2.2.0")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if mask != Events {
				t.Errorf("mask %s, want %s", mask.PrettyString(), Events.PrettyString())
			}
		})
	}

	// Exactly the four container events, all known to containerd 1.7.
	for _, e := range []api.Event{api.Event_CREATE_CONTAINER, api.Event_START_CONTAINER, api.Event_STOP_CONTAINER, api.Event_REMOVE_CONTAINER} {
		if !Events.IsSet(e) {
			t.Errorf("%v not subscribed", e)
		}
	}
	if n := len(strings.Split(Events.PrettyString(), ",")); n != 4 {
		t.Errorf("subscribed to %s", Events.PrettyString())
	}
	// The stub subscribes to whatever the handler object implements: nothing else.
	var hi any = h
	for name, ok := range map[string]bool{
		"UpdatePodSandbox":            implements[stub.UpdatePodInterface](hi),
		"PostUpdatePodSandbox":        implements[stub.PostUpdatePodInterface](hi),
		"ValidateContainerAdjustment": implements[stub.ValidateContainerAdjustmentInterface](hi),
		"RunPodSandbox":               implements[stub.RunPodInterface](hi),
		"UpdateContainer":             implements[stub.UpdateContainerInterface](hi),
		"PostStartContainer":          implements[stub.PostStartContainerInterface](hi),
	} {
		if ok {
			t.Errorf("handlers implement %s", name)
		}
	}
}

func implements[T any](v any) bool {
	_, ok := v.(T)
	return ok
}

// TestNRIManyCycles: 200 create/start/stop/remove cycles leave no rule, state entry or
// goroutine behind.
func TestNRIManyCycles(t *testing.T) {
	h := newHarness(t)
	tp := h.startPlugin("")
	web := pod("default", "web", map[string]string{"faults.kfault.dev/pod": slabFault})
	cycle := func() {
		c, _ := h.container(web, "app")
		for _, step := range []func(*api.PodSandbox, *api.Container) error{h.rt.create, h.rt.startCtr, h.rt.stopCtr, h.rt.removeCtr} {
			if err := step(web, c); err != nil {
				t.Fatal(err)
			}
		}
	}
	for range 10 {
		cycle()
	}
	before := runtime.NumGoroutine()
	for range 200 {
		cycle()
	}
	if got := tp.eng.armedKeys(); len(got) != 0 {
		t.Errorf("engine rules left: %v", got)
	}
	if got := tp.p.ArmedKeys(); len(got) != 0 {
		t.Errorf("plugin keys left: %v", got)
	}
	if got := h.readState(); len(got) != 0 {
		t.Errorf("state entries left: %d", len(got))
	}
	if n := strings.Count(strings.Join(tp.eng.callLog(), "\n"), "arm "); n != 2*210 {
		t.Errorf("%d engine arm+disarm calls, want %d", n, 2*210)
	}
	if after := runtime.NumGoroutine(); after > before+5 {
		t.Errorf("goroutines: %d before, %d after", before, after)
	}
}
