package cmd

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"

	"github.com/bridge-dev/bridge/pkg/config"
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
// stable, tab-separated lines for scripts.
func (a *app) table(header []string, rows [][]string) {
	if !isTerminal(a.io.Out) {
		tw := tabwriter.NewWriter(a.io.Out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, strings.Join(header, "\t"))
		for _, r := range rows {
			fmt.Fprintln(tw, strings.Join(r, "\t"))
		}
		_ = tw.Flush() // writes to our own stream; nothing useful to do on error
		return
	}
	st := a.styles()
	tw := tabwriter.NewWriter(a.io.Out, 0, 4, 2, ' ', 0)
	h := make([]string, len(header))
	for i, c := range header {
		h[i] = strings.ToUpper(c)
	}
	fmt.Fprintln(tw, st.bold.Render(strings.Join(h, "\t")))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	_ = tw.Flush() // as above
}

// newLogger builds the one logger of a command: JSON when stderr is not a
// terminal or log_format is json, text otherwise.
func newLogger(w io.Writer, level, format string, tty bool) *slog.Logger {
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
	opts := &slog.HandlerOptions{Level: &lv, ReplaceAttr: maskAttr}
	if format == "json" || !tty {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// maskAttr is the second net under config.Secret: any attribute whose key
// looks like it holds a credential is masked whatever its type.
func maskAttr(_ []string, a slog.Attr) slog.Attr {
	k := strings.ToLower(a.Key)
	for _, s := range []string{"token", "secret", "key", "authorization", "password"} {
		if strings.Contains(k, s) {
			if a.Value.Kind() == slog.KindString || a.Value.Kind() == slog.KindAny {
				return slog.String(a.Key, config.Mask(a.Value.String()))
			}
		}
	}
	return a
}
