package lifecycle

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	// Timezones must resolve on hosts and containers without zoneinfo.
	_ "time/tzdata"
)

// Day is one weekday's opening, as Chatwoot keeps it (one span a day:
// WorkingHour has a single open and close time, close after open).
type Day struct {
	Closed     bool
	Open, Shut int // minutes after midnight; Shut is the last open minute
}

// Week holds the seven days, Sunday first (Ruby's wday, Chatwoot's
// day_of_week).
type Week [7]Day

// Schedule is a week in a timezone.
type Schedule struct {
	Week Week
	Loc  *time.Location
}

var dayNames = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// ParseWeek reads "mon-fri 09:00-17:00, sat 10:00-13:00": days not named
// are closed. A range of days may wrap (fri-mon).
func ParseWeek(spec string) (Week, error) {
	var w Week
	for i := range w {
		w[i].Closed = true
	}
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return w, fmt.Errorf("empty week: want e.g. %q", "mon-fri 09:00-17:00")
	}
	for part := range strings.SplitSeq(spec, ",") {
		f := strings.Fields(strings.ToLower(part))
		if len(f) != 2 {
			return w, fmt.Errorf("bad opening %q: want days and hours, e.g. %q", strings.TrimSpace(part), "mon-fri 09:00-17:00")
		}
		days, err := parseDays(f[0])
		if err != nil {
			return w, err
		}
		open, shut, err := parseSpan(f[1])
		if err != nil {
			return w, err
		}
		for _, d := range days {
			w[d] = Day{Open: open, Shut: shut}
		}
	}
	return w, nil
}

func dayIndex(s string) (int, error) {
	for i, n := range dayNames {
		if s == n {
			return i, nil
		}
	}
	return 0, fmt.Errorf("bad day %q: want mon, tue, wed, thu, fri, sat or sun", s)
}

func parseDays(s string) ([]int, error) {
	from, to, isRange := strings.Cut(s, "-")
	a, err := dayIndex(from)
	if err != nil {
		return nil, err
	}
	if !isRange {
		return []int{a}, nil
	}
	b, err := dayIndex(to)
	if err != nil {
		return nil, err
	}
	out := []int{a}
	for d := a; d != b; {
		d = (d + 1) % 7
		out = append(out, d)
	}
	return out, nil
}

func parseClock(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || hh < 0 || hh > 24 || mm < 0 || mm > 59 || (hh == 24 && mm != 0) {
		return 0, fmt.Errorf("bad time %q: want HH:MM", s)
	}
	return hh*60 + mm, nil
}

func parseSpan(s string) (int, int, error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, fmt.Errorf("bad hours %q: want e.g. 09:00-17:00", s)
	}
	open, err := parseClock(a)
	if err != nil {
		return 0, 0, err
	}
	shut, err := parseClock(b)
	if err != nil {
		return 0, 0, err
	}
	if shut <= open {
		return 0, 0, fmt.Errorf("bad hours %q: closing must come after opening (one span a day)", s)
	}
	// 17:00 written means open until 16:59 inclusive.
	return open, shut - 1, nil
}

// String writes the week back in ParseWeek's form, days grouped.
func (w Week) String() string {
	var parts []string
	order := []int{1, 2, 3, 4, 5, 6, 0}
	for i := 0; i < len(order); {
		d := w[order[i]]
		j := i + 1
		for j < len(order) && w[order[j]] == d {
			j++
		}
		if !d.Closed {
			days := dayNames[order[i]]
			if j-i > 1 {
				days += "-" + dayNames[order[j-1]]
			}
			parts = append(parts, fmt.Sprintf("%s %s-%s", days, clock(d.Open), clock(d.Shut+1)))
		}
		i = j
	}
	if len(parts) == 0 {
		return "closed every day"
	}
	return strings.Join(parts, ", ")
}

func clock(m int) string { return fmt.Sprintf("%02d:%02d", m/60, m%60) }

// LoadLocation resolves a timezone: an IANA name, as Chatwoot's inbox
// settings store it ("America/Los_Angeles"; "UTC" by default). "" is UTC.
func LoadLocation(name string) (*time.Location, error) {
	if name == "" {
		return time.UTC, nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("unknown timezone %q: want an IANA name such as Europe/Paris", name)
	}
	return loc, nil
}

// OpenAt reports whether people are there at t. Like Chatwoot's
// WorkingHour#open_at?, the closing minute still counts as open.
func (s Schedule) OpenAt(t time.Time) bool {
	t = t.In(s.Loc)
	d := s.Week[int(t.Weekday())]
	m := t.Hour()*60 + t.Minute()
	return !d.Closed && m >= d.Open && m <= d.Shut
}

// NextOpen is the next time at or after t when people are there; ok is
// false when the week has no opening at all.
func (s Schedule) NextOpen(t time.Time) (time.Time, bool) {
	if s.OpenAt(t) {
		return t, true
	}
	t = t.In(s.Loc)
	for i := 0; i <= 7; i++ {
		day := time.Date(t.Year(), t.Month(), t.Day()+i, 0, 0, 0, 0, s.Loc)
		d := s.Week[int(day.Weekday())]
		if d.Closed {
			continue
		}
		open := time.Date(day.Year(), day.Month(), day.Day(), d.Open/60, d.Open%60, 0, 0, s.Loc)
		if open.After(t) {
			return open, true
		}
	}
	return time.Time{}, false
}

// Describe says when next is, for a customer reading it at now: "today at
// 09:00", "tomorrow at 09:00" or "on Monday at 09:00", with the timezone.
func (s Schedule) Describe(now, next time.Time) string {
	now, next = now.In(s.Loc), next.In(s.Loc)
	y1, m1, d1 := now.Date()
	y2, m2, d2 := next.Date()
	days := int(time.Date(y2, m2, d2, 0, 0, 0, 0, time.UTC).Sub(time.Date(y1, m1, d1, 0, 0, 0, 0, time.UTC)).Hours() / 24)
	when := "on " + next.Weekday().String()
	switch days {
	case 0:
		when = "today"
	case 1:
		when = "tomorrow"
	}
	return fmt.Sprintf("%s at %s (%s)", when, next.Format("15:04"), s.Loc.String())
}

// ChatwootDay is one entry of an inbox's working_hours as the inbox API
// renders it (Inbox#weekly_schedule, app/models/concerns/out_of_offisable.rb).
type ChatwootDay struct {
	DayOfWeek    int  `json:"day_of_week"`
	ClosedAllDay bool `json:"closed_all_day"`
	OpenAllDay   bool `json:"open_all_day"`
	OpenHour     *int `json:"open_hour"`
	OpenMinutes  *int `json:"open_minutes"`
	CloseHour    *int `json:"close_hour"`
	CloseMinutes *int `json:"close_minutes"`
}

// FromChatwoot builds a week from an inbox's working_hours. A day Chatwoot
// does not list is closed; open_all_day is 00:00 to 23:59, as
// WorkingHour#ensure_open_all_day_hours stores it.
func FromChatwoot(days []ChatwootDay) Week {
	var w Week
	for i := range w {
		w[i].Closed = true
	}
	v := func(p *int) int {
		if p == nil {
			return 0
		}
		return *p
	}
	for _, d := range days {
		if d.DayOfWeek < 0 || d.DayOfWeek > 6 {
			continue
		}
		switch {
		case d.ClosedAllDay:
			w[d.DayOfWeek] = Day{Closed: true}
		case d.OpenAllDay:
			w[d.DayOfWeek] = Day{Open: 0, Shut: 23*60 + 59}
		default:
			open, shut := v(d.OpenHour)*60+v(d.OpenMinutes), v(d.CloseHour)*60+v(d.CloseMinutes)
			if shut < open || d.OpenHour == nil || d.CloseHour == nil {
				w[d.DayOfWeek] = Day{Closed: true}
				continue
			}
			w[d.DayOfWeek] = Day{Open: open, Shut: shut}
		}
	}
	return w
}

// ClosedMessage renders the out-of-hours handoff message.
func ClosedMessage(tmpl, nextOpen string, askEmail bool) string {
	if tmpl == "" {
		tmpl = DefaultClosed
	}
	if nextOpen == "" {
		nextOpen = "as soon as they can"
	}
	msg := strings.ReplaceAll(tmpl, "{next_open}", nextOpen)
	if askEmail {
		msg += " " + AskEmailText
	}
	return msg
}
