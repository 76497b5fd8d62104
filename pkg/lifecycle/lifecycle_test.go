package lifecycle

import (
	"strings"
	"testing"
	"time"
)

func TestParseWeekAndBack(t *testing.T) {
	w, err := ParseWeek("mon-fri 09:00-17:00, sat 10:00-13:00")
	if err != nil {
		t.Fatal(err)
	}
	if !w[0].Closed || w[1].Closed || w[6].Open != 600 || w[6].Shut != 779 {
		t.Fatalf("week %+v", w)
	}
	if got := w.String(); got != "mon-fri 09:00-17:00, sat 10:00-13:00" {
		t.Fatalf("String = %q", got)
	}
	if w2, err := ParseWeek("fri-mon 08:00-12:00"); err != nil || w2[2].Closed != true || w2[0].Closed || w2[5].Closed {
		t.Fatalf("wrapping range: %+v %v", w2, err)
	}
	for _, bad := range []string{"", "mon", "mon 17:00-09:00", "xyz 09:00-10:00", "mon 9-10", "mon 25:00-26:00"} {
		if _, err := ParseWeek(bad); err == nil {
			t.Errorf("ParseWeek(%q) accepted", bad)
		}
	}
}

func TestScheduleOpenAndNext(t *testing.T) {
	loc, err := LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	w, _ := ParseWeek("mon-fri 09:00-17:00")
	s := Schedule{Week: w, Loc: loc}
	// Saturday 2026-03-07 03:00 Paris: closed; next is Monday 09:00.
	sat := time.Date(2026, 3, 7, 3, 0, 0, 0, loc)
	if s.OpenAt(sat) {
		t.Fatal("open on a Saturday night")
	}
	next, ok := s.NextOpen(sat)
	if !ok || !next.Equal(time.Date(2026, 3, 9, 9, 0, 0, 0, loc)) {
		t.Fatalf("next open %v %v", next, ok)
	}
	if got := s.Describe(sat, next); got != "on Monday at 09:00 (Europe/Paris)" {
		t.Fatalf("describe %q", got)
	}
	// Tuesday 3 a.m. in Paris is Monday evening in UTC terms: the zone counts.
	tue := time.Date(2026, 3, 10, 2, 0, 0, 0, time.UTC)
	next, _ = s.NextOpen(tue)
	if got := s.Describe(tue, next); got != "today at 09:00 (Europe/Paris)" {
		t.Fatalf("describe %q", got)
	}
	mon := time.Date(2026, 3, 9, 16, 59, 0, 0, loc)
	if !s.OpenAt(mon) || s.OpenAt(mon.Add(time.Minute)) {
		t.Fatal("17:00 closing: 16:59 open, 17:00 closed")
	}
	next, _ = s.NextOpen(mon.Add(time.Minute))
	if got := s.Describe(mon.Add(time.Minute), next); got != "tomorrow at 09:00 (Europe/Paris)" {
		t.Fatalf("describe %q", got)
	}
	closed := Schedule{Week: Week{{Closed: true}, {Closed: true}, {Closed: true}, {Closed: true}, {Closed: true}, {Closed: true}, {Closed: true}}, Loc: loc}
	if _, ok := closed.NextOpen(sat); ok {
		t.Fatal("a week without openings has a next opening")
	}
}

func TestFromChatwoot(t *testing.T) {
	i := func(v int) *int { return &v }
	// Chatwoot's default week (OutOfOffisable#create_default_working_hours).
	days := []ChatwootDay{{DayOfWeek: 0, ClosedAllDay: true}, {DayOfWeek: 6, ClosedAllDay: true}, {DayOfWeek: 3, OpenAllDay: true}}
	for d := 1; d <= 5; d++ {
		if d != 3 {
			days = append(days, ChatwootDay{DayOfWeek: d, OpenHour: i(9), OpenMinutes: i(0), CloseHour: i(17), CloseMinutes: i(30)})
		}
	}
	w := FromChatwoot(days)
	if !w[0].Closed || !w[6].Closed || w[3].Open != 0 || w[3].Shut != 23*60+59 || w[1].Shut != 17*60+30 {
		t.Fatalf("week %+v", w)
	}
	s := Schedule{Week: w, Loc: time.UTC}
	// WorkingHour#open_at? is between?(open, close): the closing minute counts.
	if !s.OpenAt(time.Date(2026, 3, 9, 17, 30, 0, 0, time.UTC)) || s.OpenAt(time.Date(2026, 3, 9, 17, 31, 0, 0, time.UTC)) {
		t.Fatal("closing minute")
	}
}

func TestValidate(t *testing.T) {
	s := Settings{
		Handoff: Table{
			Reasons: map[string]Assign{"Customer_Asked": {Team: 2, Priority: "HIGH", Labels: []string{" vip ", ""}}},
			Targets: map[string]Assign{"Billing": {Team: 5}},
		},
		Return: "idle", IdleAfter: Duration(30 * time.Minute),
		Memory: Memory{AfterHandoff: "Summary"},
		Hours:  Hours{Source: "route", Week: "mon-fri 09:00-17:00", Timezone: "Europe/Paris"},
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	a := s.AssignFor(Assign{Team: 1, Labels: []string{"bot"}}, ReasonCustomerAsked, "billing")
	if a.Team != 5 || a.Priority != "high" || strings.Join(a.Labels, ",") != "vip" {
		t.Fatalf("assign %+v", a)
	}
	if a := s.AssignFor(Assign{Team: 1}, ReasonAIFailed, "unknown"); a.Team != 1 || a.Priority != "" {
		t.Fatalf("fallback %+v", a)
	}
	back, err := Unmarshal(s.Marshal())
	if err != nil || back.Marshal() != s.Marshal() || back.MemoryAfterHandoff() != MemorySummary {
		t.Fatalf("round trip: %v %s", err, back.Marshal())
	}
	bad := []Settings{
		{Return: "sometimes"},
		{Return: "idle"},
		{Return: "pending", IdleAfter: Duration(time.Hour)},
		{Memory: Memory{AfterResolve: "forget"}},
		{Handoff: Table{Reasons: map[string]Assign{"angry": {}}}},
		{Handoff: Table{Targets: map[string]Assign{"bad name": {}}}},
		{Handoff: Table{Reasons: map[string]Assign{"ai_failed": {Priority: "asap"}}}},
		{Hours: Hours{Source: "route", Week: "mon 10:00-09:00"}},
		{Hours: Hours{Source: "route", Week: "mon 09:00-10:00", Timezone: "Mars/Olympus"}},
		{Hours: Hours{Source: "moon"}},
	}
	for i, b := range bad {
		if err := b.Validate(); err == nil {
			t.Errorf("bad settings %d accepted: %+v", i, b)
		}
	}
	var zero Settings
	if zero.Marshal() != "{}" || zero.ReturnRule() != ReturnPending || zero.MemoryAfterResolve() != MemoryFresh || zero.MemoryAfterHandoff() != MemorySame {
		t.Fatalf("defaults: %s", zero.Marshal())
	}
}

func TestParseTable(t *testing.T) {
	toml := `
[reasons.ai_failed]
team = 3
priority = "urgent"
[targets.billing]
agent = 12
labels = ["billing"]
`
	tb, err := ParseTable([]byte(toml))
	if err != nil || tb.Reasons["ai_failed"].Team != 3 || tb.Targets["billing"].Agent != 12 {
		t.Fatalf("toml: %+v %v", tb, err)
	}
	tb, err = ParseTable([]byte(`{"targets":{"billing":{"team":5}}}`))
	if err != nil || tb.Targets["billing"].Team != 5 {
		t.Fatalf("json: %+v %v", tb, err)
	}
	if _, err := ParseTable([]byte("[reasons.ai_failed]\nteem = 3\n")); err == nil {
		t.Fatal("a typo in a TOML key was accepted")
	}
	if _, err := ParseTable([]byte(`{"reason":{}}`)); err == nil {
		t.Fatal("a typo in a JSON key was accepted")
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"7d": 7 * 24 * time.Hour, "30m": 30 * time.Minute, "1h30m": 90 * time.Minute} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("%s: %v %v", in, got, err)
		}
	}
	for _, bad := range []string{"d", "-1d", "1.5d", "soon", "-5m"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestClosedMessage(t *testing.T) {
	got := ClosedMessage("", "tomorrow at 09:00 (UTC)", true)
	if !strings.Contains(got, "back tomorrow at 09:00 (UTC)") || !strings.HasSuffix(got, AskEmailText) {
		t.Fatalf("%q", got)
	}
	if got := ClosedMessage("Closed. Back {next_open}.", "today at 14:00 (UTC)", false); got != "Closed. Back today at 14:00 (UTC)." {
		t.Fatalf("%q", got)
	}
}
