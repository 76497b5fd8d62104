package cmd

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

var reANSI = regexp.MustCompile("\x1b\\[[0-9;]*m")

// TestTableAlignsStyledHeader: the header is styled after the layout, so
// escape codes cannot push the columns of the rows out of line, and a long
// cell of the cut column is shortened to the width.
func TestTableAlignsStyledHeader(t *testing.T) {
	bold := func(s ...string) string { return "\x1b[1m" + strings.Join(s, " ") + "\x1b[0m" }
	header := []string{"ID", "STATUS", "REASON", "TEXT"}
	rows := [][]string{
		{"1", "answered", "-", "Where is my order?"},
		{"12", "handed_off", `customer asked for a human: "Please let me talk to a human, I have been waiting for days"`, "Please…"},
		{"123", "failed", "dify 401 unauthorized", "Hi"},
	}
	const width = 60
	out := renderTable(header, rows, 2, width, bold)
	if !strings.Contains(out, "\x1b[1m") {
		t.Fatalf("header not styled:\n%q", out)
	}
	lines := strings.Split(strings.TrimSuffix(reANSI.ReplaceAllString(out, ""), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines:\n%s", len(lines), out)
	}
	starts := func(l string, cells []string) []int {
		var at []int
		pos := 0
		for _, c := range cells {
			i := strings.Index(l[pos:], c)
			if i < 0 {
				return nil
			}
			at = append(at, utf8.RuneCountInString(l[:pos+i]))
			pos += i + len(c)
		}
		return at
	}
	want := starts(lines[0], header)
	for i, l := range lines {
		if n := utf8.RuneCountInString(l); n > width {
			t.Errorf("line %d is %d wide, over %d: %q", i, n, width, l)
		}
		if i == 0 {
			continue
		}
		cells := []string{rows[i-1][0], rows[i-1][1], strings.TrimSuffix(strings.Fields(l)[2], "…"), rows[i-1][3]}
		if got := starts(l, cells); len(got) != 4 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] || got[3] != want[3] {
			t.Errorf("line %d columns start at %v, header at %v:\n%s\n%s", i, got, want, lines[0], l)
		}
	}
	if !strings.Contains(lines[2], "…") || strings.Contains(lines[2], "waiting for days") {
		t.Errorf("long reason not cut: %q", lines[2])
	}
	// Without a width (a pipe) every cell is whole.
	if plain := renderTable(header, rows, 2, 0, nil); !strings.Contains(plain, "waiting for days") {
		t.Errorf("a pipe lost text:\n%s", plain)
	}
}
