package bridge

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bridge-dev/bridge/pkg/store"
)

// Replicas: several bridge processes sharing one PostgreSQL database
// (store.DB.Shared). Any of them takes any webhook; the journal is the only
// thing they share, so everything one process knows in memory that another
// needs goes through it:
//
//   - work: the store tells the other processes (NOTIFY) when an event
//     became ready; their dispatchers wake as if the webhook were theirs,
//     and the safety poll catches a lost signal;
//   - claims: an event is driven by the process whose claim took its lease
//     (store.Tx.Claim keeps each conversation to one event at a time, in
//     arrival order, across processes), and that worker renews the lease
//     while it works; an event whose lease ran out (its process died) is put
//     back in the queue by any process and resumed, with the in-doubt post
//     rules of post/resolveInDoubt;
//   - takeovers: a human's reply journaled by one process stops a Dify
//     stream another process runs for that conversation, at once through a
//     signal and within takeoverPoll through a poll of the conversations
//     being streamed.
//
// Debounce, supersede and routes need nothing more: their state is in the
// journal (not_before, the conversation's state, the routes table, cached
// for at most routesTTL).

// takeoverPoll is how often a process checks, while it streams answers,
// whether a human took any of those conversations over through another
// process.
const takeoverPoll = 500 * time.Millisecond

// errLeaseLost ends the work on an event whose lease another process took.
var errLeaseLost = errors.New("the event's lease was taken over by another process")

// holdLease keeps the lease of a claimed event (and of the events merged
// into it) alive while its worker runs, renewing it every third of the
// lease time. If another process took the lease (this one could not renew
// it in time), the returned context ends: the event is that process's now.
// release stops the renewals. On SQLite, which one process serves, it does
// nothing.
func (b *Bridge) holdLease(ctx context.Context, e *store.Event) (context.Context, func()) {
	if !b.o.Store.Shared() {
		return ctx, func() {}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(b.o.Store.LeaseTTL() / 3)
		defer t.Stop()
		for {
			select {
			case <-t.C:
			case <-stop:
				return
			case <-ctx.Done():
				return
			}
			ids := []int64{e.ID}
			if v, ok := b.merged.Load(e.ID); ok {
				ids = append(ids, v.([]int64)...)
			}
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), b.o.Store.LeaseTTL()/3)
			lost, err := b.o.Store.RenewLeases(rctx, ids)
			rcancel()
			if err != nil {
				b.log.Warn("cannot renew the event's lease; retrying", eventAttrs(e, keyStage, StageWorker, keyErr, err)...)
				continue
			}
			if len(lost) > 0 {
				b.log.Warn("another process took the event over; stopping here", eventAttrs(e, keyStage, StageWorker, "lost", lost)...)
				b.o.Metrics.leaseLost()
				cancel(errLeaseLost)
				return
			}
		}
	})
	return ctx, func() {
		close(stop)
		wg.Wait()
		cancel(nil)
	}
}

// startShared wires this process to the others sharing its database: their
// signals wake the dispatcher or stop a stream, and a poll stops streams of
// conversations taken over elsewhere should a signal be lost.
func (b *Bridge) startShared(ctx context.Context) {
	if !b.o.Store.Shared() {
		return
	}
	b.o.Store.Subscribe(func(kind, payload string) {
		switch kind {
		case store.SignalWork:
			b.kick()
		case store.SignalTakeover:
			if account, conv, ok := parseConvKey(payload); ok {
				b.stopRunning(account, conv)
			}
		}
	})
	b.bg.Go(func() {
		t := time.NewTicker(takeoverPoll)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				b.pollTakeovers(ctx)
			case <-ctx.Done():
				return
			}
		}
	})
}

// pollTakeovers stops the streams of conversations a human now holds.
func (b *Bridge) pollTakeovers(ctx context.Context) {
	var keys []convKey
	b.running.Range(func(k, _ any) bool {
		keys = append(keys, k.(convKey))
		return true
	})
	for _, k := range keys {
		c, err := b.o.Store.Conversation(ctx, k.account, k.conv)
		if err == nil && c.State == store.StateHuman {
			b.stopRunning(k.account, k.conv)
		}
	}
}

// notifyTakeover tells the other processes that a human took a
// conversation over.
func (b *Bridge) notifyTakeover(account, conv int64) {
	b.o.Store.Notify(store.SignalTakeover, strconv.FormatInt(account, 10)+":"+strconv.FormatInt(conv, 10))
}

func parseConvKey(s string) (account, conv int64, ok bool) {
	a, c, found := strings.Cut(s, ":")
	if !found {
		return 0, 0, false
	}
	account, err1 := strconv.ParseInt(a, 10, 64)
	conv, err2 := strconv.ParseInt(c, 10, 64)
	return account, conv, err1 == nil && err2 == nil
}

// reclaimExpired puts back in the queue the working events whose lease ran
// out: the process driving them died, or lost the database for longer than
// a lease. The next claim resumes them where their journal says they were.
func (b *Bridge) reclaimExpired(ctx context.Context) {
	ids, err := b.o.Store.ExpiredLeases(ctx, dispatchPage)
	if err != nil {
		if ctx.Err() == nil {
			b.log.Error("read expired leases", keyErr, err)
		}
		return
	}
	n := 0
	for _, id := range ids {
		var owner string
		var took bool
		err := b.o.Store.Write(ctx, func(tx *store.Tx) error {
			var err error
			if owner, took, err = tx.ReclaimExpired(id); err != nil || !took {
				return err
			}
			return tx.AddHop(store.Hop{EventID: id, Stage: StageWorker, Outcome: "reclaimed",
				Detail: fmt.Sprintf("the lease of %s ran out (%s without renewal); back in the queue", owner, b.o.Store.LeaseTTL())})
		})
		if err != nil {
			b.log.Error("reclaim event with an expired lease", keyEventID, id, keyErr, err)
			continue
		}
		if took {
			n++
			b.o.Metrics.requeued("lease_expired")
			b.log.Warn("reclaimed an event whose lease ran out", keyEventID, id, keyStage, StageWorker, "owner", owner)
		}
	}
	if n > 0 {
		if d := b.sched.Load(); d != nil {
			d.forceReset() // they are behind the dispatcher's cursors
		}
		b.kick()
	}
}

// releaseLeases gives the events this process's stopped workers left
// working back to the queue, so another process resumes them now instead
// of after their leases run out.
func (b *Bridge) releaseLeases() {
	if !b.o.Store.Shared() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := b.o.Store.ReleaseLeases(ctx)
	if err != nil {
		b.log.Warn("cannot give interrupted events back; other processes resume them when their leases run out", keyErr, err)
		return
	}
	if n > 0 {
		b.log.Info("interrupted events given back to the queue for the other processes", "count", n)
	}
}
