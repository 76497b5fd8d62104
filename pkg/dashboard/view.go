package dashboard

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/bridge-dev/bridge/pkg/store"
)

// The trace stages and steps pkg/bridge writes, as far as the page sums
// them up (bridge imports this package, so they are spelled out here).
const (
	stageDecision = "decision"
	stageDify     = "dify"
	stageChatwoot = "chatwoot"
	stageHandoff  = "handoff"
	stageTakeover = "takeover"
	stepHeldBack  = "superseded_note"
	inDoubtPrefix = "in doubt"
)

// View is what the page shows of one conversation.
type View struct {
	Conversation ConversationView `json:"conversation"`
	Route        *RouteView       `json:"route"`
	Events       []EventView      `json:"events"`
	// Ownership is who held the conversation: the entries of its ownership
	// journal, newest first, as `bridge conversations show` lists them.
	Ownership []OwnershipView `json:"ownership"`
	// Now is bridge's clock, so "3 min ago" does not depend on the agent's.
	Now time.Time `json:"now"`
}

// ConversationView is who holds the conversation and since when.
type ConversationView struct {
	AccountID          int64      `json:"account_id"`
	ConversationID     int64      `json:"conversation_id"`
	InboxID            int64      `json:"inbox_id"`
	State              string     `json:"state"`
	StateReason        string     `json:"state_reason"`
	StateAt            *time.Time `json:"state_at"`
	Status             string     `json:"chatwoot_status"`
	DifyConversationID string     `json:"dify_conversation_id"`
	MessagesIn         int        `json:"messages"`
	Answers            int        `json:"answers"`
	Handoffs           int        `json:"handoffs"`
	LastActivityAt     *time.Time `json:"last_activity_at"`
}

// RouteView is the route and Dify app answering the conversation's inbox.
// It never carries the Dify key.
type RouteView struct {
	ID      int64  `json:"id"`
	Name    string `json:"name"`
	InboxID int64  `json:"inbox_id"`
	Mode    string `json:"mode"`
	Enabled bool   `json:"enabled"`
	AppName string `json:"app_name"`
	AppMode string `json:"app_mode"`
}

// EventView is one message (or takeover, or ask-again) bridge handled.
type EventView struct {
	ID         int64      `json:"id"`
	Kind       string     `json:"kind"`
	Status     string     `json:"status"`
	Reason     string     `json:"reason"`
	Error      string     `json:"error,omitempty"`
	Text       string     `json:"text"`
	ReceivedAt time.Time  `json:"received_at"`
	FinishedAt *time.Time `json:"finished_at"`
	Attempts   int        `json:"attempts"`
	MergedInto int64      `json:"merged_into,omitempty"`
	Summary    Summary    `json:"summary"`
	Hops       []HopView  `json:"hops"`
	Posts      []PostView `json:"posts"`
}

// Summary is an event at a glance, read from its trace and posts.
type Summary struct {
	Decision string `json:"decision"`
	DifyMS   int64  `json:"dify_ms"`
	Tokens   int    `json:"tokens"`
	// Posted lists the messages that went to Chatwoot ("answer #1010").
	Posted []string `json:"posted"`
	// Handoff is why the conversation went to a human, "" if it did not.
	Handoff string `json:"handoff"`
	// HeldBack is the answer a takeover kept from the customer (posted as
	// a private note instead).
	HeldBack string `json:"held_back"`
	// InDoubt lists the posts whose fate bridge had to find out, and how
	// each was resolved.
	InDoubt []string `json:"in_doubt"`
}

// HopView is one step of the trace. Flag marks what the page highlights:
// "doubt", "error", "handoff" or "".
type HopView struct {
	At      time.Time `json:"at"`
	Stage   string    `json:"stage"`
	Outcome string    `json:"outcome"`
	Detail  string    `json:"detail"`
	MS      float64   `json:"ms"`
	Flag    string    `json:"flag"`
}

// OwnershipView is one change of holder (or a resolve, or a reopening):
// Kind is store.OwnHandoff and the like, Owner who held it after.
type OwnershipView struct {
	At      time.Time `json:"at"`
	Kind    string    `json:"kind"`
	Owner   string    `json:"owner"`
	Cause   string    `json:"cause"`
	Detail  string    `json:"detail"`
	EventID int64     `json:"event_id,omitempty"`
}

// maxOwnership bounds the ownership entries the page receives.
const maxOwnership = 50

// PostView is a post bridge made or meant to make; MessageID is 0 while it
// is (or was left) in doubt.
type PostView struct {
	Step      string `json:"step"`
	Private   bool   `json:"private"`
	Content   string `json:"content"`
	MessageID int64  `json:"message_id"`
}

// Bounds on the text the page receives per event.
const (
	maxText   = 2000
	maxPost   = 4000
	maxDetail = 1000
)

// handoffReasons are the outcomes of the hop that starts a handoff.
var handoffReasons = map[string]bool{"customer_asked": true, "ai_requested": true, "ai_failed": true}

var tokensRe = regexp.MustCompile(`(\d+) tokens`)

func (h *handler) view(ctx context.Context, c store.Conversation) (*View, error) {
	v := &View{Now: h.o.Now().UTC(), Events: []EventView{}, Conversation: ConversationView{
		AccountID: c.AccountID, ConversationID: c.ConversationID, InboxID: c.InboxID, State: c.State,
		StateReason: c.StateReason, StateAt: timePtr(c.StateAt), Status: c.Status,
		DifyConversationID: c.DifyConversationID, MessagesIn: c.MessagesIn, Answers: c.Answers, Handoffs: c.Handoffs,
		LastActivityAt: timePtr(c.LastActivityAt),
	}}
	routes, err := h.o.Store.Routes(ctx)
	if err != nil {
		return nil, err
	}
	// The inbox's route is the one that answers now; the mapped one is
	// shown if the inbox lost its route since.
	for _, pick := range []func(r store.Route) bool{
		func(r store.Route) bool { return c.InboxID != 0 && r.InboxID == c.InboxID },
		func(r store.Route) bool { return c.RouteID != 0 && r.ID == c.RouteID },
	} {
		for _, r := range routes {
			if v.Route == nil && pick(r) {
				v.Route = &RouteView{ID: r.ID, Name: r.Name, InboxID: r.InboxID, Mode: r.Mode, Enabled: r.Enabled,
					AppName: r.AppName, AppMode: r.AppMode}
			}
		}
	}
	evs, err := h.o.Store.ConversationTrace(ctx, c.AccountID, c.ConversationID, h.o.Events)
	if err != nil {
		return nil, err
	}
	for i := range evs {
		v.Events = append(v.Events, eventView(&evs[i]))
	}
	own, err := h.o.Store.OwnershipOf(ctx, c.AccountID, c.ConversationID, maxOwnership)
	if err != nil {
		return nil, err
	}
	v.Ownership = make([]OwnershipView, 0, len(own))
	for i := len(own) - 1; i >= 0; i-- { // oldest first in the journal
		o := &own[i]
		v.Ownership = append(v.Ownership, OwnershipView{At: o.At, Kind: o.Kind, Owner: o.Owner, Cause: o.Cause,
			Detail: clip(o.Detail, maxDetail), EventID: o.EventID})
	}
	return v, nil
}

func eventView(te *store.TracedEvent) EventView {
	ev := EventView{ID: te.ID, Kind: te.Kind, Status: te.Status, Reason: te.Reason, Text: clip(te.Text, maxText),
		ReceivedAt: te.ReceivedAt, FinishedAt: timePtr(te.FinishedAt), Attempts: te.Attempts, MergedInto: te.MergedInto,
		Hops: make([]HopView, 0, len(te.Hops)), Posts: make([]PostView, 0, len(te.Posts))}
	if te.Status == store.StatusFailed {
		ev.Error = clip(te.LastError, maxDetail)
	}
	s := Summary{Posted: []string{}, InDoubt: []string{}}
	for _, hp := range te.Hops {
		hv := HopView{At: hp.At, Stage: hp.Stage, Outcome: hp.Outcome, Detail: clip(hp.Detail, maxDetail),
			MS: float64(hp.Duration.Microseconds()) / 1000}
		switch {
		case strings.HasPrefix(hp.Outcome, inDoubtPrefix):
			hv.Flag = "doubt"
			s.InDoubt = append(s.InDoubt, hp.Outcome+": "+hv.Detail)
		case strings.HasPrefix(hp.Outcome, "error") || hp.Outcome == "failed" || hp.Outcome == "stop failed":
			hv.Flag = "error"
		case hp.Stage == stageHandoff:
			hv.Flag = "handoff"
		}
		switch hp.Stage {
		case stageDecision:
			if s.Decision == "" {
				s.Decision = hv.Detail
			}
		case stageDify:
			s.DifyMS += hp.Duration.Milliseconds()
			if hp.Outcome == "answer" {
				if m := tokensRe.FindStringSubmatch(hp.Detail); m != nil {
					n, _ := strconv.Atoi(m[1]) // the pattern is digits
					s.Tokens += n
				}
			}
		case stageChatwoot:
			if hp.Outcome == "ok" || strings.HasPrefix(hp.Outcome, inDoubtPrefix+":") {
				if p := postedLabel(hp.Detail); p != "" {
					s.Posted = append(s.Posted, p)
				}
			}
		case stageHandoff:
			// The hop named by the reason code carries the note; the others
			// are a keyword match before it or steps left undone after.
			if handoffReasons[hp.Outcome] {
				// The note names the reason; the code is the fallback.
				s.Handoff = hv.Detail
				if s.Handoff == "" {
					s.Handoff = strings.ReplaceAll(hp.Outcome, "_", " ")
				}
			}
		case stageTakeover:
			s.Handoff = "agent replied: " + hv.Detail
		}
		ev.Hops = append(ev.Hops, hv)
	}
	for _, in := range te.Posts {
		ev.Posts = append(ev.Posts, PostView{Step: in.Step, Private: in.Private, Content: clip(in.Content, maxPost), MessageID: in.MessageID})
		if in.Step == stepHeldBack {
			s.HeldBack = clip(in.Content, maxPost)
		}
	}
	ev.Summary = s
	return ev
}

var postedRe = regexp.MustCompile(`^([a-z_]+): message (\d+)`)

// postedLabel makes "handoff message #1004" of a hop detail such as
// "handoff_message: message 1004 (its webhook was journaled)"; "" for a
// step that posted no message (a status change).
func postedLabel(detail string) string {
	m := postedRe.FindStringSubmatch(detail)
	if m == nil {
		return ""
	}
	return strings.ReplaceAll(m[1], "_", " ") + " #" + m[2]
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary.
	for n > 0 && n < len(s) && s[n]&0xc0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
