package cmd

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/term"
	"github.com/muesli/termenv"

	"github.com/bridge-dev/bridge/internal/text"
	"github.com/bridge-dev/bridge/pkg/config"
	"github.com/bridge-dev/bridge/pkg/redact"
)

// IO is where a command reads and writes. Tests pass buffers.
type IO struct {
	In  io.Reader
	Out io.Writer
	Err io.Writer
}

// SystemIO is the process's standard streams.
func SystemIO() IO { return IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr} }

// styles are the few styles bridge uses; on a pipe, a buffer, with
// --no-color or NO_COLOR they render plain text.
type styles struct {
	ok, warn, bad, dim, bold lipgloss.Style
	color                    bool
}

func (a *app) styles() styles {
	r := lipgloss.NewRenderer(a.io.Out)
	color := !a.noColor && os.Getenv("NO_COLOR") == "" && isTerminal(a.io.Out)
	if !color {
		r.SetColorProfile(termenv.Ascii)
	}
	return styles{
		ok:    r.NewStyle().Foreground(lipgloss.Color("2")),
		warn:  r.NewStyle().Foreground(lipgloss.Color("3")),
		bad:   r.NewStyle().Foreground(lipgloss.Color("1")).Bold(true),
		dim:   r.NewStyle().Faint(true),
		bold:  r.NewStyle().Bold(true),
		color: color,
	}
}

// printJSON writes v as indented JSON with sorted keys (maps) and a newline.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.io.Out)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// table prints rows aligned in columns: a readable table on a terminal and
// stable, space-aligned lines for scripts. On a terminal the header is
// upper-case and bold, and the cells of column cut (-1: none) are shortened
// so that lines fit the terminal; scripts get every cell in full.
func (a *app) table(header []string, rows [][]string, cut int) {
	if !isTerminal(a.io.Out) {
		_, _ = io.WriteString(a.io.Out, renderTable(header, rows, -1, 0, nil)) // our own stream; nothing to do on error
		return
	}
	h := make([]string, len(header))
	for i, c := range header {
		h[i] = strings.ToUpper(c)
	}
	st := a.styles()
	_, _ = io.WriteString(a.io.Out, renderTable(h, rows, cut, terminalWidth(a.io.Out), st.bold.Render)) // as above
}

// tableGap separates columns.
const tableGap = 2

// renderTable lays out header and rows in columns whose widths are measured
// on the plain text, so that styling the header (with style, after the
// layout) cannot shift them. With width > 0 the cells of column cut are
// shortened with "…" until lines fit, down to the column's header width.
func renderTable(header []string, rows [][]string, cut, width int, style func(...string) string) string {
	widths := make([]int, len(header))
	measure := func(r []string) {
		for i, c := range r {
			if i < len(widths) {
				widths[i] = max(widths[i], lipgloss.Width(c))
			}
		}
	}
	measure(header)
	for _, r := range rows {
		measure(r)
	}
	if width > 0 && cut >= 0 && cut < len(widths) {
		total := 0
		for i, w := range widths {
			total += w
			if i < len(widths)-1 {
				total += tableGap
			}
		}
		if over := total - width; over > 0 {
			widths[cut] = max(lipgloss.Width(header[cut]), widths[cut]-over)
		}
	}
	var b strings.Builder
	line := func(r []string, style func(...string) string) {
		var l strings.Builder
		for i, c := range r {
			if i >= len(widths) {
				break
			}
			if lipgloss.Width(c) > widths[i] {
				c = text.Cut(c, widths[i])
			}
			l.WriteString(c)
			if i < len(r)-1 {
				l.WriteString(strings.Repeat(" ", widths[i]-lipgloss.Width(c)+tableGap))
			}
		}
		out := l.String()
		if style != nil {
			out = style(out)
		}
		b.WriteString(out)
		b.WriteByte('\n')
	}
	line(header, style)
	for _, r := range rows {
		line(r, nil)
	}
	return b.String()
}

// terminalWidth is the width of the terminal w writes to; COLUMNS when it
// cannot be asked, 0 (no limit) when neither says.
func terminalWidth(w any) int {
	if f, ok := w.(*os.File); ok {
		if cols, _, err := term.GetSize(f.Fd()); err == nil && cols > 0 {
			return cols
		}
	}
	if n, err := strconv.Atoi(os.Getenv("COLUMNS")); err == nil && n > 0 {
		return n
	}
	return 0
}

// newLogger builds the one logger of a command: JSON when stderr is not a
// terminal or log_format is json, text otherwise. red (nil: the patterns
// only) masks the secrets it knows wherever they appear in a value.
func newLogger(w io.Writer, level, format string, tty bool, red *redact.Redactor) *slog.Logger {
	var lv slog.LevelVar
	switch level {
	case "debug":
		lv.Set(slog.LevelDebug)
	case "warn":
		lv.Set(slog.LevelWarn)
	case "error":
		lv.Set(slog.LevelError)
	default:
		lv.Set(slog.LevelInfo)
	}
	opts := &slog.HandlerOptions{Level: &lv, ReplaceAttr: maskAttr(red)}
	if format == "json" || !tty {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// maskAttr is the second net under config.Secret: any attribute whose key
// looks like it holds a credential is masked whatever its type, and every
// text or error value is masked where it contains a configured secret or
// something shaped like one (an upstream's error body may echo a token).
func maskAttr(red *redact.Redactor) func([]string, slog.Attr) slog.Attr {
	return func(_ []string, a slog.Attr) slog.Attr {
		k := strings.ToLower(a.Key)
		for _, s := range []string{"token", "secret", "key", "authorization", "password"} {
			if strings.Contains(k, s) {
				if a.Value.Kind() == slog.KindString || a.Value.Kind() == slog.KindAny {
					return slog.String(a.Key, config.Mask(a.Value.String()))
				}
			}
		}
		var s string
		switch a.Value.Kind() {
		case slog.KindString:
			s = a.Value.String()
		case slog.KindAny:
			err, ok := a.Value.Any().(error)
			if !ok {
				return a
			}
			s = err.Error()
		default:
			return a
		}
		if m := red.String(s); m != s || a.Value.Kind() == slog.KindAny {
			return slog.String(a.Key, m)
		}
		return a
	}
}
