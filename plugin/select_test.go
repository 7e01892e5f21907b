package plugin

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/nri/pkg/api"
	"github.com/kfault/kfault/annotations"
)

// drawn returns the first of prefix-0, prefix-1, ... whose percent draw (fault 0, no seed)
// is below percent (in) or not (out): the tests pick identities whose decision they know.
func drawn(t *testing.T, prefix string, percent float64, in bool) string {
	t.Helper()
	for i := range 1000 {
		id := fmt.Sprintf("%s-%d", prefix, i)
		if _, d := annotations.SelectDraw(id, 0, ""); (d < percent) == in {
			return id
		}
	}
	t.Fatal("no identity found")
	return ""
}

// decisionOf returns the "selection" attribute of a log line, decoded.
func decisionOf(t *testing.T, line map[string]any) []map[string]any {
	t.Helper()
	list, ok := line["selection"].([]any)
	if !ok {
		t.Fatalf("log line without a selection: %v", line)
	}
	var out []map[string]any
	for _, d := range list {
		out = append(out, d.(map[string]any))
	}
	return out
}

func TestNRISelect(t *testing.T) {
	const half = `{failtype: 0, callchain: [{funcname: __x64_sys_mount}], select: {percent: 50}}`
	for name, tc := range map[string]struct {
		pod, uid, value string
		// armed: the faults armed (by annotation index); notSelected: those left out.
		armed, notSelected []int
		createErr          string // strict mode refuses the container
	}{
		"percent, drawn in":  {pod: "web-7d4b9c8f6-x2x9z", uid: "in", value: half, armed: []int{0}},
		"percent, drawn out": {pod: "web-7d4b9c8f6-x2x9z", uid: "out", value: half, notSelected: []int{0}},
		"ordinal listed":     {pod: "db-2", value: `{failtype: 0, select: {ordinals: [0, 2]}}`, armed: []int{0}},
		"ordinal not listed": {pod: "db-1", value: `{failtype: 0, select: {ordinals: [0, 2]}}`, notSelected: []int{0}},
		"one of two faults": {pod: "db-1", value: `[{failtype: 0, select: {ordinals: [0]}}, {failtype: 1}, {failtype: 2, select: {percent: 100}}]`,
			armed: []int{1, 2}, notSelected: []int{0}},
		"ordinals on a Deployment pod": {pod: "web-7d4b9c8f6-x2x9z", value: `{failtype: 0, select: {ordinals: [0]}}`,
			createErr: `annotation faults.kfault.dev/pod: select.ordinals: pod name "web-7d4b9c8f6-x2x9z" has no trailing -N ordinal`},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			tp := h.startPlugin("")
			p := pod("default", tc.pod, map[string]string{"faults.kfault.dev/pod": tc.value})
			switch tc.uid {
			case "in":
				p.Uid = drawn(t, "uid", 50, true)
			case "out":
				p.Uid = drawn(t, "uid", 50, false)
			}
			app, _ := h.container(p, "app")
			side, _ := h.container(pod("default", "bystander", nil), "app")
			if err := h.rt.create(p, app); tc.createErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.createErr) {
					t.Fatalf("create: %v, want %q", err, tc.createErr)
				}
				if got := tp.eng.armedKeys(); len(got) != 0 {
					t.Fatalf("armed %v", got)
				}
				return
			} else if err != nil {
				t.Fatal(err)
			}
			if err := h.rt.startCtr(p, app); err != nil {
				t.Fatal(err)
			}
			bp := pod("default", "bystander", nil)
			if err := h.rt.create(bp, side); err != nil {
				t.Fatal(err)
			}
			if err := h.rt.startCtr(bp, side); err != nil {
				t.Fatal(err)
			}

			// The engine: the selected faults only; nothing when none is.
			var wantKeys []string
			if len(tc.armed) > 0 {
				wantKeys = []string{app.Id}
			}
			if got := tp.eng.armedKeys(); !slices.Equal(got, wantKeys) {
				t.Fatalf("armed %v, want %v", got, wantKeys)
			}
			all := mustFaults(tc.value)
			var wantArmed, wantOut annotations.Faults
			for _, i := range tc.armed {
				wantArmed = append(wantArmed, all[i])
			}
			for _, i := range tc.notSelected {
				wantOut = append(wantOut, all[i])
			}
			if r, _ := tp.eng.rule(app.Id); !annotations.Faults(r.faults).Equal(wantArmed) {
				t.Errorf("engine armed %v, want %v", r.faults, wantArmed)
			}

			// The state and status list the container, selected or not.
			e := h.readState()[app.Id]
			if e.Armed != (len(tc.armed) > 0) || !e.Faults.Equal(wantArmed) || !e.NotSelected.Equal(wantOut) || len(e.Selection) != len(all) {
				t.Errorf("state entry %+v", e)
			}
			for i, want := range tc.armed {
				if got := e.FaultIndex(i); got != want {
					t.Errorf("FaultIndex(%d) = %d, want %d", i, got, want)
				}
			}
			var se *StatusEntry
			for _, c := range tp.p.Status().Containers {
				if c.Key == app.Id {
					se = &c
				}
			}
			if se == nil || len(se.FaultList) != len(tc.armed) || len(se.NotSelectedList) != len(tc.notSelected) {
				t.Fatalf("status entry %+v", se)
			}
			for _, line := range se.NotSelectedList {
				if !strings.Contains(line, "(not selected: fault ") {
					t.Errorf("status line %q does not say why", line)
				}
			}

			// The log names the decision: hash, draw and threshold, or the ordinal.
			msg := "armed"
			if len(tc.armed) == 0 {
				msg = "not selected"
			}
			lines := tp.logLines(msg)
			if len(lines) != 1 || lines[0]["pod"] != tc.pod {
				t.Fatalf("%q log lines: %v", msg, lines)
			}
			ds := decisionOf(t, lines[0])
			if len(ds) != len(all) {
				t.Fatalf("decisions %v", ds)
			}
			for i, d := range ds {
				if slices.Contains(tc.notSelected, i) == d["selected"].(bool) {
					t.Errorf("decision %d: %v", i, d)
				}
				switch d["rule"] {
				case "percent":
					if d["percent"] == nil || d["identity"] != p.Uid || d["hash"] == nil || d["draw"] == nil {
						t.Errorf("percent decision %v", d)
					}
				case "ordinals":
					if !strings.Contains(d["reason"].(string), tc.pod) {
						t.Errorf("ordinals decision %v", d)
					}
				}
			}

			// The bystander: no annotation, no state, nothing armed.
			if _, ok := h.readState()[side.Id]; ok {
				t.Error("bystander in the state")
			}
			if _, ok := tp.eng.rule(side.Id); ok {
				t.Error("bystander armed")
			}
		})
	}
}

// TestNRISelectAfterRestart: a restarted plugin decides every running container as before.
func TestNRISelectAfterRestart(t *testing.T) {
	h := newHarness(t)
	tp1 := h.startPlugin("")
	const value = `{failtype: 0, select: {percent: 30}}`
	in := pod("default", "in", map[string]string{"faults.kfault.dev/pod": value})
	in.Uid = drawn(t, "uid", 30, true)
	out := pod("default", "out", map[string]string{"faults.kfault.dev/pod": value})
	out.Uid = drawn(t, "uid", 30, false)
	inC, _ := h.container(in, "app")
	outC, _ := h.container(out, "app")
	for p, c := range map[*api.PodSandbox]*api.Container{in: inC, out: outC} {
		if err := h.rt.create(p, c); err != nil {
			t.Fatal(err)
		}
		if err := h.rt.startCtr(p, c); err != nil {
			t.Fatal(err)
		}
	}
	if got := tp1.eng.armedKeys(); !slices.Equal(got, []string{inC.Id}) {
		t.Fatalf("armed %v, want %s", got, inC.Id)
	}
	tp1.stop()

	tp2 := h.startPlugin("")
	if got := tp2.eng.armedKeys(); !slices.Equal(got, []string{inC.Id}) {
		t.Fatalf("after restart armed %v, want %s", got, inC.Id)
	}
	if l := tp2.logLines("not selected"); len(l) != 1 || l[0]["pod"] != "out" {
		t.Errorf("not selected lines after restart: %v", l)
	}
	if e := h.readState()[outC.Id]; e.Armed || len(e.NotSelected) != 1 {
		t.Errorf("state of the unselected container: %+v", e)
	}
}

// TestEventSelect: a container outside CRI draws from its container ID, and takes its
// ordinal from its name.
func TestEventSelect(t *testing.T) {
	in := drawn(t, "ctr", 50, true)
	out := drawn(t, "ctr", 50, false)
	for name, tc := range map[string]struct {
		id, ctrName, value string
		armed              bool
		log                string
	}{
		"percent, container ID drawn in":  {id: in, value: `{failtype: 0, select: {percent: 50}}`, armed: true, log: "armed"},
		"percent, container ID drawn out": {id: out, value: `{failtype: 0, select: {percent: 50}}`, log: "not selected"},
		"ordinal from the nerdctl name":   {id: "c1", ctrName: "proj-web-2", value: `{failtype: 0, select: {ordinals: [2]}}`, armed: true, log: "armed"},
		"no ordinal in the name":          {id: "c1", ctrName: "web", value: `{failtype: 0, select: {ordinals: [2]}}`, log: "rejected"},
	} {
		t.Run(name, func(t *testing.T) {
			u := newTestPlugin(t, "")
			src := &fakeSource{}
			pid := src.add(t, u, "default", tc.id, tc.ctrName, tc.value)
			NewEventHandler(u.Plugin, src).Handle(context.Background(), "default", &apievents.TaskCreate{ContainerID: tc.id, Pid: pid}, time.Time{})
			if _, armed := u.eng.rule("default/" + tc.id); armed != tc.armed {
				t.Fatalf("armed %v, want %v\n%s", armed, tc.armed, u.logs)
			}
			if !strings.Contains(u.logs.String(), `"msg":"`+tc.log+`"`) {
				t.Fatalf("no %q line:\n%s", tc.log, u.logs)
			}
			if tc.log == "not selected" && !strings.Contains(u.logs.String(), `"identity":"`+tc.id+`"`) {
				t.Errorf("the decision does not name the container ID:\n%s", u.logs)
			}
		})
	}
}
