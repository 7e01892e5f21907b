package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kfault/kfault/annotations"
)

// Metrics are kfault's Prometheus metrics, on their own registry:
//
//	kfault_faults_injected_total{namespace,pod,container,fault}  read from the engine's counters
//	kfault_rules_armed                                           rules armed now
//	kfault_arm_errors_total                                      failed arm attempts
//	kfault_arm_duration_seconds                                  arm latency (engine.Arm)
//	kfault_injection_samples_dropped_total                       sampled injections not delivered
//	                                                             (engines with a ring buffer)
//
// The fault label is "<index>:<hooked function>", e.g. "0:should_failslab", the index
// being the fault's position in the annotation (unique within a container).
type Metrics struct {
	Registry    *prometheus.Registry
	armErrors   prometheus.Counter
	armDuration prometheus.Histogram
}

var injectedDesc = prometheus.NewDesc("kfault_faults_injected_total",
	"Faults injected, read from the engine's per-rule counters (continued across plugin restarts).",
	[]string{"namespace", "pod", "container", "fault"}, nil)

// injectedCollector reads the counts at scrape time: live from the engine for armed
// rules, from the state for rules disarmed but not yet forgotten (stopped containers).
type injectedCollector struct{ p *Plugin }

func (c injectedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- injectedDesc }

func (c injectedCollector) Collect(ch chan<- prometheus.Metric) {
	for _, c := range c.p.containers() {
		labels := faultLabels(c.faults, len(c.Injected), c.FaultIndex)
		for i, n := range c.Injected {
			ch <- prometheus.MustNewConstMetric(injectedDesc, prometheus.CounterValue, float64(n),
				c.Namespace, c.Pod, c.Container, labels[i])
		}
	}
}

// faultLabels names each of n faults for the fault label: "0:should_failslab" ("1:alloc" for a
// failtype that hooks several functions), the number
// being the fault's index in the annotation (index maps the armed fault i to it).
func faultLabels(faults []annotations.Fault, n int, index func(int) int) []string {
	out := make([]string, n)
	for i := range out {
		if i < len(faults) {
			out[i] = strconv.Itoa(index(i)) + ":" + faults[i].HookName()
		} else {
			out[i] = strconv.Itoa(index(i))
		}
	}
	return out
}

func newMetrics(p *Plugin) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		armErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kfault_arm_errors_total",
			Help: "Attempts to arm a fault that failed (cgroup not found, engine error).",
		}),
		armDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kfault_arm_duration_seconds",
			Help:    "Time taken by the engine to arm one container's faults.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2, 5},
		}),
	}
	armed := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kfault_rules_armed",
		Help: "Containers with faults armed now.",
	}, func() float64 { return float64(len(p.ArmedKeys())) })
	m.Registry.MustRegister(m.armErrors, m.armDuration, armed, injectedCollector{p})
	m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "kfault_injection_samples_dropped_total",
		Help: "Sampled injections the engine could not deliver to the logs and status (the faults themselves were injected and counted).",
	}, func() float64 { return float64(p.engine.SamplesDropped()) }))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

// Serve serves /metrics on addr until ctx ends. The address was validated by the
// config (loopback unless metricsAllowNonLoopback).
func (m *Metrics) Serve(ctx context.Context, addr string, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "address", addr, "error", err.Error())
		}
	}()
	return nil
}
