// Package cmd holds bridge's commands: one file per command (or group), plus
// this root (the command tree, global flags, error to exit code), app.go
// (configuration and the database, as every command gets them) and io.go
// (output). Commands wire flags to the packages and print; the logic lives
// in pkg/.
package cmd

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/bridge-dev/bridge/internal/buildinfo"
	"github.com/bridge-dev/bridge/internal/text"
	"github.com/bridge-dev/bridge/pkg/config"
	"github.com/bridge-dev/bridge/pkg/redact"
)

// Exit codes (SPEC section 3).
const (
	ExitOK      = 0
	ExitFailed  = 1
	ExitUsage   = 2
	exitSilent1 = 1
)

// usageError is a mistake in how a command was called: exit 2 and a hint.
type usageError struct {
	msg  string
	hint string
}

func (e *usageError) Error() string { return e.msg }

func usagef(hint, format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...), hint: hint}
}

// failedError means the command ran and failed; its output already said why.
// code is the exit status (ExitFailed when 0).
type failedError struct {
	msg  string
	code int
}

func (e *failedError) Error() string { return e.msg }

// Execute runs bridge with args and returns the exit code.
func Execute(ctx context.Context, args []string, io IO) int {
	root := NewRoot(io, viper.New())
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	return report(io, root, err)
}

// report prints err once and maps it to an exit code; the one place that
// does either.
func report(io IO, root *cobra.Command, err error) int {
	var ue *usageError
	var ce *config.Error
	var fe *failedError
	switch {
	case errors.As(err, &fe):
		if fe.msg != "" {
			fmt.Fprintln(io.Err, "Error:", fe.msg)
		}
		if fe.code != 0 {
			return fe.code
		}
		return ExitFailed
	case errors.As(err, &ue):
		fmt.Fprintln(io.Err, "Error:", ue.msg)
		if ue.hint != "" {
			fmt.Fprintln(io.Err, "Try:", ue.hint)
		}
		return ExitUsage
	case errors.As(err, &ce), errors.Is(err, config.ErrNotFound):
		fmt.Fprintln(io.Err, "Error: config:", err)
		return ExitUsage
	case isCobraUsage(err):
		fmt.Fprintln(io.Err, "Error:", err)
		fmt.Fprintln(io.Err, "Try: bridge --help")
		return ExitUsage
	}
	fmt.Fprintln(io.Err, "Error:", err)
	return ExitFailed
}

// isCobraUsage recognises the usage errors cobra itself returns (argument
// counts, unknown commands at the root).
func isCobraUsage(err error) bool {
	s := err.Error()
	for _, p := range []string{"unknown command", "accepts ", "requires at least", "requires at most",
		"unknown flag", "unknown shorthand flag", "flag needs an argument", "invalid argument", "required flag",
		"if any flags in the group"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

// NewRoot builds a fresh command tree; nothing is global, so tests can build
// as many as they like.
func NewRoot(io IO, v *viper.Viper) *cobra.Command {
	return newRoot(io, v, time.Now)
}

// newRoot is NewRoot with the clock of the output.
func newRoot(io IO, v *viper.Viper, now func() time.Time) *cobra.Command {
	a := &app{io: io, v: v, now: now, red: redact.New()}
	root := &cobra.Command{
		Use:   "bridge",
		Short: tagline + ": answer Chatwoot help-desk conversations with Dify AI apps",
		Long: tagline + `: answers Chatwoot conversations with Dify apps.
(Not iproute2's bridge(8), the Linux network bridge tool.)

Chatwoot POSTs webhooks to 'bridge serve'; bridge journals each one (in SQLite,
or PostgreSQL for several serve processes) before it acknowledges, asks the Dify app the inbox is routed to, and posts the
answer back. When the customer asks for a person, the AI asks for help, or the
AI fails, the conversation goes to a human agent (status open, with a private
note saying why).

Start with 'bridge demo' (needs nothing), then 'bridge routes add' and
'bridge serve'. When the bot is silent, run 'bridge doctor'.`,
		Version:       buildinfo.Get().Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Example: `  bridge demo
  bridge routes add --inbox 3 --dify-key-env DIFY_SUPPORT_KEY
  bridge serve
  bridge doctor`,
	}
	root.SetVersionTemplate(versionLine() + "\n")
	root.PersistentPreRun = func(c *cobra.Command, _ []string) { a.cmd = c }
	root.SetIn(io.In)
	root.SetOut(io.Out)
	root.SetErr(io.Err)
	a.root = root
	pf := root.PersistentFlags()
	pf.StringVar(&a.configPath, "config", "", "config file (default ./bridge.toml, then $XDG_CONFIG_HOME/bridge/bridge.toml)")
	pf.StringVar(&a.dbPath, "db", "", "database file or postgres:// URL (overrides the database key)")
	pf.BoolVar(&a.noColor, "no-color", false, "no colour in output (also NO_COLOR)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return flagError(c, err)
	})
	root.SuggestionsMinimumDistance = 2
	root.AddCommand(
		newServeCmd(a),
		newDemoCmd(a),
		a.jsonFlag(newRoutesCmd(a)),
		a.jsonFlag(newConversationsCmd(a)),
		a.jsonFlag(newEventsCmd(a)),
		a.jsonFlag(newStatsCmd(a)),
		a.jsonFlag(newVersionCmd(a)),
		a.jsonFlag(newReplayCmd(a)),
		a.jsonFlag(newBenchCmd(a)),
		a.jsonFlag(newDoctorCmd(a)),
		a.jsonFlag(newConfigCmd(a)),
		a.jsonFlag(newMigrateCmd(a)),
		newManCmd(a),
	)
	root.InitDefaultCompletionCmd()
	registerCompletions(a, root)
	return root
}

// jsonFlag gives c (and, for a group, its subcommands) --json. Only
// commands that print JSON have the flag, so elsewhere it is an unknown
// flag rather than silently ignored.
func (a *app) jsonFlag(c *cobra.Command) *cobra.Command {
	fs := c.Flags()
	if c.HasSubCommands() {
		fs = c.PersistentFlags()
	}
	fs.BoolVar(&a.json, "json", false, "machine-readable JSON output")
	return c
}

// flagError turns a pflag error into a usage error with the closest flag.
func flagError(c *cobra.Command, err error) error {
	msg := err.Error()
	name := ""
	if i := strings.Index(msg, "unknown flag: --"); i >= 0 {
		name = strings.Fields(msg[i+len("unknown flag: --"):])[0]
	}
	if name != "" {
		if s := closestFlag(c, name); s != "" {
			return usagef(fmt.Sprintf("%s --%s (see '%s --help')", c.CommandPath(), s, c.CommandPath()), "%s", msg)
		}
	}
	return usagef(fmt.Sprintf("%s --help", c.CommandPath()), "%s", msg)
}

func closestFlag(c *cobra.Command, name string) string {
	best, bestD := "", 3
	visit := func(f *pflag.Flag) {
		if d := text.Distance(name, f.Name); d < bestD || (d == bestD && best == "") && d <= 2 {
			best, bestD = f.Name, d
		}
		if strings.HasPrefix(f.Name, name) && best == "" {
			best = f.Name
		}
	}
	c.Flags().VisitAll(visit)
	c.InheritedFlags().VisitAll(visit)
	if bestD > 2 && !strings.HasPrefix(best, name) {
		return ""
	}
	return best
}

// groupRunE makes a group command (routes, events, conversations) report an
// unknown subcommand with a suggestion, which cobra does only at the root.
func groupRunE(c *cobra.Command, args []string) error {
	if len(args) == 0 {
		return c.Help()
	}
	if c.SuggestionsMinimumDistance <= 0 {
		c.SuggestionsMinimumDistance = 2
	}
	var hint string
	if sug := c.SuggestionsFor(args[0]); len(sug) > 0 {
		// cobra lists every near name in command order; hint the closest.
		hint = c.CommandPath() + " " + text.Closest(args[0], sug, 1<<20) // all of them are near
	} else {
		var names []string
		for _, sc := range c.Commands() {
			if sc.IsAvailableCommand() {
				names = append(names, sc.Name())
			}
		}
		sort.Strings(names)
		hint = c.CommandPath() + " " + strings.Join(names, "|")
	}
	return usagef(hint, "unknown command %q for %q", args[0], c.CommandPath())
}
