package bridge

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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
	StepReopenStatus   = "reopen_status"
	// StepHandoffDue: the answer carried the handoff marker; the handoff
	// follows the answer even across a restart.
	StepHandoffDue = "handoff_due"
	// StepSupersededNote: the answer went in as a private note because a
	// human took over.
	StepSupersededNote = "superseded_note"
)

// safetyPoll is the slow poll that catches work a missed wake-up left
// behind (and events delayed by debounce).
const safetyPoll = time.Second

// dispatchBatch is how many open events one dispatch pass looks at.
const dispatchBatch = 512

// dispatchPage is how many queue heads the dispatcher reads at a time: a
// finishing worker frees one slot, and with a long queue reading a whole
// batch of heads for it would cost more than the work it starts.
const dispatchPage = 64

type convKey struct{ account, conv int64 }

// Run resumes unfinished events and runs the workers until ctx ends. Then it
// stops taking new events, gives running ones ShutdownGrace to finish, and
// interrupts the rest, which stay in the journal for the next start.
//
// Run returns an error only when it could not start (the journal stayed
// unwritable for StartupRetryFor); the caller must then stop, since webhooks
// it acknowledged would wait for workers that do not exist.
func (b *Bridge) Run(ctx context.Context) (err error) {
	b.state.set(phaseStarting, "resuming interrupted events")
	defer func() {
		if err != nil {
			b.state.set(phaseFailed, err.Error())
			return
		}
		b.state.set(phaseIdle, "")
	}()
	if err := b.resume(ctx); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return nil
	}
	b.watchQueue()
	b.watchJournal()
	b.startShared(ctx)
	b.startLifecycle(ctx)
	// Events are interrupted on their own context, not Run's, so that the
	// grace period can let them finish.
	workCtx, interrupt := context.WithCancel(context.WithoutCancel(ctx))
	defer interrupt()
	var wg sync.WaitGroup
	d := newDispatcher(b)
	b.sched.Store(d)
	defer b.sched.Store(nil)
	startWorker := func(id int64, key convKey, route int64) {
		wg.Go(func() {
			// The dispatcher picks; the claim decides: with replicas,
			// another process may have claimed the event since.
			claimed := false
			defer func() { d.release(release{key: key, route: route, claimed: claimed}) }()
			full, err := b.o.Store.Event(workCtx, id)
			if err != nil {
				b.log.Error("read event", keyEventID, id, keyErr, err)
				return
			}
			claimed = b.process(workCtx, full)
		})
	}

	var retention <-chan time.Time
	if b.o.RetentionIgnored > 0 {
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		retention = t.C
		b.pruneIgnored(ctx)
	}
	ticker := time.NewTicker(safetyPoll)
	defer ticker.Stop()
	b.state.set(phaseRunning, "")
	debounce := time.NewTimer(time.Hour)
	defer debounce.Stop()
	for {
		if ctx.Err() == nil {
			if next := d.pass(ctx, startWorker); !next.IsZero() {
				debounce.Reset(max(next.Sub(b.o.Now()), time.Millisecond))
			}
		}
		select {
		case <-ctx.Done():
			b.state.set(phaseIdle, "")
			finished := make(chan struct{})
			go func() { wg.Wait(); close(finished) }()
			select {
			case <-finished:
			case <-time.After(b.o.ShutdownGrace):
				b.log.Warn("interrupting running events; they stay journaled for the next start")
				interrupt()
				<-finished
			}
			b.releaseLeases()
			b.bg.Wait()
			return nil
		case <-b.wake:
		case <-ticker.C:
			b.reclaimOrphans(ctx)
		case <-debounce.C:
		case <-retention:
			b.pruneIgnored(ctx)
		}
	}
}

// resume returns the events a stopped process left `working` to the queue.
// It is a quick write that must happen even if a stop was asked for at once
// (the next start would do it anyway). Another process may hold the journal
// locked at start, or the disk be full for a moment: the store retries the
// write, and resume tries again with backoff for StartupRetryFor before it
// gives up.
func (b *Bridge) resume(ctx context.Context) error {
	deadline := time.Now().Add(b.o.StartupRetryFor)
	for attempt := 0; ; attempt++ {
		n, err := b.o.Store.ResetWorking(context.WithoutCancel(ctx))
		if err == nil {
			if n > 0 {
				b.log.Info("resuming interrupted events", "count", n)
			}
			return nil
		}
		if !store.IsTransient(err) || !time.Now().Before(deadline) {
			return fmt.Errorf("resume events: %w", err)
		}
		b.state.set(phaseStarting, "resuming interrupted events: "+err.Error())
		b.log.Warn("cannot resume events yet; retrying", keyStage, StageWorker, "attempt", attempt+1, keyErr, err)
		if sleep(ctx, min(b.backoff(attempt, 5*time.Second), time.Until(deadline))) != nil {
			return nil // a stop was asked for: nothing started, nothing to resume
		}
	}
}

// reclaimOrphans puts back in the queue the `working` events that no worker
// of this process holds and that have shown no progress for longer than a
// whole Dify exchange may take (DifyTimeout + OrphanGrace): their worker is
// gone (a replay process killed, a crash that start-up did not see). At
// worst an event a live process still drives is driven twice, and the steps
// it recorded are not repeated.
func (b *Bridge) reclaimOrphans(ctx context.Context) {
	if b.o.Store.Shared() {
		// Other processes' events are theirs while their leases last.
		b.reclaimExpired(ctx)
		return
	}
	before := b.o.Now().Add(-(b.o.DifyTimeout + b.o.OrphanGrace))
	stale, err := b.o.Store.StaleWorking(ctx, before, dispatchPage)
	if err != nil {
		if ctx.Err() == nil {
			b.log.Error("read stale working events", keyErr, err)
		}
		return
	}
	n := 0
	for _, s := range stale {
		if _, ok := b.held.Load(s.ID); ok {
			continue // a worker here is on it (or waits for the journal to requeue it)
		}
		detail := fmt.Sprintf("working without progress since %s and held by no worker here; back in the queue",
			s.LastTouch.Format(time.RFC3339))
		var took bool
		err := b.o.Store.Write(ctx, func(tx *store.Tx) error {
			var err error
			if took, err = tx.Reclaim(s.ID, before); err != nil || !took {
				return err
			}
			return tx.AddHop(store.Hop{EventID: s.ID, Stage: StageWorker, Outcome: "reclaimed", Detail: detail})
		})
		if err != nil {
			b.log.Error("reclaim orphaned event", keyEventID, s.ID, keyErr, err)
			continue
		}
		if took {
			n++
			b.o.Metrics.requeued("orphaned")
			b.log.Warn("reclaimed an orphaned working event", keyEventID, s.ID, keyStage, StageWorker, "last_progress", s.LastTouch)
		}
	}
	if n > 0 {
		if d := b.sched.Load(); d != nil {
			d.forceReset() // they are behind the dispatcher's cursors
		}
		b.kick()
	}
}

// kick wakes the dispatcher after new work was journaled.
func (b *Bridge) kick() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// process drives one event to a final state, or leaves it journaled when
// interrupted.
func (b *Bridge) process(ctx context.Context, e store.Event) (claimed bool) {
	// The claim needs no fsync of its own: lost in a power cut, the event is
	// simply still accepted and is driven again; the next durable commit
	// (the answer's) covers it anyway.
	err := b.o.Store.WriteNoSync(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		if err := tx.Claim(e.ID); err != nil {
			return err
		}
		return tx.AddHop(store.Hop{EventID: e.ID, Stage: StageWorker, Outcome: "started", Detail: fmt.Sprintf("attempt %d", e.Attempts+1)})
	})
	if errors.Is(err, store.ErrNotClaimable) {
		return false // another process (a replay, say) drives it
	}
	if err != nil {
		b.log.Error("claim event", eventAttrs(&e, keyStage, StageWorker, keyErr, err)...)
		return false
	}
	e.Status = store.StatusWorking
	e.Attempts++
	b.held.Store(e.ID, struct{}{})
	defer b.held.Delete(e.ID)
	ctx, release := b.holdLease(ctx, &e)
	defer release()
	b.logHop("hop", &e, store.Hop{Stage: StageWorker, Outcome: "started"})
	var merged []store.Event
	switch e.Kind {
	case store.KindTakeover:
		err = b.processTakeover(ctx, &e)
	case store.KindReopen:
		err = b.processReopen(ctx, &e)
	case KindAskAgain:
		err = b.processAskAgain(ctx, &e)
	case KindRefused, KindTranscript, KindFeedback:
		err = b.processUpdate(ctx, &e)
	default:
		if e.MergedInto != 0 {
			// Merged into an earlier event before a restart: it shares that
			// event's fate once it has one.
			if parent, perr := b.o.Store.Event(ctx, e.MergedInto); perr == nil && parent.Finished() {
				reason := fmt.Sprintf("merged into event %d", parent.ID)
				err = b.finish(ctx, &e, parent.Status, reason, "", store.Hop{Stage: StageDone, Outcome: parent.Status, Detail: reason})
				break
			}
		}
		if b.o.Debounce > 0 {
			if merged, err = b.mergeFollowing(ctx, &e); err != nil {
				b.log.Error("merge debounced messages", "event_id", e.ID, "err", err)
				b.requeue(ctx, &e, err)
				return true
			}
		}
		if len(merged) > 0 {
			ids := make([]int64, len(merged))
			for i := range merged {
				ids[i] = merged[i].ID
				b.held.Store(ids[i], struct{}{})
			}
			b.merged.Store(e.ID, ids)
			defer func() {
				b.merged.Delete(e.ID)
				for _, id := range ids {
					b.held.Delete(id)
				}
			}()
		}
		err = b.processMessage(ctx, &e)
	}
	if errors.Is(err, errDifyBusy) && ctx.Err() == nil {
		b.requeueBusy(ctx, &e, err)
		return true
	}
	if err != nil && ctx.Err() != nil {
		// Interrupted by shutdown: leave it for the next start.
		b.log.Warn("event interrupted; it stays journaled", eventAttrs(&e)...)
		return true
	}
	if err != nil {
		b.log.Error("event failed", eventAttrs(&e, keyErr, err)...)
		b.settle(ctx, &e, err)
	}
	return true
}

// maxAttempts bounds how often an event whose processing ends in an error
// other than the journal's is driven again before it is failed for good.
const maxAttempts = 5

// settle makes sure an event whose processing ended in an error is not
// left `working` with no worker: it reached a final state after all, or it
// goes back in the queue as soon as the journal takes the write (the error
// was most likely the journal's: a lock, a full disk), or, after
// maxAttempts tries that failed for another reason, it is failed. The
// conversation stays with this worker meanwhile, so nothing overtakes it.
// Interrupted by a shutdown, it stays `working` for the next start.
func (b *Bridge) settle(ctx context.Context, e *store.Event, cause error) {
	var ids []int64
	if v, ok := b.merged.Load(e.ID); ok {
		ids = v.([]int64)
	}
	for attempt := 0; ; attempt++ {
		cur, err := b.o.Store.Event(ctx, e.ID)
		if err == nil && cur.Status != store.StatusWorking {
			return // finished after all, or reclaimed
		}
		if err == nil {
			if !store.IsTransient(cause) && cur.Attempts >= maxAttempts {
				msg := fmt.Sprintf("gave up after %d attempts: %s", cur.Attempts, errText(cause))
				err = b.finish(ctx, e, store.StatusFailed, msg, errText(cause), store.Hop{Stage: StageDone, Outcome: "failed", Detail: msg})
			} else {
				detail := fmt.Sprintf("attempt %d ended in an error; driven again: %s", cur.Attempts, errText(cause))
				err = b.o.Store.Write(context.WithoutCancel(ctx), func(tx *store.Tx) error {
					for _, id := range append([]int64{e.ID}, ids...) {
						if err := tx.UpdateEvent(id, store.EventUpdate{Status: store.StatusAccepted}); err != nil {
							return err
						}
					}
					return tx.AddHop(store.Hop{EventID: e.ID, Stage: StageWorker, Outcome: "requeued", Detail: detail})
				})
				if err == nil {
					b.o.Metrics.requeued("error")
					b.log.Warn("event back in the queue after an error", eventAttrs(e, keyStage, StageWorker, keyErr, cause)...)
					b.kick()
				}
			}
			if err == nil {
				return
			}
		}
		if ctx.Err() != nil {
			b.log.Warn("event left working; the next start resumes it", eventAttrs(e, keyErr, err)...)
			return
		}
		b.log.Warn("journal not writable; the event goes back in the queue when it is", eventAttrs(e, keyErr, err)...)
		if sleep(ctx, b.backoff(attempt, 5*time.Second)) != nil {
			b.log.Warn("event left working; the next start resumes it", eventAttrs(e)...)
			return
		}
	}
}

// finish records the final state of an event.
func (b *Bridge) finish(ctx context.Context, e *store.Event, status, reason, lastErr string, hop store.Hop) error {
	return b.finishWith(ctx, e, status, reason, lastErr, hop, nil)
}

// finishWith is finish plus extra bookkeeping in the same commit.
func (b *Bridge) finishWith(ctx context.Context, e *store.Event, status, reason, lastErr string, hop store.Hop,
	extra func(*store.Tx) error) error {
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
	var merged []int64
	if v, ok := b.merged.Load(e.ID); ok {
		merged = v.([]int64)
	}
	err := b.o.Store.Write(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		if err := tx.UpdateEvent(e.ID, *u); err != nil {
			return err
		}
		hop.EventID = e.ID
		if err := tx.AddHop(hop); err != nil {
			return err
		}
		if extra != nil {
			if err := extra(tx); err != nil {
				return err
			}
		}
		// Messages answered together finish together, in the same commit,
		// so a crash can never leave them to be answered again.
		for _, id := range merged {
			mr := fmt.Sprintf("merged into event %d", e.ID)
			if err := tx.UpdateEvent(id, store.EventUpdate{Status: status, Reason: &mr}); err != nil {
				return err
			}
			if err := tx.AddHop(store.Hop{EventID: id, Stage: StageDone, Outcome: status, Detail: mr}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for range merged {
		b.o.Metrics.finished(status)
	}
	e.Status = status
	b.o.Metrics.finished(status)
	b.log.Info("event finished", eventAttrs(e, keyStage, hop.Stage, "status", status, "reason", truncate(reason, maxLoggedDetail))...)
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

// hop records one trace step and logs it. A trace step alone needs no
// fsync: the next durable commit of the event covers it.
func (b *Bridge) hop(ctx context.Context, e *store.Event, h store.Hop) {
	h.EventID = e.ID
	if err := b.o.Store.WriteNoSync(context.WithoutCancel(ctx), func(tx *store.Tx) error { return tx.AddHop(h) }); err != nil {
		b.log.Error("record hop", eventAttrs(e, keyStage, h.Stage, keyErr, err)...)
	}
	b.logHop("hop", e, h)
}

// backoff returns the delay before retry n (0-based): exponential with equal
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

// ownershipBatches bounds a retention pass over the ownership entries: 10
// batches of 500 take about 15 ms.
const ownershipBatches = 10

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
	b.pruneOwnership(ctx, before)
}

// pruneOwnership deletes the old ownership entries of conversations bridge
// never acted in, whose events retention deletes, carrying on from the
// entry the last pass stopped at. After a start it looks at every entry
// again, a bounded share per pass: dispatching waits while it runs.
func (b *Bridge) pruneOwnership(ctx context.Context, before time.Time) {
	var total int64
	for range ownershipBatches {
		if ctx.Err() != nil {
			break
		}
		last, n, err := b.o.Store.PruneOwnership(ctx, b.ownSwept, before, 500)
		if err != nil {
			b.log.Error("retention", "err", err)
			return
		}
		total += n
		if last == b.ownSwept {
			break
		}
		b.ownSwept = last
	}
	if total > 0 {
		b.log.Info("retention deleted the ownership entries of conversations bridge never acted in", "count", total)
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return strings.TrimSpace(err.Error())
}

// mergeFollowing takes the customer messages of e's conversation that
// arrived after e and are still waiting, marks them as merged into e, and
// joins their texts into e's query: one Dify call answers them together.
func (b *Bridge) mergeFollowing(ctx context.Context, e *store.Event) ([]store.Event, error) {
	evs, err := b.o.Store.ConversationOpenEvents(ctx, e.AccountID, e.ConversationID, e.ID, dispatchBatch)
	if err != nil {
		return nil, err
	}
	// Once an answer (or handoff) of e is out, later messages were not part
	// of it: only the rows merged before a restart are taken back.
	onlyOwn := e.MergedInto != 0 || e.HasStep(StepAnswer) || e.HasStep(StepDraft) ||
		e.HasStep(StepSupersededNote) || handoffStarted(e) || b.o.Debounce <= 0
	if !onlyOwn && e.Attempts > 1 {
		// An answer in doubt was written for the messages merged so far.
		for _, step := range []string{StepAnswer, StepDraft} {
			_, inDoubt, err := b.o.Store.Intent(ctx, e.ID, step)
			if err != nil {
				return nil, err
			}
			onlyOwn = onlyOwn || inDoubt
		}
	}
	var merged []store.Event
	for _, x := range evs {
		if x.AccountID == e.AccountID && x.ConversationID == e.ConversationID {
			if x.Kind != store.KindMessage || x.Status != store.StatusAccepted {
				break // keep order: a takeover in between ends the batch
			}
			if onlyOwn && x.MergedInto != e.ID {
				break
			}
			merged = append(merged, x)
		}
	}
	if len(merged) == 0 {
		return nil, nil
	}
	texts := []string{e.Text}
	err = b.o.Store.Write(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		for _, x := range merged {
			if err := tx.UpdateEvent(x.ID, store.EventUpdate{Status: store.StatusWorking, MergedInto: e.ID}); err != nil {
				return err
			}
			if err := tx.AddHop(store.Hop{EventID: x.ID, Stage: StageWorker, Outcome: "merged",
				Detail: fmt.Sprintf("answered together with event %d (worker.debounce)", e.ID)}); err != nil {
				return err
			}
		}
		return tx.AddHop(store.Hop{EventID: e.ID, Stage: StageWorker, Outcome: "merged",
			Detail: fmt.Sprintf("%d later message(s) within worker.debounce joined into one query", len(merged))})
	})
	if err != nil {
		return nil, err
	}
	for _, x := range merged {
		if strings.TrimSpace(x.Text) != "" {
			texts = append(texts, x.Text)
		}
	}
	e.Text = strings.Join(texts, "\n")
	return merged, nil
}

// errDifyBusy: the route's Dify app is at its concurrency cap; the event
// goes back in the queue (requeueBusy) and the dispatcher slows the route.
var errDifyBusy = errors.New("dify is at its concurrency cap")

// requeueBusy puts an event Dify refused for its concurrency cap back in
// the queue, with the messages merged into it, so that they are asked again
// together, in order, when the route has room; settle takes over when the
// journal does not take the write.
func (b *Bridge) requeueBusy(ctx context.Context, e *store.Event, cause error) {
	ids := []int64{e.ID}
	if v, ok := b.merged.Load(e.ID); ok {
		ids = append(ids, v.([]int64)...)
	}
	err := b.o.Store.Write(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		for _, id := range ids {
			if err := tx.UpdateEvent(id, store.EventUpdate{Status: store.StatusAccepted}); err != nil {
				return err
			}
		}
		return tx.AddHop(store.Hop{EventID: e.ID, Stage: StageWorker, Outcome: "requeued",
			Detail: fmt.Sprintf("route %d waits: its Dify app is at its concurrency cap", e.RouteID)})
	})
	if err != nil {
		b.log.Error("requeue event", eventAttrs(e, keyErr, err)...)
		b.settle(ctx, e, cause)
		return
	}
	b.o.Metrics.requeued("dify_busy")
	b.log.Info("event back in the queue: dify is at its concurrency cap", eventAttrs(e, keyStage, StageWorker)...)
}

// requeue puts a claimed event back in the queue after a local error, or
// leaves that to settle when the journal does not take the write.
func (b *Bridge) requeue(ctx context.Context, e *store.Event, cause error) {
	if err := b.record(ctx, e.ID, &store.EventUpdate{Status: store.StatusAccepted}); err != nil {
		b.log.Error("requeue event", eventAttrs(e, keyErr, err)...)
		b.settle(ctx, e, cause)
	}
}
