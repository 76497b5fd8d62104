package bridge

import (
	"container/heap"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/bridge-dev/bridge/pkg/store"
)

// The fair dispatcher decides which waiting event a free worker takes.
//
// Workers mostly wait on Dify, so there are many of them (worker.concurrency,
// 1024 by default); what is scarce is a route's share when one route has a
// backlog, and a Dify app's own concurrency cap. The rules:
//
//   - One event at a time per conversation, oldest first (per-conversation
//     order, debounce and takeovers depend on it).
//   - Routes take turns: a free worker goes to the next route in rotation
//     that has a ready conversation and is under its cap, one event per
//     turn, so a route with a flood never keeps another waiting behind its
//     backlog. The rotation carries over from one pass to the next.
//   - Within a route, the conversation whose oldest waiting event is the
//     oldest goes first; a conversation with a backlog holds one worker and
//     its later events are passed over, never read.
//   - A route takes at most its max_in_flight workers, and fewer after its
//     Dify app answered "too many requests" (APP_MAX_ACTIVE_REQUESTS): the
//     event goes back in the queue, the route pauses briefly and its cap
//     drops to what Dify accepted, then grows back by one per cap-ful of
//     answers (additive increase, multiplicative decrease). Other routes
//     are not slowed.
//
// Acknowledging webhooks comes first. Workers and webhooks share one
// journal writer: a thousand workers answering as fast as an instant Dify
// allows would make every webhook wait its turn behind their writes. So
// while webhooks wait longer than ackSlow for the journal, the dispatcher
// starts an event only while fewer than minWorkers (bridge's former fixed
// worker count; on PostgreSQL the store's connections) are busy with
// anything but waiting for Dify; any number may wait for Dify.
//
// The backlog stays on disk. The dispatcher reads queue heads only: each
// route's open events in order from a cursor (events_route_queue), and a
// conversation's oldest open event in one seek (events_conversation_queue),
// which is also what decides, just before a start, that an event is its
// conversation's head, ready (debounce) and not claimed by another process.
// In memory it keeps the conversations it has seen behind the cursors:
// those a worker holds, those ready and waiting for a worker, those
// debounced or held by another process until a time to look again. A
// route's walk pauses while it keeps maxTracked of them. Anything else that
// moves an event back into the queue behind a cursor (a replay in another
// process) is found by a reset, which forgets all but the running
// conversations and walks again from the start: every second, or less often
// when walking is costly, so that resets take at most about 5 % of the time,
// but at least every maxResetEvery (see resetDelay).

// ackSlow is the journal latency of a webhook beyond which the journal is
// taken to be busy, for ackPressureFor after it.
const (
	ackSlow        = 5 * time.Millisecond
	ackPressureFor = 500 * time.Millisecond
)

// minWorkers is how many workers may be busy with anything but waiting for
// Dify however long webhooks wait for the journal. On PostgreSQL, where
// writes run side by side, it is as many as the store has connections
// (Writers): fewer would leave connections idle while the queue waits
// (measured: 156 answers/s with 8, 220-260 with 16 to 64, draining a
// backlog), more would only wait for one.
const minWorkers = 8

// busyFloor is minWorkers for the store in use.
func (b *Bridge) busyFloor() int {
	if b.o.Store == nil {
		return minWorkers
	}
	return max(minWorkers, b.o.Store.Writers())
}

// journalTook records how long a webhook waited for the journal.
func (b *Bridge) journalTook(d time.Duration) {
	if d > ackSlow {
		b.ackPressure.Store(time.Now().Add(ackPressureFor).UnixNano())
	}
}

// waitingDify counts the workers waiting for a Dify answer (+1 before the
// call, -1 after). One that starts waiting frees a place for another start
// while the journal is busy: the dispatcher is woken for it.
func (b *Bridge) waitingDify(n int64) {
	b.inDify.Add(n)
	if busy, _ := b.pressured(); n > 0 && busy {
		b.kick()
	}
}

// pressured reports whether webhooks waited too long for the journal
// lately, and until when.
func (b *Bridge) pressured() (bool, time.Duration) {
	left := time.Duration(b.ackPressure.Load() - time.Now().UnixNano())
	return left > 0, left
}

// maxTracked bounds the waiting conversations a route keeps in memory; its
// walk stops there until some of them start.
const maxTracked = 4096

// walkPage is how many queue heads a route's walk reads at a time.
const walkPage = 64

// maxBusyAttempts bounds how often an event goes back in the queue because
// Dify was at its concurrency cap; after that the cap counts as a failure.
const maxBusyAttempts = 20

// maxRoutePause caps a route's pause after "too many requests".
const maxRoutePause = 30 * time.Second

type convState uint8

const (
	convBusy      convState = iota + 1 // a worker here holds it
	convReady                          // ready, in its route's ready heap
	convDeferred                       // debounced, or the journal could not be read: look again at until
	convElsewhere                      // its oldest event is working in another process: look again at until
)

type convEntry struct {
	state convState
	route int64
	head  int64
	until time.Time
}

// routeQueue is the dispatcher's view of one route.
type routeQueue struct {
	id      int64
	cursor  int64         // the walk has passed every open event up to this id
	page    []store.Event // heads read ahead of the cursor
	atEnd   bool          // the last read found nothing after the cursor
	ready   headHeap      // conversations ready to start, oldest event first
	tracked int           // conversations of this route ready, deferred or elsewhere

	inFlight    int
	adaptive    float64 // cap learned from Dify's "too many requests" (0: none)
	pausedUntil time.Time
	streak      int // pauses in a row without an answer in between
	done        bool
}

type head struct {
	id  int64
	key convKey
}

type headHeap []head

func (h headHeap) Len() int           { return len(h) }
func (h headHeap) Less(i, j int) bool { return h[i].id < h[j].id }
func (h headHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *headHeap) Push(x any)        { *h = append(*h, x.(head)) }
func (h *headHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

type timer struct {
	at  time.Time
	key convKey
}

type timerHeap []timer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timer)) }
func (h *timerHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// release is a worker's report when it lets go of a conversation.
type release struct {
	key     convKey
	route   int64
	claimed bool // false: another process holds the event (or the claim failed)
}

// routeSignal is what a Dify exchange says about its route's capacity.
type routeSignal struct {
	busy, ok int
}

// dispatcher is owned by Run's goroutine, except for what workers report
// through mu.
type dispatcher struct {
	b        *Bridge
	conc     int
	floor    int // minWorkers for this store
	inFlight int
	convs    map[convKey]*convEntry
	routes   map[int64]*routeQueue
	order    []int64 // route ids, ascending: the rotation
	next     int     // where in order the next turn starts
	timers   timerHeap
	lastID   int64 // the highest event id when the queue was last looked at

	resetAt   time.Time     // the next reset
	walkSpent time.Duration // time spent walking since the last reset
	forced    bool          // reset at the next pass

	mu       sync.Mutex
	released []release
	signals  map[int64]*routeSignal
}

func newDispatcher(b *Bridge) *dispatcher {
	return &dispatcher{b: b, conc: b.o.Concurrency, floor: b.busyFloor(), convs: map[convKey]*convEntry{}, routes: map[int64]*routeQueue{},
		signals: map[int64]*routeSignal{}, forced: true}
}

// released is called by a worker (any goroutine) when it ends.
func (d *dispatcher) release(r release) {
	d.mu.Lock()
	d.released = append(d.released, r)
	d.mu.Unlock()
	d.b.kick()
}

// signal records, from any goroutine, what Dify said of a route's capacity.
func (d *dispatcher) signal(route int64, busy bool) {
	d.mu.Lock()
	s := d.signals[route]
	if s == nil {
		s = &routeSignal{}
		d.signals[route] = s
	}
	if busy {
		s.busy++
	} else {
		s.ok++
	}
	d.mu.Unlock()
	if busy {
		d.b.kick()
	}
}

// forceReset makes the next pass forget what it knows and walk every
// route's queue again (after events were put back in the queue).
func (d *dispatcher) forceReset() {
	d.mu.Lock()
	d.forced = true
	d.mu.Unlock()
}

// starter runs an event in a worker; the worker must call release.
type starter func(id int64, key convKey, route int64)

// pass starts work while there are free workers and ready conversations,
// and reports when it must run again at the latest (zero: on the next
// wake-up).
func (d *dispatcher) pass(ctx context.Context, start starter) (next time.Time) {
	now := d.b.o.Now()
	d.mu.Lock()
	released, signals, forced := d.released, d.signals, d.forced
	d.released, d.forced = nil, false
	if len(signals) > 0 {
		d.signals = map[int64]*routeSignal{}
	} else {
		signals = nil
	}
	d.mu.Unlock()

	for id, s := range signals {
		d.feedback(d.route(id), s, now)
	}
	for _, r := range released {
		d.inFlight--
		if rq := d.routes[r.route]; rq != nil {
			rq.inFlight--
		}
		delete(d.convs, r.key)
	}
	if forced || !now.Before(d.resetAt) {
		if err := d.reset(ctx, now); err != nil {
			if ctx.Err() == nil {
				d.b.log.Error("read the queue", keyStage, StageWorker, keyErr, err)
			}
			return now.Add(safetyPoll)
		}
	} else if err := d.refresh(ctx); err != nil {
		if ctx.Err() == nil {
			d.b.log.Error("read the queue", keyStage, StageWorker, keyErr, err)
		}
		return now.Add(safetyPoll)
	}
	// A conversation a worker let go of: its next event, if any, is found
	// in one seek (it may sit behind the walk's cursor).
	for _, r := range released {
		if !r.claimed {
			// Another process won the claim (or the journal refused it):
			// looking again at once would only lose the race again.
			d.later(r.key, &convEntry{state: convElsewhere, route: r.route, until: now.Add(safetyPoll)})
			continue
		}
		d.lookup(ctx, r.key, now)
	}
	for len(d.timers) > 0 && !d.timers[0].at.After(now) {
		t := heap.Pop(&d.timers).(timer)
		if c := d.convs[t.key]; c != nil && (c.state == convDeferred || c.state == convElsewhere) && c.until.Equal(t.at) {
			d.forget(t.key, c)
			d.lookup(ctx, t.key, now)
		}
	}

	d.turns(ctx, now, start)

	for _, id := range d.order {
		rq := d.routes[id]
		if rq.pausedUntil.After(now) && (rq.ready.Len() > 0 || !rq.atEnd) && (next.IsZero() || rq.pausedUntil.Before(next)) {
			next = rq.pausedUntil
		}
	}
	if len(d.timers) > 0 && (next.IsZero() || d.timers[0].at.Before(next)) {
		next = d.timers[0].at
	}
	if busy, left := d.b.pressured(); busy && d.inFlight-int(d.b.inDify.Load()) >= d.floor && d.inFlight < d.conc {
		// Held back for the webhooks: look again when that ends.
		if at := now.Add(left); next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return next
}

// turns gives free workers to the routes in rotation, one event per turn,
// until no worker is free or no route has a conversation to start.
func (d *dispatcher) turns(ctx context.Context, now time.Time, start starter) {
	for _, rq := range d.routes {
		rq.done = false
	}
	busy, _ := d.b.pressured()
	room := func() bool {
		return d.inFlight < d.conc && (!busy || d.inFlight-int(d.b.inDify.Load()) < d.floor)
	}
	for idle := 0; room() && idle < len(d.order) && ctx.Err() == nil; {
		d.next %= len(d.order)
		rq := d.routes[d.order[d.next]]
		d.next++
		if rq.done || !d.open(ctx, rq, now) {
			rq.done = true
			idle++
			continue
		}
		h, ok := d.take(ctx, rq, now)
		if !ok {
			rq.done = true
			idle++
			continue
		}
		idle = 0
		d.convs[h.key] = &convEntry{state: convBusy, route: rq.id, head: h.id}
		d.inFlight++
		rq.inFlight++
		start(h.id, h.key, rq.id)
	}
}

// open reports whether a route may start another event: not paused, and
// under its max_in_flight and its learned cap.
func (d *dispatcher) open(ctx context.Context, rq *routeQueue, now time.Time) bool {
	if rq.pausedUntil.After(now) {
		return false
	}
	if limit := d.b.routeLimit(ctx, rq.id); limit > 0 && rq.inFlight >= limit {
		return false
	}
	return rq.adaptive <= 0 || float64(rq.inFlight) < rq.adaptive
}

// take returns the route's ready conversation with the oldest waiting
// event: the older of its ready heap's top and its walk's next new head.
func (d *dispatcher) take(ctx context.Context, rq *routeQueue, now time.Time) (head, bool) {
	for (rq.ready.Len() > 0 || !rq.atEnd) && ctx.Err() == nil {
		w, wok := d.walk(ctx, rq, now)
		if rq.ready.Len() > 0 && (!wok || rq.ready[0].id < w.id) {
			if wok {
				d.track(rq, w.key, &convEntry{state: convReady, route: rq.id, head: w.id})
				heap.Push(&rq.ready, w)
			}
			h := heap.Pop(&rq.ready).(head)
			c := d.convs[h.key]
			if c == nil || c.state != convReady || c.head != h.id {
				continue // a stale entry: the conversation moved on
			}
			d.forget(h.key, c)
			// It waited in memory: the journal may have moved on (a newer
			// message restarting the debounce window, another process).
			if ok := d.check(ctx, h.key, h.id, now); ok {
				return h, true
			}
			continue
		}
		if wok {
			return w, true
		}
		if rq.atEnd || rq.tracked >= maxTracked {
			return head{}, false
		}
	}
	return head{}, false
}

// check looks a conversation up in the journal just before its start: true
// when id is still its oldest open event, waiting and ready; otherwise the
// conversation is filed by what the journal says.
func (d *dispatcher) check(ctx context.Context, key convKey, id int64, now time.Time) bool {
	h, readyAt, ok, err := d.b.o.Store.ConversationHead(ctx, key.account, key.conv)
	if err == nil && ok && h.ID == id && h.Status == store.StatusAccepted && !readyAt.After(now) {
		return true
	}
	d.file(key, h, readyAt, ok, err, now)
	return false
}

// maxResetEvery bounds the time between resets, and so how long an event
// put back behind a cursor can wait to be found.
const maxResetEvery = 5 * time.Second

// resetDelay is the time to the next reset after walking took walked since
// the last one. walked counts every walk, not only the reset's own: where
// reads are round trips (PostgreSQL) and the dispatcher spends over a
// twentieth of its time walking, 20 times that would grow from one reset
// to the next without bound.
func resetDelay(walked time.Duration) time.Duration {
	return min(max(safetyPoll, 20*walked), maxResetEvery)
}

// walk advances a route's cursor to the next event of a conversation the
// dispatcher does not know yet, and returns it if it is that conversation's
// head and ready; a conversation found otherwise (debounced, claimed by
// another process, with an older open event) is filed for later.
func (d *dispatcher) walk(ctx context.Context, rq *routeQueue, now time.Time) (head, bool) {
	began := time.Now()
	defer func() { d.walkSpent += time.Since(began) }()
	for rq.tracked < maxTracked && ctx.Err() == nil {
		if len(rq.page) == 0 {
			if rq.atEnd {
				return head{}, false
			}
			page, err := d.b.o.Store.RouteQueue(ctx, rq.id, rq.cursor, walkPage)
			if err != nil {
				if ctx.Err() == nil {
					d.b.log.Error("read the queue of a route", keyRoute, rq.id, keyErr, err)
				}
				rq.atEnd = true // the next pass with news, or the next reset, tries again
				return head{}, false
			}
			if len(page) == 0 {
				rq.atEnd = true
				return head{}, false
			}
			rq.page = page
		}
		e := rq.page[0]
		rq.page = rq.page[1:]
		rq.cursor = e.ID
		key := convKey{e.AccountID, e.ConversationID}
		if _, known := d.convs[key]; known {
			continue // running, or waiting with an older event: this one follows it
		}
		h, readyAt, ok, err := d.b.o.Store.ConversationHead(ctx, key.account, key.conv)
		if err == nil && ok && h.ID == e.ID && h.Status == store.StatusAccepted && !readyAt.After(now) {
			return head{id: e.ID, key: key}, true
		}
		d.file(key, h, readyAt, ok, err, now)
	}
	return head{}, false
}

// lookup files a conversation by its oldest open event.
func (d *dispatcher) lookup(ctx context.Context, key convKey, now time.Time) {
	if _, known := d.convs[key]; known {
		return
	}
	h, readyAt, ok, err := d.b.o.Store.ConversationHead(ctx, key.account, key.conv)
	d.file(key, h, readyAt, ok, err, now)
}

// file remembers a conversation by what ConversationHead said: ready (in
// its route's heap), debounced until readyAt, claimed by another process
// (look again in a while), unreadable (look again in a while), or nothing
// open (forgotten).
func (d *dispatcher) file(key convKey, h store.Event, readyAt time.Time, ok bool, err error, now time.Time) {
	if _, known := d.convs[key]; known {
		return
	}
	switch {
	case err != nil:
		if !errors.Is(err, context.Canceled) {
			d.b.log.Error("read the queue of a conversation", keyConversationID, key.conv, keyErr, err)
		}
		d.later(key, &convEntry{state: convDeferred, route: h.RouteID, until: now.Add(safetyPoll)})
	case !ok:
	case h.Status != store.StatusAccepted:
		d.later(key, &convEntry{state: convElsewhere, route: h.RouteID, head: h.ID, until: now.Add(safetyPoll)})
	case readyAt.After(now):
		d.later(key, &convEntry{state: convDeferred, route: h.RouteID, head: h.ID, until: readyAt})
	default:
		rq := d.route(h.RouteID)
		d.track(rq, key, &convEntry{state: convReady, route: rq.id, head: h.ID})
		heap.Push(&rq.ready, head{id: h.ID, key: key})
	}
}

func (d *dispatcher) later(key convKey, c *convEntry) {
	d.track(d.route(c.route), key, c)
	heap.Push(&d.timers, timer{at: c.until, key: key})
}

func (d *dispatcher) track(rq *routeQueue, key convKey, c *convEntry) {
	d.convs[key] = c
	rq.tracked++
}

func (d *dispatcher) forget(key convKey, c *convEntry) {
	delete(d.convs, key)
	if rq := d.routes[c.route]; rq != nil {
		rq.tracked--
	}
}

// route returns the state of a route, adding it to the rotation if new.
func (d *dispatcher) route(id int64) *routeQueue {
	if rq := d.routes[id]; rq != nil {
		return rq
	}
	rq := &routeQueue{id: id}
	d.routes[id] = rq
	i, _ := slices.BinarySearch(d.order, id)
	d.order = slices.Insert(d.order, i, id)
	if i < d.next {
		d.next++ // keep the rotation where it was
	}
	return rq
}

// refresh notices events journaled since the last look: walks that
// reached the end go on, and routes seen for the first time join.
func (d *dispatcher) refresh(ctx context.Context) error {
	last, err := d.b.o.Store.LastEventID(ctx)
	if err != nil {
		return err
	}
	if last == d.lastID {
		return nil
	}
	ids, err := d.b.o.Store.QueueRoutes(ctx)
	if err != nil {
		return err
	}
	d.lastID = last
	for _, id := range ids {
		d.route(id)
	}
	for _, rq := range d.routes {
		rq.atEnd = false
	}
	return nil
}

// reset forgets every conversation no worker here holds and starts every
// walk again from the start of its route's queue. The next one is due in a
// second, or later if walking took long since this one (at most about 5 %
// of the time goes to resets).
func (d *dispatcher) reset(ctx context.Context, now time.Time) error {
	last, err := d.b.o.Store.LastEventID(ctx)
	if err != nil {
		return err
	}
	ids, err := d.b.o.Store.QueueRoutes(ctx)
	if err != nil {
		return err
	}
	d.lastID = last
	for key, c := range d.convs {
		if c.state != convBusy {
			delete(d.convs, key)
		}
	}
	d.timers = d.timers[:0]
	keep := map[int64]bool{}
	for _, id := range ids {
		keep[id] = true
	}
	for id, rq := range d.routes {
		if !keep[id] && rq.inFlight == 0 && rq.pausedUntil.Before(now) && rq.adaptive == 0 {
			delete(d.routes, id)
			continue
		}
		rq.cursor, rq.page, rq.atEnd, rq.ready, rq.tracked = 0, nil, false, rq.ready[:0], 0
	}
	d.order = d.order[:0]
	for id := range d.routes {
		d.order = append(d.order, id)
	}
	for _, id := range ids {
		if d.routes[id] == nil {
			d.routes[id] = &routeQueue{id: id}
			d.order = append(d.order, id)
		}
	}
	slices.Sort(d.order)
	d.resetAt = now.Add(resetDelay(d.walkSpent))
	d.walkSpent = 0
	return nil
}

// feedback adjusts a route's learned cap from what its Dify exchanges said:
// "too many requests" cuts it to one less than the route had in progress
// and pauses the route (longer when it happens again before any answer);
// each answer lets it grow by 1/cap, back to no cap once past the route's
// own limit and worker.concurrency.
func (d *dispatcher) feedback(rq *routeQueue, s *routeSignal, now time.Time) {
	if s.busy > 0 {
		limit := float64(max(1, rq.inFlight-1))
		if rq.adaptive <= 0 || limit < rq.adaptive {
			rq.adaptive = limit
		}
		if !rq.pausedUntil.After(now) {
			pause := min(maxRoutePause, d.b.o.RetryBase<<min(rq.streak, 16))
			pause = pause/2 + rand.N(pause/2+1)
			rq.pausedUntil = now.Add(pause)
			rq.streak++
			d.b.log.Warn("dify is at its concurrency cap; the route waits and takes fewer events at once",
				keyRoute, rq.id, "cap", int(rq.adaptive), "pause", pause.String())
		}
		return
	}
	if s.ok > 0 {
		rq.streak = 0
		if rq.adaptive > 0 {
			rq.adaptive += float64(s.ok) / rq.adaptive
			if limit := d.b.routeLimit(context.Background(), rq.id); rq.adaptive >= float64(d.conc) || limit > 0 && rq.adaptive > float64(limit) {
				rq.adaptive = 0
			}
		}
	}
}

// routeLimit is a route's max_in_flight (0: none) from the route cache.
func (b *Bridge) routeLimit(ctx context.Context, id int64) int {
	r, err := b.routeByID(ctx, id)
	if err != nil {
		return 0
	}
	return r.MaxInFlight
}

// difyBusy reports to the dispatcher, when one runs, that a route's Dify
// app refused a call for its concurrency cap, and whether the event should
// go back in the queue rather than wait in its worker.
func (b *Bridge) difyBusy(route int64, e *store.Event) bool {
	d := b.sched.Load()
	if d == nil || e.Attempts >= maxBusyAttempts {
		return false
	}
	d.signal(route, true)
	return true
}

// difyAnswered reports an answer of a route's Dify app to the dispatcher.
func (b *Bridge) difyAnswered(route int64) {
	if d := b.sched.Load(); d != nil {
		d.signal(route, false)
	}
}
