// Package doctor checks everything bridge needs (configuration, database,
// Chatwoot, Dify, the journal) and says what to fix.
package doctor

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bridge-dev/bridge/internal/netaddr"
	"github.com/bridge-dev/bridge/internal/text"
	"github.com/bridge-dev/bridge/pkg/bridge"
	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/config"
	"github.com/bridge-dev/bridge/pkg/dify"
	"github.com/bridge-dev/bridge/pkg/store"
)

// Status is the outcome of one doctor check.
type Status string

// Check outcomes: ✓, ! and ✗ in the checklist.
const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Result is one line of `bridge doctor`: what was checked, how it went,
// one line of detail and, for a warning or a failure, what to do about it.
type Result struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix"`
}

// Doctor's thresholds.
const (
	// doctorSilence is how long without any webhook doctor accepts while
	// enabled routes exist.
	doctorSilence = 24 * time.Hour
	// doctorStuck is how long an event may wait `accepted` before doctor
	// suspects that no worker is running.
	doctorStuck        = 5 * time.Minute
	doctorRecent       = 24 * time.Hour     // failed and rejected events
	doctorUnroutedSpan = 7 * 24 * time.Hour // ignored no_route events
	doctorClockWarn    = time.Minute
	// doctorClockFail is the freshness window of signed deliveries.
	doctorClockFail = 5 * time.Minute
)

// Options is what doctor checks. cmd builds them from the
// configuration; tests point them at the simulators.
type Options struct {
	// Store is the open database; nil when it could not be opened, in which
	// case StoreErr says why.
	Store    *store.DB
	StoreErr error
	// Chatwoot carries chatwoot.api_token (agent bot or user token);
	// ChatwootUser, when not nil, carries chatwoot.user_token.
	Chatwoot     *chatwoot.Client
	ChatwootUser *chatwoot.Client
	// APITokenEmpty says chatwoot.api_token is not set, so the token is
	// reported missing instead of probed.
	APITokenEmpty bool
	// AccountID is the Chatwoot account; 0 learns it from the journal or
	// from the user token's profile.
	AccountID int64
	// PublicURL is how Chatwoot reaches bridge ("" when not configured).
	PublicURL string
	// DifyBaseURL is the Dify API of routes without their own URL.
	DifyBaseURL string
	// BotStatuses are the conversation statuses bridge answers in
	// (default ["pending"]).
	BotStatuses []string
	// HandoffLabels are the [handoff] labels; labels need a user token.
	HandoffLabels []string
	// WebhookSecret and WebhookToken say whether chatwoot.webhook_secret and
	// chatwoot.webhook_token are set.
	WebhookSecret, WebhookToken bool
	// Getenv reads the variables of --dify-key-env routes (default os.Getenv).
	Getenv func(string) string
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Lookup resolves public_url's host (default net.DefaultResolver).
	Lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	// HTTPClient makes the probes that the API clients do not cover (GET
	// /api with its Date header) and the Dify calls; nil uses a default.
	HTTPClient *http.Client
	// Timeout bounds each probe (default 5s), so doctor answers in seconds
	// even when a host accepts connections and never answers.
	Timeout time.Duration
	// ConfigChecks come first: loading the configuration and the
	// permissions of its file, which cmd checks.
	ConfigChecks []Result
	// DifyTimeout is dify.timeout (default 120s): an event `working` with no
	// progress for longer than a whole Dify exchange may take is stuck.
	DifyTimeout time.Duration
}

func (o *Options) defaults() {
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Lookup == nil {
		o.Lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.HTTPClient == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.ResponseHeaderTimeout = o.Timeout
		o.HTTPClient = &http.Client{Transport: tr, Timeout: o.Timeout}
	}
	if len(o.BotStatuses) == 0 {
		o.BotStatuses = []string{"pending"}
	}
	if o.DifyTimeout <= 0 {
		o.DifyTimeout = 120 * time.Second
	}
}

// Doctor runs every check and returns the results in a stable order:
// configuration, database, routes, Chatwoot (reachability, tokens, account,
// labels), webhook authentication, clock, public_url, each routed inbox,
// each route's Dify app, then what the journal says (silence, rejected
// webhooks, inboxes without a route, failed and stuck events). Network
// probes run in parallel, each bounded by o.Timeout.
func Run(ctx context.Context, o Options) []Result {
	o.defaults()
	d := &doctor{o: o, now: o.Now().UTC()}
	out := slices.Clone(o.ConfigChecks)

	out = append(out, d.database(ctx)...)
	out = append(out, d.routesCheck())

	var wg sync.WaitGroup
	var cw chatwootReport
	var addr addrReport
	difyResults := make([]Result, len(d.enabled))
	wg.Go(func() { cw = d.chatwoot(ctx) })
	wg.Go(func() { addr = d.resolvePublic(ctx) })
	for i := range d.enabled {
		wg.Go(func() { difyResults[i] = d.difyRoute(ctx, &d.enabled[i]) })
	}
	wg.Wait()

	out = append(out, cw.checks...)
	out = append(out, d.webhookAuth(addr))
	if !cw.date.IsZero() {
		out = append(out, d.clock(cw.date))
	}
	out = append(out, d.publicURL(addr, cw.version))
	out = append(out, cw.inboxes...)
	out = append(out, difyResults...)
	if o.Store != nil {
		out = append(out, d.journal(ctx)...)
	}
	return out
}

type doctor struct {
	o   Options
	now time.Time

	routes  []store.Route
	enabled []store.Route
	// routesErr is set when the routes could not be read.
	routesErr error
	// journalAccount is the account of the newest webhook that named one.
	journalAccount int64
}

func okResult(name, detail string) Result {
	return Result{Name: name, Status: OK, Detail: detail}
}

func warnResult(name, detail, fix string) Result {
	return Result{Name: name, Status: Warn, Detail: detail, Fix: fix}
}

func failResult(name, detail, fix string) Result {
	return Result{Name: name, Status: Fail, Detail: detail, Fix: fix}
}

// probe bounds one network call.
func (d *doctor) probe(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d.o.Timeout)
}

// ---- database ----

func (d *doctor) database(ctx context.Context) []Result {
	db := d.o.Store
	if db == nil {
		err := d.o.StoreErr
		if err == nil {
			err = errors.New("no database configured")
		}
		fix := "check the database key (or --db) and the permissions of the file and its directory"
		if errors.Is(err, fs.ErrNotExist) {
			fix = "run bridge where its database is, point --db or the database key at it, or create it with: bridge routes add --inbox ID --dify-key-env VAR"
		}
		d.routesErr = err
		return []Result{failResult("database", text.OneLine(err.Error(), 300), fix)}
	}
	var out []Result
	pctx, cancel := d.probe(ctx)
	defer cancel()
	if err := db.Ping(pctx); err != nil {
		out = append(out, failResult("database", db.Path+" is not writable: "+text.OneLine(err.Error(), 300),
			"check the permissions of the file and its directory, free disk space, and that no other program holds a lock on it"))
	} else {
		out = append(out, okResult("database", db.Path+" opens and is writable"))
	}
	// Opening the store tightens the file to 0600; a file it could not
	// change (another owner) stays readable by others.
	if fi, err := os.Stat(db.Path); db.Backend() == "sqlite" && err == nil && fi.Mode().Perm()&0o077 != 0 {
		out = append(out, warnResult("database file", fmt.Sprintf("%s is readable by group or others (mode %04o): it holds customer messages and may hold Dify keys",
			db.Path, fi.Mode().Perm()), fmt.Sprintf("chmod 600 %s %s-wal %s-shm (as its owner)", db.Path, db.Path, db.Path)))
	}
	applied, known, err := db.SchemaVersion(pctx)
	switch {
	case err != nil:
		out = append(out, failResult("schema", text.OneLine(err.Error(), 300), "the file may not be a bridge database: check the database key"))
	case applied > known:
		out = append(out, failResult("schema", fmt.Sprintf("version %d is newer than this bridge knows (%d)", applied, known),
			"upgrade bridge to the version that last wrote this database"))
	case applied < known:
		out = append(out, failResult("schema", fmt.Sprintf("version %d, this bridge needs %d", applied, known),
			"run bridge serve once so it applies the migrations, and check the file is writable"))
	default:
		out = append(out, okResult("schema", fmt.Sprintf("version %d, current", applied)))
	}
	d.routes, d.routesErr = db.Routes(pctx)
	for _, r := range d.routes {
		if r.Enabled {
			d.enabled = append(d.enabled, r)
		}
	}
	// The account of the newest webhook, for when chatwoot.account_id is not set.
	err = db.Reader().QueryRowContext(pctx,
		"SELECT account_id FROM events WHERE account_id != 0 ORDER BY id DESC LIMIT 1").Scan(&d.journalAccount)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		d.journalAccount = 0
	}
	return out
}

func (d *doctor) routesCheck() Result {
	const fix = "bridge routes add --inbox ID --dify-key-env VAR"
	switch {
	case d.o.Store == nil:
		return failResult("routes", "not checked: the database did not open", "fix the database check above")
	case d.routesErr != nil:
		return failResult("routes", "cannot read routes: "+text.OneLine(d.routesErr.Error(), 300), "check the database key (or --db)")
	case len(d.routes) == 0:
		return failResult("routes", "none: bridge answers no inbox", fix)
	case len(d.enabled) == 0:
		return failResult("routes", fmt.Sprintf("all %d disabled: bridge answers no inbox", len(d.routes)), "bridge routes enable ID")
	}
	inboxes := make([]string, len(d.enabled))
	for i, r := range d.enabled {
		inboxes[i] = strconv.FormatInt(r.InboxID, 10)
	}
	detail := fmt.Sprintf("%d enabled (inbox %s)", len(d.enabled), strings.Join(inboxes, ", "))
	if n := len(d.routes) - len(d.enabled); n > 0 {
		detail += fmt.Sprintf(", %d disabled", n)
	}
	return okResult("routes", detail)
}

// ---- Chatwoot ----

type chatwootReport struct {
	checks  []Result // chatwoot, tokens, account, labels
	inboxes []Result
	version string    // "" when unknown
	date    time.Time // Chatwoot's clock, zero when unknown
}

// apiInfo is GET /api, which needs no token.
type apiInfo struct {
	Version       string `json:"version"`
	QueueServices string `json:"queue_services"`
	DataServices  string `json:"data_services"`
}

// getAPI reads GET {base}/api and the Date header of the answer.
func (d *doctor) getAPI(ctx context.Context, base string) (*apiInfo, time.Time, int, error) {
	ctx, cancel := d.probe(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/api", nil)
	if err != nil {
		return nil, time.Time{}, 0, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := d.o.HTTPClient.Do(req)
	if err != nil {
		return nil, time.Time{}, 0, err
	}
	defer resp.Body.Close()
	date, _ := http.ParseTime(resp.Header.Get("Date")) // a missing or odd Date only skips the clock check
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, date, resp.StatusCode, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, date, resp.StatusCode, nil
	}
	var info apiInfo
	if json.Unmarshal(body, &info) != nil || info.Version == "" {
		return nil, date, resp.StatusCode, nil
	}
	return &info, date, resp.StatusCode, nil
}

// netErrText says what went wrong with a call that got no answer.
func (d *doctor) netErrText(err error) string {
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		return fmt.Sprintf("no answer within %s", d.o.Timeout)
	}
	return text.OneLine(err.Error(), 300)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// tokenKind is what a Chatwoot token turned out to be.
type tokenKind int

const (
	tokenUnknown tokenKind = iota
	tokenBot
	tokenUser
)

func (d *doctor) chatwoot(ctx context.Context) chatwootReport {
	var rep chatwootReport
	cw := d.o.Chatwoot
	if cw == nil || cw.BaseURL() == "" {
		rep.checks = append(rep.checks, failResult("chatwoot", "chatwoot.base_url is not set", "set chatwoot.base_url, e.g. https://chatwoot.example.com"))
		return rep
	}
	base := cw.BaseURL()
	info, date, status, err := d.getAPI(ctx, base)
	rep.date = date
	switch {
	case err != nil && status == 0:
		rep.checks = append(rep.checks, failResult("chatwoot", fmt.Sprintf("cannot reach %s: %s (tokens, account and inboxes not checked)", base, d.netErrText(err)),
			"check chatwoot.base_url and that this host reaches Chatwoot (DNS, firewall, TLS)"))
		return rep
	case info == nil:
		rep.checks = append(rep.checks, failResult("chatwoot", fmt.Sprintf("%s/api answered HTTP %d, not Chatwoot's version", base, status),
			"set chatwoot.base_url to Chatwoot's root URL (without /app or /api/v1)"))
	case info.QueueServices != "ok" || info.DataServices != "ok":
		rep.version = info.Version
		rep.checks = append(rep.checks, warnResult("chatwoot", fmt.Sprintf("%s is Chatwoot %s but reports queue_services %q, data_services %q", base, info.Version, info.QueueServices, info.DataServices),
			"Chatwoot's Redis, Sidekiq or database is unhealthy; webhooks are sent by Sidekiq, so check those services"))
	default:
		rep.version = info.Version
		rep.checks = append(rep.checks, okResult("chatwoot", fmt.Sprintf("%s reachable, version %s", base, info.Version)))
	}

	// The api_token: a user token reads its profile; a bot token is refused
	// there with a message of its own, which proves it valid.
	kind := tokenUnknown
	var profile *chatwoot.Profile
	switch {
	case d.o.APITokenEmpty:
		rep.checks = append(rep.checks, failResult("chatwoot token", "chatwoot.api_token is not set",
			"set chatwoot.api_token (BRIDGE_CHATWOOT_API_TOKEN) to the agent bot's access token (Settings › Bots)"))
	default:
		pctx, cancel := d.probe(ctx)
		p, err := cw.Profile(pctx)
		cancel()
		switch {
		case err == nil:
			kind, profile = tokenUser, p
			rep.checks = append(rep.checks, okResult("chatwoot token", fmt.Sprintf("valid user token of %s (%s)", text.Or(p.Name, "user "+strconv.FormatInt(p.ID, 10)), text.Or(p.Role, "agent"))))
		case chatwoot.IsBotOnly(err):
			kind = tokenBot
			rep.checks = append(rep.checks, okResult("chatwoot token", "valid agent bot token (a bot cannot set labels: handoff.labels needs chatwoot.user_token)"))
		case errors.Is(err, chatwoot.ErrUnauthorized):
			rep.checks = append(rep.checks, failResult("chatwoot token", "chatwoot.api_token was rejected: "+text.OneLine(err.Error(), 300),
				"set chatwoot.api_token to the agent bot's access token (Settings › Bots) or a user's (Profile settings › Access token)"))
		default:
			rep.checks = append(rep.checks, failResult("chatwoot token", "cannot check chatwoot.api_token: "+d.netErrText(err),
				"check that Chatwoot answers GET /api/v1/profile"))
			if status == 0 || isTimeout(err) || errors.Is(err, context.DeadlineExceeded) {
				return rep
			}
		}
	}

	// The user token, when one is configured.
	var userProfile *chatwoot.Profile
	if d.o.ChatwootUser != nil {
		pctx, cancel := d.probe(ctx)
		p, err := d.o.ChatwootUser.Profile(pctx)
		cancel()
		switch {
		case err == nil:
			userProfile = p
			rep.checks = append(rep.checks, okResult("chatwoot user token", fmt.Sprintf("valid user token of %s (%s)", text.Or(p.Name, "user "+strconv.FormatInt(p.ID, 10)), text.Or(p.Role, "agent"))))
		case chatwoot.IsBotOnly(err):
			rep.checks = append(rep.checks, failResult("chatwoot user token", "chatwoot.user_token is an agent bot token, not a user's",
				"set chatwoot.user_token to an administrator's access token (Profile settings › Access token)"))
		case errors.Is(err, chatwoot.ErrUnauthorized):
			rep.checks = append(rep.checks, failResult("chatwoot user token", "chatwoot.user_token was rejected: "+text.OneLine(err.Error(), 300),
				"set chatwoot.user_token to an administrator's access token (Profile settings › Access token)"))
		default:
			rep.checks = append(rep.checks, failResult("chatwoot user token", "cannot check chatwoot.user_token: "+d.netErrText(err),
				"check that Chatwoot answers GET /api/v1/profile"))
		}
	}

	// The account.
	acct, source := d.o.AccountID, "chatwoot.account_id"
	if acct == 0 && d.journalAccount != 0 {
		acct, source = d.journalAccount, "the newest webhook"
	}
	owner := profile
	if userProfile != nil {
		owner = userProfile
	}
	if acct == 0 && owner != nil && len(owner.Accounts) == 1 {
		acct, source = owner.Accounts[0].ID, "the token's only account"
	}
	switch {
	case kind == tokenUnknown && owner == nil:
		// The token check above failed; the account cannot be told apart.
	case acct == 0:
		rep.checks = append(rep.checks, warnResult("chatwoot account", "not checked: chatwoot.account_id is not set and no webhook has named one yet",
			"set chatwoot.account_id to the number in Chatwoot's URLs (/app/accounts/N/...)"))
	case owner != nil && (kind == tokenUser || kind == tokenUnknown):
		rep.checks = append(rep.checks, d.accountOfProfile(owner, acct, source))
	case kind == tokenBot:
		pctx, cancel := d.probe(ctx)
		err := cw.CheckBotToken(pctx, acct)
		cancel()
		switch {
		case err == nil:
			detail := fmt.Sprintf("account %d (from %s): the agent bot token works in it", acct, source)
			if owner != nil {
				if r := d.accountOfProfile(owner, acct, source); r.Status != OK {
					rep.checks = append(rep.checks, r)
					break
				}
			}
			rep.checks = append(rep.checks, okResult("chatwoot account", detail))
		case errors.Is(err, chatwoot.ErrUnauthorized):
			rep.checks = append(rep.checks, failResult("chatwoot account", fmt.Sprintf("account %d (from %s) does not accept the agent bot token: %s", acct, source, text.OneLine(err.Error(), 300)),
				"use the access token of an agent bot of this account, or set chatwoot.account_id to the bot's account"))
		default:
			rep.checks = append(rep.checks, failResult("chatwoot account", fmt.Sprintf("cannot check account %d: %s", acct, d.netErrText(err)),
				"check that Chatwoot answers the API"))
		}
	}

	// Labels on handoff need a user token.
	if d.labelsConfigured() {
		switch {
		case kind == tokenUser || userProfile != nil:
			rep.checks = append(rep.checks, okResult("handoff labels", "a user token is configured, so labels can be set"))
		default:
			rep.checks = append(rep.checks, warnResult("handoff labels", "labels are configured, but an agent bot token cannot set labels and chatwoot.user_token is not set (or not valid)",
				"set chatwoot.user_token to an administrator's access token, or remove handoff.labels and the routes' --handoff-labels"))
		}
	}

	// The routed inboxes need a user token to read.
	if len(d.enabled) == 0 {
		return rep
	}
	admin := d.o.ChatwootUser
	if userProfile == nil {
		admin = nil
		if kind == tokenUser {
			admin = cw
		}
	}
	switch {
	case admin == nil:
		detail := "cannot check without chatwoot.user_token: an agent bot token may not read inboxes, their agent bots or webhooks"
		if d.o.ChatwootUser != nil {
			detail = "cannot check: chatwoot.user_token did not work (see above)"
		}
		rep.inboxes = append(rep.inboxes, warnResult("inboxes", detail,
			"set chatwoot.user_token to an administrator's access token to let doctor check each routed inbox and its agent bot"))
	case acct == 0:
		rep.inboxes = append(rep.inboxes, warnResult("inboxes", "not checked: the account is not known",
			"set chatwoot.account_id"))
	default:
		rep.inboxes = d.inboxes(ctx, admin, acct)
	}
	return rep
}

func (d *doctor) accountOfProfile(p *chatwoot.Profile, acct int64, source string) Result {
	names := make([]string, 0, len(p.Accounts))
	for _, a := range p.Accounts {
		if a.ID == acct {
			return okResult("chatwoot account", fmt.Sprintf("account %d %q (from %s), role %s", acct, a.Name, source, text.Or(a.Role, "agent")))
		}
		names = append(names, fmt.Sprintf("%d %q", a.ID, a.Name))
	}
	return failResult("chatwoot account", fmt.Sprintf("account %d (from %s) is not one of the token user's accounts (%s)", acct, source, text.Or(strings.Join(names, ", "), "none")),
		"set chatwoot.account_id to the account of the routed inboxes, or use a token of a member of that account")
}

func (d *doctor) labelsConfigured() bool {
	if len(d.o.HandoffLabels) > 0 {
		return true
	}
	for _, r := range d.enabled {
		if len(r.HandoffLabels) > 0 {
			return true
		}
	}
	return false
}

// inboxes checks every routed inbox: it exists, and its agent bot (or an
// account webhook) delivers to public_url + /webhooks/chatwoot.
func (d *doctor) inboxes(ctx context.Context, c *chatwoot.Client, acct int64) []Result {
	out := make([]Result, len(d.enabled))
	var hooks []chatwoot.Webhook
	var hooksErr error
	var wg sync.WaitGroup
	type inboxData struct {
		in  *chatwoot.Inbox
		bot *chatwoot.AgentBot
		err error
	}
	data := make([]inboxData, len(d.enabled))
	wg.Go(func() {
		pctx, cancel := d.probe(ctx)
		defer cancel()
		hooks, hooksErr = c.Webhooks(pctx, acct)
	})
	for i, r := range d.enabled {
		wg.Go(func() {
			pctx, cancel := d.probe(ctx)
			defer cancel()
			in, err := c.Inbox(pctx, acct, r.InboxID)
			if err != nil {
				data[i].err = err
				return
			}
			data[i].in = in
			data[i].bot, data[i].err = c.InboxAgentBot(pctx, acct, r.InboxID)
		})
	}
	wg.Wait()
	for i := range d.enabled {
		out[i] = d.inbox(&d.enabled[i], acct, data[i].in, data[i].bot, data[i].err, hooks, hooksErr)
	}
	return out
}

func (d *doctor) expectedWebhook() string {
	if d.o.PublicURL == "" {
		return ""
	}
	return strings.TrimRight(d.o.PublicURL, "/") + bridge.WebhookPath
}

func (d *doctor) inbox(r *store.Route, acct int64, in *chatwoot.Inbox, bot *chatwoot.AgentBot, err error,
	hooks []chatwoot.Webhook, hooksErr error) Result {
	name := fmt.Sprintf("inbox %d", r.InboxID)
	want := d.expectedWebhook()
	wantText := want
	if wantText == "" {
		wantText = "public_url + " + bridge.WebhookPath
	}
	switch {
	case errors.Is(err, chatwoot.ErrNotFound):
		return failResult(name, fmt.Sprintf("route %d's inbox %d does not exist in account %d", r.ID, r.InboxID, acct),
			fmt.Sprintf("check the inbox id (the number in the inbox's URL in Chatwoot), then: bridge routes remove %d; bridge routes add --inbox ID ...", r.ID))
	case err != nil:
		return failResult(name, "cannot read the inbox: "+d.netErrText(err), "check chatwoot.user_token's role: reading inboxes needs an administrator (or an agent of the inbox)")
	}
	label := fmt.Sprintf("%q", in.Name)
	if bot != nil {
		switch {
		case want == "":
			return okResult(name, fmt.Sprintf("%s: agent bot %q sends to %s (public_url not set, so not compared)", label, bot.Name, bot.OutgoingURL))
		case !sameEndpoint(bot.OutgoingURL, want):
			return failResult(name, fmt.Sprintf("%s: agent bot %q sends to %s, not to %s", label, bot.Name, text.Or(bot.OutgoingURL, `""`), want),
				fmt.Sprintf("set the agent bot's outgoing_url to %s (Settings › Bots), or correct public_url if that URL is how Chatwoot reaches bridge", want))
		case d.o.WebhookToken && !hasTokenParam(bot.OutgoingURL):
			return failResult(name, fmt.Sprintf("%s: agent bot %q sends to %s without ?token=, which chatwoot.webhook_token requires: every delivery is refused", label, bot.Name, want),
				fmt.Sprintf("set the agent bot's outgoing_url to %s?token=<chatwoot.webhook_token>", want))
		}
		return okResult(name, fmt.Sprintf("%s: agent bot %q sends to %s", label, bot.Name, want))
	}
	// No agent bot: an account webhook (or the API channel's own callback)
	// may still deliver to bridge.
	via := ""
	if want != "" {
		for _, h := range hooks {
			if sameEndpoint(h.URL, want) && (len(h.Subscriptions) == 0 || slices.Contains(h.Subscriptions, "message_created")) {
				via = fmt.Sprintf("account webhook %d", h.ID)
				break
			}
		}
		if via == "" && in.WebhookURL != "" && sameEndpoint(in.WebhookURL, want) {
			via = "the API inbox's webhook_url"
		}
	}
	if via == "" {
		detail := fmt.Sprintf("%s has no agent bot, and no account webhook sends to %s", label, wantText)
		if hooksErr != nil {
			detail = fmt.Sprintf("%s has no agent bot (account webhooks not readable: %s)", label, text.OneLine(hooksErr.Error(), 300))
		}
		return failResult(name, detail,
			fmt.Sprintf("create an agent bot with outgoing_url %s and attach it to the inbox (Settings › Inboxes › %s › Bot configuration)", wantText, in.Name))
	}
	if r.Mode != store.ModeDraft && !slices.Contains(d.o.BotStatuses, "open") {
		return warnResult(name, fmt.Sprintf("%s: %s reaches bridge, but without an agent bot new conversations start open and chatwoot.bot_statuses is [%s], so bridge ignores them",
			label, via, strings.Join(d.o.BotStatuses, ", ")),
			fmt.Sprintf("attach an agent bot with outgoing_url %s to the inbox (conversations then start pending)", want))
	}
	return okResult(name, fmt.Sprintf("%s: %s sends to %s", label, via, want))
}

// sameEndpoint compares two webhook URLs by scheme, host, port and path,
// ignoring the query (which may carry ?token=).
func sameEndpoint(a, b string) bool {
	ua, err1 := url.Parse(strings.TrimSpace(a))
	ub, err2 := url.Parse(strings.TrimSpace(b))
	if err1 != nil || err2 != nil {
		return false
	}
	norm := func(u *url.URL) string {
		scheme := strings.ToLower(u.Scheme)
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[scheme]
		}
		return scheme + "://" + strings.ToLower(u.Hostname()) + ":" + port + strings.TrimRight(u.EscapedPath(), "/")
	}
	return norm(ua) == norm(ub)
}

func hasTokenParam(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && u.Query().Get("token") != ""
}

// ---- webhook authentication and clock ----

func (d *doctor) webhookAuth(addr addrReport) Result {
	switch {
	case d.o.WebhookSecret && d.o.WebhookToken:
		return okResult("webhook auth", "signatures verified (chatwoot.webhook_secret) and ?token= required (chatwoot.webhook_token)")
	case d.o.WebhookSecret:
		return okResult("webhook auth", "signatures verified (chatwoot.webhook_secret)")
	case d.o.WebhookToken:
		return okResult("webhook auth", "?token= required (chatwoot.webhook_token)")
	}
	const (
		detail = "neither chatwoot.webhook_secret nor chatwoot.webhook_token is set: anyone who reaches bridge can make it answer"
		fix    = "set chatwoot.webhook_secret to the agent bot's secret (Chatwoot 4.13+), or set chatwoot.webhook_token and add ?token=... to the bot's outgoing_url"
	)
	if addr.public() {
		// The body names the account and conversation bridge posts into:
		// on a public address anyone can make it post anywhere.
		return failResult("webhook auth", detail+", and public_url "+d.o.PublicURL+" is a public address", fix)
	}
	return warnResult("webhook auth", detail, fix)
}

func (d *doctor) clock(theirs time.Time) Result {
	skew := d.now.Sub(theirs)
	abs := skew.Abs()
	rel := "ahead of"
	if skew < 0 {
		rel = "behind"
	}
	detail := fmt.Sprintf("this host's clock is %s %s Chatwoot's", abs.Round(time.Second), rel)
	const fix = "synchronise the clocks (NTP, chrony or systemd-timesyncd) on this host and on Chatwoot's"
	switch {
	case abs > doctorClockFail && d.o.WebhookSecret:
		return failResult("clock", detail+": signed webhooks older than 5 minutes are refused, so every delivery fails", fix)
	case abs > doctorClockWarn:
		return warnResult("clock", detail+" (signed webhooks allow 5 minutes)", fix)
	}
	return okResult("clock", "within a minute of Chatwoot's")
}

// ---- public_url ----

type addrReport struct {
	host    string
	literal bool
	addrs   []netip.Addr
	err     error
}

// public reports whether public_url resolved to at least one public address.
func (r addrReport) public() bool {
	for _, a := range r.addrs {
		if !privateAddr(a) {
			return true
		}
	}
	return false
}

func (d *doctor) resolvePublic(ctx context.Context) addrReport {
	u, err := url.Parse(d.o.PublicURL)
	if d.o.PublicURL == "" || err != nil || u.Hostname() == "" {
		return addrReport{}
	}
	host := u.Hostname()
	if a, err := netip.ParseAddr(host); err == nil {
		return addrReport{host: host, literal: true, addrs: []netip.Addr{a}}
	}
	pctx, cancel := d.probe(ctx)
	defer cancel()
	addrs, err := d.o.Lookup(pctx, host)
	return addrReport{host: host, addrs: addrs, err: err}
}

func (d *doctor) publicURL(r addrReport, version string) Result {
	const name = "public url"
	pub := d.o.PublicURL
	if pub == "" {
		return warnResult(name, "public_url is not set, so doctor cannot check how Chatwoot reaches bridge",
			"set public_url to the address Chatwoot uses to reach bridge, e.g. https://bridge.example.com (the webhook is public_url + "+bridge.WebhookPath+")")
	}
	u, err := url.Parse(pub)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return failResult(name, fmt.Sprintf("public_url %q is not an http(s) URL with a host", pub), "set public_url to e.g. https://bridge.example.com")
	}
	var why string
	switch {
	case r.literal && privateAddr(r.addrs[0]):
		why = fmt.Sprintf("%s is a private address", r.host)
	case r.literal:
		return okResult(name, fmt.Sprintf("%s is a public address", pub))
	case r.err != nil || len(r.addrs) == 0:
		if !strings.Contains(strings.TrimSuffix(r.host, "."), ".") {
			why = fmt.Sprintf("%q is a single-label hostname that does not resolve to a public address", r.host)
			break
		}
		msg := "no addresses"
		if r.err != nil {
			msg = d.netErrText(r.err)
		}
		return warnResult(name, fmt.Sprintf("%s: %s does not resolve from here (%s)", pub, r.host, msg),
			"make "+r.host+" resolve in public DNS (Chatwoot resolves it before each delivery), or set public_url to the address Chatwoot reaches bridge at")
	default:
		var public, private []string
		for _, a := range r.addrs {
			if privateAddr(a) {
				private = append(private, a.String())
			} else {
				public = append(public, a.String())
			}
		}
		if len(public) > 0 {
			return okResult(name, fmt.Sprintf("%s resolves to public %s", pub, strings.Join(public, ", ")))
		}
		why = fmt.Sprintf("%s resolves only to private addresses (%s)", r.host, strings.Join(private, ", "))
	}
	known, atLeast := versionAtLeast(version, 4, 14, 0)
	if known && !atLeast {
		return warnResult(name, fmt.Sprintf("%s: %s; Chatwoot %s still delivers to it (its UI rejects private addresses and hostnames without a dot, but its API accepts them), but Chatwoot 4.14 and later refuse such addresses", pub, why, version),
			"before upgrading Chatwoot, give bridge a public address, or be ready to set SAFE_FETCH_ALLOW_PRIVATE_NETWORK=true in the environment of both Chatwoot's web and Sidekiq processes (4.14.1+); create the agent bot through the API if the UI refuses the URL")
	}
	which := "Chatwoot 4.14 and later refuse"
	if known {
		which = "Chatwoot " + version + " refuses"
	}
	return warnResult(name, fmt.Sprintf("%s: %s; %s to deliver webhooks to private, loopback, link-local, CGNAT and container-internal addresses (its Sidekiq log says \"Invalid webhook URL ... has no public ip addresses\")", pub, why, which),
		"give bridge a public address and set public_url to it, or set SAFE_FETCH_ALLOW_PRIVATE_NETWORK=true in the environment of both Chatwoot's web and Sidekiq processes (Chatwoot 4.14.1+) and restart them")
}

// versionAtLeast compares a Chatwoot version such as "4.14.0" (or
// "4.14.0-ce") with major.minor.patch; known is false when v does not parse.
func versionAtLeast(v string, major, minor, patch int) (known, atLeast bool) {
	parts := strings.SplitN(strings.TrimPrefix(strings.TrimSpace(v), "v"), ".", 3)
	if len(parts) < 2 {
		return false, false
	}
	var n [3]int
	for i, p := range parts {
		end := 0
		for end < len(p) && p[end] >= '0' && p[end] <= '9' {
			end++
		}
		if end == 0 {
			return false, false
		}
		n[i], _ = strconv.Atoi(p[:end]) // digits only
	}
	want := [3]int{major, minor, patch}
	for i := range n {
		if n[i] != want[i] {
			return true, n[i] > want[i]
		}
	}
	return true, true
}

// privateAddr reports whether Chatwoot 4.14+ refuses to deliver to a: a
// private, loopback, link-local, CGNAT, documentation, multicast or
// reserved address, in IPv4 or IPv6, including IPv4 ranges embedded in IPv6.
func privateAddr(a netip.Addr) bool { return netaddr.Private(a) }

// ---- Dify ----

// AppModeError is a Dify app whose mode has no chat endpoint.
type AppModeError struct{ Name, Mode string }

func (e *AppModeError) Error() string {
	return fmt.Sprintf("dify app %q is a %s app, which has no chat endpoint: use a chatbot, chatflow or agent app", e.Name, e.Mode)
}

// MissingInputsError is a Dify app whose required inputs a route does not
// supply.
type MissingInputsError struct {
	Name    string
	Missing []string // sorted
}

func (e *MissingInputsError) Error() string {
	return fmt.Sprintf("dify app %q requires inputs the route does not supply: %s (add --inputs '{\"%s\":\"...\"}')",
		e.Name, strings.Join(e.Missing, ", "), e.Missing[0])
}

// VerifyApp checks a Dify app for a route: the key is valid (GET /info),
// the mode has a chat endpoint, and the route supplies every required input
// (GET /parameters). base only names the server in errors. Errors are an
// *AppModeError, a *MissingInputsError, or wrap the client's error (a
// *dify.APIError when Dify answered). The app's parameters come back too.
func VerifyApp(ctx context.Context, c *dify.Client, base string, inputs map[string]string) (*dify.AppInfo, *dify.Parameters, error) {
	info, err := c.Info(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("verify dify key at %s: %w", base, err)
	}
	if !dify.HasChatEndpoint(info.Mode) {
		return nil, nil, &AppModeError{Name: info.Name, Mode: info.Mode}
	}
	params, err := c.Parameters(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("read dify app parameters: %w", err)
	}
	if missing := MissingInputs(params, inputs); len(missing) > 0 {
		return nil, nil, &MissingInputsError{Name: info.Name, Missing: missing}
	}
	return info, params, nil
}

// FileSupport says what an app takes from customers besides text: the file
// types its file upload feature accepts (anything else is named in the
// query instead), and whether its speech to text can hear voice notes.
func FileSupport(p *dify.Parameters) string {
	files := "files: none (upload is off; attachments are named in the question)"
	if types := p.FileUpload.AcceptedTypes(); len(types) > 0 {
		files = "files: " + strings.Join(types, ", ")
	}
	voice := "speech to text: off"
	if p.SpeechToText {
		voice = "speech to text: on (it refuses WhatsApp's audio/ogg voice notes: 415)"
	}
	return files + "; " + voice
}

// MissingInputs lists, sorted, the required inputs of p that inputs lacks.
func MissingInputs(p *dify.Parameters, inputs map[string]string) []string {
	var missing []string
	for _, in := range p.Inputs {
		if !in.Required {
			continue
		}
		if _, ok := inputs[in.Variable]; !ok {
			missing = append(missing, in.Variable)
		}
	}
	slices.Sort(missing)
	return missing
}

func (d *doctor) difyRoute(ctx context.Context, r *store.Route) Result {
	name := fmt.Sprintf("dify route %d", r.ID)
	readd := fmt.Sprintf("bridge routes remove %d, then bridge routes add --inbox %d ...", r.ID, r.InboxID)
	base := r.DifyURL
	if base == "" {
		base = d.o.DifyBaseURL
	}
	if base == "" {
		return failResult(name, "no Dify URL: dify.base_url is empty and the route has no --dify-url", "set dify.base_url, e.g. https://api.dify.ai/v1")
	}
	key := r.DifyKey
	if r.DifyKeyEnv != "" {
		key = d.o.Getenv(r.DifyKeyEnv)
		if key == "" {
			return failResult(name, fmt.Sprintf("the key's environment variable %s is empty", r.DifyKeyEnv),
				fmt.Sprintf("export %s=app-... in the environment of bridge serve (doctor reads its own environment)", r.DifyKeyEnv))
		}
	}
	if key == "" {
		return failResult(name, "the route has no Dify key", readd+" --dify-key-env VAR")
	}
	masked := config.KeyRef(r.DifyKeyEnv, r.DifyKey)
	pctx, cancel := d.probe(ctx)
	defer cancel()
	c := dify.NewClient(dify.Options{BaseURL: base, Key: key, HTTPClient: d.o.HTTPClient})
	info, params, err := VerifyApp(pctx, c, base, r.Inputs)
	var modeErr *AppModeError
	var inErr *MissingInputsError
	var apiErr *dify.APIError
	switch {
	case err == nil:
		return okResult(name, fmt.Sprintf("%q (%s) at %s, key %s; %s", info.Name, info.Mode, base, masked, FileSupport(params)))
	case errors.As(err, &modeErr):
		return failResult(name, fmt.Sprintf("%q is a %s app, which has no chat endpoint", modeErr.Name, modeErr.Mode),
			"route the inbox to a Chatbot, Chatflow or Agent app: "+readd)
	case errors.As(err, &inErr):
		return failResult(name, fmt.Sprintf("%q requires inputs the route does not supply: %s", inErr.Name, strings.Join(inErr.Missing, ", ")),
			fmt.Sprintf("%s --inputs '{\"%s\":\"...\"}'", readd, inErr.Missing[0]))
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusUnauthorized:
		return failResult(name, fmt.Sprintf("Dify at %s rejected the key %s: %s", base, masked, text.Or(apiErr.Message, "401")),
			"the key was deleted or belongs to another Dify: create one under the app's API Access, then "+readd)
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusForbidden:
		return failResult(name, fmt.Sprintf("Dify at %s refuses the app: %s", base, apiErr.Message),
			"in Dify, restore the app or turn its Backend Service API on")
	case errors.As(err, &apiErr) && apiErr.Code == "app_unavailable":
		return failResult(name, fmt.Sprintf("Dify at %s says the app is unavailable: %s", base, apiErr.Message),
			"publish the app in Dify (a chatflow must be published) and check its model settings")
	case errors.As(err, &apiErr):
		return failResult(name, fmt.Sprintf("Dify at %s answered %s", base, text.OneLine(apiErr.Error(), 300)),
			"check that the URL is Dify's service API, ending in /v1")
	}
	return failResult(name, fmt.Sprintf("cannot reach Dify at %s: %s", base, d.netErrText(err)),
		"check dify.base_url (or the route's --dify-url, ending in /v1) and that this host reaches Dify")
}

// ---- the journal ----

func (d *doctor) journal(ctx context.Context) []Result {
	pctx, cancel := d.probe(ctx)
	defer cancel()
	q := d.o.Store.Reader()
	return []Result{
		d.silence(pctx, q),
		d.rejected(pctx, q),
		d.unrouted(pctx, q),
		d.failed(pctx, q),
		d.stuck(pctx, q),
		d.postedAgain(pctx, q),
	}
}

// postedAgain reports posts that were in doubt after a crash and made again
// without knowing whether the first one had reached Chatwoot: a customer may
// have received that message twice. With chatwoot.user_token bridge reads
// the conversation instead of guessing.
func (d *doctor) postedAgain(ctx context.Context, q *store.Reader) Result {
	const name = "posts in doubt"
	var n int
	var newest sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT count(*), max(event_id) FROM hops
		WHERE outcome = 'in doubt: posted again' AND at >= ?`, unixMS(d.now.Add(-doctorRecent))).Scan(&n, &newest); err != nil {
		return failResult(name, "cannot read the journal: "+text.OneLine(err.Error(), 300), "check the database")
	}
	if n == 0 {
		return okResult(name, "none made again without checking in the last 24h")
	}
	detail := fmt.Sprintf("%d %s in doubt after a crash made again without checking Chatwoot in the last 24h (newest in event #%d): a customer may have received it twice",
		n, plural(n, "post", "posts"), newest.Int64)
	if d.o.ChatwootUser != nil {
		return warnResult(name, detail+"; chatwoot.user_token is set now, so the next ones are checked first", "bridge events show "+fmt.Sprint(newest.Int64))
	}
	return warnResult(name, detail, "set chatwoot.user_token (a user access token, preferably an administrator's): bridge then reads the conversation before posting again")
}

func unixMS(t time.Time) int64 { return t.UnixMilli() }

func (d *doctor) silence(ctx context.Context, q *store.Reader) Result {
	const name = "webhooks received"
	var last sql.NullInt64
	var recent int
	if err := q.QueryRowContext(ctx, "SELECT max(received_at), count(CASE WHEN received_at >= ? THEN 1 END) FROM events",
		unixMS(d.now.Add(-doctorSilence))).Scan(&last, &recent); err != nil {
		return failResult(name, "cannot read the journal: "+text.OneLine(err.Error(), 300), "check the database")
	}
	const fix = "send a message to a routed inbox; if nothing arrives, fix the inbox and public url checks above and look in Chatwoot's Sidekiq log for \"Invalid webhook URL\"; is bridge serve running?"
	switch {
	case !last.Valid && len(d.enabled) > 0:
		return warnResult(name, "none ever, although routes exist", fix)
	case !last.Valid:
		return okResult(name, "none yet (no enabled route)")
	}
	age := d.now.Sub(time.UnixMilli(last.Int64))
	if age > doctorSilence && len(d.enabled) > 0 {
		return warnResult(name, fmt.Sprintf("none for %s (last %s ago), although routes exist", agoText(age), agoText(age)), fix)
	}
	return okResult(name, fmt.Sprintf("last %s ago, %d in the last 24h", agoText(age), recent))
}

func (d *doctor) rejected(ctx context.Context, q *store.Reader) Result {
	const name = "rejected webhooks"
	groups, res := recentGroups(ctx, q, name, `SELECT reason, count(*), max(id) FROM events
		WHERE status = 'rejected' AND received_at >= ? GROUP BY reason ORDER BY count(*) DESC, max(id) DESC`,
		unixMS(d.now.Add(-doctorRecent)))
	if groups == nil {
		return res
	}
	return warnResult(name, "in the last 24h: "+groupText(groups),
		fmt.Sprintf("bridge events show %d; a 401 means Chatwoot's token or secret differs from chatwoot.webhook_token / webhook_secret", groups[0].newest))
}

type eventGroup struct {
	key    string
	count  int
	newest int64
}

// recentGroups runs a query of (key, count, newest id) groups over the last
// 24 hours. With no group, or when the journal cannot be read, it returns
// nil and the check's result (ok, or failed).
func recentGroups(ctx context.Context, q *store.Reader, name, query string, args ...any) ([]eventGroup, Result) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, failResult(name, "cannot read the journal: "+text.OneLine(err.Error(), 300), "check the database")
	}
	groups, err := scanGroups(rows)
	if err != nil {
		return nil, failResult(name, "cannot read the journal: "+text.OneLine(err.Error(), 300), "check the database")
	}
	if len(groups) == 0 {
		return nil, okResult(name, "none in the last 24h")
	}
	return groups, Result{}
}

func scanGroups(rows *sql.Rows) ([]eventGroup, error) {
	defer rows.Close()
	var out []eventGroup
	for rows.Next() {
		var g eventGroup
		if err := rows.Scan(&g.key, &g.count, &g.newest); err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, rows.Err()
}

// groupText lists groups as `3× "reason" (newest #12)`, at most five.
func groupText(gs []eventGroup) string {
	parts := make([]string, 0, len(gs))
	for i, g := range gs {
		if i == 5 {
			parts = append(parts, fmt.Sprintf("and %d more reasons", len(gs)-5))
			break
		}
		parts = append(parts, fmt.Sprintf("%d× %q (newest #%d)", g.count, text.OneLine(text.Or(g.key, "no reason"), 120), g.newest))
	}
	return strings.Join(parts, "; ")
}

func (d *doctor) unrouted(ctx context.Context, q *store.Reader) Result {
	const name = "unrouted inboxes"
	rows, err := q.QueryContext(ctx, `SELECT inbox_id, count(*) FROM events
		WHERE status = 'ignored' AND reason = ? AND inbox_id != 0 AND received_at >= ?
		GROUP BY inbox_id ORDER BY inbox_id`, bridge.ReasonNoRoute, unixMS(d.now.Add(-doctorUnroutedSpan)))
	if err != nil {
		return failResult(name, "cannot read the journal: "+text.OneLine(err.Error(), 300), "check the database")
	}
	defer rows.Close()
	routed := map[int64]bool{}
	for _, r := range d.routes {
		routed[r.InboxID] = true
	}
	var parts []string
	var first int64
	for rows.Next() {
		var inbox int64
		var n int
		if err := rows.Scan(&inbox, &n); err != nil {
			return failResult(name, "cannot read the journal: "+text.OneLine(err.Error(), 300), "check the database")
		}
		if routed[inbox] {
			continue // routed since
		}
		if first == 0 {
			first = inbox
		}
		parts = append(parts, fmt.Sprintf("inbox %d (%d %s)", inbox, n, plural(n, "webhook", "webhooks")))
	}
	if err := rows.Err(); err != nil {
		return failResult(name, "cannot read the journal: "+text.OneLine(err.Error(), 300), "check the database")
	}
	if len(parts) == 0 {
		return okResult(name, "no webhooks from inboxes without a route in the last 7 days")
	}
	return warnResult(name, "webhooks from inboxes without a route in the last 7 days: "+strings.Join(parts, ", "),
		fmt.Sprintf("bridge routes add --inbox %d --dify-key-env VAR (or detach the agent bot from inboxes bridge should not answer)", first))
}

func (d *doctor) failed(ctx context.Context, q *store.Reader) Result {
	const name = "failed events"
	groups, res := recentGroups(ctx, q, name, `SELECT last_error, count(*), max(id) FROM events
		WHERE status = 'failed' AND (finished_at >= ? OR received_at >= ?)
		GROUP BY last_error ORDER BY max(id) DESC`, unixMS(d.now.Add(-doctorRecent)), unixMS(d.now.Add(-doctorRecent)))
	if groups == nil {
		return res
	}
	n := 0
	for _, g := range groups {
		n += g.count
	}
	return failResult(name, fmt.Sprintf("%d in the last 24h (customers got no answer and no handoff): %s", n, groupText(groups)),
		fmt.Sprintf("bridge events show %d to see where it stopped, fix the cause, then bridge replay %d", groups[0].newest, groups[0].newest))
}

func (d *doctor) stuck(ctx context.Context, q *store.Reader) Result {
	const name = "stuck events"
	cutoff := unixMS(d.now.Add(-doctorStuck))
	var n int
	var oldestID, oldestAt sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT count(*), min(id), min(received_at) FROM events
		WHERE status = 'accepted' AND max(received_at, not_before, updated_at) < ?`, cutoff).Scan(&n, &oldestID, &oldestAt); err != nil {
		return failResult(name, "cannot read the journal: "+text.OneLine(err.Error(), 300), "check the database")
	}
	// Working without progress for longer than a whole Dify exchange: the
	// worker waits for the journal, is stuck, or is gone (serve reclaims
	// such an event after dify.timeout + 30s).
	nw, oldestWorking, err := d.o.Store.CountStaleWorking(ctx, d.now.Add(-d.o.DifyTimeout))
	if err != nil {
		return failResult(name, "cannot read the journal: "+text.OneLine(err.Error(), 300), "check the database")
	}
	if n == 0 && nw == 0 {
		return okResult(name, "no event waits for a worker")
	}
	var parts []string
	if n > 0 {
		age := d.now.Sub(time.UnixMilli(oldestAt.Int64))
		parts = append(parts, fmt.Sprintf("%d %s accepted but not started for over %s (oldest #%d, %s ago): are the workers running?",
			n, plural(n, "event", "events"), agoText(doctorStuck), oldestID.Int64, agoText(age)))
	}
	if nw > 0 {
		parts = append(parts, fmt.Sprintf("%d %s working without progress for over dify.timeout (%s) (oldest #%d): a worker is stuck, waits for the journal, or is gone",
			nw, plural(nw, "event", "events"), d.o.DifyTimeout, oldestWorking))
	}
	return warnResult(name, strings.Join(parts, "; "),
		"start bridge serve (or restart it; it resumes the journal), and check its log for \"journal not writable\" and \"reclaimed\"")
}

// agoText formats a duration coarsely: 45s, 12m, 3h, 4d.
func agoText(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
