package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/kfault/kfault/plugin"
	"github.com/kfault/kfault/test/bench/figures"
	"github.com/kfault/kfault/test/e2e/vmtest"
)

// requireBench skips unless KFAULT_BENCH=1 (make bench) and returns the positive integer in the
// environment variable size, or def.
func requireBench(t *testing.T, size string, def int) int {
	t.Helper()
	if os.Getenv("KFAULT_BENCH") != "1" {
		t.Skip("bench: set KFAULT_BENCH=1 (make bench)")
	}
	if v, err := strconv.Atoi(os.Getenv(size)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestBenchContainerStart measures crictl start (where kfault arms, at NRI StartContainer)
// and create+start of a container with and without an armed fault, alternating, in one pod,
// with the plugin running in both cases. A bench, not a test: run with KFAULT_BENCH=1
// (make bench); KFAULT_BENCH_STARTS sets the number of starts of each kind (default 5).
func TestBenchContainerStart(t *testing.T) {
	n := requireBench(t, "KFAULT_BENCH_STARTS", 5)
	p := withPlugin(t, "bench", vmtest.PluginOptions{})
	pod := newPod("bench", map[string]string{"faults.kfault.dev/container.armed": mkdirEACCES})
	podID := runPod(t, &pod)
	cmd := []string{"sh", "-c", `if mkdir /tmp/b; then echo "try 1 ok"; else echo "try 1 FAILED"; fi; exec sleep 3600`}

	type sample struct{ start, total time.Duration }
	run := func(name string, i int) sample {
		t0 := time.Now()
		id, err := vmtest.CreateContainerNoCleanup(t, podID, pod, vmtest.Container{Name: name, Command: cmd,
			LogPath: fmt.Sprintf("%s-%d.log", name, i)})
		if err != nil {
			t.Fatal(err)
		}
		t1 := time.Now()
		vmtest.Run(t, "crictl", "start", id)
		s := sample{start: time.Since(t1), total: time.Since(t0)}
		tries := vmtest.WaitTries(t, id, 1, time.Minute)
		if want := name == "plain"; tries[0].OK != want {
			t.Errorf("%s #%d: mkdir ok=%v, want %v", name, i, tries[0].OK, want)
		}
		vmtest.Run(t, "crictl", "stop", "-t", "0", id)
		vmtest.Run(t, "crictl", "rm", id)
		return s
	}
	// One unmeasured start of each first: the first arm loads the BPF program.
	run("plain", -1)
	run("armed", -1)
	var plain, armed []sample
	for i := 0; i < n; i++ {
		plain = append(plain, run("plain", i))
		armed = append(armed, run("armed", i))
	}
	median := func(s []sample, f func(sample) time.Duration) time.Duration {
		d := make([]time.Duration, len(s))
		for i := range s {
			d[i] = f(s[i])
		}
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d[len(d)/2]
	}
	st := func(s sample) time.Duration { return s.start }
	tot := func(s sample) time.Duration { return s.total }
	for _, f := range []struct {
		what string
		of   func(sample) time.Duration
	}{{"crictl start", st}, {"crictl create + start", tot}} {
		var base, with []time.Duration
		for i := range plain {
			base, with = append(base, f.of(plain[i])), append(with, f.of(armed[i]))
		}
		r := figures.Paired(base, with)
		figures.Print(fmt.Sprintf("container %s, armed vs plain (%d pairs; medians %.3fs vs %.3fs)", f.what, n, median(armed, f.of).Seconds(), median(plain, f.of).Seconds()),
			fmt.Sprintf("ratio %.3f", r.Median), r.Interval())
	}
	var armSecs []float64
	for _, e := range p.Log(false) {
		if e.Msg() == "armed" && e.Str("container") == "armed" {
			if v, ok := e.Num("armSeconds"); ok {
				armSecs = append(armSecs, v)
			}
		}
	}
	sort.Float64s(armSecs)
	if len(armSecs) > 0 {
		figures.Print(fmt.Sprintf("container start: Engine.Arm, median over %d arms", len(armSecs)), fmt.Sprintf("%.4fs", armSecs[len(armSecs)/2]), "the first arm loads the program")
	}
}

// kernelDataReleased is the engine's log line when it drops the kernel's BTF (bpf/idle.go).
const kernelDataReleased = "released the kernel's BTF and kallsyms snapshot: unused for KeepIdle"

// TestBenchNodeScale is the node-scale scenario: KFAULT_BENCH_PODS pods (default 100), each
// with one container armed with the seed's fault (a slab fault under a call chain), started in
// sequence, then all stopped. It reports the plugin's RSS at 0, half and all armed, once the
// engine has released the kernel's BTF (--keep-idle after its last use, shortened here to
// benchKeepIdle) and after all are stopped, with the Go runtime's account of the anonymous part;
// Engine.Arm latency (armSeconds) p50/p99, the state file's size, the wall time to stop every
// pod and kfault's own share of it (disarmSeconds). A bench, not a test: KFAULT_BENCH=1 (make
// bench).
func TestBenchNodeScale(t *testing.T) {
	n := requireBench(t, "KFAULT_BENCH_PODS", 100)
	const benchKeepIdle = 10 * time.Second // longer than the gap between two pods' starts
	p := withPlugin(t, "node-scale", vmtest.PluginOptions{Args: []string{"--keep-idle", benchKeepIdle.String()}})
	rss := map[string]vmtest.Memory{"0 armed": p.Memory()}
	t.Logf("plugin heap at 0 armed (in use):\n%s\n%s", p.HeapTop(15), p.GoMemory())
	type started struct{ podID, ctrID string }
	var pods []started
	t0 := time.Now()
	for i := 0; i < n; i++ {
		pod := newPod(fmt.Sprintf("scale-%03d", i), map[string]string{"faults.kfault.dev/container.victim": seedFault})
		podID := runPod(t, &pod)
		id := vmtest.StartContainer(t, podID, pod, vmtest.Container{Name: "victim", Command: []string{"sleep", "3600"}})
		pods = append(pods, started{podID, id})
		if i+1 == n/2 {
			rss[fmt.Sprintf("%d armed", n/2)] = p.Memory()
		}
	}
	startAll := time.Since(t0)
	p.WaitCount(time.Minute, "armed", n)
	rss[fmt.Sprintf("%d armed", n)] = p.Memory()
	t.Logf("plugin heap at %d armed (in use):\n%s\n%s", n, p.HeapTop(25), p.GoMemory())
	p.WaitCount(benchKeepIdle+time.Minute, kernelDataReleased, p.Count(kernelDataReleased)+1)
	quiet := fmt.Sprintf("%d armed, quiet", n)
	rss[quiet] = p.Memory()
	t.Logf("plugin heap at %d armed, the kernel's BTF and kallsyms snapshot released after --keep-idle %s (in use):\n%s\n%s",
		n, benchKeepIdle, p.HeapTop(25), p.GoMemory())
	state, err := os.Stat(filepath.Join(p.StateDir, plugin.StateFileName))
	if err != nil {
		t.Fatal(err)
	}
	var arm []float64
	for _, e := range p.Log(false) {
		if v, ok := e.Num("armSeconds"); ok && e.Msg() == "armed" {
			arm = append(arm, v)
		}
	}
	sort.Float64s(arm)

	t1 := time.Now()
	for _, s := range pods {
		vmtest.Run(t, "crictl", "stopp", s.podID)
	}
	stopAll := time.Since(t1)
	p.WaitCount(time.Minute, "disarmed", n)
	var disarm float64
	for _, e := range p.Log(false) {
		if v, ok := e.Num("disarmSeconds"); ok && e.Msg() == "disarmed" {
			disarm += v
		}
	}
	rss["all stopped"] = p.Memory()

	pct := func(q float64) float64 { return arm[min(len(arm)-1, int(q*float64(len(arm))))] }
	for _, k := range []string{"0 armed", fmt.Sprintf("%d armed", n/2), fmt.Sprintf("%d armed", n), quiet, "all stopped"} {
		figures.Print("node scale: plugin RSS at "+k, fmt.Sprintf("%.1f MiB", float64(rss[k].RSS)/1024), fmt.Sprintf("anon %.1f + file %.1f", float64(rss[k].Anon)/1024, float64(rss[k].File)/1024))
	}
	figures.Print(fmt.Sprintf("node scale: Engine.Arm p50 / p99 over %d arms", len(arm)), fmt.Sprintf("%.3fs / %.3fs", pct(0.5), pct(0.99)), "the first arm loads the programs")
	figures.Print(fmt.Sprintf("node scale: state file with %d armed", n), fmt.Sprintf("%d bytes", state.Size()), "")
	figures.Print(fmt.Sprintf("node scale: stop all %d pods (crictl stopp in sequence) / kfault's disarms in it", n), fmt.Sprintf("%.1fs / %.2fs", stopAll.Seconds(), disarm), "")
	t.Logf("  start all %d pods: %.1fs (Engine.Arm max %.3fs)", n, startAll.Seconds(), arm[len(arm)-1])
}
