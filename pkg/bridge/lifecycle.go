package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/dify"
	"github.com/bridge-dev/bridge/pkg/lifecycle"
	"github.com/bridge-dev/bridge/pkg/store"
)

// The conversation lifecycle: who holds a conversation, how it changes
// hands, and what the bot remembers when it takes one back. Every change of
// holder is an ownership entry with its cause (store.Ownership), read by
// `bridge conversations show`, the trace and `bridge stats`.

// Handoff reasons beyond the ones process.go names (see pkg/lifecycle).
const (
	HandoffNotUnderstood   = lifecycle.ReasonNotUnderstood
	HandoffProviderRefused = lifecycle.ReasonProviderRefused
)

// Steps of the lifecycle's handoff.
const (
	StepHandoffAgent    = "handoff_agent"
	StepHandoffPriority = "handoff_priority"
	// stepHandoffTarget prefixes the named target an AI marker carried.
	stepHandoffTarget = "handoff_target_"
	// stepHandoffHours prefixes whether people were there when the handoff
	// began: none (the route names no hours), unknown, open, or
	// closed:NEXT. A resumed handoff words its message and note by it, so
	// the agent reads what the customer was told even if the hours have
	// changed, or cannot be read, since.
	stepHandoffHours = "handoff_hours_"
)

// SummaryInput is the Dify input that carries the summary of the previous
// episode into a fresh Dify conversation (memory = summary). Declare it in
// the app (a paragraph variable) to use it; Dify ignores inputs an app
// does not declare.
const SummaryInput = "previous_episode"

// hoursTTL bounds how stale an inbox's working hours read from Chatwoot
// may be; a failed read is tried again after hoursRetry.
const (
	hoursTTL   = 10 * time.Minute
	hoursRetry = time.Minute
)

// lifecycleState caches route settings and inbox working hours.
type lifecycleState struct {
	mu       sync.Mutex
	at       time.Time
	settings map[int64]lifecycle.Settings
	hours    map[[2]int64]cachedHours
}

type cachedHours struct {
	at    time.Time
	ttl   time.Duration
	h     *chatwoot.InboxHours
	sched lifecycle.Schedule
	err   error
}

// settingsFor returns a route's lifecycle settings (the defaults when it
// has none, or when the stored ones cannot be read: the error is logged).
func (b *Bridge) settingsFor(ctx context.Context, route int64) lifecycle.Settings {
	b.lc.mu.Lock()
	defer b.lc.mu.Unlock()
	if b.lc.settings == nil || b.o.Now().Sub(b.lc.at) >= routesTTL {
		raw, err := b.o.Store.RouteLifecycles(ctx)
		if err != nil {
			b.log.Error("read route lifecycles", keyErr, err)
			if b.lc.settings == nil {
				return lifecycle.Settings{}
			}
		} else {
			b.lc.settings = make(map[int64]lifecycle.Settings, len(raw))
			for id, s := range raw {
				v, err := lifecycle.Unmarshal(s)
				if err != nil {
					b.log.Error("route lifecycle unreadable; using the defaults", "route_id", id, keyErr, err)
				}
				b.lc.settings[id] = v
			}
			b.lc.at = b.o.Now()
		}
	}
	return b.lc.settings[route]
}

// SettingsOf reads a route's lifecycle settings from the journal.
func SettingsOf(ctx context.Context, db *store.DB, route int64) (lifecycle.Settings, error) {
	raw, err := db.RouteLifecycle(ctx, route)
	if err != nil {
		return lifecycle.Settings{}, err
	}
	return lifecycle.Unmarshal(raw)
}

// hoursNow says whether people are there for a handoff now: known is false
// when the route names no hours, or when they could not be read (why says
// so); next describes the next opening when closed.
type hoursNow struct {
	known bool
	open  bool
	next  string
	why   string
	away  string // Chatwoot's out_of_office_message, when the hours came from there
}

func (b *Bridge) hoursFor(ctx context.Context, account int64, route *store.Route, s *lifecycle.Settings) hoursNow {
	now := b.o.Now()
	var sched lifecycle.Schedule
	away := ""
	switch s.Hours.Source {
	case "":
		return hoursNow{why: "the route names no opening hours"}
	case "route":
		w, err := lifecycle.ParseWeek(s.Hours.Week)
		if err != nil {
			return hoursNow{why: "the route's hours: " + err.Error()}
		}
		loc, err := lifecycle.LoadLocation(s.Hours.Timezone)
		if err != nil {
			return hoursNow{why: "the route's hours: " + err.Error()}
		}
		sched = lifecycle.Schedule{Week: w, Loc: loc}
	case "chatwoot":
		c, err := b.inboxHours(ctx, account, route.InboxID)
		if err != nil {
			return hoursNow{why: err.Error()}
		}
		if !c.h.WorkingHoursEnabled {
			return hoursNow{known: true, open: true, why: "the inbox's business hours are off in Chatwoot"}
		}
		sched, away = c.sched, c.h.OutOfOfficeMessage
	}
	if sched.OpenAt(now) {
		return hoursNow{known: true, open: true}
	}
	h := hoursNow{known: true, away: away}
	if next, ok := sched.NextOpen(now); ok {
		h.next = sched.Describe(now, next)
	}
	return h
}

// handoffHours is whether people are there for the event's handoff: the
// decision its first attempt journaled, or one taken (and journaled) now.
func (b *Bridge) handoffHours(ctx context.Context, e, cur *store.Event, route *store.Route, s *lifecycle.Settings) (hoursNow, error) {
	if h, ok := decidedHours(cur); ok {
		if h.known && !h.open && s.Hours.Source == "chatwoot" && s.Hours.Closed == "" && !cur.HasStep(StepHandoffMessage) {
			// The message still to be posted is worded from Chatwoot's
			// out-of-office text, which the step does not keep.
			if c, err := b.inboxHours(ctx, e.AccountID, route.InboxID); err == nil {
				h.away = c.h.OutOfOfficeMessage
			}
		}
		return h, nil
	}
	h := b.hoursFor(ctx, e.AccountID, route, s)
	step := stepHandoffHours + "none"
	var hops []store.Hop
	switch {
	case s.Hours.Source == "":
	case !h.known:
		step = stepHandoffHours + "unknown"
		hops = append(hops, store.Hop{Stage: StageHandoff, Outcome: "hours unknown", Detail: h.why + "; handing off as if people were there"})
	case h.open:
		step = stepHandoffHours + "open"
	default:
		// Steps are a comma-separated list.
		step = stepHandoffHours + "closed:" + strings.ReplaceAll(h.next, ",", " ")
		hops = append(hops, store.Hop{Stage: StageHandoff, Outcome: "out of hours", Detail: "next opening " + orDefault(h.next, "unknown")})
	}
	// No fsync of its own: the message or note this decision words is
	// journaled durably before it is posted, and that commit covers it.
	err := b.o.Store.WriteNoSync(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		if err := tx.UpdateEvent(e.ID, store.EventUpdate{AddStep: step}); err != nil {
			return err
		}
		for _, hp := range hops {
			hp.EventID = e.ID
			if err := tx.AddHop(hp); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return h, fmt.Errorf("journal the opening hours of event %d's handoff: %w", e.ID, err)
	}
	for _, hp := range hops {
		b.logHop("hop", e, hp)
	}
	return h, nil
}

// decidedHours reads the hours decision a handoff journaled.
func decidedHours(e *store.Event) (hoursNow, bool) {
	for st := range strings.SplitSeq(e.Steps, ",") {
		v, ok := strings.CutPrefix(st, stepHandoffHours)
		if !ok {
			continue
		}
		switch v {
		case "none", "unknown":
			return hoursNow{why: "as journaled when the handoff began"}, true
		case "open":
			return hoursNow{known: true, open: true}, true
		}
		next, _ := strings.CutPrefix(v, "closed:")
		return hoursNow{known: true, next: next}, true
	}
	return hoursNow{}, false
}

// inboxHours reads (and caches) an inbox's working hours from Chatwoot.
// The inbox API needs chatwoot.user_token: with the bot token alone the
// hours stay unknown and a handoff promises nothing about them.
func (b *Bridge) inboxHours(ctx context.Context, account, inbox int64) (cachedHours, error) {
	if b.o.ChatwootUser == nil {
		return cachedHours{}, errors.New("opening hours unknown: reading the inbox's hours from Chatwoot needs chatwoot.user_token")
	}
	k := [2]int64{account, inbox}
	now := b.o.Now()
	b.lc.mu.Lock()
	c, ok := b.lc.hours[k]
	b.lc.mu.Unlock()
	if ok && now.Sub(c.at) < c.ttl {
		return c, c.err
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	start := time.Now()
	h, err := b.o.ChatwootUser.InboxHours(rctx, account, inbox)
	b.o.Metrics.chatwoot("get_inbox", statusOf(err), time.Since(start))
	c = cachedHours{at: now, ttl: hoursTTL, h: h}
	if err != nil {
		c.ttl, c.err = hoursRetry, fmt.Errorf("opening hours unknown: reading inbox %d from Chatwoot failed: %s", inbox, errText(err))
	} else {
		var days []lifecycle.ChatwootDay
		for _, raw := range h.WorkingHours {
			var d lifecycle.ChatwootDay
			if json.Unmarshal(raw, &d) == nil {
				days = append(days, d)
			}
		}
		loc, lerr := lifecycle.LoadLocation(h.Timezone)
		if lerr != nil {
			c.ttl, c.err = hoursRetry, fmt.Errorf("opening hours unknown: inbox %d: %w", inbox, lerr)
		}
		c.sched = lifecycle.Schedule{Week: lifecycle.FromChatwoot(days), Loc: loc}
	}
	b.lc.mu.Lock()
	if b.lc.hours == nil {
		b.lc.hours = map[[2]int64]cachedHours{}
	}
	b.lc.hours[k] = c
	b.lc.mu.Unlock()
	return c, c.err
}

// markerTarget returns the target a marker names: with the marker
// [[handoff]], the answer's [[handoff:billing]] names "billing".
func markerTarget(text, marker string) string {
	re := targetedMarker(marker)
	if re == nil {
		return ""
	}
	if m := re.FindStringSubmatch(text); m != nil {
		return strings.ToLower(m[1])
	}
	return ""
}

// targetedMarker matches the marker with a target before its closing
// brackets ("[[handoff:NAME]]"); nil when the marker has no such form.
func targetedMarker(marker string) *regexp.Regexp {
	head, ok := strings.CutSuffix(marker, "]]")
	if !ok || head == "" {
		return nil
	}
	return regexp.MustCompile(`(?i)` + regexp.QuoteMeta(head) + `:\s*([a-z0-9][a-z0-9_-]{0,39})\s*\]\]`)
}

// handoffTarget is the target recorded for the event's handoff ("" none).
func handoffTarget(e *store.Event) string {
	for st := range strings.SplitSeq(e.Steps, ",") {
		if t, ok := strings.CutPrefix(st, stepHandoffTarget); ok {
			return t
		}
	}
	return ""
}

// reasonText is a handoff reason as the note's first words say it.
func reasonText(reason string) string {
	switch reason {
	case HandoffCustomerAsked:
		return "the customer asked for a human"
	case HandoffAIRequested:
		return "the AI asked for a human"
	case HandoffAIFailed:
		return "the AI failed"
	case HandoffNotUnderstood:
		return "a voice note or attachment was not understood"
	case HandoffProviderRefused:
		return "the channel refused the bot's answer"
	}
	return reason
}

// handoffContext gathers what the note says beyond the reason: the
// customer's last message and the AI's last answer, from the journal.
func (b *Bridge) handoffContext(ctx context.Context, e *store.Event) (customer, answer string) {
	turns, err := b.o.Store.RecentTurns(ctx, e.AccountID, e.ConversationID, 4)
	if err != nil {
		b.log.Warn("handoff note: read the conversation's turns", eventAttrs(e, keyErr, err)...)
	}
	customer = e.Text
	for i := len(turns) - 1; i >= 0; i-- {
		if customer == "" && turns[i].Customer != "" {
			customer = turns[i].Customer
		}
		if answer == "" && turns[i].Answer != "" {
			answer = turns[i].Answer
		}
	}
	return customer, answer
}

// dashboardLink is the Dashboard App's page of a conversation, when the
// app is served (dashboard.key) and bridge knows its public address. The
// key is not in it: the page opened from Chatwoot's tab has it.
func (b *Bridge) dashboardLink(account, conv int64) string {
	if b.o.DashboardKey == "" || b.o.PublicURL == "" {
		return ""
	}
	u := strings.TrimRight(b.o.PublicURL, "/") + "/app/?" + url.Values{
		"account_id": {fmt.Sprint(account)}, "conversation_id": {fmt.Sprint(conv)},
	}.Encode()
	return u
}

// noteSummary asks the route's Dify app for a short summary of the
// conversation, in a Dify conversation of its own. It never holds the
// handoff up for long: the call is bounded by the route's summary timeout,
// and any failure means no summary.
func (b *Bridge) noteSummary(ctx context.Context, e *store.Event, route *store.Route, s *lifecycle.Settings) string {
	client, err := b.difyFor(route)
	if err != nil {
		return ""
	}
	turns, err := b.o.Store.RecentTurns(ctx, e.AccountID, e.ConversationID, 10)
	if err != nil || len(turns) == 0 {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, s.SummaryTimeout())
	defer cancel()
	start := time.Now()
	ans, err := client.Chat(ctx, difyChat(s.SummaryPrompt()+"\n\n"+transcript(turns, 6000), e, route), nil)
	d := time.Since(start)
	if err != nil {
		b.hop(ctx, e, store.Hop{Stage: StageHandoff, Outcome: "no summary", Detail: errText(err), Duration: d})
		return ""
	}
	text := strings.TrimSpace(ans.Text)
	if marker := b.handoffFor(route).AIMarker; marker != "" {
		text, _ = stripMarker(text, marker)
	}
	b.hop(ctx, e, store.Hop{Stage: StageHandoff, Outcome: "summary", Detail: fmt.Sprintf("%d chars", len(text)), Duration: d})
	return truncate(text, 600)
}

// transcript renders turns for a summary, newest kept when too long.
func transcript(turns []store.Turn, limit int) string {
	var lines []string
	for _, t := range turns {
		if t.Customer != "" {
			lines = append(lines, "Customer: "+flat(t.Customer))
		}
		if t.Answer != "" {
			lines = append(lines, "Assistant: "+flat(t.Answer))
		}
	}
	out := strings.Join(lines, "\n")
	for len(out) > limit && len(lines) > 1 {
		lines = lines[1:]
		out = strings.Join(lines, "\n")
	}
	return out
}

// episodeSummary is the summary a fresh Dify conversation receives when the
// bot takes a conversation back with memory = summary: made from the
// journal, so it needs no call and cannot fail.
func episodeSummary(turns []store.Turn, cause string) string {
	var sb strings.Builder
	if cause != "" {
		sb.WriteString("The conversation was handed to a human (" + reasonText(cause) + ").\n")
	}
	if t := transcript(turns, 1500); t != "" {
		sb.WriteString("Earlier in this conversation:\n" + t)
	}
	return strings.TrimSpace(sb.String())
}

// returnToBot gives a conversation back to the bot inside a journal
// transaction: the holder, the memory the route asks for, and the
// ownership entry with its cause. The summary of the previous episode is
// made from the journal here, so the next turn only has to pass it on.
func returnToBot(tx *store.Tx, conv store.Conversation, route int64, s *lifecycle.Settings, cause, why string, eventID int64) (string, error) {
	lc, err := tx.ConvLifecycle(conv.AccountID, conv.ConversationID)
	if err != nil {
		return "", err
	}
	mem, after := s.MemoryAfterHandoff(), "after a handoff"
	if conv.Status == "resolved" {
		mem, after = s.MemoryAfterResolve(), "after a resolve"
	}
	detail := "memory " + after + ": "
	if mem == lifecycle.MemorySame && lc.HandoffCause == HandoffAIRequested {
		// The old Dify conversation ends with the AI asking for a human:
		// continuing it would hand the customer straight back.
		mem = lifecycle.MemoryFresh
		detail += "fresh Dify conversation (same, but the AI itself asked for a human in the old one)"
	} else {
		detail += map[string]string{lifecycle.MemoryFresh: "fresh Dify conversation", lifecycle.MemorySame: "same Dify conversation",
			lifecycle.MemorySummary: "fresh Dify conversation with a summary of the previous episode"}[mem]
	}
	if err := tx.SetConversationState(conv.AccountID, conv.ConversationID, store.StateBot, why); err != nil {
		return "", err
	}
	if err := applyMemory(tx, conv, mem, lc.HandoffCause); err != nil {
		return "", err
	}
	if err := tx.SetHandoffCause(conv.AccountID, conv.ConversationID, ""); err != nil {
		return "", err
	}
	return detail, tx.AddOwnership(store.Ownership{AccountID: conv.AccountID, ConversationID: conv.ConversationID, RouteID: route,
		Kind: store.OwnReturn, Owner: store.StateBot, Cause: cause, Detail: why + "; " + detail, EventID: eventID})
}

// Causes of a return to the bot (the cause of its ownership entry).
const (
	ReturnByStatus   = "status"    // Chatwoot put it back in a bot status
	ReturnByIdle     = "idle"      // no human message for the route's idle_after
	ReturnByGiveBack = "give-back" // an agent (Dashboard App) or an operator (CLI)
)

// applyMemory starts the conversation's next Dify conversation as mem says.
func applyMemory(tx *store.Tx, conv store.Conversation, mem, cause string) error {
	switch mem {
	case lifecycle.MemoryFresh:
		return tx.MapDify(conv.AccountID, conv.ConversationID, conv.RouteID, "")
	case lifecycle.MemorySummary:
		turns, err := tx.RecentTurns(conv.AccountID, conv.ConversationID, 6)
		if err != nil {
			return err
		}
		if err := tx.SetEpisodeSummary(conv.AccountID, conv.ConversationID, episodeSummary(turns, cause)); err != nil {
			return err
		}
		return tx.MapDify(conv.AccountID, conv.ConversationID, conv.RouteID, "")
	}
	return nil
}

// episodeInputs adds the summary of the previous episode to a fresh Dify
// conversation's inputs, once.
func (b *Bridge) episodeInputs(ctx context.Context, e *store.Event, newConversation bool, inputs map[string]any) {
	if !newConversation {
		return
	}
	lc, err := b.o.Store.ConvLifecycleOf(ctx, e.AccountID, e.ConversationID)
	if err != nil || lc.Summary == "" {
		return
	}
	if _, set := inputs[SummaryInput]; !set {
		inputs[SummaryInput] = lc.Summary
	}
	if err := b.o.Store.Write(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		return tx.SetEpisodeSummary(e.AccountID, e.ConversationID, "")
	}); err != nil {
		b.log.Warn("clear the episode summary", eventAttrs(e, keyErr, err)...)
	}
	b.hop(ctx, e, store.Hop{Stage: StageDify, Outcome: "summary passed", Detail: fmt.Sprintf("input %s: %d chars", SummaryInput, len(lc.Summary))})
}

// difyChat is the request of a summary: a Dify conversation of its own,
// under a user of its own, so it never mixes with the customer's.
func difyChat(query string, e *store.Event, route *store.Route) dify.ChatRequest {
	inputs := map[string]any{}
	for k, v := range route.Inputs {
		// Placeholders have no webhook to fill them here; required inputs
		// still need a value.
		inputs[k] = placeholder.ReplaceAllString(v, "")
	}
	return dify.ChatRequest{Query: query, Inputs: inputs, AppMode: route.AppMode,
		User: fmt.Sprintf("bridge-summary-%d-%d", e.AccountID, e.ConversationID)}
}

// flat puts text on one line.
func flat(s string) string { return strings.Join(strings.Fields(s), " ") }

// handoffNote is what the note of a handoff is made of.
type handoffNote struct {
	reason, note, target string
	asg                  lifecycle.Assign
	closed               bool
	next                 string
}

// handoffNote writes the handoff's private note: why, what the customer
// last wrote and the AI last answered, whether it came out of hours, an
// optional summary, what the handoff table asked for, and a link to the
// Dashboard App. The agent should not need the whole history to start.
func (b *Bridge) handoffNote(ctx context.Context, e *store.Event, route *store.Route, s *lifecycle.Settings, n handoffNote) string {
	lines := []string{"Handoff: " + n.note}
	customer, answer := b.handoffContext(ctx, e)
	if customer != "" && n.reason != HandoffCustomerAsked { // that note already quotes it
		lines = append(lines, "Customer: "+quoteShort(customer))
	}
	if answer != "" {
		lines = append(lines, "AI's last answer: "+quoteShort(answer))
	}
	if n.closed {
		when := "when the team is back"
		if n.next != "" {
			when = "that the team is back " + n.next
		}
		lines = append(lines, "Out of hours: the customer was told "+when+".")
	}
	if s.Summary.Enabled {
		if sum := b.noteSummary(ctx, e, route, s); sum != "" {
			lines = append(lines, "Summary (AI): "+sum)
		}
	}
	if routed := n.asg.String(); n.target != "" || !n.asg.IsZero() {
		if n.target != "" {
			routed = "target " + n.target + ": " + routed
		}
		lines = append(lines, "Routed: "+routed)
	}
	if link := b.dashboardLink(e.AccountID, e.ConversationID); link != "" {
		lines = append(lines, "Trace: "+link)
	}
	return b.o.Redactor.String(strings.Join(lines, "\n"))
}

func quoteShort(s string) string { return fmt.Sprintf("%q", truncate(flat(s), 300)) }

// ingestLifecycle keeps the lifecycle's journal current as a webhook is
// journaled, in the same transaction: human activity (for the idle
// return), resolves and reopenings Chatwoot reports, a return to the bot the
// verdict found, and a human's takeover. conv is bridge's record as it was
// before this webhook.
func (b *Bridge) ingestLifecycle(tx *store.Tx, ev *chatwoot.Event, route *store.Route, s *lifecycle.Settings,
	conv store.Conversation, known bool, v Verdict, eventID int64) error {
	acc, id := ev.AccountID, ev.Conversation.ID
	if acc == 0 || id == 0 {
		return nil
	}
	var routeID int64
	if route != nil {
		routeID = route.ID
	}
	if conv.RouteID == 0 {
		conv.RouteID = routeID
	}
	own := v.Reason == ReasonOwnMessage
	if ev.Name == "message_created" && ev.MessageType == "outgoing" && !own &&
		(ev.Sender == nil || ev.Sender.Type == chatwoot.SenderUser) {
		if err := tx.NoteHuman(acc, id, tx.Now()); err != nil {
			return err
		}
	}
	st := ev.Conversation.Status
	if route != nil && known && st != "" && !own && conv.Status != "" && st != conv.Status && newerThan(ev.SnapshotAt(), conv.StatusAt) {
		switch {
		case st == "resolved":
			if err := tx.AddOwnership(store.Ownership{AccountID: acc, ConversationID: id, RouteID: routeID, Kind: store.OwnResolved,
				Owner: conv.State, Cause: "status resolved", EventID: eventID}); err != nil {
				return err
			}
		case conv.Status == "resolved":
			detail := ""
			if conv.State == store.StateBot && !v.ReturnToBot {
				// The bot held it through the resolve: it starts the new
				// episode with the memory the route gives after a resolve.
				mem := s.MemoryAfterResolve()
				if err := applyMemory(tx, conv, mem, ""); err != nil {
					return err
				}
				detail = "memory after a resolve: " + mem
			}
			if err := tx.AddOwnership(store.Ownership{AccountID: acc, ConversationID: id, RouteID: routeID, Kind: store.OwnReopened,
				Owner: conv.State, Cause: "status " + st, Detail: detail, EventID: eventID}); err != nil {
				return err
			}
		}
	}
	if v.ReturnToBot {
		if _, err := returnToBot(tx, conv, routeID, s, ReturnByStatus, "status "+st, eventID); err != nil {
			return err
		}
	}
	if v.Accept && v.Kind == store.KindTakeover {
		// Stop answering at once; the worker then tells Chatwoot.
		if err := tx.SetConversationState(acc, id, store.StateHuman, "agent replied"); err != nil {
			return err
		}
		if err := tx.SetHandoffCause(acc, id, HandoffAgentReplied); err != nil {
			return err
		}
		return tx.AddOwnership(store.Ownership{AccountID: acc, ConversationID: id, RouteID: routeID, Kind: store.OwnTakeover,
			Owner: store.StateHuman, Cause: HandoffAgentReplied, Detail: "an agent replied while the bot held it", EventID: eventID})
	}
	return nil
}

// watchIdle gives back, every IdleSweep, the conversations that humans
// hold on routes whose return rule is idle and in which no human wrote for
// the route's idle_after. Only open conversations: a resolved or snoozed one
// is not pulled back into a bot status (a resolved one comes back by
// itself when the customer writes again).
func (b *Bridge) watchIdle(ctx context.Context) {
	b.bg.Go(func() {
		t := time.NewTicker(b.o.IdleSweep)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				b.sweepIdle(ctx)
			}
		}
	})
}

func (b *Bridge) sweepIdle(ctx context.Context) {
	routes, err := b.o.Store.Routes(ctx)
	if err != nil {
		b.log.Warn("idle return: read routes", keyErr, err)
		return
	}
	for _, r := range routes {
		s := b.settingsFor(ctx, r.ID)
		if !r.Enabled || s.ReturnRule() != lifecycle.ReturnIdle || s.IdleAfter <= 0 {
			continue
		}
		idle := time.Duration(s.IdleAfter)
		convs, err := b.o.Store.IdleHuman(ctx, r.InboxID, b.o.Now().Add(-idle))
		if err != nil {
			b.log.Warn("idle return: list conversations", "route_id", r.ID, keyErr, err)
			continue
		}
		for _, c := range convs {
			if c.Status != "open" || ctx.Err() != nil {
				continue
			}
			why := "no human message for " + idle.String()
			err := giveBack(ctx, b.o.Store, b.o.Chatwoot, b.o.BotStatuses, c.AccountID, c.ConversationID, ReturnByIdle, why)
			if err != nil {
				b.log.Warn("idle return failed", "route_id", r.ID, "conversation_id", c.ConversationID, keyErr, err)
				continue
			}
			b.log.Info("conversation returned to the bot", "route_id", r.ID, "conversation_id", c.ConversationID, "cause", ReturnByIdle, "reason", why)
		}
	}
}
