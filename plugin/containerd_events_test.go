package plugin

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	"github.com/kfault/kfault/bpf"
)

// fakeSource is a containerd with containers and live tasks.
type fakeSource struct {
	mu         sync.Mutex
	containers map[string]ContainerInfo // by namespace/id
	tasks      []TaskInfo
	lookups    []string
}

func (f *fakeSource) Container(_ context.Context, ns, id string) (ContainerInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups = append(f.lookups, ns+"/"+id)
	c, ok := f.containers[ns+"/"+id]
	if !ok {
		return ContainerInfo{}, fmt.Errorf("container %q in namespace %q: not found", id, ns)
	}
	return c, nil
}

func (f *fakeSource) LiveTasks(context.Context) ([]TaskInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.tasks), nil
}

// add registers a container whose init pid lives in a fresh cgroup of the fake host.
func (f *fakeSource) add(t *testing.T, u *unitPlugin, ns, id, name, value string) uint32 {
	t.Helper()
	testPid++
	rel := fmt.Sprintf("system.slice/nerdctl-%s.scope", id)
	u.host.cgroup(t, rel)
	u.host.process(t, testPid, "0::/"+rel+"\n")
	info := ContainerInfo{Namespace: ns, ID: id, Labels: map[string]string{}, Annotations: map[string]string{}}
	if name != "" {
		info.Labels["nerdctl/name"] = name
	}
	if value != "" {
		info.Annotations["faults.kfault.dev"] = value
	}
	if ns == "k8s.io" {
		info.Annotations["io.kubernetes.cri.container-type"] = "container"
	}
	info.CgroupsPath = ":nerdctl:" + id
	f.mu.Lock()
	if f.containers == nil {
		f.containers = map[string]ContainerInfo{}
	}
	f.containers[ns+"/"+id] = info
	f.mu.Unlock()
	return uint32(testPid)
}

func TestEventHandler(t *testing.T) {
	type step struct {
		ns    string
		event any
	}
	const fault = `{failtype: 0, times: 5}`
	tests := map[string]struct {
		config string
		// containers: id → annotation value ("" = none); all in namespace "default"
		// unless the id has a "ns/" prefix.
		containers map[string]string
		steps      func(pids map[string]uint32) []step
		wantArmed  []string // engine keys armed at the end
		wantCalls  []string // engine calls, in order (nil = don't check)
		wantState  map[string]bool
		wantLog    string // a log msg that must appear
	}{
		"create arms from the event's pid and the spec annotation": {
			containers: map[string]string{"n1": fault},
			steps: func(p map[string]uint32) []step {
				return []step{{"default", &apievents.TaskCreate{ContainerID: "n1", Pid: p["n1"]}}}
			},
			wantArmed: []string{"default/n1"},
			wantState: map[string]bool{"default/n1": true},
			wantLog:   "armed",
		},
		"over quota: logged, not armed (an event cannot block)": {
			config:     "quotas: {namespaces: {default: {containers: 1}}}",
			containers: map[string]string{"n1": fault, "n2": fault, "other/n3": fault},
			steps: func(p map[string]uint32) []step {
				return []step{
					{"default", &apievents.TaskCreate{ContainerID: "n1", Pid: p["n1"]}},
					{"default", &apievents.TaskCreate{ContainerID: "n2", Pid: p["n2"]}},
					{"other", &apievents.TaskCreate{ContainerID: "n3", Pid: p["other/n3"]}},
				}
			},
			wantArmed: []string{"default/n1", "other/n3"},
			wantLog:   "rejected",
		},
		"unannotated container is left alone": {
			containers: map[string]string{"plain": ""},
			steps: func(p map[string]uint32) []step {
				return []step{{"default", &apievents.TaskCreate{ContainerID: "plain", Pid: p["plain"]}}}
			},
			wantCalls: []string{},
		},
		"k8s.io is skipped (NRI covers it)": {
			containers: map[string]string{"k8s.io/c": fault},
			steps: func(p map[string]uint32) []step {
				return []step{{"k8s.io", &apievents.TaskCreate{ContainerID: "c", Pid: p["k8s.io/c"]}}}
			},
			wantCalls: []string{},
		},
		"CRI containers are NRI's, even outside k8s.io": {
			config:     "events: {skipNamespaces: []}",
			containers: map[string]string{"k8s.io/c": fault},
			steps: func(p map[string]uint32) []step {
				return []step{{"k8s.io", &apievents.TaskCreate{ContainerID: "c", Pid: p["k8s.io/c"]}}}
			},
			wantCalls: []string{},
		},
		"exec exit does not disarm, init exit does": {
			containers: map[string]string{"n1": fault},
			steps: func(p map[string]uint32) []step {
				return []step{
					{"default", &apievents.TaskCreate{ContainerID: "n1", Pid: p["n1"]}},
					{"default", &apievents.TaskExit{ContainerID: "n1", ID: "exec-1", Pid: 4242}},
					{"default", &apievents.TaskExit{ContainerID: "n1", ID: "n1", Pid: p["n1"]}},
				}
			},
			wantCalls: []string{"arm default/n1", "disarm default/n1"},
			wantState: map[string]bool{"default/n1": false},
			wantLog:   "disarmed",
		},
		"exit, delete, container delete: one disarm, entry forgotten": {
			containers: map[string]string{"n1": fault},
			steps: func(p map[string]uint32) []step {
				return []step{
					{"default", &apievents.TaskCreate{ContainerID: "n1", Pid: p["n1"]}},
					{"default", &apievents.TaskExit{ContainerID: "n1", ID: "n1"}},
					{"default", &apievents.TaskDelete{ContainerID: "n1"}},
					{"default", &apievents.ContainerDelete{ID: "n1"}},
				}
			},
			wantCalls: []string{"arm default/n1", "disarm default/n1"},
			wantState: map[string]bool{},
		},
		"task delete alone disarms": {
			containers: map[string]string{"n1": fault},
			steps: func(p map[string]uint32) []step {
				return []step{
					{"default", &apievents.TaskCreate{ContainerID: "n1", Pid: p["n1"]}},
					{"default", &apievents.TaskDelete{ContainerID: "n1", ID: "n1"}},
				}
			},
			wantCalls: []string{"arm default/n1", "disarm default/n1"},
		},
		"same id in two namespaces are two containers": {
			containers: map[string]string{"n1": fault, "other/n1": fault},
			steps: func(p map[string]uint32) []step {
				return []step{
					{"default", &apievents.TaskCreate{ContainerID: "n1", Pid: p["n1"]}},
					{"other", &apievents.TaskCreate{ContainerID: "n1", Pid: p["other/n1"]}},
					{"other", &apievents.TaskExit{ContainerID: "n1", ID: "n1"}},
				}
			},
			wantArmed: []string{"default/n1"},
		},
		"bad annotation: logged, not armed, nothing to refuse": {
			containers: map[string]string{"n1": `{failtype: 0, probability: 0}`},
			steps: func(p map[string]uint32) []step {
				return []step{{"default", &apievents.TaskCreate{ContainerID: "n1", Pid: p["n1"]}}}
			},
			wantCalls: []string{},
			wantLog:   "rejected",
		},
		"disallowed namespace: logged, not armed": {
			config:     "deniedNamespaces: [default]",
			containers: map[string]string{"n1": fault},
			steps: func(p map[string]uint32) []step {
				return []step{{"default", &apievents.TaskCreate{ContainerID: "n1", Pid: p["n1"]}}}
			},
			wantCalls: []string{},
			wantLog:   "rejected",
		},
		"unknown container: logged": {
			steps: func(p map[string]uint32) []step {
				return []step{{"default", &apievents.TaskCreate{ContainerID: "ghost", Pid: 1}}}
			},
			wantCalls: []string{},
			wantLog:   "containerd: cannot load container",
		},
		"restart of the same container continues its budget": {
			containers: map[string]string{"n1": fault},
			steps: func(p map[string]uint32) []step {
				return []step{
					{"default", &apievents.TaskCreate{ContainerID: "n1", Pid: p["n1"]}},
					{"", "inject default/n1 2"},
					{"default", &apievents.TaskExit{ContainerID: "n1", ID: "n1"}},
					{"default", &apievents.TaskCreate{ContainerID: "n1", Pid: p["n1"]}},
					{"", "already default/n1 2"},
				}
			},
			wantArmed: []string{"default/n1"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			u := newTestPlugin(t, tc.config)
			src := &fakeSource{}
			pids := map[string]uint32{}
			for id, value := range tc.containers {
				ns, cid, ok := strings.Cut(id, "/")
				if !ok {
					ns, cid = "default", id
				}
				pids[id] = src.add(t, u, ns, cid, "name-"+cid, value)
			}
			h := NewEventHandler(u.Plugin, src)
			for _, s := range tc.steps(pids) {
				if cmd, ok := s.event.(string); ok { // test directives
					var verb, key string
					var n uint64
					fmt.Sscan(cmd, &verb, &key, &n)
					switch verb {
					case "inject":
						u.eng.inject(t, key, 0, n)
					case "already":
						if r, _ := u.eng.rule(key); len(r.already) != 1 || r.already[0] != n {
							t.Fatalf("alreadyInjected %v, want [%d]", r.already, n)
						}
					}
					continue
				}
				h.Handle(context.Background(), s.ns, s.event, time.Time{})
			}
			if tc.wantArmed != nil || tc.wantCalls == nil {
				if got := u.eng.armedKeys(); !slices.Equal(got, tc.wantArmed) {
					t.Errorf("armed %v, want %v", got, tc.wantArmed)
				}
			}
			if tc.wantCalls != nil {
				if got := u.eng.callLog(); !slices.Equal(got, tc.wantCalls) && !(len(got) == 0 && len(tc.wantCalls) == 0) {
					t.Errorf("engine calls %v, want %v", got, tc.wantCalls)
				}
			}
			if tc.wantState != nil {
				snap := u.Store().Snapshot()
				got := map[string]bool{}
				for k, e := range snap {
					got[k] = e.Armed
				}
				if fmt.Sprint(got) != fmt.Sprint(tc.wantState) {
					t.Errorf("state %v, want %v", got, tc.wantState)
				}
			}
			if tc.wantLog != "" && !strings.Contains(u.logs.String(), `"msg":"`+tc.wantLog+`"`) {
				t.Errorf("no %q log line:\n%s", tc.wantLog, u.logs)
			}
		})
	}
}

func TestEventHandlerLogsNames(t *testing.T) {
	u := newTestPlugin(t, "")
	src := &fakeSource{}
	pid := src.add(t, u, "default", "abc123", "web", `{failtype: 0}`)
	NewEventHandler(u.Plugin, src).Handle(context.Background(), "default",
		&apievents.TaskCreate{ContainerID: "abc123", Pid: pid}, time.Now().Add(-time.Second))
	e, ok := u.Store().Get("default/abc123")
	if !ok || e.Source != SourceContainerd || e.Namespace != "default" || e.Container != "web" || e.ContainerID != "abc123" || e.Pod != "" {
		t.Fatalf("state entry %+v", e)
	}
	for _, want := range []string{`"container":"web"`, `"sinceEventSeconds":1.`} {
		if !strings.Contains(u.logs.String(), want) {
			t.Errorf("armed log line lacks %s:\n%s", want, u.logs)
		}
	}
}

func TestEventSync(t *testing.T) {
	u := newTestPlugin(t, "")
	src := &fakeSource{}
	const fault = `{failtype: 1, times: 9}`
	live := src.add(t, u, "default", "live", "", fault)
	armedAlready := src.add(t, u, "default", "running", "", fault)
	k8s := src.add(t, u, "k8s.io", "cri", "", fault)
	h := NewEventHandler(u.Plugin, src)

	// "running" is armed already (seen by an earlier event); "stale" is in the state
	// from an earlier run, its container gone; an NRI entry must not be touched.
	h.Handle(context.Background(), "default", &apievents.TaskCreate{ContainerID: "running", Pid: armedAlready}, time.Time{})
	u.Store().Put("default/stale", Entry{Source: SourceContainerd, Namespace: "default", ContainerID: "stale", Faults: mustFaults(fault), Injected: []uint64{1}})
	u.Store().Put("criID", Entry{Source: SourceNRI, Namespace: "default", ContainerID: "criID", Faults: mustFaults(fault)})
	// "live" ran before a plugin restart, with 4 injected.
	u.Store().Put("default/live", Entry{Source: SourceContainerd, Namespace: "default", ContainerID: "live", Faults: mustFaults(fault), Injected: []uint64{4}})

	src.tasks = []TaskInfo{
		{Namespace: "default", ContainerID: "live", Pid: live},
		{Namespace: "default", ContainerID: "running", Pid: armedAlready},
		{Namespace: "k8s.io", ContainerID: "cri", Pid: k8s},
	}
	if err := h.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := u.eng.armedKeys(); !slices.Equal(got, []string{"default/live", "default/running"}) {
		t.Errorf("armed %v", got)
	}
	if r, _ := u.eng.rule("default/live"); !slices.Equal(r.already, []uint64{4}) {
		t.Errorf("live re-armed with %v, want [4]", r.already)
	}
	if got := slices.Sorted(func(yield func(string) bool) {
		for k := range u.Store().Snapshot() {
			if !yield(k) {
				return
			}
		}
	}); !slices.Equal(got, []string{"criID", "default/live", "default/running"}) {
		t.Errorf("state keys %v", got)
	}
	if n := strings.Count(strings.Join(u.eng.callLog(), ","), "arm default/running"); n != 1 {
		t.Errorf("running armed %d times", n)
	}
}

// TestRearmKeepsDurations: after a restart, a fault with a duration gets what is left
// of it, counted from the first arm; one whose duration has elapsed is not armed again.
// The engine gets every fault with the first arm's time and keeps the elapsed ones off.
func TestRearmKeepsDurations(t *testing.T) {
	const value = `[{failtype: 0, duration: 5m}, {failtype: 1, duration: 1h}, {failtype: 2}]`
	tests := map[string]struct {
		value      string
		armedAgo   time.Duration
		injected   []uint64
		wantActive []bool // per fault, in the engine after the re-arm; nil: not armed
	}{
		"some elapsed": {value: value, armedAgo: 10 * time.Minute, injected: []uint64{1, 2, 3}, wantActive: []bool{false, true, true}},
		"none elapsed": {value: value, armedAgo: time.Minute, injected: []uint64{1, 2, 3}, wantActive: []bool{true, true, true}},
		"all elapsed":  {value: `{failtype: 0, duration: 5m}`, armedAgo: time.Hour, injected: []uint64{9}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			u := newTestPlugin(t, "")
			src := &fakeSource{}
			pid := src.add(t, u, "default", "n1", "", tc.value)
			armedAt := time.Now().Add(-tc.armedAgo)
			u.Store().Put("default/n1", Entry{Source: SourceContainerd, Namespace: "default", ContainerID: "n1",
				Faults: mustFaults(tc.value), Injected: tc.injected, ArmedAt: armedAt})
			src.tasks = []TaskInfo{{Namespace: "default", ContainerID: "n1", Pid: pid}}
			if err := NewEventHandler(u.Plugin, src).Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			r, armed := u.eng.rule("default/n1")
			if tc.wantActive == nil {
				if armed {
					t.Fatalf("armed %+v", r.faults)
				}
				if !strings.Contains(u.logs.String(), "every fault's duration has elapsed") {
					t.Errorf("no log line:\n%s", u.logs)
				}
				return
			}
			active, _ := u.eng.Active("default/n1")
			if !slices.Equal(active, tc.wantActive) || !slices.Equal(r.already, tc.injected) || !r.since.Equal(armedAt) {
				t.Fatalf("armed with active %v, counts %v, since %v; want %v, %v, %v", active, r.already, r.since, tc.wantActive, tc.injected, armedAt)
			}
			st := u.Status()
			if len(st.Containers) != 1 || !slices.Equal(st.Containers[0].Live, tc.wantActive) {
				t.Errorf("status live %+v, want %v", st.Containers, tc.wantActive)
			}
			// Counts are the annotation's faults'.
			u.eng.inject(t, "default/n1", 1, 5)
			u.RefreshCounts()
			e, _ := u.Store().Get("default/n1")
			want := slices.Clone(tc.injected)
			want[1] += 5
			if !slices.Equal(e.Injected, want) {
				t.Errorf("counts %v, want %v", e.Injected, want)
			}
		})
	}
}

// A non-CRI container is armed by its cgroup's path at its container create, before the
// cgroup exists; its task create then moves the arm to the cgroup (the engine keeps rules and
// counts) instead of arming anew. When the cgroup exists already at the container create, or
// the engine says the kernel did not arm it as it was made, the task's event arms as before.
func TestEventArmByPath(t *testing.T) {
	const fault = `{failtype: 0, times: 5}`
	tests := map[string]struct {
		cgroupFirst bool  // the cgroup exists when the container create is handled
		retargetErr error // the engine's answer to Retarget
		wantCalls   []string
		wantLog     string
	}{
		"armed by path, then retargeted": {
			wantCalls: []string{"arm by path default/n1", "retarget default/n1"},
			wantLog:   "cgroup armed as it was made",
		},
		"cgroup made before the path was armed: armed anew": {
			retargetErr: bpf.ErrMadeBefore,
			wantCalls:   []string{"arm by path default/n1", "retarget default/n1", "disarm default/n1", "arm default/n1"},
			wantLog:     "armed by path too late: arming the cgroup now",
		},
		"cgroup exists at the container create: the task's event arms": {
			cgroupFirst: true,
			wantCalls:   []string{"arm default/n1"},
			wantLog:     "armed",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			u := newTestPlugin(t, "")
			src := &fakeSource{}
			pid := src.add(t, u, "default", "n1", "web", fault)
			dir := filepath.Join(u.host.cg, "system.slice", "nerdctl-n1.scope")
			if !tc.cgroupFirst {
				if err := os.Remove(dir); err != nil {
					t.Fatal(err)
				}
			}
			u.eng.retargetErr = tc.retargetErr
			h := NewEventHandler(u.Plugin, src)
			h.Handle(context.Background(), "default", &apievents.ContainerCreate{ID: "n1"}, time.Time{})
			if !tc.cgroupFirst {
				r, ok := u.eng.rule("default/n1")
				want := bpf.Target{Path: "/system.slice/nerdctl-n1.scope", Level: 2}
				if !ok || !r.pending || r.target != want || !r.execBoundary {
					t.Fatalf("after container create: rule %+v (armed %v), want pending on %+v with the exec boundary", r, ok, want)
				}
				if e, _ := u.Store().Get("default/n1"); !e.Armed || e.CgroupID != 0 || e.CgroupPath != want.Path {
					t.Errorf("state after container create: %+v", e)
				}
				u.host.cgroup(t, "system.slice/nerdctl-n1.scope")
			}
			h.Handle(context.Background(), "default", &apievents.TaskCreate{ContainerID: "n1", Pid: pid}, time.Time{})
			if got := u.eng.callLog(); !slices.Equal(got, tc.wantCalls) {
				t.Errorf("engine calls %v, want %v", got, tc.wantCalls)
			}
			r, ok := u.eng.rule("default/n1")
			if !ok || r.pending || r.target.ID != inode(t, dir) {
				t.Errorf("after task create: rule %+v (armed %v), want it on %s (id %d)", r, ok, dir, inode(t, dir))
			}
			if e, _ := u.Store().Get("default/n1"); !e.Armed || e.CgroupID != inode(t, dir) || e.CgroupPath != dir {
				t.Errorf("state after task create: %+v", e)
			}
			if !strings.Contains(u.logs.String(), `"msg":"`+tc.wantLog+`"`) {
				t.Errorf("no %q log line:\n%s", tc.wantLog, u.logs)
			}
		})
	}
}
