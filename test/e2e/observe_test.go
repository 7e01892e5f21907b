package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kfault/kfault/plugin"
	"github.com/kfault/kfault/test/e2e/vmtest"
)

// injectedMetric returns the kfault_faults_injected_total samples of a pod's container, by
// fault label, from a Prometheus text scrape.
func injectedMetric(scrape, pod, container string) map[string]float64 {
	out := map[string]float64{}
	re := regexp.MustCompile(`^kfault_faults_injected_total\{(.*)\} (\S+)$`)
	for _, line := range strings.Split(scrape, "\n") {
		m := re.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		labels := m[1]
		if !strings.Contains(labels, `pod="`+pod+`"`) || !strings.Contains(labels, `container="`+container+`"`) {
			continue
		}
		fault := regexp.MustCompile(`fault="([^"]*)"`).FindStringSubmatch(labels)
		v, _ := strconv.ParseFloat(m[2], 64)
		key := ""
		if fault != nil {
			key = fault[1]
		}
		out[key] = v
	}
	return out
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scraping metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scraping metrics: %s %v", resp.Status, err)
	}
	return string(body)
}

// The metrics endpoint shows the exact number of injected faults for the pod's container
// (times: 4, 8 tries: 4), and none for its neighbour; kfault status lists the armed fault with
// its count; kfault disarm --all stops every fault at once: the next mkdir succeeds.
func TestPluginMetricsStatusDisarmAll(t *testing.T) {
	const addr = "127.0.0.1:9471"
	p := withPlugin(t, "metrics", vmtest.PluginOptions{MetricsAddress: addr})
	pod := newPod("metrics", map[string]string{
		"faults.kfault.dev/container.victim":  "{function: __x64_sys_mkdir, errno: EACCES, times: 4}",
		"faults.kfault.dev/container.stepped": mkdirEACCES,
	})
	podID := runPod(t, &pod)
	victim := vmtest.StartContainer(t, podID, pod, vmtest.Container{Name: "victim", Command: vmtest.MkdirLoop(8, false, "0.2")})
	neighbour := vmtest.StartContainer(t, podID, pod, vmtest.Container{Name: "neighbour", Command: vmtest.MkdirLoop(8, false, "0.2")})
	gate := vmtest.NewGate(t, "stepped")
	stepped := vmtest.StartContainer(t, podID, pod, vmtest.Container{Name: "stepped",
		Command: vmtest.MkdirLoop(10, true, ""), Mounts: []vmtest.Mount{gate.Mount()}})

	vt := vmtest.WaitTries(t, victim, 8, 2*time.Minute)
	nt := vmtest.WaitTries(t, neighbour, 8, 2*time.Minute)
	t.Logf("victim (times: 4): %s", vmtest.Summary(vt))
	t.Logf("neighbour: %s", vmtest.Summary(nt))
	if vmtest.Failed(vt) != 4 || vt[3].OK || !vt[4].OK {
		t.Errorf("victim: want tries 1-4 to fail and 5-8 to succeed: %s", vmtest.Summary(vt))
	}
	if vmtest.Failed(nt) != 0 {
		t.Errorf("neighbour had failures: %s", vmtest.Summary(nt))
	}

	gate.Allow(1, 1)
	st := vmtest.WaitTries(t, stepped, 1, time.Minute)
	if st[0].OK {
		t.Errorf("stepped container: try 1 succeeded, want it to fail")
	}

	body := scrape(t, addr)
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "kfault_") && !strings.Contains(l, "_bucket") {
			t.Logf("metrics: %s", l)
		}
	}
	vm := injectedMetric(body, "metrics", "victim")
	if len(vm) != 1 || vm["0:__x64_sys_mkdir"] != 4 {
		t.Errorf("kfault_faults_injected_total of pod metrics, container victim: %v, want {0:__x64_sys_mkdir: 4}", vm)
	}
	if sm := injectedMetric(body, "metrics", "stepped"); sm["0:__x64_sys_mkdir"] != 1 {
		t.Errorf("kfault_faults_injected_total of container stepped: %v, want 1", sm)
	}
	if nm := injectedMetric(body, "metrics", "neighbour"); len(nm) != 0 {
		t.Errorf("the neighbour has injected-fault samples: %v", nm)
	}
	if !regexp.MustCompile(`(?m)^kfault_rules_armed 2$`).MatchString(body) {
		t.Errorf("kfault_rules_armed is not 2 (victim and stepped)")
	}

	status := p.Status()
	found := false
	for _, c := range status.Containers {
		t.Logf("status: %s %s/%s armed=%v injected=%v %v", c.Key, c.Pod, c.Container, c.Armed, c.Injected, c.FaultList)
		switch c.Container {
		case "victim":
			found = true
			if c.ContainerID != victim || !c.Armed || len(c.Injected) != 1 || c.Injected[0] != 4 {
				t.Errorf("kfault status, victim: armed=%v injected=%v, want armed with [4]", c.Armed, c.Injected)
			}
		case "neighbour":
			t.Errorf("kfault status lists the neighbour")
		}
	}
	if !found {
		t.Errorf("kfault status does not list the victim")
	}
	checkSampledInjections(t, p, status)
	text := vmtest.Run(t, vmtest.KfaultBinary(), "status", "--socket", p.ControlSocket)
	t.Logf("kfault status:\n%s", text)
	if !regexp.MustCompile(`(?m)^` + victim[:12] + `\s+default\s+metrics\s+victim\s+armed\s+.*\s4$`).MatchString(text) {
		t.Errorf("kfault status text has no line for the victim with 4 injected")
	}
	if !regexp.MustCompile(`(?m)^\s+\S+\s+\S*` + victim[:12] + `\s+fault 0\s+#4\s+pid \d+ \(`).MatchString(text) {
		t.Errorf("kfault status text has no recent sampled injection #4 of the victim")
	}

	out := vmtest.Run(t, vmtest.KfaultBinary(), "disarm", "--socket", p.ControlSocket, "--all")
	t.Logf("kfault disarm --all:\n%s", out)
	if !strings.Contains(out, "disarmed 2 container(s)") {
		t.Errorf("kfault disarm --all: %q, want 2 containers disarmed", out)
	}
	gate.Allow(2, 3)
	st = vmtest.WaitTries(t, stepped, 3, time.Minute)
	t.Logf("stepped: %s", vmtest.Summary(st))
	if !st[1].OK || !st[2].OK {
		t.Errorf("after kfault disarm --all, the next mkdirs failed: %s", vmtest.Summary(st))
	}
	if o := vmtest.BPF(t); len(o.Programs) != 0 || len(o.Links) != 0 {
		t.Errorf("after kfault disarm --all, kfault BPF programs/links remain: %v %v", o.Programs, o.Links)
	}
	if s := p.Status(); !s.Halted {
		t.Errorf("kfault status after disarm --all: not halted")
	}
}

// checkSampledInjections: every injection of the times-4 victim is sampled (a rule's first
// 8 are), so status holds exactly 4 recent samples numbered 1..4 and the log has 4
// "injected" lines for it; the neighbour has neither.
func checkSampledInjections(t *testing.T, p *vmtest.Plugin, status plugin.Status) {
	t.Helper()
	for _, c := range status.Containers {
		if c.Container != "victim" {
			continue
		}
		var seqs []uint64
		for _, inj := range c.Recent {
			seqs = append(seqs, inj.Seq)
			if inj.PID <= 0 || inj.Comm == "" || inj.Fault != 0 || inj.Time.IsZero() {
				t.Errorf("victim's sample lacks its task, fault or time: %+v", inj)
			}
		}
		if !slices.Equal(seqs, []uint64{1, 2, 3, 4}) {
			t.Errorf("kfault status, victim's recent sampled injections: %+v, want #1..#4", c.Recent)
		}
	}
	var lines []string
	for _, e := range p.Log(false) {
		if e.Msg() != "injected" {
			continue
		}
		lines = append(lines, fmt.Sprintf("%s/%s fault=%s seq=%v pid=%v comm=%s", e.Str("pod"), e.Str("container"), e.Str("fault"), e["seq"], e["pid"], e.Str("comm")))
		if e.Str("container") != "victim" && e.Str("container") != "stepped" {
			t.Errorf("injected log line for container %q", e.Str("container"))
		}
	}
	t.Logf("injected log lines:\n%s", strings.Join(lines, "\n"))
	if n := len(slices.DeleteFunc(slices.Clone(lines), func(l string) bool { return !strings.HasPrefix(l, "metrics/victim ") })); n != 4 {
		t.Errorf("%d injected log lines for the victim, want 4", n)
	}
}

// earlyCycles is after how many cycles the RSS baseline is taken: past the warm-up (the first
// arms inflate kernel BTF types and grow the Go heap: +6 MiB over the first 8 cycles in the
// TCG VM), so that the comparison shows growth per cycle.
func earlyCycles(n int) int { return min(max(n/10, 8), n) }

// cycles is the number of create/start/stop/remove cycles of TestPluginCyclesLeaveNothing:
// KFAULT_E2E_CYCLES, or a default that keeps the test under about 4 minutes in the TCG VM.
func cycles(t *testing.T) int {
	if s := os.Getenv("KFAULT_E2E_CYCLES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 10 {
			t.Fatalf("KFAULT_E2E_CYCLES=%q: want a number >= 10", s)
		}
		return n
	}
	return defaultCycles
}

// defaultCycles: see cycles. A cycle takes about 8.5 s in the TCG VM (crictl create, start,
// stop, rm: each about 2 s), so 25 cycles take about 3.5 minutes. The issue asks for 200:
// KFAULT_E2E_CYCLES=200 (about 30 minutes).
const defaultCycles = 25

// Stopping and removing annotated containers leaves no kfault rule, link, program or map entry
// behind, after many create/start/stop/remove cycles (once the idle programs' --keep-idle has
// passed), and the plugin's RSS stays flat. A
// neighbour in the same pod runs mkdir once a second throughout and never fails.
func TestPluginCyclesLeaveNothing(t *testing.T) {
	n := cycles(t)
	// Programs stay attached, idle, this long after a cycle's disarm (the next cycle's arm reuses
	// them); the check for leftovers waits it out.
	const keepIdle = 3 * time.Second
	p := withPlugin(t, "cycles", vmtest.PluginOptions{Args: []string{"--keep-idle", keepIdle.String()}})
	pod := newPod("cycles", map[string]string{"faults.kfault.dev/container.victim": mkdirEACCES})
	podID := runPod(t, &pod)
	neighbour := vmtest.StartContainer(t, podID, pod, vmtest.Container{Name: "neighbour", Command: vmtest.MkdirLoop(100000, false, "1")})

	before := vmtest.BPF(t)
	if len(before.Programs) != 0 {
		t.Fatalf("kfault programs loaded before any arm: %v", before.Programs)
	}
	rulesMap, ok := before.MapIDs["kfault_rules"]
	if !ok {
		t.Fatalf("no kfault_rules map (bpftool map show): %v", before.MapIDs)
	}
	victimCmd := []string{"sh", "-c", `if mkdir /tmp/c; then echo "try 1 ok"; else echo "try 1 FAILED"; fi; exec sleep 3600`}
	var rssEarly, rssEnd int
	var durations []time.Duration
	start := time.Now()
	for i := 0; i < n; i++ {
		t0 := time.Now()
		id, err := vmtest.CreateContainerNoCleanup(t, podID, pod, vmtest.Container{Name: "victim", Command: victimCmd,
			LogPath: fmt.Sprintf("victim-%d.log", i)})
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		vmtest.Run(t, "crictl", "start", id)
		if i == 0 || i == n-1 {
			tries := vmtest.WaitTries(t, id, 1, time.Minute)
			if tries[0].OK {
				t.Errorf("cycle %d: the victim's mkdir succeeded; the fault was not armed", i)
			}
			o := vmtest.BPF(t)
			// The hook's program, and the exec boundary's two (exec and fork tracepoints: armed
			// at StartContainer), each with its link; one rule entry.
			if len(o.Programs) != 3 || len(o.Links) != 3 || vmtest.BPFMapEntries(t, rulesMap) != 1 {
				t.Errorf("cycle %d, armed: want three kfault programs and links (hook, exec, fork) and one rule entry: %v %v, %d entries", i, o.Programs, o.Links, vmtest.BPFMapEntries(t, rulesMap))
			}
			if i == 0 {
				t.Logf("armed: programs %v, links %v", o.Programs, o.Links)
			}
		}
		vmtest.Run(t, "crictl", "stop", "-t", "0", id)
		vmtest.Run(t, "crictl", "rm", id)
		durations = append(durations, time.Since(t0))
		if i+1 == earlyCycles(n) {
			rssEarly = p.Memory().RSS
		}
	}
	total := time.Since(start)
	rssEnd = p.Memory().RSS
	t.Logf("%d cycles in %.1fs: %.2fs per cycle (first %.2fs, last %.2fs)", n, total.Seconds(), total.Seconds()/float64(n),
		durations[0].Seconds(), durations[len(durations)-1].Seconds())
	t.Logf("plugin VmRSS: %d KiB after %d cycles, %d KiB after %d (%+d KiB)", rssEarly, earlyCycles(n), rssEnd, n, rssEnd-rssEarly)

	st := p.Status()
	if len(st.Containers) != 0 {
		t.Errorf("kfault status after the cycles lists %d containers: %+v", len(st.Containers), st.Containers)
	}
	o := vmtest.BPF(t)
	for deadline := time.Now().Add(keepIdle + 20*time.Second); (len(o.Programs) != 0 || len(o.Links) != 0) && time.Now().Before(deadline); {
		time.Sleep(500 * time.Millisecond)
		o = vmtest.BPF(t)
	}
	if len(o.Programs) != 0 || len(o.Links) != 0 {
		t.Errorf("after the cycles and %s idle, kfault programs/links remain: %v %v", keepIdle, o.Programs, o.Links)
	}
	if e := vmtest.BPFMapEntries(t, rulesMap); e != 0 {
		t.Errorf("after the cycles, kfault_rules has %d entries", e)
	}
	// The state file is written in the background: the last remove's write may be a few
	// milliseconds behind kfault status.
	p.WaitState(10*time.Second, "empty state after the cycles", func(st map[string]plugin.Entry) bool { return len(st) == 0 })
	// Flat: at most 25% or 8 MiB more than after the first tenth, whichever is larger.
	if slack := max(rssEarly/4, 8*1024); rssEnd-rssEarly > slack {
		t.Errorf("plugin RSS grew from %d to %d KiB over %d cycles (slack %d KiB)", rssEarly, rssEnd, n, slack)
	}
	nt := vmtest.Tries(vmtest.Logs(t, neighbour))
	t.Logf("neighbour: %d mkdirs, %d failed", len(nt), vmtest.Failed(nt))
	if len(nt) == 0 || vmtest.Failed(nt) != 0 {
		t.Errorf("neighbour: %d tries, %d failed: want some and none failed", len(nt), vmtest.Failed(nt))
	}
}
