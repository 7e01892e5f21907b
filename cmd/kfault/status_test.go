package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kfault/kfault/annotations"
	"github.com/kfault/kfault/bpf"
	"github.com/kfault/kfault/plugin"
)

// nopEngine arms nothing real and counts 3 per fault.
type nopEngine struct{ armed map[string]int }

func (e *nopEngine) SetProtectedDevices([]bpf.Dev) error             { return nil }
func (e *nopEngine) ReleaseIdle()                                    {}
func (e *nopEngine) Prepare(f []annotations.Fault) (bpf.Plan, error) { return bpf.Plan{Faults: f}, nil }
func (e *nopEngine) Arm(key string, _ bpf.Target, p bpf.Plan, _ bpf.ArmOptions) error {
	e.armed[key] = len(p.Faults)
	return nil
}
func (e *nopEngine) Active(key string) ([]bool, error) {
	out := make([]bool, e.armed[key])
	for i := range out {
		out[i] = true
	}
	return out, nil
}
func (e *nopEngine) Mechanism() bpf.Mechanism         { return bpf.MechanismFmodRet }
func (e *nopEngine) Injections() <-chan bpf.Injection { return nil }
func (e *nopEngine) SamplesDropped() uint64           { return 0 }
func (e *nopEngine) Disarm(key string) error          { delete(e.armed, key); return nil }
func (e *nopEngine) ArmPending(key string, t bpf.Target, p bpf.Plan, o bpf.ArmOptions) error {
	return e.Arm(key, t, p, o)
}
func (e *nopEngine) Retarget(string, bpf.Target) error { return nil }
func (e *nopEngine) Counts(key string) ([]uint64, error) {
	n, ok := e.armed[key]
	if !ok {
		return nil, errors.New("not armed")
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = 3
	}
	return out, nil
}

// TestStatusAndDisarmCommands runs kfault status and kfault disarm against a plugin's
// control socket. The plugin's state is seeded through its state file, as a previous
// run would have left it (no cgroups or BPF needed).
func TestStatusAndDisarmCommands(t *testing.T) {
	dir, err := os.MkdirTemp("", "kfs-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	stateDir := filepath.Join(dir, "state")
	sock := filepath.Join(dir, "control.sock")
	st, err := plugin.OpenStore(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	st.Put("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", plugin.Entry{
		Source: plugin.SourceNRI, Namespace: "default", Pod: "web", Container: "app",
		Faults: mustFaults("[{failtype: 0}, {failtype: 1}]"), Injected: []uint64{5, 6},
	})
	if err := st.Save(); err != nil {
		t.Fatal(err)
	}

	p, err := plugin.New(plugin.Options{Engine: &nopEngine{armed: map[string]int{}},
		File:          plugin.Config{StateDir: stateDir, ControlSocket: sock, Events: plugin.EventsConfig{Enabled: new(bool)}},
		StartServices: plugin.Services, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx, plugin.RunOptions{SocketPath: filepath.Join(dir, "no-nri.sock")})
	waitFor(t, func() bool { _, err := os.Stat(sock); return err == nil })

	tests := []struct { // in order
		name string
		run  func(args []string, stdin io.Reader, stdout, stderr io.Writer) int
		args []string
		code int
		want []string
	}{
		{"status", runStatus, []string{"--socket", sock}, 0, []string{"KEY", "0123456789ab", "default", "web", "app", "disarmed", "should_failslab", "5", "should_fail_alloc_page", "6"}},
		{"status json", runStatus, []string{"--socket", sock, "--json"}, 0, []string{`"halted": false`, `"injected": [`}},
		{"disarm unknown key", runDisarm, []string{"--socket", sock, "nope"}, 1, []string{`no container "nope"`}},
		{"disarm usage", runDisarm, []string{"--socket", sock}, 2, []string{"usage: kfault disarm"}},
		{"disarm all", runDisarm, []string{"--socket", sock, "--all"}, 0, []string{"disarmed 0 container(s); halted"}},
		{"status when halted", runStatus, []string{"--socket", sock}, 0, []string{"HALTED"}},
		{"resume", runDisarm, []string{"--socket", sock, "--resume"}, 0, []string{"resumed"}},
		{"no plugin", runStatus, []string{"--socket", filepath.Join(dir, "none.sock")}, 1, []string{"is kfault nri running?"}},
	}
	for _, tc := range tests {
		var out, errb bytes.Buffer
		code := tc.run(tc.args, nil, &out, &errb)
		text := out.String() + errb.String()
		if code != tc.code {
			t.Errorf("%s: exit %d, want %d\n%s", tc.name, code, tc.code, text)
		}
		for _, w := range tc.want {
			if !strings.Contains(text, w) {
				t.Errorf("%s: output lacks %q:\n%s", tc.name, w, text)
			}
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not met")
}

// TestWriteStatusRecent checks the sampled-injection lines: the fault's index, its
// injection number and the task it hit.
func TestWriteStatusRecent(t *testing.T) {
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.Local)
	st := plugin.Status{Containers: []plugin.StatusEntry{{
		Key:       "default/victim",
		Entry:     plugin.Entry{Faults: mustFaults("[{failtype: 0}]"), Injected: []uint64{1025}},
		FaultList: []string{"should_failslab"},
		Recent: []bpf.Injection{
			{Fault: 0, Seq: 8, PID: 41, TGID: 40, Comm: "mkdir-loop", Time: at},
			{Fault: 0, Seq: 1024, PID: 42, TGID: 40, Comm: "mkdir-loop", Time: at.Add(time.Second)},
			{Fault: 3, PID: 43, Comm: "sh", Time: at}, // no seq: none shown
		},
	}}}
	var out bytes.Buffer
	writeStatus(&out, st)
	for _, want := range []string{
		"recent sampled injections:",
		"10:00:00.000  default/victim  fault 0  #8  pid 41 (mkdir-loop)",
		"10:00:01.000  default/victim  fault 0  #1024  pid 42 (mkdir-loop)",
		"10:00:00.000  default/victim  fault 3  pid 43 (sh)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, out.String())
		}
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

// TestWriteStatusNotSelected: a container whose select rules left out every fault is listed
// as "not selected", with the decision; one left out of some faults lists those too.
func TestWriteStatusNotSelected(t *testing.T) {
	for name, tc := range map[string]struct {
		entry plugin.StatusEntry
		want  []string
	}{
		"none selected": {
			entry: plugin.StatusEntry{Key: "c1", Entry: plugin.Entry{Namespace: "default", Pod: "web-1", Container: "app",
				NotSelected: mustFaults("{failtype: 0, select: {percent: 30}}")},
				NotSelectedList: []string{"slab: should_failslab returns -ENOMEM, ..., only in 30% of pods (not selected: fault 0: percent: draw 77.4361 >= 30 (hash c63c8bb0127c86ca of \"abc\"))"}},
			want: []string{"c1 default web-1 app not selected slab: should_failslab", `draw 77.4361 >= 30 (hash c63c8bb0127c86ca of "abc")) -`},
		},
		"one of two selected": {
			entry: plugin.StatusEntry{Key: "c2", Entry: plugin.Entry{Namespace: "default", Pod: "db-1", Container: "app", Armed: true,
				Faults: mustFaults("{failtype: 1}"), Injected: []uint64{4}, NotSelected: mustFaults("{failtype: 0, select: {ordinals: [0]}}")},
				FaultList:       []string{"page: should_fail_alloc_page returns true"},
				NotSelectedList: []string{"slab: should_failslab returns -ENOMEM (not selected: fault 0: ordinals: ordinal 1 (from \"db-1\") not in [0])"}},
			want: []string{"c2 default db-1 app armed page: should_fail_alloc_page returns true 4 not selected slab: should_failslab returns -ENOMEM (not selected: fault 0: ordinals: ordinal 1"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			writeStatus(&out, plugin.Status{Containers: []plugin.StatusEntry{tc.entry}})
			words := strings.Join(strings.Fields(out.String()), " ") // columns, whatever their widths
			for _, want := range tc.want {
				if !strings.Contains(words, want) {
					t.Errorf("status output lacks %q:\n%s", want, out.String())
				}
			}
		})
	}
}

func TestWriteStatusQuotas(t *testing.T) {
	res := func(used ...int) []plugin.ResourceQuota {
		quota := []int{256, 16, 63, 8}
		var out []plugin.ResourceQuota
		for i, name := range []string{"containers", "hooks", "chains", "frames"} {
			out = append(out, plugin.ResourceQuota{Resource: name, Used: used[i], Quota: quota[i]})
		}
		return out
	}
	st := plugin.Status{
		Containers: []plugin.StatusEntry{{Key: "c1", Entry: plugin.Entry{Namespace: "team-a", Armed: true, Injected: []uint64{0}}}},
		Quotas:     []plugin.NamespaceQuota{{Namespace: "team-a", Resources: res(1, 1, 2, 8)}},
	}
	var out bytes.Buffer
	writeStatus(&out, st)
	got := strings.Join(strings.Fields(out.String()), " ")
	for _, want := range []string{"quotas (used/quota;", "NAMESPACE CONTAINERS HOOKS CHAINS FRAMES team-a 1/256 1/16 2/63 8/8"} {
		if !strings.Contains(got, want) {
			t.Errorf("status output lacks %q:\n%s", want, out.String())
		}
	}
}
