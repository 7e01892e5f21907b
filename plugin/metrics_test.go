package plugin

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// counterValue returns the value of a label-less counter or gauge.
func counterValue(t *testing.T, p interface{ Metrics() *Metrics }, name string) float64 {
	t.Helper()
	mfs, err := p.Metrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func TestMetrics(t *testing.T) {
	p := newTestPlugin(t, "")
	eng := p.eng
	p.armForTest(t, "k1", ident{SourceNRI, "default", "web", "app", "k1"}, `[{failtype: 0}, {function: __x64_sys_openat, errno: EACCES}]`)
	p.armForTest(t, "k2", ident{SourceNRI, "team-a", "db", "pg", "k2"}, `{failtype: 2, times: 3}`)
	p.armForTest(t, "default/n1", ident{SourceContainerd, "default", "", "n1", "n1"}, `{failtype: 1}`)
	eng.inject(t, "k1", 0, 7)
	eng.inject(t, "k1", 1, 2)
	eng.inject(t, "k2", 0, 3)
	eng.inject(t, "default/n1", 0, 1)
	eng.mu.Lock()
	eng.drops = 4
	eng.mu.Unlock()
	// A stopped container: its final count stays visible until it is removed.
	p.disarm("default/n1", "task exit", false)

	want := `
# HELP kfault_faults_injected_total Faults injected, read from the engine's per-rule counters (continued across plugin restarts).
# TYPE kfault_faults_injected_total counter
kfault_faults_injected_total{container="app",fault="0:should_failslab",namespace="default",pod="web"} 7
kfault_faults_injected_total{container="app",fault="1:__x64_sys_openat",namespace="default",pod="web"} 2
kfault_faults_injected_total{container="n1",fault="0:should_fail_alloc_page",namespace="default",pod=""} 1
kfault_faults_injected_total{container="pg",fault="0:should_fail_bio",namespace="team-a",pod="db"} 3
# HELP kfault_rules_armed Containers with faults armed now.
# TYPE kfault_rules_armed gauge
kfault_rules_armed 2
# HELP kfault_arm_errors_total Attempts to arm a fault that failed (cgroup not found, engine error).
# TYPE kfault_arm_errors_total counter
kfault_arm_errors_total 0
# HELP kfault_injection_samples_dropped_total Sampled injections the engine could not deliver to the logs and status (the faults themselves were injected and counted).
# TYPE kfault_injection_samples_dropped_total counter
kfault_injection_samples_dropped_total 4
`
	if err := testutil.GatherAndCompare(p.Metrics().Registry, strings.NewReader(want),
		"kfault_faults_injected_total", "kfault_rules_armed", "kfault_arm_errors_total", "kfault_injection_samples_dropped_total"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(p.Metrics().Registry, "kfault_arm_duration_seconds"); err != nil || n != 1 {
		t.Errorf("arm duration histogram: %d series, %v", n, err)
	}
	mfs, _ := p.Metrics().Registry.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "kfault_arm_duration_seconds" {
			if c := mf.GetMetric()[0].GetHistogram().GetSampleCount(); c != 3 {
				t.Errorf("arm duration samples %d, want 3", c)
			}
		}
	}

	// Removal drops the series.
	p.disarm("default/n1", "container delete", true)
	if n, _ := testutil.GatherAndCount(p.Metrics().Registry, "kfault_faults_injected_total"); n != 3 {
		t.Errorf("%d injected series after removal, want 3", n)
	}

	// The HTTP handler serves the text format.
	srv := httptest.NewServer(p.Metrics().Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `kfault_faults_injected_total{container="pg",fault="0:should_fail_bio",namespace="team-a",pod="db"} 3`) {
		t.Errorf("handler output:\n%s", body)
	}
}
