package cmd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/bridge-dev/bridge/pkg/store"
)

type migrateOptions struct {
	from, to string
}

func newMigrateCmd(a *app) *cobra.Command {
	o := &migrateOptions{}
	c := &cobra.Command{
		Use:   "migrate --from DATABASE --to DATABASE",
		Short: "Copy the journal, routes and conversations into another database (SQLite to PostgreSQL)",
		Long: `Copy routes, conversations and the journal (events, their traces, posts and
intents, ids kept) from one database into another: a SQLite file into a
PostgreSQL database that several 'bridge serve' processes will share.

Stop 'bridge serve' on the source first. Events it was driving are copied as
waiting, and the destination's serve resumes them. The destination is created
or migrated to this bridge's schema; one that already holds a journal of its
own is refused.

The copy goes in batches that commit one by one: interrupted, run the same
command again and it goes on where it stopped; run again after it finished, it
changes nothing. At the end every table is compared (rows, sums of its key and
time columns), a table that differs is copied again, and the comparison is
printed. Exit 1 when a table still differs.

Then point 'database' (or BRIDGE_DATABASE) at the destination and start serve.`,
		Example: `  bridge migrate --from /var/lib/bridge/bridge.db --to "postgres://bridge:PASSWORD@db:5432/bridge?sslmode=require"
  bridge migrate --from bridge.db --to "$BRIDGE_DATABASE" --json`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return runMigrate(c.Context(), a, o) },
	}
	f := c.Flags()
	f.StringVar(&o.from, "from", "", "the database to copy: a SQLite file (or a postgres:// URL)")
	f.StringVar(&o.to, "to", "", "the database to copy into: a postgres:// URL (or a SQLite file)")
	return c
}

// migrateReport is what migrate prints with --json.
type migrateReport struct {
	From   string             `json:"from"`
	To     string             `json:"to"`
	Same   bool               `json:"same"`
	Tables []store.TableCheck `json:"tables"`
}

func runMigrate(ctx context.Context, a *app, o *migrateOptions) error {
	const example = `bridge migrate --from bridge.db --to "postgres://bridge:PASSWORD@db:5432/bridge"`
	switch {
	case a.dbPath != "":
		return usagef(example, "migrate takes --from and --to, not --db")
	case o.from == "" || o.to == "":
		return usagef(example, "migrate needs --from and --to")
	case o.from == o.to:
		return usagef(example, "--from and --to name the same database")
	}
	// A password in either URL is a secret like the tokens.
	for _, d := range []string{o.from, o.to} {
		if p := store.URLPassword(d); p != "" {
			a.red.Add(p)
		}
	}
	from, to := dbDisplay(o.from), dbDisplay(o.to)
	if !store.IsPostgres(o.from) {
		if _, err := os.Stat(store.SQLitePath(o.from)); err != nil {
			return usagef(example, "--from %s: %v", from, pathErr(err))
		}
	}
	src, err := store.OpenReadOnly(ctx, o.from)
	if errors.Is(err, store.ErrSchemaBehind) {
		// Written by an older bridge: bring it to this one's schema, as
		// serve would, so that every column exists.
		src, err = store.Open(ctx, o.from, store.WithRedactor(a.red.String))
	}
	if err != nil {
		return fmt.Errorf("open --from: %w", err)
	}
	defer src.Close()
	dst, err := store.Open(ctx, o.to, store.WithRedactor(a.red.String))
	if err != nil {
		return fmt.Errorf("open --to: %w", err)
	}
	defer dst.Close()

	if !a.json {
		fmt.Fprintf(a.io.Err, "Copying %s into %s\n", from, to)
	}
	progress := newProgress(a)
	checks, err := store.Copy(ctx, src, dst, store.CopyOptions{Progress: progress.show})
	progress.done()
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	rep := migrateReport{From: from, To: to, Same: true, Tables: checks}
	for _, c := range checks {
		rep.Same = rep.Same && c.Same
	}
	if a.json {
		if err := a.printJSON(rep); err != nil {
			return err
		}
	} else {
		rows := make([][]string, len(checks))
		for i, c := range checks {
			same := "same"
			if !c.Same {
				same = "DIFFERS"
			}
			rows[i] = []string{c.Table, strconv.FormatInt(c.Source, 10), strconv.FormatInt(c.Dest, 10), strconv.FormatInt(c.Copied, 10), same}
		}
		a.table([]string{"table", "source", "destination", "copied now", "check"}, rows, -1)
	}
	if !rep.Same {
		return &failedError{msg: "some tables differ between the two databases: is bridge serve still running on the source? Stop it and run migrate again"}
	}
	if !a.json {
		fmt.Fprintf(a.io.Out, "Every table has the same rows in both databases. Point database at %s and start bridge serve.\n", to)
	}
	return nil
}

// progress shows how far the copy is on stderr: one line rewritten in
// place on a terminal, else a line per table every tenth of it.
type progress struct {
	a     *app
	tty   bool
	table string
	shown int64 // last tenth printed (not a terminal)
	last  time.Time
	open  bool // a line is being rewritten
}

func newProgress(a *app) *progress { return &progress{a: a, tty: isTerminal(a.io.Err)} }

func (p *progress) show(c store.CopyProgress) {
	if p.a.json {
		return
	}
	pct := int64(100)
	if c.Total > 0 {
		pct = 100 * c.Done / c.Total
	}
	line := fmt.Sprintf("  %-13s %d of %d rows (%d%%)", c.Table, c.Done, c.Total, pct)
	if p.tty {
		if c.Table == p.table && c.Done < c.Total && time.Since(p.last) < 100*time.Millisecond {
			return
		}
		if p.open && c.Table != p.table {
			fmt.Fprintln(p.a.io.Err)
		}
		fmt.Fprintf(p.a.io.Err, "\r\033[K%s", line)
		p.table, p.last, p.open = c.Table, time.Now(), true
		return
	}
	if c.Table != p.table {
		p.table, p.shown = c.Table, -1
	}
	if tenth := pct / 10; tenth > p.shown {
		p.shown = tenth
		fmt.Fprintln(p.a.io.Err, line)
	}
}

func (p *progress) done() {
	if p.open {
		fmt.Fprintln(p.a.io.Err)
		p.open = false
	}
}
