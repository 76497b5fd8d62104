package bridge

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are bridge's Prometheus series, all prefixed bridge_.
type Metrics struct {
	reg        *prometheus.Registry
	webhooks   *prometheus.CounterVec
	ackLatency prometheus.Histogram
	events     *prometheus.CounterVec
	handoffs   *prometheus.CounterVec
	retries    *prometheus.CounterVec
	difyLat    *prometheus.HistogramVec
	difyTTFT   *prometheus.HistogramVec
	cwLat      *prometheus.HistogramVec
	queueDepth prometheus.GaugeFunc
	queueFn    func() float64
}

// NewMetrics builds the series on reg (a fresh registry with the Go and
// process collectors when nil).
func NewMetrics(reg *prometheus.Registry) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	m := &Metrics{reg: reg}
	m.webhooks = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bridge_webhooks_total",
		Help: "Webhooks received, by outcome (accepted, ignored_<reason>, rejected_<status>, error)."}, []string{"outcome"})
	m.ackLatency = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "bridge_webhook_ack_seconds",
		Help: "Time from request to acknowledgement of journaled webhooks.", Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, 1}})
	m.events = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bridge_events_finished_total",
		Help: "Acted-on events by final state."}, []string{"state"})
	m.handoffs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bridge_handoffs_total",
		Help: "Conversations handed to a human, by reason."}, []string{"reason"})
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bridge_retries_total",
		Help: "Retried calls, by upstream."}, []string{"upstream"})
	m.difyLat = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "bridge_dify_request_seconds",
		Help: "Dify chat-messages exchanges, by route and outcome.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 12)}, []string{"route", "outcome"})
	m.difyTTFT = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "bridge_dify_first_token_seconds",
		Help: "Time to the first answer token of Dify streams, by route.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 12)}, []string{"route"})
	m.cwLat = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "bridge_chatwoot_request_seconds",
		Help: "Chatwoot API calls, by call and status.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}, []string{"call", "status"})
	m.queueDepth = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "bridge_queue_depth",
		Help: "Accepted events not yet finished."}, func() float64 {
		if m.queueFn == nil {
			return 0
		}
		return m.queueFn()
	})
	reg.MustRegister(m.webhooks, m.ackLatency, m.events, m.handoffs, m.retries, m.difyLat, m.difyTTFT, m.cwLat, m.queueDepth)
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Registry exposes the registry (tests read values from it).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

func (m *Metrics) webhook(outcome string) { m.webhooks.WithLabelValues(outcome).Inc() }
func (m *Metrics) finished(state string)  { m.events.WithLabelValues(state).Inc() }
func (m *Metrics) handoff(reason string)  { m.handoffs.WithLabelValues(reason).Inc() }
func (m *Metrics) retry(upstream string)  { m.retries.WithLabelValues(upstream).Inc() }
func (m *Metrics) dify(route int64, outcome string, d time.Duration) {
	m.difyLat.WithLabelValues(strconv.FormatInt(route, 10), outcome).Observe(d.Seconds())
}
func (m *Metrics) firstToken(route int64, d time.Duration) {
	m.difyTTFT.WithLabelValues(strconv.FormatInt(route, 10)).Observe(d.Seconds())
}
func (m *Metrics) chatwoot(call string, status int, d time.Duration) {
	m.cwLat.WithLabelValues(call, strconv.Itoa(status)).Observe(d.Seconds())
}

func (b *Bridge) watchQueue() {
	b.o.Metrics.queueFn = func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		n, err := b.o.Store.CountOpen(ctx)
		if err != nil {
			return -1
		}
		return float64(n)
	}
}
