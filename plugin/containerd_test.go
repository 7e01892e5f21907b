package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc"
)

// fakeContainerd is an in-memory containerd behind the real v2 client: containers
// (with OCI specs), tasks, namespaces and an event stream the test feeds.
type fakeContainerd struct {
	mu         sync.Mutex
	containers map[string]containers.Container // by namespace/id
	tasks      map[string][]*tasktypes.Process // by namespace
	subs       []chan *events.Envelope
	errs       []chan error
	subscribed chan struct{}
}

func newFakeContainerd() *fakeContainerd {
	return &fakeContainerd{
		containers: map[string]containers.Container{},
		tasks:      map[string][]*tasktypes.Process{},
		subscribed: make(chan struct{}, 8),
	}
}

// rawAny is a typeurl.Any holding JSON, as containerd stores OCI specs.
type rawAny struct {
	url   string
	value []byte
}

func (a rawAny) GetTypeUrl() string { return a.url }
func (a rawAny) GetValue() []byte   { return a.value }

func (f *fakeContainerd) addContainer(t *testing.T, ns, id string, ann map[string]string, cgroupsPath string) {
	t.Helper()
	spec, err := json.Marshal(specs.Spec{Version: "1.2.0", Annotations: ann, Linux: &specs.Linux{CgroupsPath: cgroupsPath}})
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.containers[ns+"/"+id] = containers.Container{ID: id, Labels: map[string]string{"nerdctl/name": "name-" + id},
		Spec: rawAny{"types.containerd.io/opencontainers/runtime-spec/1/Spec", spec}}
}

func (f *fakeContainerd) setTasks(ns string, procs ...*tasktypes.Process) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tasks[ns] = procs
}

// publish sends an event to every subscriber.
func (f *fakeContainerd) publish(t *testing.T, ns, topic string, ev any) {
	t.Helper()
	a, err := typeurl.MarshalAny(ev)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	subs := slices.Clone(f.subs)
	f.mu.Unlock()
	for _, ch := range subs {
		ch <- &events.Envelope{Timestamp: time.Now(), Namespace: ns, Topic: topic, Event: a}
	}
}

// drop ends every subscription with an error, as a containerd restart does.
func (f *fakeContainerd) drop() {
	f.mu.Lock()
	errs := f.errs
	f.subs, f.errs = nil, nil
	f.mu.Unlock()
	for _, e := range errs {
		e <- errors.New("connection reset")
	}
}

func (f *fakeContainerd) client() (*client.Client, error) {
	return client.New("", client.WithServices(
		client.WithContainerStore(fakeContainerStore{f}),
		client.WithTaskClient(fakeTasks{f: f}),
		client.WithNamespaceService(fakeNamespaces{f: f}),
		client.WithEventService(fakeEvents{f: f}),
	))
}

type fakeContainerStore struct{ f *fakeContainerd }

func (s fakeContainerStore) Get(ctx context.Context, id string) (containers.Container, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return containers.Container{}, err
	}
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	c, ok := s.f.containers[ns+"/"+id]
	if !ok {
		return c, fmt.Errorf("container %q in namespace %q: not found", id, ns)
	}
	return c, nil
}
func (fakeContainerStore) List(context.Context, ...string) ([]containers.Container, error) {
	return nil, errors.New("not implemented")
}
func (fakeContainerStore) Create(context.Context, containers.Container) (containers.Container, error) {
	return containers.Container{}, errors.New("not implemented")
}
func (fakeContainerStore) Update(context.Context, containers.Container, ...string) (containers.Container, error) {
	return containers.Container{}, errors.New("not implemented")
}
func (fakeContainerStore) Delete(context.Context, string) error { return errors.New("not implemented") }

type fakeTasks struct {
	tasksapi.TasksClient // only List is implemented
	f                    *fakeContainerd
}

func (t fakeTasks) List(ctx context.Context, _ *tasksapi.ListTasksRequest, _ ...grpc.CallOption) (*tasksapi.ListTasksResponse, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	return &tasksapi.ListTasksResponse{Tasks: t.f.tasks[ns]}, nil
}

type fakeNamespaces struct {
	namespaces.Store // only List is implemented
	f                *fakeContainerd
}

func (n fakeNamespaces) List(context.Context) ([]string, error) {
	n.f.mu.Lock()
	defer n.f.mu.Unlock()
	seen := map[string]bool{}
	for k := range n.f.containers {
		ns, _, _ := strings.Cut(k, "/")
		seen[ns] = true
	}
	var out []string
	for ns := range seen {
		out = append(out, ns)
	}
	slices.Sort(out)
	return out, nil
}

type fakeEvents struct {
	client.EventService // only Subscribe is implemented
	f                   *fakeContainerd
}

func (e fakeEvents) Subscribe(ctx context.Context, _ ...string) (<-chan *events.Envelope, <-chan error) {
	ch, errs := make(chan *events.Envelope, 16), make(chan error, 1)
	e.f.mu.Lock()
	e.f.subs = append(e.f.subs, ch)
	e.f.errs = append(e.f.errs, errs)
	e.f.mu.Unlock()
	e.f.subscribed <- struct{}{}
	return ch, errs
}

// TestWatchContainerd drives the real watcher (client, subscription, decoding, sync,
// reconnection) against an in-memory containerd.
func TestWatchContainerd(t *testing.T) {
	u := newTestPlugin(t, "")
	fc := newFakeContainerd()
	old := dialContainerd
	dialContainerd = func(string) (*client.Client, error) { return fc.client() }
	t.Cleanup(func() { dialContainerd = old })

	// A nerdctl container already running when kfault starts.
	const fault = `{failtype: 0}`
	u.host.cgroup(t, "system.slice/nerdctl-early.scope")
	fc.addContainer(t, "default", "early", map[string]string{"faults.kfault.dev": fault}, ":nerdctl:early")
	fc.setTasks("default", &tasktypes.Process{ContainerID: "early", ID: "early", Pid: 0, Status: tasktypes.Status_RUNNING})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { u.WatchContainerd(ctx, "unused"); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitChan(t, fc.subscribed)
	waitUntil(t, func() bool { return slices.Contains(u.eng.armedKeys(), "default/early") })
	if r, _ := u.eng.rule("default/early"); r.target.Path != u.host.cg+"/system.slice/nerdctl-early.scope" {
		t.Errorf("early armed on %s (from cgroupsPath, no pid)", r.target.Path)
	}

	// A new container: armed on /tasks/create, disarmed on the init's /tasks/exit.
	pid := 7000
	u.host.cgroup(t, "system.slice/nerdctl-late.scope")
	u.host.process(t, pid, "0::/system.slice/nerdctl-late.scope\n")
	fc.addContainer(t, "default", "late", map[string]string{"faults.kfault.dev": fault}, "")
	fc.publish(t, "default", TopicTaskCreate, &apievents.TaskCreate{ContainerID: "late", Pid: uint32(pid)})
	waitUntil(t, func() bool { return slices.Contains(u.eng.armedKeys(), "default/late") })
	// k8s.io events are not the watcher's business.
	fc.addContainer(t, "k8s.io", "cri", map[string]string{"faults.kfault.dev": fault}, "")
	fc.publish(t, "k8s.io", TopicTaskCreate, &apievents.TaskCreate{ContainerID: "cri", Pid: uint32(pid)})
	fc.publish(t, "default", TopicTaskExit, &apievents.TaskExit{ContainerID: "late", ID: "late"})
	waitUntil(t, func() bool { return !slices.Contains(u.eng.armedKeys(), "default/late") })

	// containerd restarts; meanwhile "early" exits. The watcher reconnects and syncs.
	fc.setTasks("default")
	fc.drop()
	waitChan(t, fc.subscribed)
	waitUntil(t, func() bool {
		_, known := u.Store().Get("default/early")
		return len(u.eng.armedKeys()) == 0 && !known // disarmed and forgotten
	})
	if slices.Contains(u.eng.callLog(), "arm k8s.io/cri") {
		t.Error("k8s.io container armed by the watcher")
	}
}

func waitChan(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(syncTimeout):
		t.Fatal("timed out")
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(syncTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
