package bridge

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/store"
)

// MaxBody is the largest webhook body accepted.
const MaxBody = 1 << 20

// rejectedPrefix is how much of a refused body the journal keeps: enough to
// see what was sent, without storing whatever someone throws at the port.
const rejectedPrefix = 512

// handlerBudget bounds one webhook, far inside Chatwoot's 5 s.
const handlerBudget = 3 * time.Second

// Ack is the JSON answer to a webhook.
type Ack struct {
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"`
	EventID int64  `json:"event_id,omitempty"`
	Error   string `json:"error,omitempty"`
}

func (b *Bridge) serveWebhook(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, Ack{Status: "rejected", Error: "method not allowed: use POST"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), handlerBudget)
	defer cancel()
	delivery := r.Header.Get("X-Chatwoot-Delivery")
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			b.reject(ctx, w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", MaxBody), delivery, body)
			return
		}
		b.reject(ctx, w, http.StatusBadRequest, "read body: "+err.Error(), delivery, body)
		return
	}
	b.log.Debug("webhook body", keyStage, StageReceived, "delivery", delivery, "bytes", len(body), "body", truncate(string(body), maxLoggedBody))
	if reason := b.authenticate(r, body); reason != "" {
		b.reject(ctx, w, http.StatusUnauthorized, reason, delivery, body)
		return
	}
	ev, err := chatwoot.ParseEvent(body)
	if err != nil {
		b.reject(ctx, w, http.StatusBadRequest, err.Error(), delivery, body)
		return
	}
	ack, err := b.Ingest(ctx, ev, body, delivery)
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

func (b *Bridge) reject(ctx context.Context, w http.ResponseWriter, status int, reason, delivery string, body []byte) {
	if len(body) > rejectedPrefix {
		body = body[:rejectedPrefix]
	}
	e := &store.Event{Status: store.StatusRejected, Reason: reason, HTTPStatus: status, DeliveryID: delivery,
		Payload: append([]byte(nil), body...)}
	err := b.o.Store.Write(ctx, func(tx *store.Tx) error {
		if err := tx.InsertEvent(e); err != nil {
			return err
		}
		return tx.AddHop(store.Hop{EventID: e.ID, Stage: StageReceived, Outcome: "rejected", Detail: fmt.Sprintf("http %d: %s", status, reason)})
	})
	b.o.Metrics.webhookRejected(status)
	if err != nil {
		b.log.Error("journal rejected webhook", keyStage, StageReceived, keyErr, err, "status", status)
		writeJSON(w, status, Ack{Status: "rejected", Error: reason})
		return
	}
	b.log.Warn("webhook rejected", keyEventID, e.ID, keyStage, StageReceived, "status", status, "reason", reason)
	writeJSON(w, status, Ack{Status: "rejected", Error: reason, EventID: e.ID})
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
	now := b.o.Now()
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
		)
		if ev.AccountID != 0 && ev.Conversation.ID != 0 {
			if conv, known, err = tx.Conversation(ev.AccountID, ev.Conversation.ID); err != nil {
				return err
			}
		} else {
			conv.State = store.StateBot
		}
		posted := false
		if ev.IsMessage() && ev.MessageID != 0 {
			if posted, err = tx.IsPosted(ev.MessageID); err != nil {
				return err
			}
			if !posted && ev.Name == "message_created" && ev.MessageType == "outgoing" {
				// The echo of a post in flight (or in doubt after a crash):
				// it records the post, so it is never made twice.
				if posted, err = b.matchEcho(tx, ev); err != nil {
					return err
				}
			}
		}
		in := Input{Event: ev, Route: route, Conv: conv, Posted: posted, BotStatuses: b.o.BotStatuses}
		waiting, err := b.updateInput(tx, ev, &in)
		if err != nil {
			return err
		}
		verdict = Decide(in)
		if verdict.Accept && ev.MessageID != 0 && verdict.Kind != KindTranscript {
			seen, err := tx.SeenMessage(ev.MessageID)
			if err != nil {
				return err
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
			if verdict.Kind == store.KindTakeover {
				rec.Reason = "agent replied"
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
		if verdict.ReturnToBot {
			if err := tx.SetConversationState(ev.AccountID, ev.Conversation.ID, store.StateBot, "status "+ev.Conversation.Status); err != nil {
				return err
			}
		}
		if verdict.Accept && verdict.Kind == store.KindTakeover {
			// Stop answering at once; the worker then tells Chatwoot.
			if err := tx.SetConversationState(ev.AccountID, ev.Conversation.ID, store.StateHuman, "agent replied"); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return Ack{}, err
	}
	if verdict.Accept {
		b.o.Metrics.webhookAccepted()
		b.log.Info("webhook accepted", eventAttrs(&rec, keyStage, StageDecision, "kind", rec.Kind, "message_id", rec.MessageID)...)
		if verdict.Kind == store.KindTakeover {
			b.stopRunning(ev.AccountID, ev.Conversation.ID)
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
	for _, c := range []prometheus.Collector{commits, writes, syncs} {
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
	if err := tx.ResolveIntent(in.EventID, in.Step, ev.MessageID); err != nil {
		return false, err
	}
	return true, tx.RecordPosted(ev.MessageID, in.EventID, in.Step)
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
