package e2e

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/kfault/kfault/test/e2e/vmtest"
)

// TestBenchContainerStart measures crictl start (where kfault arms, at NRI StartContainer)
// and create+start of a container with and without an armed fault, alternating, in one pod,
// with the plugin running in both cases. A bench, not a test: run with KFAULT_BENCH=1
// (make bench); KFAULT_BENCH_STARTS sets the number of starts of each kind (default 5).
func TestBenchContainerStart(t *testing.T) {
	if os.Getenv("KFAULT_BENCH") != "1" {
		t.Skip("bench: set KFAULT_BENCH=1 (make bench)")
	}
	n := 5
	if s := os.Getenv("KFAULT_BENCH_STARTS"); s != "" {
		if v, err := strconv.Atoi(s); err == nil && v > 0 {
			n = v
		}
	}
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
	ps, as := median(plain, st), median(armed, st)
	pt, at := median(plain, tot), median(armed, tot)
	t.Logf("container start, %d each, median (TCG VM; the first start of each kind not counted):", n)
	t.Logf("  crictl start:          plain %6.3fs  armed %6.3fs  ratio %.2f", ps.Seconds(), as.Seconds(), as.Seconds()/ps.Seconds())
	t.Logf("  crictl create + start: plain %6.3fs  armed %6.3fs  ratio %.2f", pt.Seconds(), at.Seconds(), at.Seconds()/pt.Seconds())
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
		t.Logf("  plugin armSeconds (Engine.Arm): median %.4fs over %d arms (first arm loads the program)", armSecs[len(armSecs)/2], len(armSecs))
	}
}
