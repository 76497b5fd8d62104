package bridge

import (
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/lifecycle"
	"github.com/bridge-dev/bridge/pkg/store"
)

// MaxBody is the largest webhook body accepted.
const MaxBody = 1 << 20

// MaxHeaderBytes bounds a request's headers. Chatwoot sends a few hundred
// bytes of them; the limit keeps a stranger from making bridge read (and
// journal) megabytes.
const MaxHeaderBytes = 64 << 10

// Caps of what the journal keeps of a request, so whatever someone throws at
// the port stays small: the first bytes of a refused body, the delivery
// header of any request, the reason of a refusal.
const (
	rejectedPrefix = 512
	maxDelivery    = 128
	maxReason      = 300
)

// Ack is the JSON answer to a webhook.
type Ack struct {
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"`
	EventID int64  `json:"event_id,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Server returns the HTTP server for Handler, with the limits of a webhook
// receiver: headers up to MaxHeaderBytes, the whole request read within 10
// s (the handler bounds the body by BodyTimeout as well).
func (b *Bridge) Server() *http.Server {
	return &http.Server{
		Handler:           b.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(b.log.Handler(), slog.LevelWarn),
	}
}

func (b *Bridge) serveWebhook(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	delivery := capText(r.Header.Get("X-Chatwoot-Delivery"), maxDelivery)
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		b.reject(r, w, http.StatusMethodNotAllowed, "method "+capText(r.Method, 16)+" not allowed: use POST", delivery, nil)
		return
	}
	// The upload is the client's time: it is bounded on its own, and the
	// journal's budget starts once the body is in.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(b.o.BodyTimeout)) // unsupported by some writers (tests' recorders); the server's ReadTimeout still bounds the read
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	_ = rc.SetReadDeadline(time.Time{}) // as above; the server sets the next request's deadline itself
	if err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			b.reject(r, w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", MaxBody), delivery, body)
		case errors.Is(err, os.ErrDeadlineExceeded):
			b.reject(r, w, http.StatusRequestTimeout, fmt.Sprintf("body not received within %s (%d bytes arrived)", b.o.BodyTimeout, len(body)), delivery, body)
		default:
			b.reject(r, w, http.StatusBadRequest, "read body: "+err.Error(), delivery, body)
		}
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), b.o.JournalBudget)
	defer cancel()
	b.log.Debug("webhook body", keyStage, StageReceived, "delivery", delivery, "bytes", len(body), "body", truncate(string(body), maxLoggedBody))
	if reason := b.authenticate(r, body); reason != "" {
		b.reject(r, w, http.StatusUnauthorized, reason, delivery, body)
		return
	}
	ev, err := chatwoot.ParseEvent(body)
	if err != nil {
		b.reject(r, w, http.StatusBadRequest, err.Error(), delivery, body)
		return
	}
	journaling := time.Now()
	ack, err := b.Ingest(ctx, ev, body, delivery)
	b.journalTook(time.Since(journaling))
	if err != nil {
		b.o.Metrics.webhookError()
		b.log.Error("journal webhook", keyStage, StageReceived, keyErr, err, "delivery", delivery)
		// Nothing is acknowledged that was not stored; Chatwoot retries a 500.
		writeJSON(w, http.StatusInternalServerError, Ack{Status: "error", Error: "journal unavailable"})
		return
	}
	writeJSON(w, http.StatusOK, ack)
	b.o.Metrics.ackLatency.Observe(time.Since(start).Seconds())
}

// capText cuts s to at most n bytes, at a rune boundary.
func capText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

// authenticate checks ?token= and the HMAC signature when configured, and
// returns why a request is refused ("" when it is fine).
func (b *Bridge) authenticate(r *http.Request, body []byte) string {
	if b.o.WebhookToken != "" {
		got := r.URL.Query().Get("token")
		if got == "" {
			return "missing ?token= on the webhook URL"
		}
		if subtle.ConstantTimeCompare([]byte(got), []byte(b.o.WebhookToken)) != 1 {
			return "wrong ?token= on the webhook URL"
		}
	}
	if b.o.WebhookSecret != "" {
		err := chatwoot.VerifySignature(b.o.WebhookSecret, r.Header.Get("X-Chatwoot-Signature"),
			r.Header.Get("X-Chatwoot-Timestamp"), body, b.o.Now())
		if err != nil {
			return "signature: " + err.Error()
		}
	}
	return ""
}

// reject answers a refused request and journals it (capped), unless its
// source address has used up its share of the journal: then it is only
// counted, so strangers cannot grow the journal at will.
func (b *Bridge) reject(r *http.Request, w http.ResponseWriter, status int, reason, delivery string, body []byte) {
	reason = capText(reason, maxReason)
	b.o.Metrics.webhookRejected(status)
	src := sourceAddr(r)
	if !b.rejects.allow(src) {
		b.o.Metrics.rejectionUnjournaled()
		if sum := b.rejects.dropped(src); sum != "" {
			b.log.Warn("refused requests not journaled: their sources exceeded the journal's share",
				keyStage, StageReceived, "summary", sum)
		}
		writeJSON(w, status, Ack{Status: "rejected", Error: reason})
		return
	}
	if len(body) > rejectedPrefix {
		body = body[:rejectedPrefix]
	}
	e := &store.Event{Status: store.StatusRejected, Reason: reason, HTTPStatus: status, DeliveryID: delivery,
		Payload: append([]byte(nil), body...)}
	// The journal's budget, from now: the request's own time may be spent.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), b.o.JournalBudget)
	defer cancel()
	err := b.o.Store.Write(ctx, func(tx *store.Tx) error {
		if err := tx.InsertEvent(e); err != nil {
			return err
		}
		return tx.AddHop(store.Hop{EventID: e.ID, Stage: StageReceived, Outcome: "rejected", Detail: fmt.Sprintf("http %d: %s", status, reason)})
	})
	if err != nil {
		b.log.Error("journal rejected webhook", keyStage, StageReceived, keyErr, err, "status", status)
		writeJSON(w, status, Ack{Status: "rejected", Error: reason})
		return
	}
	b.log.Warn("webhook rejected", keyEventID, e.ID, keyStage, StageReceived, "status", status, "reason", reason, "source", src)
	writeJSON(w, status, Ack{Status: "rejected", Error: reason, EventID: e.ID})
}

// sourceAddr is the address a request came from (the proxy's, behind one).
func sourceAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Journaling of refused requests, per source address: a burst, then a
// steady trickle; the rest are counted in a metric and summed up in the log
// at most once a minute.
const (
	rejectBurst        = 20
	rejectEvery        = 6 * time.Second // one more journaled refusal per source every 6 s
	rejectSources      = 4096            // addresses tracked; beyond that they share one allowance
	rejectSummaryEvery = time.Minute
)

type rejectLimiter struct {
	mu          sync.Mutex
	now         func() time.Time
	buckets     map[string]*rejectBucket
	skipped     map[string]int
	lastSummary time.Time
}

type rejectBucket struct {
	tokens float64
	at     time.Time
}

func newRejectLimiter(now func() time.Time) *rejectLimiter {
	return &rejectLimiter{now: now, buckets: map[string]*rejectBucket{}, skipped: map[string]int{}}
}

// allow takes one journal entry from src's allowance.
func (l *rejectLimiter) allow(src string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	bk, ok := l.buckets[src]
	if !ok {
		if len(l.buckets) >= rejectSources {
			l.sweep(now)
		}
		if len(l.buckets) >= rejectSources {
			src = "" // the shared allowance of the addresses not tracked
			bk = l.buckets[src]
		}
		if bk == nil {
			bk = &rejectBucket{tokens: rejectBurst, at: now}
			l.buckets[src] = bk
		}
	}
	bk.tokens = min(rejectBurst, bk.tokens+float64(now.Sub(bk.at))/float64(rejectEvery))
	bk.at = now
	if bk.tokens < 1 {
		return false
	}
	bk.tokens--
	return true
}

// sweep forgets the addresses whose allowance is whole again.
func (l *rejectLimiter) sweep(now time.Time) {
	for k, bk := range l.buckets {
		if bk.tokens+float64(now.Sub(bk.at))/float64(rejectEvery) >= rejectBurst {
			delete(l.buckets, k)
		}
	}
}

// dropped counts a refusal that src could not journal, and returns a summary
// to log when one is due ("" otherwise): the first time, then at most once
// every rejectSummaryEvery.
func (l *rejectLimiter) dropped(src string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.skipped) < rejectSources || l.skipped[src] > 0 {
		l.skipped[src]++
	}
	now := l.now()
	if !l.lastSummary.IsZero() && now.Sub(l.lastSummary) < rejectSummaryEvery {
		return ""
	}
	l.lastSummary = now
	type count struct {
		src string
		n   int
	}
	var cs []count
	total := 0
	for k, n := range l.skipped {
		cs = append(cs, count{k, n})
		total += n
	}
	clear(l.skipped)
	slices.SortFunc(cs, func(a, b count) int { return cmp.Or(b.n-a.n, strings.Compare(a.src, b.src)) })
	parts := make([]string, 0, 5)
	for i, c := range cs {
		if i == 5 {
			parts = append(parts, fmt.Sprintf("%d more addresses", len(cs)-5))
			break
		}
		parts = append(parts, fmt.Sprintf("%s ×%d", c.src, c.n))
	}
	return fmt.Sprintf("%d since the last summary, from %s (bridge_webhook_rejections_unjournaled_total counts them all)",
		total, strings.Join(parts, ", "))
}

// Ingest decides about a parsed webhook and journals it, durably, in one
// group-committed transaction. It is the path of every webhook, and of
// replays.
func (b *Bridge) Ingest(ctx context.Context, ev *chatwoot.Event, body []byte, delivery string) (Ack, error) {
	route, err := b.routeForInbox(ctx, ev.InboxID)
	if err != nil {
		return Ack{}, fmt.Errorf("load routes: %w", err)
	}
	var (
		rec     store.Event
		verdict Verdict
	)
	var settings lifecycle.Settings
	if route != nil {
		settings = b.settingsFor(ctx, route.ID)
	}
	now := b.o.Now()
	// A snapshot cannot be newer than its arrival: a payload dated in the
	// future (a clock ahead, or a forged body) would otherwise outrank every
	// later status.
	ev.ClampSnapshot(now)
	write := b.o.Store.Write
	if ownEcho(ev) {
		// The echo of bridge's own post is ignored whatever the journal
		// says, and the post's own record is already durable: committing it
		// is enough, its fsync can ride with the next one.
		write = b.o.Store.WriteNoSync
	}
	err = write(ctx, func(tx *store.Tx) error {
		rec = store.Event{
			ReceivedAt: now, DeliveryID: delivery, Event: ev.Name, AccountID: ev.AccountID, InboxID: ev.InboxID,
			ConversationID: ev.Conversation.ID, MessageID: ev.MessageID, ContactID: ev.ContactID(), Payload: body,
		}
		var (
			conv  store.Conversation
			known bool
			err   error
			view  store.IngestView
		)
		message := int64(0)
		if ev.IsMessage() {
			message = ev.MessageID
		}
		if ev.AccountID != 0 && ev.Conversation.ID != 0 {
			// One read for the conversation and the message, after the
			// conversation's lock.
			if view, err = tx.IngestView(ev.AccountID, ev.Conversation.ID, message); err != nil {
				return err
			}
			conv, known = view.Conv, view.Known
		} else {
			conv.State = store.StateBot
			if message != 0 {
				if view.Posted, err = tx.IsPosted(message); err != nil {
					return err
				}
				if view.Seen, err = tx.SeenMessage(message); err != nil {
					return err
				}
			}
		}
		posted := view.Posted
		if message != 0 {
			if !posted && ev.Name == "message_created" && ev.MessageType == "outgoing" {
				// The echo of a post in flight (or in doubt after a crash):
				// it records the post, so it is never made twice.
				if posted, err = b.matchEcho(tx, ev); err != nil {
					return err
				}
			}
		}
		in := Input{Event: ev, Route: route, Conv: conv, Posted: posted, BotStatuses: b.o.BotStatuses,
			NoStatusReturn: !settings.ReturnsOnStatus()}
		waiting, err := b.updateInput(tx, ev, &in)
		if err != nil {
			return err
		}
		verdict = Decide(in)
		if verdict.Accept && ev.MessageID != 0 && verdict.Kind != KindTranscript {
			seen := view.Seen
			if message == 0 {
				if seen, err = tx.SeenMessage(ev.MessageID); err != nil {
					return err
				}
			}
			if seen {
				verdict = Verdict{Reason: ReasonDuplicate}
			}
		}
		if route != nil {
			rec.RouteID = route.ID
		}
		if verdict.Accept {
			rec.Status, rec.Kind = store.StatusAccepted, verdict.Kind
			rec.Text = ev.Content
			if verdict.Kind == store.KindMessage && b.o.Debounce > 0 {
				rec.NotBefore = now.Add(b.o.Debounce)
			}
			switch verdict.Kind {
			case store.KindTakeover:
				rec.Reason = "agent replied"
			case store.KindReopen:
				rec.Reason = "reopened in a bot status while humans hold it"
			}
		} else {
			rec.Status, rec.Reason = store.StatusIgnored, verdict.Reason
		}
		if err := tx.InsertEvent(&rec); err != nil {
			return err
		}
		detail := "accepted: " + verdict.Kind
		if !verdict.Accept {
			detail = "ignored: " + verdict.Reason
		}
		if err := tx.AddHop(store.Hop{EventID: rec.ID, Stage: StageDecision, Outcome: rec.Status, Detail: detail + routeNote(route)}); err != nil {
			return err
		}
		if err := applyUpdate(tx, ev, &rec, waiting); err != nil {
			return err
		}
		// Keep bridge's record of routed conversations current: Chatwoot's
		// status as of this snapshot, and who owns the conversation.
		if route != nil && ev.Conversation.ID != 0 && ev.AccountID != 0 {
			status := ev.Conversation.Status
			if verdict.Reason == ReasonOwnMessage {
				// The echo of bridge's own post says nothing new.
				status = ""
			}
			if err := tx.TouchConversation(ev.AccountID, ev.Conversation.ID, ev.InboxID, ev.ContactID(),
				status, ev.SnapshotAt(), verdict.Accept && verdict.Kind == store.KindMessage); err != nil {
				return err
			}
		} else if known && ev.Conversation.Status != "" {
			if err := tx.SetStatus(ev.AccountID, ev.Conversation.ID, ev.Conversation.Status, ev.SnapshotAt()); err != nil {
				return err
			}
		}
		return b.ingestLifecycle(tx, ev, route, &settings, conv, known, verdict, rec.ID)
	})
	if err != nil {
		return Ack{}, err
	}
	if verdict.Accept {
		b.o.Metrics.webhookAccepted()
		b.log.Info("webhook accepted", eventAttrs(&rec, keyStage, StageDecision, "kind", rec.Kind, "message_id", rec.MessageID)...)
		if verdict.Kind == store.KindTakeover {
			b.stopRunning(ev.AccountID, ev.Conversation.ID)
			b.notifyTakeover(ev.AccountID, ev.Conversation.ID)
		}
		if verdict.Kind == KindTranscript {
			b.transcripts.wake(ev.MessageID)
		}
		b.kick()
		return Ack{Status: "accepted", EventID: rec.ID}, nil
	}
	b.o.Metrics.webhookIgnored(verdict.Reason)
	b.log.Info("webhook ignored", eventAttrs(&rec, keyStage, StageDecision, "reason", verdict.Reason)...)
	return Ack{Status: "ignored", Reason: verdict.Reason, EventID: rec.ID}, nil
}

// watchJournal exposes the journal's group commit on /metrics: transactions
// committed, how many of them were fsync'd, and the writes they carried.
func (b *Bridge) watchJournal() {
	commits := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "bridge_journal_commits_total",
		Help: "Journal transactions committed."}, func() float64 {
		c, _ := b.o.Store.Commits()
		return float64(c)
	})
	writes := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "bridge_journal_writes_total",
		Help: "Journal writes (a webhook, a step of an event) carried by those transactions."}, func() float64 {
		_, w := b.o.Store.Commits()
		return float64(w)
	})
	syncs := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "bridge_journal_syncs_total",
		Help: "Journal transactions fsync'd (those carrying only ignored echoes of bridge's own posts may skip it)."}, func() float64 {
		return float64(b.o.Store.Syncs())
	})
	retries := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "bridge_journal_retries_total",
		Help: "Journal writes tried again after a transient failure (the file locked by another process, a full disk, an I/O error)."}, func() float64 {
		return float64(b.o.Store.Retries())
	})
	for _, c := range []prometheus.Collector{commits, writes, syncs, retries} {
		if err := b.o.Metrics.reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				b.log.Warn("journal metrics", "err", err)
			}
		}
	}
}

// ownEcho reports, from the webhook alone, that it is Chatwoot's echo of a
// message bridge posted with the agent bot's token: Decide ignores it
// (own_message) in every state and it changes no conversation's owner.
func ownEcho(ev *chatwoot.Event) bool {
	return ev.Name == "message_created" && ev.MessageType != "incoming" &&
		ev.Sender != nil && ev.Sender.Type == chatwoot.SenderAgentBot
}

// matchEcho looks for the post in flight (or in doubt) that an outgoing
// message echoes: same conversation, same content, not yet resolved. A match
// resolves the intent with Chatwoot's message id, in the webhook's own
// transaction; the post's step is then recorded by the POST's return or, if
// that never comes, by the resumed event finding its intent resolved.
// Chatwoot gives an API caller no tag that comes back in the webhook and is
// harmless (protocol notes, correction 2), so content is what ties the two
// together.
func (b *Bridge) matchEcho(tx *store.Tx, ev *chatwoot.Event) (bool, error) {
	in, ok, err := tx.MatchIntent(ev.AccountID, ev.Conversation.ID, store.ContentHash(ev.Content, ev.Private))
	if err != nil || !ok {
		return false, err
	}
	return true, tx.RecordPost(ev.MessageID, in.EventID, in.Step)
}

func routeNote(r *store.Route) string {
	if r == nil {
		return ""
	}
	s := fmt.Sprintf(" (route %d", r.ID)
	if r.Name != "" {
		s += " " + r.Name
	}
	return s + ", " + r.Mode + ")"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // a failed write means the client left; the journal already has the event
}
