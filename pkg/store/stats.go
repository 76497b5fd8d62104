package store

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"time"
)

// The queries of `bridge stats` and of the bridge_stats_* series. They are
// standard SQL (no SQLite functions, no COUNT(DISTINCT a, b), arithmetic on
// integer milliseconds only) so that every journal backend runs them as
// they are; percentiles and token sums are computed in Go from plain rows.

const (
	statsHandledSQL = `SELECT route_id, COUNT(*) FROM (
		SELECT DISTINCT route_id, account_id, conversation_id FROM events
		WHERE kind = 'message' AND received_at >= ? AND received_at < ? AND route_id <> 0 %s) handled
		GROUP BY route_id`
	// An answer is a posted one, whatever became of the event after: an
	// answer the AI followed with its handoff marker counts, a message
	// answered together with an earlier one (merged) does not count twice.
	statsAnsweredSQL = `SELECT e.route_id, e.received_at, p.at FROM events e JOIN posted p ON p.message_id = e.posted_message_id
		WHERE e.kind = 'message' AND e.posted_message_id <> 0
		AND e.received_at >= ? AND e.received_at < ? AND e.route_id <> 0 %s`
	statsTokensSQL = `SELECT e.route_id, h.detail FROM hops h JOIN events e ON e.id = h.event_id
		WHERE h.stage = 'dify' AND h.outcome = 'answer' AND e.received_at >= ? AND e.received_at < ? AND e.route_id <> 0 %s`
	statsOwnershipSQL = `SELECT route_id, kind, owner, cause, COUNT(*) FROM ownership
		WHERE at >= ? AND at < ? AND route_id <> 0 %s GROUP BY route_id, kind, owner, cause`
	statsReopenedSQL = `SELECT r.route_id, COUNT(*) FROM ownership r
		WHERE r.kind = 'reopened' AND r.at >= ? AND r.at < ? AND r.route_id <> 0 %s
		AND EXISTS (SELECT 1 FROM ownership p WHERE p.account_id = r.account_id AND p.conversation_id = r.conversation_id
			AND p.kind = 'resolved' AND p.at <= r.at AND p.at >= r.at - ?)
		GROUP BY r.route_id`
)

// ReopenWindow is how soon after a resolve a reopening counts against it.
const ReopenWindow = 24 * time.Hour

// RouteStats are one route's outcomes over a window.
type RouteStats struct {
	RouteID int64 `json:"route_id"`
	// Handled: conversations with at least one customer message bridge
	// acted on.
	Handled  int `json:"conversations_handled"`
	Answered int `json:"answers"`
	// ResolvedByBot: resolves while the bot held the conversation;
	// Resolved counts every resolve.
	ResolvedByBot int            `json:"resolved_without_human"`
	Resolved      int            `json:"resolved"`
	Handoffs      map[string]int `json:"handed_off"`   // by reason
	Takeovers     int            `json:"taken_over"`   // an agent replied while the bot held it
	Kept          int            `json:"kept"`         // kept for humans from the Dashboard App or the CLI
	Returned      map[string]int `json:"returned"`     // to the bot, by cause
	Reopened24h   int            `json:"reopened_24h"` // reopened within 24 h of a resolve
	LatencyP50    float64        `json:"answer_p50_seconds"`
	LatencyP95    float64        `json:"answer_p95_seconds"`
	Tokens        int64          `json:"tokens"`
	latencies     []float64
}

// HandedOff is the number of handoffs, whatever the reason.
func (s *RouteStats) HandedOff() int { return sum(s.Handoffs) }

// ReturnedTotal is the number of returns to the bot, whatever the cause.
func (s *RouteStats) ReturnedTotal() int { return sum(s.Returned) }

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

var tokensRe = regexp.MustCompile(`, (\d+) tokens`)

// Stats computes per-route outcomes for [since, until), route 0 = every
// route, ordered by route id.
func (db *DB) Stats(ctx context.Context, since, until time.Time, route int64) ([]RouteStats, error) {
	byRoute := map[int64]*RouteStats{}
	get := func(id int64) *RouteStats {
		s := byRoute[id]
		if s == nil {
			s = &RouteStats{RouteID: id, Handoffs: map[string]int{}, Returned: map[string]int{}}
			byRoute[id] = s
		}
		return s
	}
	filter, rfilter := "", ""
	args := []any{ms(since), ms(until)}
	if route != 0 {
		filter, rfilter = "AND route_id = ?", "AND r.route_id = ?"
		args = append(args, route)
	}
	efilter := ""
	if route != 0 {
		efilter = "AND e.route_id = ?"
	}
	scan := func(q string, qargs []any, fn func(scan func(...any) error) error) error {
		rows, err := db.query(ctx, q, qargs...)
		if err != nil {
			return fmt.Errorf("stats: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			if err := fn(rows.Scan); err != nil {
				return fmt.Errorf("stats: %w", err)
			}
		}
		return rows.Err()
	}
	if err := scan(fmt.Sprintf(statsHandledSQL, filter), args, func(sc func(...any) error) error {
		var id int64
		var n int
		if err := sc(&id, &n); err != nil {
			return err
		}
		get(id).Handled = n
		return nil
	}); err != nil {
		return nil, err
	}
	if err := scan(fmt.Sprintf(statsAnsweredSQL, efilter), args, func(sc func(...any) error) error {
		var id, rec, posted int64
		if err := sc(&id, &rec, &posted); err != nil {
			return err
		}
		s := get(id)
		s.Answered++
		s.latencies = append(s.latencies, float64(posted-rec)/1000)
		return nil
	}); err != nil {
		return nil, err
	}
	if err := scan(fmt.Sprintf(statsTokensSQL, efilter), args, func(sc func(...any) error) error {
		var id int64
		var detail string
		if err := sc(&id, &detail); err != nil {
			return err
		}
		if m := tokensRe.FindStringSubmatch(detail); m != nil {
			n, _ := strconv.ParseInt(m[1], 10, 64) // \d+ that fits: a journal never holds more
			get(id).Tokens += n
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if err := scan(fmt.Sprintf(statsOwnershipSQL, filter), args, func(sc func(...any) error) error {
		var id int64
		var kind, owner, cause string
		var n int
		if err := sc(&id, &kind, &owner, &cause, &n); err != nil {
			return err
		}
		s := get(id)
		switch kind {
		case OwnHandoff:
			s.Handoffs[cause] += n
		case OwnTakeover:
			s.Takeovers += n
		case OwnKeep:
			s.Kept += n
		case OwnReturn:
			s.Returned[cause] += n
		case OwnResolved:
			s.Resolved += n
			if owner == StateBot {
				s.ResolvedByBot += n
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if err := scan(fmt.Sprintf(statsReopenedSQL, rfilter), append(slices.Clone(args), ReopenWindow.Milliseconds()), func(sc func(...any) error) error {
		var id int64
		var n int
		if err := sc(&id, &n); err != nil {
			return err
		}
		get(id).Reopened24h = n
		return nil
	}); err != nil {
		return nil, err
	}
	out := make([]RouteStats, 0, len(byRoute))
	for _, s := range byRoute {
		s.LatencyP50, s.LatencyP95 = percentile(s.latencies, 0.50), percentile(s.latencies, 0.95)
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].RouteID < out[j].RouteID })
	return out, nil
}

// percentile is the nearest-rank percentile of xs (0 when empty).
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := int(math.Ceil(p * float64(len(s))))
	rank = max(1, min(rank, len(s)))
	return s[rank-1]
}
