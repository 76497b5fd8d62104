// Package config loads bridge's settings from flags, the environment
// (BRIDGE_*), a TOML file and built-in defaults, in that order of precedence,
// and validates them.
package config

import (
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"
)

// Config is the complete set of settings. The mapstructure tags are the keys
// of the TOML file; the environment variable of a key is BRIDGE_ followed by
// the key in upper case with dots as underscores (BRIDGE_DIFY_TIMEOUT).
type Config struct {
	// File is the config file that was read, "" when none was.
	File string `mapstructure:"-"`
	// Warnings are problems that do not stop bridge, such as a BRIDGE_*
	// variable that looks like a misspelt setting.
	Warnings []string `mapstructure:"-"`
	// sources says where each key's value came from (see Source).
	sources map[string]Source

	Listen    string    `mapstructure:"listen"`     // address of the HTTP server, host:port
	Database  string    `mapstructure:"database"`   // path of the SQLite file, or a postgres:// URL
	PublicURL string    `mapstructure:"public_url"` // how Chatwoot reaches bridge; "" when unknown
	LogLevel  string    `mapstructure:"log_level"`  // debug, info, warn or error
	LogFormat string    `mapstructure:"log_format"` // text or json
	Chatwoot  Chatwoot  `mapstructure:"chatwoot"`
	Dify      Dify      `mapstructure:"dify"`
	Handoff   Handoff   `mapstructure:"handoff"`
	Worker    Worker    `mapstructure:"worker"`
	Retention Retention `mapstructure:"retention"`
	Dashboard Dashboard `mapstructure:"dashboard"`

	Attachments Attachments `mapstructure:"attachments"`
	Voice       Voice       `mapstructure:"voice"`
	Answer      Answer      `mapstructure:"answer"`
	Feedback    Feedback    `mapstructure:"feedback"`
	// MemoryLimit is a soft limit on the memory Go manages (heap, goroutine
	// stacks, the runtime's own), such as "96MiB"; "" leaves it to
	// GOMEMLIMIT, or none. Near it the garbage collector runs more often
	// instead of letting the heap grow to twice what is live.
	MemoryLimit string `mapstructure:"memory_limit"`
}

// Attachment transfer modes (attachments.transfer, and a route's
// --transfer).
const (
	TransferAuto      = "auto"
	TransferRemoteURL = "remote_url"
	TransferUpload    = "upload"
)

// TransferModes lists the valid attachments.transfer values.
var TransferModes = []string{TransferAuto, TransferRemoteURL, TransferUpload}

// Voice fallbacks (voice.fallback, and a route's --voice-fallback).
const (
	VoiceAsk     = "ask"
	VoiceHandoff = "handoff"
)

// VoiceFallbacks lists the valid voice.fallback values.
var VoiceFallbacks = []string{VoiceAsk, VoiceHandoff}

// Attachments holds the [attachments] table: how a customer's files reach
// the Dify app, and how an answer's files reach the customer.
type Attachments struct {
	// Transfer: remote_url passes Chatwoot's URL and Dify fetches it;
	// upload has bridge download the file and upload it to Dify; auto
	// uploads when the URL's host is private or loopback, or when Dify
	// refuses the URL, and passes the URL otherwise.
	Transfer string `mapstructure:"transfer"`
	// MaxMB caps a file bridge downloads (either way), in MB.
	MaxMB int `mapstructure:"max_mb"`
	// DownloadTimeout bounds one file's download (and its upload).
	DownloadTimeout time.Duration `mapstructure:"download_timeout"`
}

// Voice holds the [voice] table: what a voice note becomes.
type Voice struct {
	// TranscriptionWait is how long to wait for Chatwoot's own transcription
	// (its audio transcription feature) of a voice note that arrives
	// without one; 0 means Chatwoot does not transcribe.
	TranscriptionWait time.Duration `mapstructure:"transcription_wait"`
	// Fallback, when no transcription can be had: ask the customer to type
	// (AskMessage), or hand off.
	Fallback string `mapstructure:"fallback"`
	// AskMessage is posted to a customer whose voice note could not be
	// understood.
	AskMessage string `mapstructure:"ask_message"`
}

// Answer holds the [answer] table: what an answer carries besides its text.
type Answer struct {
	// Citations: "append" adds the knowledge documents an answer used as a
	// short source list; "off" does not.
	Citations string `mapstructure:"citations"`
}

// Feedback holds the [feedback] table.
type Feedback struct {
	// CSAT sends a customer's CSAT rating to Dify as feedback on the last
	// answer bridge posted in the conversation (4-5 like, 1-2 dislike).
	CSAT bool `mapstructure:"csat"`
}

// Chatwoot holds the [chatwoot] table.
type Chatwoot struct {
	BaseURL string `mapstructure:"base_url"`
	// APIToken is an agent bot or user access token.
	APIToken Secret `mapstructure:"api_token"`
	// UserToken is an optional user (administrator) token: labels on
	// handoff need it, and doctor uses it to check inboxes.
	UserToken Secret `mapstructure:"user_token"`
	// WebhookToken, when set, must be given as ?token= on the webhook URL.
	WebhookToken Secret `mapstructure:"webhook_token"`
	// WebhookSecret, when set, is the HMAC key signed deliveries must verify with.
	WebhookSecret Secret `mapstructure:"webhook_secret"`
	// BotStatuses are the conversation statuses in which bridge answers.
	BotStatuses []string `mapstructure:"bot_statuses"`
	// AccountID is the Chatwoot account bridge serves. 0 means any account:
	// webhooks of every account are accepted and doctor skips its account
	// check.
	AccountID int64 `mapstructure:"account_id"`
	// EchoWait bounds how long a post in doubt (a crash or a lost answer
	// between Chatwoot creating a message and bridge recording it) waits
	// for Chatwoot's webhook of it before it is posted again, when no
	// user_token lets bridge ask Chatwoot.
	EchoWait time.Duration `mapstructure:"echo_wait"`
	// AllowUnauthenticated lets serve accept webhooks without
	// webhook_secret or webhook_token on an address other hosts can reach.
	// Off, such a serve refuses to start.
	AllowUnauthenticated bool `mapstructure:"allow_unauthenticated"`
}

// Dify holds the [dify] table.
type Dify struct {
	// BaseURL is the API base for routes added without --dify-url.
	BaseURL string `mapstructure:"base_url"`
	// Timeout bounds a whole Dify exchange, retries included.
	Timeout time.Duration `mapstructure:"timeout"`
	// IdleTimeout is the longest silence allowed inside one stream.
	IdleTimeout time.Duration `mapstructure:"idle_timeout"`
	// MaxRetries is how often a retryable failure is tried again.
	MaxRetries int `mapstructure:"max_retries"`
}

// Handoff holds the [handoff] table: when and how a conversation goes to a
// human.
type Handoff struct {
	// Keywords in a customer message (case-insensitive, whole words or
	// phrases) hand off without calling Dify.
	Keywords []string `mapstructure:"keywords"`
	// AIMarker in an answer means the AI asks for a human.
	AIMarker string `mapstructure:"ai_marker"`
	// Message is posted to the customer on handoff; "" posts nothing.
	Message string `mapstructure:"message"`
	// Labels are added to the conversation on handoff (needs a user token).
	Labels []string `mapstructure:"labels"`
	// TeamID is the team assigned on handoff; 0 assigns none.
	TeamID int64 `mapstructure:"team_id"`
	// OpenOnAgentReply sets a conversation open when a human agent replies.
	OpenOnAgentReply bool `mapstructure:"open_on_agent_reply"`
}

// Worker holds the [worker] table.
type Worker struct {
	// Concurrency is how many conversations are processed in parallel: how
	// many Dify answers may be awaited at once. Workers mostly wait, so it
	// is sized for a burst of customers, not for the CPU.
	Concurrency int `mapstructure:"concurrency"`
	// Debounce joins customer messages of one conversation that arrive
	// within this window into one Dify call; 0 answers each at once.
	Debounce time.Duration `mapstructure:"debounce"`
	// Lease is how long an event a process claimed stays its own without
	// renewal (replicas on PostgreSQL): the longest an event of a process
	// that died waits before another process resumes it.
	Lease time.Duration `mapstructure:"lease"`
}

// Retention holds the [retention] table.
type Retention struct {
	// Ignored is how long ignored events are kept in the journal.
	Ignored time.Duration `mapstructure:"ignored"`
}

// Dashboard holds the [dashboard] table: the Dashboard App page that shows
// agents, inside Chatwoot, what bridge did in a conversation.
type Dashboard struct {
	// Key is the secret the page's URL carries (/app/?key=...); without it
	// the page is off and /app/ answers 404.
	Key Secret `mapstructure:"key"`
}

// Defaults returns the built-in value of every key.
func Defaults() Config {
	return Config{
		Listen:    "127.0.0.1:8080",
		Database:  "bridge.db",
		PublicURL: "",
		LogLevel:  "info",
		LogFormat: "text",
		Chatwoot: Chatwoot{
			BaseURL:     "http://localhost:3000",
			BotStatuses: []string{"pending"},
			AccountID:   0,
			EchoWait:    5 * time.Second,
		},
		Dify: Dify{
			BaseURL:     "https://api.dify.ai/v1",
			Timeout:     120 * time.Second,
			IdleTimeout: 45 * time.Second,
			MaxRetries:  2,
		},
		Handoff: Handoff{
			Keywords:         []string{"human", "agent", "operator", "real person"},
			AIMarker:         "[[handoff]]",
			Message:          "Let me connect you with a member of our team.",
			Labels:           []string{},
			TeamID:           0,
			OpenOnAgentReply: true,
		},
		Worker: Worker{
			Concurrency: 1024,
			Debounce:    0,
			Lease:       15 * time.Second,
		},
		Retention: Retention{
			Ignored: 168 * time.Hour,
		},
		Attachments: Attachments{
			Transfer:        TransferAuto,
			MaxMB:           25,
			DownloadTimeout: 60 * time.Second,
		},
		Voice: Voice{
			TranscriptionWait: 0,
			Fallback:          VoiceAsk,
			AskMessage:        "Sorry, I can't listen to voice messages here. Could you type your question?",
		},
		Answer: Answer{
			Citations: "off",
		},
		Feedback: Feedback{
			CSAT: false,
		},
	}
}

// Keys returns every dotted key (such as "dify.timeout"), sorted.
func Keys() []string {
	fs := fields()
	keys := make([]string, len(fs))
	for i, f := range fs {
		keys[i] = f.key
	}
	return keys
}

// envVar returns the environment variable that sets key.
func envVar(key string) string {
	return "BRIDGE_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// field is one leaf of Config: its dotted key and where it lives.
type field struct {
	key    string
	index  []int
	typ    reflect.Type
	secret bool
}

var secretType = reflect.TypeFor[Secret]()

// fields lists the leaves of Config, sorted by key. The list is derived from
// the struct tags so that keys, defaults, env bindings and decoding cannot
// disagree.
var fields = sync.OnceValue(func() []field {
	var out []field
	var walk func(t reflect.Type, prefix string, index []int)
	walk = func(t reflect.Type, prefix string, index []int) {
		for i := range t.NumField() {
			sf := t.Field(i)
			tag := sf.Tag.Get("mapstructure")
			if tag == "" || tag == "-" {
				continue
			}
			idx := append(slices.Clone(index), i)
			key := prefix + tag
			if sf.Type.Kind() == reflect.Struct {
				walk(sf.Type, key+".", idx)
				continue
			}
			out = append(out, field{key: key, index: idx, typ: sf.Type, secret: sf.Type == secretType})
		}
	}
	walk(reflect.TypeFor[Config](), "", nil)
	slices.SortFunc(out, func(a, b field) int { return strings.Compare(a.key, b.key) })
	return out
})

func lookupField(key string) (field, bool) {
	fs := fields()
	i, ok := slices.BinarySearchFunc(fs, key, func(f field, k string) int { return strings.Compare(f.key, k) })
	if !ok {
		return field{}, false
	}
	return fs[i], true
}

// isSecretKey reports whether key holds a Secret, whose value never appears
// in an error.
func isSecretKey(key string) bool {
	f, ok := lookupField(key)
	return ok && f.secret
}

func (c *Config) value(f field) reflect.Value {
	return reflect.ValueOf(c).Elem().FieldByIndex(f.index)
}
