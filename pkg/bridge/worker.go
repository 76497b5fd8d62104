package bridge

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bridge-dev/bridge/pkg/store"
)

// Trace stages.
const (
	StageReceived = "received"
	StageDecision = "decision"
	StageWorker   = "worker"
	StageHandoff  = "handoff"
	StageDify     = "dify"
	StageChatwoot = "chatwoot"
	StageDone     = "done"
	StageTakeover = "takeover"
)

// Steps: side effects recorded on the event once done, so a retry or a
// restart never repeats them.
const (
	StepAnswer         = "answer"
	StepDraft          = "draft"
	StepHandoffMessage = "handoff_message"
	StepHandoffNote    = "handoff_note"
	StepHandoffStatus  = "handoff_status"
	StepHandoffTeam    = "handoff_team"
	StepHandoffLabels  = "handoff_labels"
	StepTakeoverStatus = "takeover_status"
)

// safetyPoll is the slow poll that catches work a missed wake-up left
// behind (and events delayed by debounce).
const safetyPoll = time.Second

// dispatchBatch is how many open events one dispatch pass looks at.
const dispatchBatch = 512

type convKey struct{ account, conv int64 }

// Run resumes unfinished events and runs the workers until ctx ends. Then it
// stops taking new events, gives running ones ShutdownGrace to finish, and
// interrupts the rest, which stay in the journal for the next start.
func (b *Bridge) Run(ctx context.Context) error {
	n, err := b.o.Store.ResetWorking(ctx)
	if err != nil {
		return fmt.Errorf("resume events: %w", err)
	}
	if n > 0 {
		b.log.Info("resuming interrupted events", "count", n)
	}
	b.watchQueue()
	// Events are interrupted on their own context, not Run's, so that the
	// grace period can let them finish.
	workCtx, interrupt := context.WithCancel(context.WithoutCancel(ctx))
	defer interrupt()
	var wg sync.WaitGroup
	sem := make(chan struct{}, b.o.Concurrency)
	busy := map[convKey]bool{}
	var mu sync.Mutex
	done := make(chan struct{}, b.o.Concurrency)

	var retention <-chan time.Time
	if b.o.RetentionIgnored > 0 {
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		retention = t.C
		b.pruneIgnored(ctx)
	}
	ticker := time.NewTicker(safetyPoll)
	defer ticker.Stop()
	b.ready.set(true)
	defer b.ready.set(false)
	for {
		b.dispatch(ctx, workCtx, &wg, sem, &mu, busy, done)
		select {
		case <-ctx.Done():
			b.ready.set(false)
			finished := make(chan struct{})
			go func() { wg.Wait(); close(finished) }()
			select {
			case <-finished:
			case <-time.After(b.o.ShutdownGrace):
				b.log.Warn("interrupting running events; they stay journaled for the next start")
				interrupt()
				<-finished
			}
			b.bg.Wait()
			return nil
		case <-b.wake:
		case <-done:
		case <-ticker.C:
		case <-retention:
			b.pruneIgnored(ctx)
		}
	}
}

// kick wakes the dispatcher after new work was journaled.
func (b *Bridge) kick() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

func (b *Bridge) dispatch(ctx, workCtx context.Context, wg *sync.WaitGroup, sem chan struct{}, mu *sync.Mutex,
	busy map[convKey]bool, done chan struct{}) {
	if ctx.Err() != nil {
		return
	}
	var after int64
	for {
		evs, err := b.o.Store.OpenEvents(ctx, after, dispatchBatch)
		if err != nil {
			if ctx.Err() == nil {
				b.log.Error("read open events", "err", err)
			}
			return
		}
		seen := map[convKey]bool{}
		now := b.o.Now()
		for i := range evs {
			e := evs[i]
			after = e.ID
			k := convKey{e.AccountID, e.ConversationID}
			if seen[k] {
				continue // an earlier event of this conversation goes first
			}
			seen[k] = true
			mu.Lock()
			isBusy := busy[k]
			mu.Unlock()
			if isBusy {
				continue
			}
			if !e.NotBefore.IsZero() && now.Before(e.NotBefore) {
				continue // debounce window still open; the safety poll returns
			}
			select {
			case sem <- struct{}{}:
			default:
				return // all workers busy; a finishing one wakes the dispatcher
			}
			mu.Lock()
			busy[k] = true
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(busy, k)
					mu.Unlock()
					<-sem
					select {
					case done <- struct{}{}:
					default:
					}
				}()
				b.process(workCtx, e)
			})
		}
		if len(evs) < dispatchBatch {
			return
		}
	}
}

// process drives one event to a final state, or leaves it journaled when
// interrupted.
func (b *Bridge) process(ctx context.Context, e store.Event) {
	if err := b.record(ctx, e.ID, &store.EventUpdate{Status: store.StatusWorking, AddAttempt: true},
		store.Hop{Stage: StageWorker, Outcome: "started", Detail: fmt.Sprintf("attempt %d", e.Attempts+1)}); err != nil {
		b.log.Error("claim event", "event_id", e.ID, "err", err)
		return
	}
	var err error
	switch e.Kind {
	case store.KindTakeover:
		err = b.processTakeover(ctx, &e)
	default:
		err = b.processMessage(ctx, &e)
	}
	if err != nil && ctx.Err() != nil {
		// Interrupted by shutdown: leave it for the next start.
		b.log.Warn("event interrupted; it stays journaled", "event_id", e.ID)
		return
	}
	if err != nil {
		b.log.Error("event failed", "event_id", e.ID, "err", err)
	}
}

// finish records the final state of an event.
func (b *Bridge) finish(ctx context.Context, e *store.Event, status, reason, lastErr string, hop store.Hop) error {
	u := &store.EventUpdate{Status: status}
	if reason != "" {
		u.Reason = &reason
	}
	if lastErr != "" {
		u.LastError = &lastErr
	}
	if hop.Stage == "" {
		hop = store.Hop{Stage: StageDone, Outcome: status, Detail: reason}
	}
	if err := b.record(ctx, e.ID, u, hop); err != nil {
		return err
	}
	e.Status = status
	b.o.Metrics.finished(status)
	b.log.Info("event finished", "event_id", e.ID, "status", status, "reason", reason, "conversation_id", e.ConversationID)
	return nil
}

// record writes an event update and hops in one durable write.
func (b *Bridge) record(ctx context.Context, id int64, u *store.EventUpdate, hops ...store.Hop) error {
	// Bookkeeping must land even while the event is being interrupted, so
	// the journal reflects what was done upstream.
	ctx = context.WithoutCancel(ctx)
	return b.o.Store.Write(ctx, func(tx *store.Tx) error {
		if u != nil {
			if err := tx.UpdateEvent(id, *u); err != nil {
				return err
			}
		}
		for _, h := range hops {
			h.EventID = id
			if err := tx.AddHop(h); err != nil {
				return err
			}
		}
		return nil
	})
}

// hop records one trace step and logs it.
func (b *Bridge) hop(ctx context.Context, e *store.Event, h store.Hop) {
	if err := b.record(ctx, e.ID, nil, h); err != nil {
		b.log.Error("record hop", "event_id", e.ID, "stage", h.Stage, "err", err)
	}
	b.log.Info("hop", "event_id", e.ID, "conversation_id", e.ConversationID, "stage", h.Stage, "outcome", h.Outcome,
		"detail", truncate(h.Detail, 200), "ms", h.Duration.Milliseconds())
}

// backoff returns the delay before retry n (0-based): exponential with full
// jitter, capped at max.
func (b *Bridge) backoff(n int, max time.Duration) time.Duration {
	d := b.o.RetryBase << n
	if d > max || d <= 0 {
		d = max
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func (b *Bridge) pruneIgnored(ctx context.Context) {
	before := b.o.Now().Add(-b.o.RetentionIgnored)
	var total int64
	for ctx.Err() == nil {
		// Small batches keep each write short, so webhooks never wait long.
		n, err := b.o.Store.DeleteIgnoredBefore(ctx, before, 500)
		if err != nil {
			b.log.Error("retention", "err", err)
			return
		}
		total += n
		if n < 500 {
			break
		}
	}
	if total > 0 {
		b.log.Info("retention deleted old ignored events", "count", total)
	}
}

func source(e *store.Event, step string) string {
	return SourcePrefix + strconv.FormatInt(e.ID, 10) + ":" + step
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return strings.TrimSpace(err.Error())
}
