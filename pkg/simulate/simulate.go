// Package simulate provides a fake Chatwoot and a fake Dify as real
// http.Handlers. They speak the wire formats described in the protocol notes
// (shapes, status codes, error bodies, SSE framing), record what they
// receive in bounded buffers, and fail on request, so end-to-end tests,
// `bridge demo` and `bridge bench` can run the whole pipeline on loopback.
//
// Everything here is safe for concurrent use. Lookups are map-based and
// recordings keep only the most recent entries, so the fakes can take
// thousands of requests per second for as long as a benchmark runs.
package simulate

import (
	"context"
	"crypto/rand"
	"net/http"
	"strings"
	"time"
)

// maxRecords bounds Requests, Calls and Stops.
const maxRecords = 10000

// ring keeps the last max values pushed, oldest first.
type ring[T any] struct {
	buf   []T
	head  int    // index of the oldest value once the buffer is full
	total uint64 // values ever pushed; the next value's sequence number
	max   int
}

func newRing[T any](max int) ring[T] { return ring[T]{max: max} }

// push appends v, dropping the oldest value when full, and returns v's
// sequence number for at.
func (r *ring[T]) push(v T) uint64 {
	if len(r.buf) < r.max {
		r.buf = append(r.buf, v)
	} else {
		r.buf[r.head] = v
		r.head = (r.head + 1) % r.max
	}
	r.total++
	return r.total - 1
}

// at returns the value with sequence number seq, or nil once it was dropped.
func (r *ring[T]) at(seq uint64) *T {
	oldest := r.total - uint64(len(r.buf))
	if seq < oldest || seq >= r.total {
		return nil
	}
	i := int(seq - oldest)
	if len(r.buf) == r.max {
		i = (r.head + i) % r.max
	}
	return &r.buf[i]
}

// slice returns a copy of the values, oldest first.
func (r *ring[T]) slice() []T {
	out := make([]T, 0, len(r.buf))
	out = append(out, r.buf[r.head:]...)
	return append(out, r.buf[:r.head]...)
}

// newUUID returns a random version 4 UUID.
func newUUID() string {
	var u [16]byte
	_, _ = rand.Read(u[:]) // crypto/rand.Read never returns an error
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	var b [36]byte
	j := 0
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b[j] = '-'
			j++
		}
		b[j], b[j+1] = hexDigits[c>>4], hexDigits[c&0xf]
		j += 2
	}
	return string(b[:])
}

// randToken returns n random characters from [A-Za-z0-9], like Rails'
// has_secure_token.
func randToken(n int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// isUUID reports whether s looks like a UUID in its canonical 8-4-4-4-12 form.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return false
			}
			continue
		}
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// maskKey shows a key the way bridge prints secrets: its prefix up to the
// first dash, an ellipsis and the last four characters ("app-…x7Qz").
func maskKey(k string) string {
	if len(k) < 8 {
		return "****"
	}
	prefix := ""
	if i := strings.IndexByte(k, '-'); i >= 0 && i < 8 {
		prefix = k[:i+1]
	}
	return prefix + "…" + k[len(k)-4:]
}

// notifier wakes waiters whenever state changes. The channel is closed and
// replaced on every change; callers hold their own mutex around both calls.
type notifier struct{ ch chan struct{} }

func (n *notifier) wait() <-chan struct{} {
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *notifier) broadcast() {
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}

// waitFor re-checks cond each time changed fires until it holds or ctx ends.
// changed must return the current wait channel under the owner's lock.
func waitFor(ctx context.Context, changed func() <-chan struct{}, cond func() bool) error {
	for {
		ch := changed() // taken before cond so no change is missed
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// sleep waits for d, or until ctx or one of the channels is done. It
// reports whether the full duration elapsed.
func sleep(ctx context.Context, d time.Duration, stops ...<-chan struct{}) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	var s0, s1 <-chan struct{}
	if len(stops) > 0 {
		s0 = stops[0]
	}
	if len(stops) > 1 {
		s1 = stops[1]
	}
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-s0:
	case <-s1:
	}
	return false
}

// dropConnection closes the client connection without a complete response,
// as a crashed or restarted peer does. Where the connection cannot be taken
// over (HTTP/2), the response is aborted instead.
func dropConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close() // the point is to drop it; a close error changes nothing
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
