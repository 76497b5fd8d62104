package cmd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/bridge-dev/bridge/pkg/config"
	"github.com/bridge-dev/bridge/pkg/redact"
	"github.com/bridge-dev/bridge/pkg/store"
)

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
	// red masks the configured secrets (and anything shaped like one) in
	// logs, stored text and output; it learns them when the config loads.
	red *redact.Redactor

	// now is the clock of the output: --since windows, and the time zone
	// (its location) in which times are shown. Tests fix it.
	now func() time.Time

	// cmd is the command being run, for its flags.
	cmd *cobra.Command
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
	a.red.Add(cfg.Secrets()...)
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
	if use != createStore && !store.IsPostgres(path) {
		if _, err := os.Stat(store.SQLitePath(path)); err != nil {
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
	return store.Open(ctx, path, store.WithRedactor(a.red.String))
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
		from, fix = "is the default, relative to "+workDir(), "run in the directory of your bridge.db, or give --db or --config"
	}
	return usagef(fix+"; only 'bridge serve' and 'bridge routes add' create a database",
		"database %s %s (the path %s)", dbDisplay(cfg.Database), why, from)
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
	a.logger = newLogger(a.io.Err, level, format, isTerminal(a.io.Err), a.red)
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

// dbDisplay is the database setting as output shows it: a SQLite file by
// its absolute path, a PostgreSQL URL with its password masked.
func dbDisplay(database string) string {
	if store.IsPostgres(database) {
		return store.Display(database)
	}
	return absPath(store.SQLitePath(database))
}
