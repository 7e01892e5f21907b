package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/nri/pkg/api"
	"github.com/kfault/kfault/annotations"
)

// The per-request work of NRI's CreateContainer and StartContainer must stay far below
// containerd's 2 s plugin timeout whatever the input. These tests and benchmarks drive the
// requests with the worst inputs the parser accepts, on a node whose state already holds
// many armed containers.

// worstAnnotation is a valid annotation value at MaxValueBytes or just under: MaxFaults faults,
// each with MaxHeaders headers of MaxHeaderBytes and call-chain frames with predicates of
// MaxTextBytes, as many as fit.
func worstAnnotation(tb testing.TB) string {
	tb.Helper()
	type frame struct {
		FuncName   string `json:"funcname"`
		Parameters string `json:"parameters,omitempty"`
		Predicate  string `json:"predicate,omitempty"`
	}
	type fault struct {
		FailType  int      `json:"failtype"`
		CallChain []frame  `json:"callchain"`
		Headers   []string `json:"headers"`
		Times     int      `json:"times"`
	}
	pred := "x == 1" + strings.Repeat(" && x == 1", (annotations.MaxTextBytes-6)/10)
	header := "linux/" + strings.Repeat("h", annotations.MaxHeaderBytes-8) + ".h"
	faults := make([]fault, annotations.MaxFaults)
	for i := range faults {
		faults[i] = fault{FailType: 0, Times: 1000, CallChain: []frame{{FuncName: "do_sys_open"}}}
	}
	encode := func() string {
		b, err := json.Marshal(faults)
		if err != nil {
			tb.Fatal(err)
		}
		return string(b)
	}
	// Round-robin over the faults, adding a header or a frame while the value fits.
	for grew := true; grew; {
		grew = false
		for i := range faults {
			if len(faults[i].Headers) < annotations.MaxHeaders {
				faults[i].Headers = append(faults[i].Headers, header)
				if len(encode()) > annotations.MaxValueBytes {
					faults[i].Headers = faults[i].Headers[:len(faults[i].Headers)-1]
				} else {
					grew = true
				}
			}
			if len(faults[i].CallChain) < annotations.MaxFrames {
				faults[i].CallChain = append([]frame{{FuncName: fmt.Sprintf("f%d_%d", i, len(faults[i].CallChain)),
					Parameters: "int x", Predicate: pred}}, faults[i].CallChain...)
				if len(encode()) > annotations.MaxValueBytes {
					faults[i].CallChain = faults[i].CallChain[1:]
				} else {
					grew = true
				}
			}
		}
	}
	v := encode()
	parsed, err := annotations.Parse(v)
	if err != nil {
		tb.Fatalf("worst annotation does not parse: %v", err)
	}
	if len(parsed) != annotations.MaxFaults || len(v) < annotations.MaxValueBytes*9/10 {
		tb.Fatalf("worst annotation: %d faults, %d bytes", len(parsed), len(v))
	}
	return v
}

// boundPlugin is a plugin whose state holds n armed containers, each with the worst
// annotation's faults (parsed once).
func boundPlugin(t testing.TB, n int, value string, before func(*Store)) *unitPlugin {
	t.Helper()
	u := newTestPlugin(t, "mode: strict\nquotas: {default: {containers: 1024, hooks: 64, chains: 252, frames: 32}}\n")
	u.log = slog.New(slog.DiscardHandler) // 500 "armed" lines of 16 long faults: not the subject
	if before != nil {
		before(u.Store())
	}
	faults, err := annotations.Parse(value)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := u.eng.Prepare(faults)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		key := fmt.Sprintf("armed-%04d", i)
		testPid++
		rel := fmt.Sprintf("test.slice/c%d", testPid)
		u.host.cgroup(t, rel)
		u.host.process(t, testPid, "0::/"+rel+"\n")
		id := ident{Source: SourceNRI, Namespace: fmt.Sprintf("ns%d", i%64), Pod: fmt.Sprintf("pod%d", i), Container: "app", ContainerID: key}
		if err := u.arm(armRequest{key: key, id: id, annotationKey: annotations.Key, plan: plan, pid: testPid}); err != nil {
			t.Fatal(err)
		}
	}
	return u
}

// request is one CreateContainer + StartContainer of a container with annotation value.
func (u *unitPlugin) request(t testing.TB, i int, value string) (*api.PodSandbox, *api.Container) {
	t.Helper()
	p := pod("bench", fmt.Sprintf("web%d", i), map[string]string{annotations.Key: value})
	testPid++
	rel := fmt.Sprintf("bench.slice/c%d", testPid)
	u.host.cgroup(t, rel)
	u.host.process(t, testPid, "0::/"+rel+"\n")
	c := &api.Container{Id: fmt.Sprintf("new-%d", i), PodSandboxId: p.Id, Name: "app", Pid: uint32(testPid)}
	h := nriHandlers{u.Plugin}
	if _, _, err := h.CreateContainer(context.Background(), p, c); err != nil {
		t.Fatalf("create: %v", err)
	}
	if err := h.StartContainer(context.Background(), p, c); err != nil {
		t.Fatalf("start: %v", err)
	}
	return p, c
}

// BenchmarkWorstRequest: CreateContainer + StartContainer of a container with the worst
// annotation, on a node with 500 armed containers in the state (the container is removed
// after each iteration, outside the timing, so the state stays at 500).
func BenchmarkWorstRequest(b *testing.B) {
	value := worstAnnotation(b)
	u := boundPlugin(b, 500, value, nil)
	b.Logf("annotation %d bytes; state %d entries", len(value), len(u.Store().Keys()))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		p, c := u.request(b, i, value)
		b.StopTimer()
		nriHandlers{u.Plugin}.RemoveContainer(context.Background(), p, c)
		b.StartTimer()
	}
}

// TestWorstRequestBounded: CreateContainer and StartContainer with the worst annotation, on a
// node with 500 armed containers of that annotation, do a bounded amount of work, whatever the
// state holds. Asserted structurally, not timed:
//   - the request does not write the state file and does not wait for a write: it completes
//     while the background writer is held in the middle of a write;
//   - the plugin lock is free during that write;
//   - the request goes through no operation that visits every state entry (Store.Snapshot,
//     Store.Keys); what it does to the Store is a bounded number of single-key operations.
//
// BenchmarkWorstRequest gives the time.
func TestWorstRequestBounded(t *testing.T) {
	value := worstAnnotation(t)
	const armed = 500
	// Hold the writer in its first write (requested by the first arm) from the start: the
	// other arms, and the request, only ask for one more write.
	var started chan []byte
	var release chan struct{}
	u := boundPlugin(t, armed, value, func(s *Store) { started, release = heldWrites(s) })
	s := u.Store()
	data := <-started // the writer is in its first write, and stays there
	if !u.mu.TryLock() {
		t.Fatal("the plugin lock is held during a state write")
	}
	u.mu.Unlock()

	s.mu.Lock()
	scans, gen := s.scans, s.gen
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		u.request(t, 0, value)
	}()
	select {
	case <-done:
	case data := <-started:
		t.Fatalf("a second write (%d bytes) started while the first is held", len(data))
	}
	if !u.isArmed("new-0") {
		t.Fatal("the container was not armed")
	}
	s.mu.Lock()
	dScans, dGen := s.scans-scans, s.gen-gen
	s.mu.Unlock()
	if dScans != 0 {
		t.Errorf("the request went through every state entry %d times (Snapshot/Keys)", dScans)
	}
	if dGen > 2 {
		t.Errorf("the request changed the state %d times, want at most 2", dGen)
	}
	t.Logf("annotation %d bytes; state %d entries (held write: %d bytes); the request changed the state %d times",
		len(value), armed+1, len(data), dGen)

	// Let the writer go: one more write, with the new container.
	flushed := make(chan error)
	go func() { flushed <- u.Flush() }()
	release <- struct{}{}
	last := <-started
	release <- struct{}{}
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(last), `"new-0"`) {
		t.Error("the write after the request does not have the new container")
	}
}

// BenchmarkSynchronize500: a plugin (re)started on a node with 500 running containers with the
// worst annotation, all in the state: NRI's Synchronize re-arms them all.
func BenchmarkSynchronize500(b *testing.B) {
	value := worstAnnotation(b)
	const n = 500
	u := boundPlugin(b, n, value, nil)
	u.syncLaterDone = make(chan struct{}, 1)
	var pods []*api.PodSandbox
	var ctrs []*api.Container
	for i := range n {
		key := fmt.Sprintf("armed-%04d", i)
		p := pod(fmt.Sprintf("ns%d", i%64), fmt.Sprintf("pod%d", i), map[string]string{annotations.Key: value})
		testPid++
		rel := fmt.Sprintf("sync.slice/c%d", testPid)
		u.host.cgroup(b, rel)
		u.host.process(b, testPid, "0::/"+rel+"\n")
		pods = append(pods, p)
		ctrs = append(ctrs, &api.Container{Id: key, PodSandboxId: p.Id, Name: "app", Pid: uint32(testPid),
			State: api.ContainerState_CONTAINER_RUNNING})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		for _, k := range u.ArmedKeys() { // as after a restart: nothing armed in this process
			u.mu.Lock()
			_ = u.engine.Disarm(k)
			delete(u.armed, k)
			u.mu.Unlock()
		}
		b.StartTimer()
		if _, err := (nriHandlers{u.Plugin}).Synchronize(context.Background(), pods, ctrs); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if got := len(u.ArmedKeys()); got < n {
			<-u.syncLaterDone // the rest, armed in the background
		}
		if got := len(u.ArmedKeys()); got != n {
			b.Fatalf("%d armed after synchronize, want %d", got, n)
		}
		b.StartTimer()
	}
}

// A Synchronize with more to arm than its budget allows returns, and arms the rest in the
// background; a container stopped in between is not armed.
func TestSynchronizeBudget(t *testing.T) {
	u := newTestPlugin(t, "")
	u.syncBudget = 0 // no time: everything is armed in the background
	u.syncLaterDone = make(chan struct{}, 1)
	gate := make(chan struct{})
	u.syncLaterStart = func() { <-gate }
	var pods []*api.PodSandbox
	var ctrs []*api.Container
	for i := range 3 {
		p := pod("default", fmt.Sprintf("pod%d", i), map[string]string{annotations.Key: slabFault})
		testPid++
		rel := fmt.Sprintf("sync.slice/c%d", testPid)
		u.host.cgroup(t, rel)
		u.host.process(t, testPid, "0::/"+rel+"\n")
		pods = append(pods, p)
		ctrs = append(ctrs, &api.Container{Id: fmt.Sprintf("c%d", i), PodSandboxId: p.Id, Name: "app", Pid: uint32(testPid),
			State: api.ContainerState_CONTAINER_RUNNING})
	}
	h := nriHandlers{u.Plugin}
	if _, err := h.Synchronize(context.Background(), pods, ctrs); err != nil {
		t.Fatal(err)
	}
	if got := u.ArmedKeys(); len(got) != 0 {
		t.Fatalf("armed inside Synchronize with no budget: %v", got)
	}
	if _, err := h.StopContainer(context.Background(), pods[1], ctrs[1]); err != nil {
		t.Fatal(err)
	}
	close(gate)
	<-u.syncLaterDone
	if got := u.ArmedKeys(); !slices.Equal(got, []string{"c0", "c2"}) {
		t.Errorf("armed in the background: %v, want [c0 c2] (c1 was stopped first)", got)
	}
	if !strings.Contains(u.logs.String(), `"armingInBackground":3`) {
		t.Errorf("no armingInBackground in the synchronized line:\n%s", u.logs)
	}
}

// BenchmarkStoreSave500: one write of a state of 500 containers with the worst annotation (the
// background writer's work, and the delay that coalescing adds at most per write).
func BenchmarkStoreSave500(b *testing.B) {
	faults, err := annotations.Parse(worstAnnotation(b))
	if err != nil {
		b.Fatal(err)
	}
	s, err := OpenStore(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	for i := range 500 {
		s.Put(fmt.Sprintf("c%04d", i), Entry{Source: SourceNRI, Namespace: "ns", Faults: faults, Injected: make([]uint64, len(faults)), Armed: true})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := s.Save(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if fi, err := os.Stat(s.Path()); err == nil {
		b.ReportMetric(float64(fi.Size()), "file-bytes")
	}
}
