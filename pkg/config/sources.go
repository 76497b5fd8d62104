package config

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/viper"

	"github.com/bridge-dev/bridge/internal/text"
)

// Where a value came from, in order of precedence.
const (
	FromFlag    = "flag"
	FromEnv     = "env"
	FromFile    = "file"
	FromDefault = "default"
)

// Source says where a key's value came from.
type Source struct {
	Kind string `json:"kind"`           // FromFlag, FromEnv, FromFile or FromDefault
	Name string `json:"name,omitempty"` // the flag (--db), the variable (BRIDGE_DATABASE) or the file
}

// String is how messages name the source: "flag --db",
// "env BRIDGE_DATABASE", "file /etc/bridge/bridge.toml" or "default".
func (s Source) String() string {
	if s.Name == "" {
		return s.Kind
	}
	return s.Kind + " " + s.Name
}

// Setting is one key of the effective configuration, as `bridge config`
// shows it: secrets masked.
type Setting struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	Secret bool   `json:"secret,omitempty"`
	Source Source `json:"source"`
}

// Source returns where key's value came from.
func (c *Config) Source(key string) Source {
	if s, ok := c.sources[key]; ok {
		return s
	}
	return Source{Kind: FromDefault}
}

// Settings lists every key with its value and source, sorted by key.
// Secret values are masked; lists are comma-separated, as the environment
// takes them.
func (c *Config) Settings() []Setting {
	fs := fields()
	out := make([]Setting, 0, len(fs))
	for _, f := range fs {
		s := Setting{Key: f.key, Secret: f.secret, Source: c.Source(f.key)}
		v := c.value(f)
		switch x := v.Interface().(type) {
		case Secret:
			s.Value = Mask(string(x))
		case []string:
			s.Value = strings.Join(x, ",")
		case time.Duration:
			s.Value = x.String()
		case string:
			s.Value = x
			if f.key == "database" {
				s.Value = redactURL(x) // a PostgreSQL URL may carry a password
			}
		case bool:
			s.Value = strconv.FormatBool(x)
		default:
			s.Value = fmt.Sprint(x)
		}
		out = append(out, s)
	}
	return out
}

// sourceOf finds where key's value came from: a flag bound in flags (key →
// flag name), a non-empty environment variable (viper ignores empty ones),
// the file, or the default.
func sourceOf(v *viper.Viper, key, file string, flags map[string]string) Source {
	if name, ok := flags[key]; ok {
		return Source{Kind: FromFlag, Name: name}
	}
	if name := envVar(key); os.Getenv(name) != "" {
		return Source{Kind: FromEnv, Name: name}
	}
	if file != "" && v.InConfig(key) {
		return Source{Kind: FromFile, Name: file}
	}
	return Source{Kind: FromDefault}
}

// envWarnings names the BRIDGE_* variables that are set, are no setting,
// and look like a misspelt one: viper would ignore them silently. A
// variable not close to any setting is left alone, since operators also
// keep Dify keys in variables of their own naming (routes add
// --dify-key-env).
func envWarnings(environ []string) []string {
	known := map[string]bool{}
	for _, f := range fields() {
		known[envVar(f.key)] = true
	}
	var out []string
	for _, kv := range environ {
		name, val, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "BRIDGE_") || known[name] || val == "" {
			continue
		}
		if s := suggestEnv(name); s != "" {
			out = append(out, fmt.Sprintf("%s is not a bridge setting and is ignored; did you mean %s?", name, s))
		}
	}
	slices.Sort(out)
	return out
}

// suggestEnv is suggest for environment variables: the closest variable
// within an edit distance of 2, or the variables of the keys whose last
// part the name spells (BRIDGE_TIMEOUT: BRIDGE_DIFY_TIMEOUT).
func suggestEnv(name string) string {
	vars := make([]string, 0, len(fields()))
	for _, f := range fields() {
		vars = append(vars, envVar(f.key))
	}
	if best := text.Closest(name, vars, 2); best != "" {
		return best
	}
	rest := strings.ToLower(strings.TrimPrefix(name, "BRIDGE_"))
	var same []string
	for _, f := range fields() {
		if strings.ReplaceAll(leaf(f.key), ".", "_") == rest {
			same = append(same, envVar(f.key))
		}
	}
	return strings.Join(same, " or ")
}
