package bridge

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bridge-dev/bridge/internal/buildinfo"
)

// Webhook outcomes, the outcome label of bridge_webhooks_total.
const (
	OutcomeAccepted = "accepted"
	OutcomeIgnored  = "ignored"
	OutcomeRejected = "rejected"
	OutcomeError    = "error"
)

// Metrics are bridge's Prometheus series, all prefixed bridge_. Every label
// takes its values from a bounded set (reasons, states, route ids, API
// calls, HTTP statuses), never from free text in a webhook.
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
	inDoubt    *prometheus.CounterVec
	queue      *queueCollector
	stale      *queueCollector
	requeues   *prometheus.CounterVec
	unjournal  prometheus.Counter
	leasesLost prometheus.Counter
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
		Help: "Webhooks received, by outcome (accepted, ignored, rejected, error), ignore reason and the HTTP status answered."},
		[]string{"outcome", "reason", "status"})
	m.ackLatency = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "bridge_webhook_ack_seconds",
		Help: "Time from request to acknowledgement of journaled webhooks.", Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, 1}})
	m.events = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bridge_events_finished_total",
		Help: "Acted-on events by final state."}, []string{"state"})
	m.handoffs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bridge_handoffs_total",
		Help: "Conversations handed to a human, by reason."}, []string{"reason"})
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bridge_retries_total",
		Help: "Retried calls, by upstream (dify, chatwoot)."}, []string{"upstream"})
	m.difyLat = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "bridge_dify_request_seconds",
		Help: "Dify chat-messages exchanges, by route id and outcome (ok, error).", Buckets: prometheus.ExponentialBuckets(0.05, 2, 12)},
		[]string{"route", "outcome"})
	m.difyTTFT = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "bridge_dify_first_token_seconds",
		Help: "Time to the first answer token of Dify streams, by route id.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 12)},
		[]string{"route"})
	m.cwLat = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "bridge_chatwoot_request_seconds",
		Help: "Chatwoot API calls, by call and HTTP status (0: no answer).", Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)},
		[]string{"call", "status"})
	m.inDoubt = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bridge_posts_in_doubt_total",
		Help: "Posts that may or may not have reached Chatwoot (a crash or a lost answer), by how each was resolved: " +
			"found_in_journal, found_in_chatwoot, not_in_chatwoot (posted, known absent), posted_again (posted without knowing)."},
		[]string{"outcome"})
	for _, o := range []string{InDoubtJournal, InDoubtChatwoot, InDoubtAbsent, InDoubtPostedAgain} {
		m.inDoubt.WithLabelValues(o)
	}
	m.queue = &queueCollector{desc: prometheus.NewDesc("bridge_queue_depth",
		"Accepted events not yet finished (accepted or working in the journal).", nil, nil)}
	bi := buildinfo.Get()
	build := prometheus.NewGauge(prometheus.GaugeOpts{Name: "bridge_build_info",
		Help:        "Always 1; the labels say which bridge runs (version, commit, Go version).",
		ConstLabels: prometheus.Labels{"version": bi.Version, "commit": bi.Commit, "goversion": bi.Go}})
	build.Set(1)
	m.stale = &queueCollector{desc: prometheus.NewDesc("bridge_events_working_stale",
		"Events working without progress for longer than dify.timeout: their worker is stuck, waits for the journal, or is gone.", nil, nil)}
	m.requeues = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bridge_events_requeued_total",
		Help: "Events put back in the queue: after an error in their processing (error), found working with no worker (orphaned), refused by a Dify app at its concurrency cap (dify_busy), or, with replicas, found with a lease that ran out (lease_expired)."},
		[]string{"reason"})
	m.leasesLost = prometheus.NewCounter(prometheus.CounterOpts{Name: "bridge_leases_lost_total",
		Help: "Events this process stopped driving because another process took their lease (this one could not renew it in time)."})
	m.unjournal = prometheus.NewCounter(prometheus.CounterOpts{Name: "bridge_webhook_rejections_unjournaled_total",
		Help: "Refused requests not written to the journal because their source address exceeded its share."})
	reg.MustRegister(m.webhooks, m.ackLatency, m.events, m.handoffs, m.retries, m.difyLat, m.difyTTFT, m.cwLat, m.inDoubt, m.queue, build,
		m.stale, m.requeues, m.unjournal, m.leasesLost)
	return m
}

// Handler serves the registry in the Prometheus text format. A series that
// cannot be read (the queue depth while the database is unavailable) is left
// out; the others are still served.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Registry exposes the registry, so a caller can add its own collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

func (m *Metrics) webhookAccepted() {
	m.webhooks.WithLabelValues(OutcomeAccepted, "", "200").Inc()
}

func (m *Metrics) webhookIgnored(reason string) {
	m.webhooks.WithLabelValues(OutcomeIgnored, ignoredLabel(reason), "200").Inc()
}

func (m *Metrics) webhookRejected(status int) {
	m.webhooks.WithLabelValues(OutcomeRejected, "", strconv.Itoa(status)).Inc()
}

// webhookError counts webhooks answered 500 because the journal could not
// be written.
func (m *Metrics) webhookError() {
	m.webhooks.WithLabelValues(OutcomeError, "", strconv.Itoa(http.StatusInternalServerError)).Inc()
}

func (m *Metrics) postInDoubt(outcome string) { m.inDoubt.WithLabelValues(outcome).Inc() }
func (m *Metrics) finished(state string)      { m.events.WithLabelValues(state).Inc() }
func (m *Metrics) requeued(reason string)     { m.requeues.WithLabelValues(reason).Inc() }
func (m *Metrics) rejectionUnjournaled()      { m.unjournal.Inc() }
func (m *Metrics) leaseLost()                 { m.leasesLost.Inc() }
func (m *Metrics) handoff(reason string)      { m.handoffs.WithLabelValues(reason).Inc() }
func (m *Metrics) retry(upstream string)      { m.retries.WithLabelValues(upstream).Inc() }

func (m *Metrics) dify(route int64, outcome string, d time.Duration) {
	m.difyLat.WithLabelValues(strconv.FormatInt(route, 10), outcome).Observe(d.Seconds())
}

func (m *Metrics) firstToken(route int64, d time.Duration) {
	m.difyTTFT.WithLabelValues(strconv.FormatInt(route, 10)).Observe(d.Seconds())
}

func (m *Metrics) chatwoot(call string, status int, d time.Duration) {
	m.cwLat.WithLabelValues(call, strconv.Itoa(status)).Observe(d.Seconds())
}

// ignoreReasons are the reason label values of ignored webhooks.
var ignoreReasons = map[string]bool{
	ReasonNotMessageCreated: true, ReasonOutgoing: true, ReasonOwnMessage: true, ReasonPrivate: true,
	ReasonNotContact: true, ReasonHumanOwned: true, ReasonEmpty: true, ReasonNoRoute: true,
	ReasonDisabledRoute: true, ReasonDuplicate: true,
}

// ignoredLabel maps an ignore reason onto a bounded label value: the
// conversation status in "conversation_status:<status>" comes from the
// webhook, so it is dropped.
func ignoredLabel(reason string) string {
	if strings.HasPrefix(reason, ReasonStatusPrefix) {
		return strings.TrimSuffix(ReasonStatusPrefix, ":")
	}
	if ignoreReasons[reason] {
		return reason
	}
	return "other"
}

// queueCollector reports the queue depth from the journal at scrape time.
type queueCollector struct {
	desc  *prometheus.Desc
	count atomic.Pointer[func(context.Context) (int, error)]
}

func (q *queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- q.desc }

func (q *queueCollector) Collect(ch chan<- prometheus.Metric) {
	fn := q.count.Load()
	if fn == nil {
		ch <- prometheus.MustNewConstMetric(q.desc, prometheus.GaugeValue, 0)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n, err := (*fn)(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(q.desc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(q.desc, prometheus.GaugeValue, float64(n))
}

// watchQueue makes the queue depth and stale working series read this
// bridge's journal.
func (b *Bridge) watchQueue() {
	count := b.o.Store.CountOpen
	b.o.Metrics.queue.count.Store(&count)
	stale := func(ctx context.Context) (int, error) {
		n, _, err := b.o.Store.CountStaleWorking(ctx, b.o.Now().Add(-b.o.DifyTimeout))
		return n, err
	}
	b.o.Metrics.stale.count.Store(&stale)
}
