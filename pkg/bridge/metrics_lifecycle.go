package bridge

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bridge-dev/bridge/pkg/store"
)

// StatsWindow is the window of the bridge_stats_* series: the same numbers
// as `bridge stats --since 24h`.
const StatsWindow = 24 * time.Hour

// statsCacheFor bounds how often a scrape recomputes them from the journal.
const statsCacheFor = 15 * time.Second

// startLifecycle starts the lifecycle's background work: the idle return
// and the outcome series.
func (b *Bridge) startLifecycle(ctx context.Context) {
	b.watchIdle(ctx)
	if err := b.o.Metrics.reg.Register(&statsCollector{b: b}); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			b.log.Warn("outcome metrics", keyErr, err)
		}
	}
}

var (
	descConvs = prometheus.NewDesc("bridge_stats_conversations",
		"Conversations over the last 24 h by outcome (handled, resolved, resolved_without_human, taken_over, kept, reopened_24h), from the journal.",
		[]string{"route", "outcome"}, nil)
	descHandoffs = prometheus.NewDesc("bridge_stats_handoffs",
		"Handoffs over the last 24 h by reason, from the journal.", []string{"route", "reason"}, nil)
	descReturns = prometheus.NewDesc("bridge_stats_returns",
		"Returns to the bot over the last 24 h by cause (status, idle, give-back), from the journal.", []string{"route", "cause"}, nil)
	descAnswers = prometheus.NewDesc("bridge_stats_answers",
		"Answers posted over the last 24 h, from the journal.", []string{"route"}, nil)
	descLatency = prometheus.NewDesc("bridge_stats_answer_seconds",
		"Webhook-to-answer latency over the last 24 h (quantile 0.5 and 0.95), from the journal.", []string{"route", "quantile"}, nil)
	descTokens = prometheus.NewDesc("bridge_stats_tokens",
		"Dify tokens used over the last 24 h, from the trace.", []string{"route"}, nil)
)

// statsCollector serves `bridge stats` as gauges, recomputed at most every
// statsCacheFor.
type statsCollector struct {
	b *Bridge

	mu   sync.Mutex
	at   time.Time
	last []store.RouteStats
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConvs, descHandoffs, descReturns, descAnswers, descLatency, descTokens} {
		ch <- d
	}
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	now := c.b.o.Now()
	if c.last == nil || now.Sub(c.at) >= statsCacheFor {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := c.b.o.Store.Stats(ctx, now.Add(-StatsWindow), now.Add(time.Millisecond), 0)
		cancel()
		if err != nil {
			c.b.log.Warn("outcome metrics", keyErr, err)
		} else {
			c.last, c.at = st, now
		}
	}
	st := c.last
	c.mu.Unlock()
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, s := range st {
		r := strconv.FormatInt(s.RouteID, 10)
		for outcome, v := range map[string]int{"handled": s.Handled, "resolved": s.Resolved, "resolved_without_human": s.ResolvedByBot,
			"taken_over": s.Takeovers, "kept": s.Kept, "reopened_24h": s.Reopened24h} {
			g(descConvs, float64(v), r, outcome)
		}
		for reason, v := range s.Handoffs {
			g(descHandoffs, float64(v), r, reason)
		}
		for cause, v := range s.Returned {
			g(descReturns, float64(v), r, cause)
		}
		g(descAnswers, float64(s.Answered), r)
		g(descLatency, s.LatencyP50, r, "0.5")
		g(descLatency, s.LatencyP95, r, "0.95")
		g(descTokens, float64(s.Tokens), r)
	}
}
