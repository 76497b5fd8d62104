// Package dashboard serves bridge's Chatwoot Dashboard App: a page Chatwoot
// embeds as a tab of the conversation view, showing agents who holds the
// conversation, what bridge did with each message, and buttons to give it
// back to the bot, keep it for humans, or ask the AI again for a draft.
//
// The page is plain HTML, CSS and JavaScript embedded in the binary. Its
// data and actions need the dashboard key, which the operator puts in the
// Dashboard App's URL (/app/?key=...); the page sends it back in the
// Authorization header, never in a URL of its own.
package dashboard

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/bridge-dev/bridge/pkg/store"
)

//go:embed assets
var assets embed.FS

// Path is where the page is served; the Dashboard App's URL is the public
// URL of bridge plus this path plus ?key=.
const Path = "/app/"

// Actions are what the page's buttons do, carried out by the core. by names
// who asked, for the journal.
type Actions interface {
	GiveBack(ctx context.Context, account, conv int64, by string) error
	Keep(ctx context.Context, account, conv int64, by string) error
	AskAgain(ctx context.Context, account, conv int64, by string) (eventID int64, err error)
}

// Options wire the page.
type Options struct {
	Store *store.DB
	// Key is dashboard.key; New must not be called without one.
	Key string
	// ChatwootURL is chatwoot.base_url: the page accepts context messages
	// only from its origin, and only Chatwoot's pages may frame it.
	ChatwootURL string
	Actions     Actions
	Logger      *slog.Logger
	Now         func() time.Time
	// Events is how many of a conversation's newest acted-on events the
	// page shows (default 20).
	Events int
}

type handler struct {
	o      Options
	keySum [32]byte
	origin string
	csp    string
	index  []byte
	static fs.FS
	mux    *http.ServeMux
}

// New returns the handler of everything under Path.
func New(o Options) http.Handler {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Events <= 0 {
		o.Events = 20
	}
	h := &handler{o: o, keySum: sha256.Sum256([]byte(o.Key)), origin: Origin(o.ChatwootURL)}
	ancestors := h.origin
	if ancestors == "" {
		ancestors = "'none'"
	}
	// No inline script or style anywhere: the page's code is app.js, served
	// from here, so injected markup could never run.
	h.csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
		"base-uri 'none'; form-action 'none'; frame-ancestors " + ancestors
	h.static, _ = fs.Sub(assets, "assets") // the directory is embedded above
	h.index = renderIndex(h.static, h.origin)
	h.mux = http.NewServeMux()
	h.mux.HandleFunc("GET "+Path+"{$}", h.serveIndex)
	h.mux.HandleFunc("GET "+Path+"app.js", h.serveAsset)
	h.mux.HandleFunc("GET "+Path+"app.css", h.serveAsset)
	h.mux.HandleFunc("GET "+Path+"api/conversation", h.authed(h.serveConversation))
	h.mux.HandleFunc("POST "+Path+"api/{action}", h.authed(h.serveAction))
	h.mux.HandleFunc(Path, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, apiError{Error: "not found"})
	})
	return h
}

// Origin is the origin (scheme://host[:port]) of a URL, "" if it has none.
func Origin(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return ""
	}
	return strings.ToLower(u.Scheme) + "://" + strings.ToLower(u.Host)
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", h.csp)
	hd.Set("X-Content-Type-Options", "nosniff")
	// The page's own URL carries the key: never send it on as a Referer.
	hd.Set("Referrer-Policy", "no-referrer")
	h.mux.ServeHTTP(w, r)
}

func renderIndex(static fs.FS, origin string) []byte {
	raw, err := fs.ReadFile(static, "index.html")
	if err != nil {
		panic("dashboard: index.html is not embedded: " + err.Error())
	}
	t := template.Must(template.New("index").Parse(string(raw)))
	var b strings.Builder
	if err := t.Execute(&b, struct{ ChatwootOrigin string }{origin}); err != nil {
		panic("dashboard: index.html: " + err.Error())
	}
	return []byte(b.String())
}

func (h *handler) serveIndex(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(h.index) // a failed write means the client left
}

func (h *handler) serveAsset(w http.ResponseWriter, r *http.Request) {
	name := path.Base(r.URL.Path)
	body, err := fs.ReadFile(h.static, name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", mime.TypeByExtension(path.Ext(name)))
	// The assets change only with the binary; revalidating is cheap.
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(body) // a failed write means the client left
}

type apiError struct {
	Error string `json:"error"`
}

// authed lets a request through only with the dashboard key, compared in
// constant time (over hashes, so not even its length leaks).
func (h *handler) authed(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || got == "" {
			writeJSON(w, http.StatusUnauthorized, apiError{Error: "no dashboard key: the Dashboard App's URL must end in ?key= and bridge's dashboard.key"})
			return
		}
		sum := sha256.Sum256([]byte(got))
		if subtle.ConstantTimeCompare(sum[:], h.keySum[:]) != 1 {
			// The path only: the page's requests carry no query worth
			// keeping, and the key is never logged.
			h.o.Logger.Warn("dashboard request refused: wrong key", "path", r.URL.Path, "remote", r.RemoteAddr)
			writeJSON(w, http.StatusUnauthorized, apiError{Error: "wrong dashboard key: the key in the Dashboard App's URL is not bridge's dashboard.key"})
			return
		}
		next(w, r)
	}
}

// conversationOf reads the conversation a request names and answers 404
// when bridge never journaled it: the page's context came from a
// postMessage and proves nothing, so only conversations bridge knows are
// shown or acted on.
func (h *handler) conversationOf(w http.ResponseWriter, r *http.Request, account, conv int64) (store.Conversation, bool) {
	if account <= 0 || conv <= 0 {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "account_id and conversation_id must be positive numbers"})
		return store.Conversation{}, false
	}
	c, err := h.o.Store.Conversation(r.Context(), account, conv)
	if errors.Is(err, store.ErrNotFound) {
		writeJSON(w, http.StatusNotFound, apiError{Error: fmt.Sprintf(
			"bridge has no record of conversation %d in account %d: its inbox has no route, or no message came since", conv, account)})
		return c, false
	}
	if err != nil {
		h.o.Logger.Error("dashboard: read conversation", "conversation_id", conv, "err", err)
		writeJSON(w, http.StatusInternalServerError, apiError{Error: "journal unavailable"})
		return c, false
	}
	return c, true
}

func (h *handler) serveConversation(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	account, _ := strconv.ParseInt(q.Get("account_id"), 10, 64) // a bad number is refused as 0 below
	conv, _ := strconv.ParseInt(q.Get("conversation_id"), 10, 64)
	c, ok := h.conversationOf(w, r, account, conv)
	if !ok {
		return
	}
	v, err := h.view(r.Context(), c)
	if err != nil {
		h.o.Logger.Error("dashboard: read trace", "conversation_id", conv, "err", err)
		writeJSON(w, http.StatusInternalServerError, apiError{Error: "journal unavailable"})
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// actionRequest is the body of an action: the conversation, and the agent
// Chatwoot's context named (who acted, for the journal).
type actionRequest struct {
	AccountID      int64 `json:"account_id"`
	ConversationID int64 `json:"conversation_id"`
	Agent          struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
	} `json:"agent"`
}

type actionResult struct {
	OK      bool   `json:"ok"`
	Message string `json:"message"`
	EventID int64  `json:"event_id,omitempty"`
}

// maxActionBody bounds an action's body: ids and an agent's name.
const maxActionBody = 4 << 10

func (h *handler) serveAction(w http.ResponseWriter, r *http.Request) {
	action := r.PathValue("action")
	switch action {
	case "give-back", "keep", "ask-again":
	default:
		writeJSON(w, http.StatusNotFound, apiError{Error: "unknown action " + strconv.Quote(action)})
		return
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
		writeJSON(w, http.StatusUnsupportedMediaType, apiError{Error: "want Content-Type: application/json"})
		return
	}
	var req actionRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxActionBody))
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "bad request body"})
		return
	}
	if _, ok := h.conversationOf(w, r, req.AccountID, req.ConversationID); !ok {
		return
	}
	by := AgentLabel(req.Agent.ID, req.Agent.Name)
	ctx, cancel := context.WithTimeout(r.Context(), actionBudget)
	defer cancel()
	res := actionResult{OK: true}
	switch action {
	case "give-back":
		err = h.o.Actions.GiveBack(ctx, req.AccountID, req.ConversationID, by)
		res.Message = "Given back to the bot: bridge answers the customer's next message."
	case "keep":
		err = h.o.Actions.Keep(ctx, req.AccountID, req.ConversationID, by)
		res.Message = "Kept for humans: the bot stays silent here until it is given back."
	case "ask-again":
		res.EventID, err = h.o.Actions.AskAgain(ctx, req.AccountID, req.ConversationID, by)
		res.Message = "Asking the AI again: its answer comes as a private note \"AI draft: …\", never to the customer."
	}
	log := h.o.Logger.With("action", action, "account_id", req.AccountID, "conversation_id", req.ConversationID, "agent", by)
	if err != nil {
		log.Warn("dashboard action failed", "err", err)
		var status int
		switch {
		case errors.Is(err, store.ErrNotFound):
			status = http.StatusNotFound
		case action == "give-back":
			status = http.StatusBadGateway // Chatwoot refused, or was unreachable
		case action == "ask-again":
			status = http.StatusConflict // nothing to ask about, or no usable route
		default:
			status = http.StatusInternalServerError // the journal refused the write
		}
		writeJSON(w, status, apiError{Error: err.Error()})
		return
	}
	log.Info("dashboard action", "event_id", res.EventID)
	writeJSON(w, http.StatusOK, res)
}

// actionBudget bounds an action; give-back calls Chatwoot once, the others
// only write the journal. It stays inside serve's WriteTimeout.
const actionBudget = 10 * time.Second

// AgentLabel names who acted from the page, from the context Chatwoot gave
// it: "Jane Doe (agent 3)". The context proves nothing (any holder of the
// key can claim any name), so this labels a journal line for people; it
// identifies no one. Chatwoot before currentAgent was added sends none:
// "an agent".
func AgentLabel(id int64, name string) string {
	name = cleanLabel(name, 80)
	switch {
	case name == "" && id <= 0:
		return "an agent (Dashboard App)"
	case id <= 0:
		return name
	case name == "":
		return "agent " + strconv.FormatInt(id, 10)
	}
	return name + " (agent " + strconv.FormatInt(id, 10) + ")"
}

// cleanLabel keeps a name that came from a browser to one short line.
func cleanLabel(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > max {
		s = string(r[:max]) + "…"
	}
	return s
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // a failed write means the client left
}
