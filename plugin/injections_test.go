package plugin

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kfault/kfault/bpf"
)

func TestInjections(t *testing.T) {
	u := newTestPlugin(t, "")
	u.eng.inj = make(chan bpf.Injection)
	u.armForTest(t, "c1", ident{SourceNRI, "default", "web", "app", "c1"}, `[{failtype: 0}, {failtype: 2}]`)
	// "n1" was re-armed after a restart with only its second fault still due: the
	// engine keeps the first off, and samples name the annotation's index.
	const n1 = `[{failtype: 0, duration: 1m}, {failtype: 1, duration: 1h}]`
	u.Store().Put("default/n1", Entry{Source: SourceContainerd, Namespace: "default", Container: "n1", ContainerID: "n1",
		Faults: mustFaults(n1), Injected: []uint64{0, 0}, Armed: true, ArmedAt: time.Now().Add(-2 * time.Minute)})
	src := &fakeSource{}
	pid := src.add(t, u, "default", "n1", "n1", n1)
	src.tasks = []TaskInfo{{Namespace: "default", ContainerID: "n1", Pid: pid}}
	if err := NewEventHandler(u.Plugin, src).Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if active, err := u.eng.Active("default/n1"); err != nil || len(active) != 2 || active[0] || !active[1] {
		t.Fatalf("n1 active %v, %v", active, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { u.consumeInjections(ctx); close(done) }()
	for i := range 10 {
		u.eng.inj <- bpf.Injection{Key: "c1", Fault: 1, PID: 100 + i, TGID: 100, Comm: "mount-loop"}
	}
	u.eng.inj <- bpf.Injection{Key: "default/n1", Fault: 1, PID: 7, TGID: 7, Comm: "sh"}
	u.eng.inj <- bpf.Injection{Key: "gone", Fault: 0, PID: 8} // not ours any more: ignored
	cancel()
	<-done

	var lines []map[string]any
	for _, l := range strings.Split(u.logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "injected" {
			lines = append(lines, m)
		}
	}
	if len(lines) != 11 {
		t.Fatalf("%d injected lines, want 11:\n%s", len(lines), u.logs)
	}
	first, last := lines[0], lines[10]
	if first["namespace"] != "default" || first["pod"] != "web" || first["container"] != "app" ||
		first["fault"] != "1:should_fail_bio" || first["comm"] != "mount-loop" || first["pid"] != 100.0 {
		t.Errorf("first line %v", first)
	}
	if last["container"] != "n1" || last["fault"] != "1:should_fail_alloc_page" {
		t.Errorf("sample not labelled with the annotation's fault: %v", last)
	}

	st := u.Status()
	for _, c := range st.Containers {
		switch c.Key {
		case "c1":
			if len(c.Live) != 2 || !c.Live[0] || !c.Live[1] {
				t.Errorf("c1 live %v", c.Live)
			}
			if len(c.Recent) != recentPerKey || c.Recent[recentPerKey-1].PID != 109 || c.Recent[0].PID != 102 {
				t.Errorf("c1 recent %+v", c.Recent)
			}
		case "default/n1":
			if len(c.Recent) != 1 || c.Recent[0].Fault != 1 {
				t.Errorf("n1 recent %+v", c.Recent)
			}
			// Fault 0 elapsed before the restart; fault 1 is armed.
			if len(c.Live) != 2 || c.Live[0] || !c.Live[1] {
				t.Errorf("n1 live %v, want [false true]", c.Live)
			}
		}
	}
	u.disarm("c1", "remove", true)
	if got := u.inj.get("c1"); len(got) != 0 {
		t.Errorf("recent kept after removal: %v", got)
	}
}

func TestInjectionLogBudget(t *testing.T) {
	var in injections
	t0 := time.Unix(1000, 0)
	allowed := 0
	for i := range 30 {
		if ok, _ := in.allowLog(t0.Add(time.Duration(i) * time.Millisecond)); ok {
			allowed++
		}
	}
	if allowed != maxInjectionLogsPerSecond {
		t.Errorf("%d allowed in one second, want %d", allowed, maxInjectionLogsPerSecond)
	}
	ok, suppressed := in.allowLog(t0.Add(1500 * time.Millisecond))
	if !ok || suppressed != 30-maxInjectionLogsPerSecond {
		t.Errorf("next second: ok %v, suppressed %d", ok, suppressed)
	}
}
