// Package lifecycle holds a route's conversation lifecycle settings: who gets
// a handoff and how (team, agent, labels, priority per reason or named
// target), when the bot takes a conversation back and with what memory, the
// opening hours a handoff respects, and the optional summary in the handoff
// note. It does no I/O: bridge applies the settings, the store keeps them as
// JSON next to the route.
package lifecycle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// Handoff reasons: the keys of a route's handoff table, the cause of an
// ownership change and the label of bridge_handoffs_total.
const (
	ReasonCustomerAsked   = "customer_asked"
	ReasonAIRequested     = "ai_requested"
	ReasonAIFailed        = "ai_failed"
	ReasonNotUnderstood   = "not_understood"   // a voice note or attachment bridge could not read
	ReasonProviderRefused = "provider_refused" // the channel's provider refused bridge's answer
)

// Reasons lists the handoff reasons a table may name.
var Reasons = []string{ReasonCustomerAsked, ReasonAIRequested, ReasonAIFailed, ReasonNotUnderstood, ReasonProviderRefused}

// When the bot takes a conversation back (Settings.Return).
const (
	ReturnPending  = "pending"  // Chatwoot reports it in a bot status again (an agent set pending, or a resolved one reopened)
	ReturnIdle     = "idle"     // also after IdleAfter without a human message
	ReturnGiveBack = "giveback" // only an agent's or operator's give-back
	ReturnNever    = "never"    // once a human holds it, it stays theirs
)

// What the bot remembers when it takes a conversation back (Memory).
const (
	MemoryFresh   = "fresh"   // a new Dify conversation
	MemorySame    = "same"    // the Dify conversation it had
	MemorySummary = "summary" // a new Dify conversation given a summary of the previous episode as an input
)

// Priorities Chatwoot accepts (toggle_priority; Conversation#priority enum).
var Priorities = []string{"urgent", "high", "medium", "low"}

// Assign is what a handoff does in Chatwoot besides opening the
// conversation. Zero fields change nothing.
type Assign struct {
	Team     int64    `json:"team,omitempty" toml:"team,omitempty"`
	Agent    int64    `json:"agent,omitempty" toml:"agent,omitempty"`
	Labels   []string `json:"labels,omitempty" toml:"labels,omitempty"`
	Priority string   `json:"priority,omitempty" toml:"priority,omitempty"`
}

// IsZero reports whether the assignment does nothing.
func (a Assign) IsZero() bool {
	return a.Team == 0 && a.Agent == 0 && len(a.Labels) == 0 && a.Priority == ""
}

// Over returns a with the fields b sets replacing a's.
func (a Assign) Over(b Assign) Assign {
	if b.Team != 0 {
		a.Team = b.Team
	}
	if b.Agent != 0 {
		a.Agent = b.Agent
	}
	if b.Labels != nil {
		a.Labels = b.Labels
	}
	if b.Priority != "" {
		a.Priority = b.Priority
	}
	return a
}

// String is the assignment as routes show prints it.
func (a Assign) String() string {
	var parts []string
	if a.Team != 0 {
		parts = append(parts, fmt.Sprintf("team %d", a.Team))
	}
	if a.Agent != 0 {
		parts = append(parts, fmt.Sprintf("agent %d", a.Agent))
	}
	if len(a.Labels) > 0 {
		parts = append(parts, "labels "+strings.Join(a.Labels, ","))
	}
	if a.Priority != "" {
		parts = append(parts, "priority "+a.Priority)
	}
	if len(parts) == 0 {
		return "open only"
	}
	return strings.Join(parts, ", ")
}

// Table maps handoff reasons, and the named targets an AI marker may carry
// ([[handoff:billing]]), to assignments. A target wins over its reason.
type Table struct {
	Reasons map[string]Assign `json:"reasons,omitempty" toml:"reasons,omitempty"`
	Targets map[string]Assign `json:"targets,omitempty" toml:"targets,omitempty"`
}

// Memory says which Dify conversation the bot continues when it comes back.
type Memory struct {
	AfterResolve string `json:"after_resolve,omitempty" toml:"after_resolve,omitempty"`
	AfterHandoff string `json:"after_handoff,omitempty" toml:"after_handoff,omitempty"`
}

// Hours are the opening hours a handoff respects.
type Hours struct {
	// Source: "" (none: people are always there), "chatwoot" (the inbox's
	// working hours, read with chatwoot.user_token) or "route" (Week).
	Source   string `json:"source,omitempty" toml:"source,omitempty"`
	Timezone string `json:"timezone,omitempty" toml:"timezone,omitempty"`
	// Week is a spec like "mon-fri 09:00-17:00, sat 10:00-13:00".
	Week string `json:"week,omitempty" toml:"week,omitempty"`
	// Closed is the message a handoff sends out of hours; {next_open}
	// becomes the next opening time. Empty: DefaultClosed.
	Closed   string `json:"closed_message,omitempty" toml:"closed_message,omitempty"`
	AskEmail bool   `json:"ask_email,omitempty" toml:"ask_email,omitempty"`
}

// Summary configures the summary of the conversation the route's Dify app
// writes into the handoff note.
type Summary struct {
	Enabled bool     `json:"enabled,omitempty" toml:"enabled,omitempty"`
	Prompt  string   `json:"prompt,omitempty" toml:"prompt,omitempty"`
	Timeout Duration `json:"timeout,omitempty" toml:"timeout,omitempty"`
}

// Settings is a route's lifecycle. The zero value is bridge's behaviour
// before routes had one: return on a bot status, fresh memory after a
// resolve, the same after a handoff, no opening hours, no summary.
type Settings struct {
	Handoff   Table    `json:"handoff,omitzero" toml:"handoff,omitempty"`
	Return    string   `json:"return,omitempty" toml:"return,omitempty"`
	IdleAfter Duration `json:"idle_after,omitempty" toml:"idle_after,omitempty"`
	Memory    Memory   `json:"memory,omitzero" toml:"memory,omitempty"`
	Hours     Hours    `json:"hours,omitzero" toml:"hours,omitempty"`
	Summary   Summary  `json:"note_summary,omitzero" toml:"note_summary,omitempty"`
}

// Defaults.
const (
	DefaultSummaryPrompt  = "Summarise this support conversation for the agent taking it over, in at most three short sentences: what the customer wants and what was already tried."
	DefaultSummaryTimeout = 8 * time.Second
	DefaultClosed         = "Our team is not available right now. They are back {next_open} and will reply to you then."
	AskEmailText          = "If you like, leave your email address here and we will write to you."
)

// ReturnRule is the rule in force (pending when unset).
func (s *Settings) ReturnRule() string { return cmpOr(s.Return, ReturnPending) }

// ReturnsOnStatus reports whether Chatwoot putting the conversation back in
// a bot status gives it back to the bot.
func (s *Settings) ReturnsOnStatus() bool {
	r := s.ReturnRule()
	return r == ReturnPending || r == ReturnIdle
}

// MemoryAfterResolve is the memory after a resolve (fresh when unset).
func (s *Settings) MemoryAfterResolve() string { return cmpOr(s.Memory.AfterResolve, MemoryFresh) }

// MemoryAfterHandoff is the memory after a handoff (same when unset).
func (s *Settings) MemoryAfterHandoff() string { return cmpOr(s.Memory.AfterHandoff, MemorySame) }

// SummaryPrompt and SummaryTimeout are the note summary's, with defaults.
func (s *Settings) SummaryPrompt() string { return cmpOr(s.Summary.Prompt, DefaultSummaryPrompt) }

// SummaryTimeout bounds the summary call.
func (s *Settings) SummaryTimeout() time.Duration {
	if s.Summary.Timeout > 0 {
		return time.Duration(s.Summary.Timeout)
	}
	return DefaultSummaryTimeout
}

// AssignFor is what a handoff for reason (and target, "" for none) does:
// the base (the route's team and labels, or [handoff]'s), then the
// reason's row, then the target's.
func (s *Settings) AssignFor(base Assign, reason, target string) Assign {
	a := base.Over(s.Handoff.Reasons[reason])
	if target != "" {
		a = a.Over(s.Handoff.Targets[target])
	}
	return a
}

var targetName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,39}$`)

// Validate checks the settings and normalises what may be written loosely
// (names lower-cased, labels trimmed).
func (s *Settings) Validate() error {
	var errs []error
	norm := func(where string, a Assign) Assign {
		if a.Team < 0 || a.Agent < 0 {
			errs = append(errs, fmt.Errorf("%s: team and agent are positive ids", where))
		}
		a.Priority = strings.ToLower(strings.TrimSpace(a.Priority))
		if a.Priority != "" && !slices.Contains(Priorities, a.Priority) {
			errs = append(errs, fmt.Errorf("%s: priority %q is not one of %s", where, a.Priority, strings.Join(Priorities, ", ")))
		}
		if a.Labels != nil {
			ls := make([]string, 0, len(a.Labels))
			for _, l := range a.Labels {
				if l = strings.TrimSpace(l); l != "" {
					ls = append(ls, l)
				}
			}
			a.Labels = ls
		}
		return a
	}
	if len(s.Handoff.Reasons) > 0 {
		rs := make(map[string]Assign, len(s.Handoff.Reasons))
		for k, a := range s.Handoff.Reasons {
			k = strings.ToLower(strings.TrimSpace(k))
			if !slices.Contains(Reasons, k) {
				errs = append(errs, fmt.Errorf("handoff reason %q: want one of %s", k, strings.Join(Reasons, ", ")))
				continue
			}
			rs[k] = norm("reason "+k, a)
		}
		s.Handoff.Reasons = rs
	}
	if len(s.Handoff.Targets) > 0 {
		ts := make(map[string]Assign, len(s.Handoff.Targets))
		for k, a := range s.Handoff.Targets {
			k = strings.ToLower(strings.TrimSpace(k))
			if !targetName.MatchString(k) {
				errs = append(errs, fmt.Errorf("handoff target %q: want lower-case letters, digits, - or _ (at most 40)", k))
				continue
			}
			ts[k] = norm("target "+k, a)
		}
		s.Handoff.Targets = ts
	}
	s.Return = strings.ToLower(strings.TrimSpace(s.Return))
	switch s.Return {
	case "", ReturnPending, ReturnGiveBack, ReturnNever:
		if s.IdleAfter != 0 {
			errs = append(errs, errors.New("idle_after is for return = idle"))
		}
	case ReturnIdle:
		if s.IdleAfter < Duration(time.Minute) {
			errs = append(errs, errors.New("return = idle needs idle_after of a minute or more"))
		}
	default:
		errs = append(errs, fmt.Errorf("return %q: want pending, idle, giveback or never", s.Return))
	}
	for _, m := range []*string{&s.Memory.AfterResolve, &s.Memory.AfterHandoff} {
		*m = strings.ToLower(strings.TrimSpace(*m))
		switch *m {
		case "", MemoryFresh, MemorySame, MemorySummary:
		default:
			errs = append(errs, fmt.Errorf("memory %q: want fresh, same or summary", *m))
		}
	}
	s.Hours.Source = strings.ToLower(strings.TrimSpace(s.Hours.Source))
	switch s.Hours.Source {
	case "", "chatwoot":
		if s.Hours.Week != "" {
			errs = append(errs, errors.New("hours: a week is for source = route"))
		}
	case "route":
		if _, err := ParseWeek(s.Hours.Week); err != nil {
			errs = append(errs, fmt.Errorf("hours: %w", err))
		}
		if _, err := LoadLocation(s.Hours.Timezone); err != nil {
			errs = append(errs, fmt.Errorf("hours: %w", err))
		}
	default:
		errs = append(errs, fmt.Errorf("hours source %q: want chatwoot or route", s.Hours.Source))
	}
	if s.Hours.Source == "chatwoot" && s.Hours.Timezone != "" {
		errs = append(errs, errors.New("hours: chatwoot's inbox has its own timezone"))
	}
	if s.Summary.Timeout < 0 || time.Duration(s.Summary.Timeout) > time.Minute {
		errs = append(errs, errors.New("note_summary.timeout: between 0 and 1m"))
	}
	return errors.Join(errs...)
}

// Marshal is the settings as stored: JSON, "{}" for the defaults.
func (s *Settings) Marshal() string {
	b, err := json.Marshal(s)
	if err != nil {
		return "{}" // only strings, ints and maps of them
	}
	return string(b)
}

// Unmarshal reads stored settings ("" is the defaults).
func Unmarshal(raw string) (Settings, error) {
	var s Settings
	if strings.TrimSpace(raw) == "" {
		return s, nil
	}
	d := json.NewDecoder(strings.NewReader(raw))
	if err := d.Decode(&s); err != nil {
		return s, fmt.Errorf("lifecycle settings: %w", err)
	}
	return s, nil
}

// ParseTable reads a handoff table file: TOML, or JSON when it starts with
// "{". Unknown keys are refused, so a typo never silently does nothing.
//
//	[reasons.customer_asked]
//	team = 2
//	priority = "high"
//	[targets.billing]
//	team = 5
//	labels = ["billing"]
func ParseTable(data []byte) (Table, error) {
	var t Table
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		d := json.NewDecoder(bytes.NewReader(trimmed))
		d.DisallowUnknownFields()
		if err := d.Decode(&t); err != nil {
			return t, fmt.Errorf("handoff table (JSON): %w", err)
		}
		return t, nil
	}
	d := toml.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(&t); err != nil {
		return t, fmt.Errorf("handoff table (TOML): %w", err)
	}
	return t, nil
}

// SortedKeys returns a map's keys in order, for stable output.
func SortedKeys(m map[string]Assign) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Duration is a time.Duration written as "30m" in JSON and TOML.
type Duration time.Duration

// MarshalText writes the duration as Go does ("30m0s").
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads "30m", "2h", or "1d".
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	*d = Duration(v)
	return err
}

// ParseDuration is time.ParseDuration that also takes whole days ("7d").
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if n, ok := strings.CutSuffix(s, "d"); ok {
		var days int
		if _, err := fmt.Sscanf(n, "%d", &days); err != nil || days <= 0 || fmt.Sprint(days) != n {
			return 0, fmt.Errorf("bad duration %q: want e.g. 30m, 24h or 7d", s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("bad duration %q: want e.g. 30m, 24h or 7d", s)
	}
	return v, nil
}

func cmpOr(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
