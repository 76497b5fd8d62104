// Package cmd holds bridge's commands: one file per command, plus this root
// (global flags, configuration, error to exit code) and io.go (output).
package cmd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/bridge-dev/bridge/internal/buildinfo"
	"github.com/bridge-dev/bridge/internal/text"
	"github.com/bridge-dev/bridge/pkg/config"
	"github.com/bridge-dev/bridge/pkg/store"
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

// app is what every command shares: IO, viper, global flags, and openers.
type app struct {
	io   IO
	v    *viper.Viper
	root *cobra.Command

	configPath string
	dbPath     string
	json       bool
	noColor    bool

	cfg    *config.Config
	logger *slog.Logger

	// now is the clock of the output: --since windows, and the time zone
	// (its location) in which times are shown. Tests fix it.
	now func() time.Time

	// cmd is the command being run, for its flags.
	cmd *cobra.Command
}

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
	a := &app{io: io, v: v, now: now}
	root := &cobra.Command{
		Use:   "bridge",
		Short: tagline + ": answer Chatwoot help-desk conversations with Dify AI apps",
		Long: tagline + `: answers Chatwoot conversations with Dify apps.
(Not iproute2's bridge(8), the Linux network bridge tool.)

Chatwoot POSTs webhooks to 'bridge serve'; bridge journals each one in SQLite
before it acknowledges, asks the Dify app the inbox is routed to, and posts the
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
	pf.StringVar(&a.dbPath, "db", "", "database file (overrides the database key)")
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
		a.jsonFlag(newVersionCmd(a)),
		a.jsonFlag(newReplayCmd(a)),
		a.jsonFlag(newBenchCmd(a)),
		a.jsonFlag(newDoctorCmd(a)),
		a.jsonFlag(newConfigCmd(a)),
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

// flagKeys are the flags that set a configuration key.
var flagKeys = map[string]string{"db": "database", "listen": "listen"}

// config loads the configuration once: flags > environment > file > default.
// Warnings (a misspelt BRIDGE_* variable) go to stderr.
func (a *app) config() (*config.Config, error) {
	if a.cfg != nil {
		return a.cfg, nil
	}
	flags := map[string]string{}
	for name, key := range flagKeys {
		var f *pflag.Flag
		if a.cmd != nil {
			f = a.cmd.Flags().Lookup(name)
		}
		if f == nil {
			f = a.root.PersistentFlags().Lookup(name)
		}
		if f == nil || !f.Changed {
			continue
		}
		if err := a.v.BindPFlag(key, f); err != nil {
			return nil, err
		}
		flags[key] = "--" + name
	}
	cfg, err := config.LoadWithFlags(a.v, a.configPath, a.configPath != "", flags)
	var ce *config.Error
	if errors.As(err, &ce) && ce.Flag != "" {
		// A bad flag value is the command line's fault, not the file's.
		hint := "bridge --help"
		if a.cmd != nil {
			hint = a.cmd.CommandPath() + " --help"
		}
		return nil, usagef(hint, "%s", err)
	}
	if err != nil {
		return nil, err
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintln(a.io.Err, "Warning:", w)
	}
	a.cfg = cfg
	return cfg, nil
}

// How a command uses the database.
type storeUse int

const (
	// readStore: the command only reads; the database must exist and is
	// opened read-only.
	readStore storeUse = iota
	// writeStore: the command changes an existing database.
	writeStore
	// createStore: the command may create the database (serve, routes add).
	createStore
)

// openStore opens the configured database for use. Only createStore may
// create it: a wrong path must not turn into an empty view of a new file.
func (a *app) openStore(ctx context.Context, use storeUse) (*store.DB, error) {
	cfg, err := a.config()
	if err != nil {
		return nil, err
	}
	path := cfg.Database
	if use != createStore {
		if _, err := os.Stat(path); err != nil {
			return nil, a.noDatabase(cfg, err)
		}
	}
	if use == readStore {
		db, err := store.OpenReadOnly(ctx, path)
		if !errors.Is(err, store.ErrSchemaBehind) {
			return db, err
		}
		// An upgraded binary before its first serve: migrate, as serve would.
	}
	return store.Open(ctx, path)
}

// noDatabase explains a database path that cannot be used, naming where the
// path came from so the operator knows what to correct.
func (a *app) noDatabase(cfg *config.Config, err error) error {
	src := cfg.Source("database")
	why := "does not exist"
	if !errors.Is(err, fs.ErrNotExist) {
		why = "cannot be read: " + pathErr(err).Error()
	}
	var from, fix string
	switch src.Kind {
	case config.FromFlag:
		from, fix = "from "+src.Name, "correct --db"
	case config.FromEnv:
		from, fix = "from "+src.Name, "correct "+src.Name
	case config.FromFile:
		from, fix = "from the database key in "+src.Name, "correct the database key in "+src.Name
	default:
		from, fix = "the default, relative to "+workDir(), "run in the directory of your bridge.db, or give --db or --config"
	}
	return usagef(fix+"; only 'bridge serve' and 'bridge routes add' create a database",
		"database %s %s (path %s)", absPath(cfg.Database), why, from)
}

func workDir() string {
	if wd, err := os.Getwd(); err == nil {
		return wd
	}
	return "the working directory"
}

// log returns the logger built from the configuration (to stderr).
func (a *app) log() *slog.Logger {
	if a.logger != nil {
		return a.logger
	}
	level, format := "info", "text"
	if a.cfg != nil {
		level, format = a.cfg.LogLevel, a.cfg.LogFormat
	}
	a.logger = newLogger(a.io.Err, level, format, isTerminal(a.io.Err))
	return a.logger
}

func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// localTime is t in the time zone of the output.
func (a *app) localTime(t time.Time) time.Time { return t.In(a.now().Location()) }

// absPath shows a path as the operator would want to find it.
func absPath(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}
