// Package text shapes strings for one-line output: the CLI's tables and
// messages, and the journal's details.
package text

import (
	"strings"
	"unicode/utf8"
)

// OneLine collapses runs of white space (newlines included) to one space
// and cuts s to n runes, marking a cut with "…".
func OneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) > n {
		r := []rune(s)
		return string(r[:n]) + "…"
	}
	return s
}

// Printable shows the first n bytes of a body safely on a terminal: invalid
// UTF-8 and control characters other than newline and tab become "?".
func Printable(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	s := strings.ToValidUTF8(string(b), "?")
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\n' && r != '\t' || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
