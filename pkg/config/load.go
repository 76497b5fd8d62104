package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/viper"

	"github.com/bridge-dev/bridge/internal/text"
)

// defaultFile is the config file looked for in the working directory.
const defaultFile = "bridge.toml"

var errUnknownKey = errors.New("unknown key")

// Load builds the configuration from v, which holds any flags the caller
// bound (v.BindPFlag("database", flag)) before calling Load. It sets up v's
// defaults and environment binding (BRIDGE_ prefix, dots as underscores),
// reads the TOML file, decodes every key and validates the result, so the
// precedence is flag > environment > file > default. A nil v means a fresh
// viper instance.
//
// With explicit false, path (if not "") is tried first, then ./bridge.toml,
// then $XDG_CONFIG_HOME/bridge/bridge.toml (~/.config/bridge/bridge.toml when
// XDG_CONFIG_HOME is unset); finding none is fine, since every key may come
// from the environment. With explicit true the user named path with
// --config, and a missing file is an error wrapping ErrNotFound.
//
// Every error Load returns is a *Error naming the file and the key where
// they are known: an unknown key in the file (with a suggestion for a near
// miss), a TOML syntax error (with its line), a value of the wrong type, or
// a value that fails Validate.
func Load(v *viper.Viper, path string, explicit bool) (*Config, error) {
	return LoadWithFlags(v, path, explicit, nil)
}

// LoadWithFlags is Load where flags names the flags the caller bound into
// v, by key ("database" → "--db"), so that a bad value is blamed on the
// flag and Source reports it.
func LoadWithFlags(v *viper.Viper, path string, explicit bool, flags map[string]string) (*Config, error) {
	if v == nil {
		v = viper.New()
	}
	v.SetEnvPrefix("BRIDGE")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	// Every key gets a default, even an empty one: viper only consults the
	// environment for keys it knows (spf13/viper#761).
	def := Defaults()
	for _, f := range fields() {
		v.SetDefault(f.key, def.value(f).Interface())
	}

	file, err := findFile(path, explicit)
	if err != nil {
		return nil, err
	}
	if file != "" {
		if err := readFile(v, file); err != nil {
			return nil, err
		}
	}

	cfg := &Config{File: file, sources: map[string]Source{}, Warnings: envWarnings(os.Environ())}
	for _, f := range fields() {
		cfg.sources[f.key] = sourceOf(v, f.key, file, flags)
		raw := v.Get(f.key)
		val, err := convert(raw, f.typ)
		if err != nil {
			e := &Error{Key: f.key, Err: err, hint: want(f.typ)}
			if !f.secret {
				e.Value = valueString(raw)
			}
			locate(v, e, file, flags)
			return nil, e
		}
		cfg.value(f).Set(val)
	}
	if err := cfg.Validate(); err != nil {
		var e *Error
		if errors.As(err, &e) && e.Key != "" {
			locate(v, e, file, flags)
		}
		return nil, err
	}
	return cfg, nil
}

// locate points e at the source of its key's value: the flag, the
// environment variable, the file, or none (the default).
func locate(v *viper.Viper, e *Error, file string, flags map[string]string) {
	e.File = ""
	switch src := sourceOf(v, e.Key, file, flags); src.Kind {
	case FromFlag:
		e.Flag = src.Name
	case FromEnv:
		e.hint = joinHint("set by "+src.Name, e.hint)
	case FromFile:
		e.File = file
	}
}

func joinHint(a, b string) string {
	if b == "" {
		return a
	}
	return a + "; " + b
}

// findFile returns the config file to read, or "" when there is none.
func findFile(path string, explicit bool) (string, error) {
	if explicit && path != "" {
		fi, err := os.Stat(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return "", &Error{File: path, Err: ErrNotFound}
		case err != nil:
			return "", &Error{File: path, Err: pathError(err)}
		case fi.IsDir():
			return "", &Error{File: path, Err: errors.New("is a directory, not a file")}
		}
		return path, nil
	}
	var candidates []string
	if path != "" {
		candidates = append(candidates, path)
	}
	candidates = append(candidates, defaultFile)
	if f := userConfigFile(); f != "" {
		candidates = append(candidates, f)
	}
	for _, c := range candidates {
		fi, err := os.Stat(c)
		switch {
		case errors.Is(err, fs.ErrPermission):
			return "", &Error{File: c, Err: pathError(err)}
		case err != nil || fi.IsDir():
			continue
		}
		return c, nil
	}
	return "", nil
}

// userConfigFile is $XDG_CONFIG_HOME/bridge/bridge.toml, or
// ~/.config/bridge/bridge.toml. The XDG base directory specification says to
// ignore a relative XDG_CONFIG_HOME.
func userConfigFile() string {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" || !filepath.IsAbs(dir) {
		home, err := os.UserHomeDir()
		if err != nil || home == "" {
			return ""
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "bridge", defaultFile)
}

// pathError drops the path from an *fs.PathError, since the *Error already
// names the file.
func pathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// readFile parses the TOML file, rejects keys bridge does not know, and
// makes the file's values available to v.
func readFile(v *viper.Viper, file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return &Error{File: file, Err: pathError(err)}
	}
	// A separate instance sees the file's keys alone, without defaults or
	// environment.
	fv := viper.New()
	fv.SetConfigType("toml")
	if err := fv.ReadConfig(bytes.NewReader(data)); err != nil {
		return syntaxError(file, data, err)
	}
	if err := checkKeys(file, fv.AllKeys()); err != nil {
		return err
	}
	v.SetConfigFile(file)
	v.SetConfigType("toml")
	if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
		return syntaxError(file, data, err)
	}
	return nil
}

// checkKeys returns an *Error for the first key (in sorted order) of the
// file that bridge does not know.
func checkKeys(file string, keys []string) error {
	slices.Sort(keys)
	for _, k := range keys {
		if _, ok := lookupField(k); ok || underKnownKey(k) {
			// A table below a known key is a wrong value for that key, which
			// decoding reports.
			continue
		}
		if isTable(k) {
			return &Error{File: file, Key: k, Err: errors.New("is a table"),
				hint: fmt.Sprintf("write [%s] and its keys below it", k)}
		}
		e := &Error{File: file, Key: k, Err: errUnknownKey}
		if s := suggest(k); s != "" {
			e.hint = "did you mean " + s + "?"
		}
		return e
	}
	return nil
}

func underKnownKey(k string) bool {
	for i := range len(k) {
		if k[i] == '.' {
			if _, ok := lookupField(k[:i]); ok {
				return true
			}
		}
	}
	return false
}

func isTable(k string) bool {
	for _, f := range fields() {
		if strings.HasPrefix(f.key, k+".") {
			return true
		}
	}
	return false
}

// suggest returns the known key closest to k: within an edit distance of 2,
// or else the keys with the same last part in another table ("timeout" at
// the top level means "dify.timeout").
func suggest(k string) string {
	if best := text.Closest(k, Keys(), 2); best != "" {
		return best
	}
	var same []string
	for _, f := range fields() {
		if leaf(f.key) == leaf(k) {
			same = append(same, f.key)
		}
	}
	return strings.Join(same, " or ")
}

func leaf(k string) string { return k[strings.LastIndexByte(k, '.')+1:] }

// syntaxError turns a TOML parse error into an *Error with the line and, when
// the line is a plain "key = value", the key. The parser's message is short
// and never quotes the value, so no secret is shown.
func syntaxError(file string, data []byte, err error) error {
	var pos interface {
		error
		Position() (row, column int)
	}
	if !errors.As(err, &pos) {
		if inner := errors.Unwrap(err); inner != nil {
			err = inner
		}
		return &Error{File: file, Err: fmt.Errorf("invalid TOML: %w", err)}
	}
	row, col := pos.Position()
	msg := strings.TrimPrefix(pos.Error(), "toml: ")
	return &Error{
		File: file,
		Key:  keyAtLine(data, row),
		Err:  fmt.Errorf("invalid TOML at line %d, column %d: %s", row, col, msg),
	}
}

var (
	bareKey     = regexp.MustCompile(`^[A-Za-z0-9_-]+(\s*\.\s*[A-Za-z0-9_-]+)*$`)
	tableHeader = regexp.MustCompile(`^\[\s*([A-Za-z0-9_.\s-]+?)\s*\]\s*(#.*)?$`)
)

// keyAtLine guesses the dotted key defined on line n (1-based) of a TOML
// document: the key before "=" under the last [table] header. It returns ""
// when the line is not a simple assignment.
func keyAtLine(data []byte, n int) string {
	lines := strings.Split(string(data), "\n")
	if n < 1 || n > len(lines) {
		return ""
	}
	table := ""
	for _, l := range lines[:n-1] {
		if m := tableHeader.FindStringSubmatch(strings.TrimSpace(l)); m != nil {
			table = normalizeKey(m[1])
		}
	}
	before, _, ok := strings.Cut(lines[n-1], "=")
	before = strings.TrimSpace(before)
	if !ok || !bareKey.MatchString(before) {
		return ""
	}
	if table == "" {
		return normalizeKey(before)
	}
	return table + "." + normalizeKey(before)
}

func normalizeKey(k string) string {
	parts := strings.Split(k, ".")
	for i, p := range parts {
		parts[i] = strings.ToLower(strings.TrimSpace(p))
	}
	return strings.Join(parts, ".")
}

var durationType = reflect.TypeFor[time.Duration]()

// convert turns a value from viper (a TOML value, an environment string, a
// flag value or a default) into a value of type t. Strings are parsed;
// anything else must already have the right kind. A comma-separated string
// is a list, so BRIDGE_HANDOFF_KEYWORDS="human, agent" works.
func convert(raw any, t reflect.Type) (reflect.Value, error) {
	rv := reflect.ValueOf(raw)
	if !rv.IsValid() {
		return reflect.Zero(t), nil
	}
	switch {
	case t == durationType:
		if rv.Type() == durationType {
			return rv, nil
		}
		if rv.Kind() == reflect.String {
			if d, err := time.ParseDuration(strings.TrimSpace(rv.String())); err == nil {
				return reflect.ValueOf(d), nil
			}
		}
		// A bare number is refused: 120 would mean 120ns.
		return reflect.Value{}, errors.New("invalid duration")

	case t.Kind() == reflect.Int || t.Kind() == reflect.Int64:
		n, ok := toInt(rv)
		if !ok || reflect.New(t).Elem().OverflowInt(n) {
			return reflect.Value{}, errors.New("invalid integer")
		}
		return reflect.ValueOf(n).Convert(t), nil

	case t.Kind() == reflect.Bool:
		switch rv.Kind() {
		case reflect.Bool:
			return rv.Convert(t), nil
		case reflect.String:
			if b, err := strconv.ParseBool(strings.TrimSpace(rv.String())); err == nil {
				return reflect.ValueOf(b).Convert(t), nil
			}
		}
		return reflect.Value{}, errors.New("invalid boolean")

	case t.Kind() == reflect.String:
		if rv.Kind() == reflect.String {
			return reflect.ValueOf(rv.String()).Convert(t), nil
		}
		return reflect.Value{}, errors.New("invalid string")

	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		out := reflect.MakeSlice(t, 0, 0)
		switch rv.Kind() {
		case reflect.String:
			for s := range strings.SplitSeq(rv.String(), ",") {
				if s = strings.TrimSpace(s); s != "" {
					out = reflect.Append(out, reflect.ValueOf(s).Convert(t.Elem()))
				}
			}
			return out, nil
		case reflect.Slice, reflect.Array:
			for i := range rv.Len() {
				e := reflect.ValueOf(rv.Index(i).Interface())
				if e.Kind() != reflect.String {
					return reflect.Value{}, errors.New("invalid list")
				}
				out = reflect.Append(out, reflect.ValueOf(e.String()).Convert(t.Elem()))
			}
			return out, nil
		}
		return reflect.Value{}, errors.New("invalid list")
	}
	return reflect.Value{}, fmt.Errorf("unsupported type %s", t)
}

func toInt(rv reflect.Value) (int64, bool) {
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int(), true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		u := rv.Uint()
		return int64(u), u <= math.MaxInt64
	case reflect.Float32, reflect.Float64:
		f := rv.Float()
		if f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
			return 0, false
		}
		return int64(f), true
	case reflect.String:
		n, err := strconv.ParseInt(strings.TrimSpace(rv.String()), 10, 64)
		return n, err == nil
	}
	return 0, false
}

// want describes a valid value of type t.
func want(t reflect.Type) string {
	switch {
	case t == durationType:
		return `want a number with a unit, e.g. "45s" or "2m"`
	case t.Kind() == reflect.Int || t.Kind() == reflect.Int64:
		return "want a whole number"
	case t.Kind() == reflect.Bool:
		return "want true or false"
	case t.Kind() == reflect.Slice:
		return `want a list of strings, e.g. ["a", "b"], or "a,b" in the environment`
	default:
		return "want a string in quotes"
	}
}

func valueString(raw any) string {
	if s, ok := raw.(string); ok {
		return s
	}
	return fmt.Sprint(raw)
}
