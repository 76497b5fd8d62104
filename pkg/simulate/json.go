package simulate

import (
	"encoding/json"
	"maps"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// field is one key of an ordered JSON object. The peers' JSON is compared by
// eye and by drift tests, so the fakes keep the peers' key order instead of
// the alphabetical order of encoding/json maps.
type field struct {
	k string
	v any
}

// obj is a JSON object whose keys are written in order.
type obj []field

// encoder writes JSON in one of the styles the two peers produce.
type encoder struct {
	spaced bool // ", " and ": " separators (Python json.dumps defaults)
	ascii  bool // non-ASCII as \uXXXX (Python ensure_ascii)
	html   bool // <, >, & as \u003c... (Rails to_json, encoding/json)
}

var (
	// railsJSON is how Chatwoot (Rails to_json) writes bodies: compact, HTML-escaped.
	railsJSON = encoder{html: true}
	// pythonJSON is how Dify (flask-restx, json.dumps) writes non-streaming bodies.
	pythonJSON = encoder{spaced: true, ascii: true}
	// streamJSON is how the recorded Dify streams are written: json.dumps
	// separators, raw UTF-8.
	streamJSON = encoder{spaced: true}
	// compactJSON is orjson: no spaces, raw UTF-8.
	compactJSON = encoder{}
)

func (e encoder) marshal(v any) []byte { return e.append(nil, v) }

func (e encoder) sep(b []byte, c byte) []byte {
	b = append(b, c)
	if e.spaced {
		b = append(b, ' ')
	}
	return b
}

func (e encoder) append(b []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...)
	case string:
		return e.appendString(b, x)
	case bool:
		return strconv.AppendBool(b, x)
	case int:
		return strconv.AppendInt(b, int64(x), 10)
	case int64:
		return strconv.AppendInt(b, x, 10)
	case float64:
		return appendFloat(b, x)
	case obj:
		b = append(b, '{')
		for i, f := range x {
			if i > 0 {
				b = e.sep(b, ',')
			}
			b = e.appendString(b, f.k)
			b = e.sep(b, ':')
			b = e.append(b, f.v)
		}
		return append(b, '}')
	case []obj:
		return appendList(e, b, x, func(b []byte, o obj) []byte { return e.append(b, o) })
	case []any:
		return appendList(e, b, x, e.append)
	case []string:
		return appendList(e, b, x, e.appendString)
	case map[string]any:
		b = append(b, '{')
		for i, k := range slices.Sorted(maps.Keys(x)) {
			if i > 0 {
				b = e.sep(b, ',')
			}
			b = e.appendString(b, k)
			b = e.sep(b, ':')
			b = e.append(b, x[k])
		}
		return append(b, '}')
	case json.Number:
		return append(b, x...)
	default:
		// Values decoded from requests are covered above; anything else goes
		// through encoding/json and is re-read so the style still applies.
		raw, err := json.Marshal(x)
		if err != nil {
			return append(b, "null"...)
		}
		var generic any
		if err := json.Unmarshal(raw, &generic); err != nil {
			return append(b, raw...)
		}
		return e.append(b, generic)
	}
}

func appendFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	abs := math.Abs(f)
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		return strconv.AppendFloat(b, f, 'e', -1, 64)
	}
	return strconv.AppendFloat(b, f, 'f', -1, 64)
}

const hexDigits = "0123456789abcdef"

func appendU(b []byte, r rune) []byte {
	return append(b, '\\', 'u', hexDigits[r>>12&0xf], hexDigits[r>>8&0xf], hexDigits[r>>4&0xf], hexDigits[r&0xf])
}

func (e encoder) appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"':
				b = append(b, '\\', '"')
			case c == '\\':
				b = append(b, '\\', '\\')
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c == '\b':
				b = append(b, '\\', 'b')
			case c == '\f':
				b = append(b, '\\', 'f')
			case c < 0x20 || (c == 0x7f && e.ascii):
				b = appendU(b, rune(c))
			case e.html && (c == '<' || c == '>' || c == '&'):
				b = appendU(b, rune(c))
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case e.ascii && r > 0xffff:
			r -= 0x10000
			b = appendU(b, 0xd800+(r>>10))
			b = appendU(b, 0xdc00+(r&0x3ff))
		case e.ascii || (e.html && (r == '\u2028' || r == '\u2029')):
			b = appendU(b, r)
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// appendList writes a JSON array, each element by add.
func appendList[T any](e encoder, b []byte, xs []T, add func([]byte, T) []byte) []byte {
	b = append(b, '[')
	for i, x := range xs {
		if i > 0 {
			b = e.sep(b, ',')
		}
		b = add(b, x)
	}
	return append(b, ']')
}
