// Package drain stops an HTTP listener without dropping the requests of
// connections it already accepted.
package drain

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// Listener is a listener that may be closed twice (by Stop, then by the
// HTTP server's Shutdown, which would report the second close as an
// error), and that knows which accepted connections have not sent their
// first request yet.
type Listener struct {
	net.Listener
	once sync.Once
	err  error

	mu    sync.Mutex
	fresh map[net.Conn]struct{} // accepted, first request not read yet (http.StateNew)
}

// Wrap wraps ln; set the server's ConnState to the result's ConnState.
func Wrap(ln net.Listener) *Listener {
	return &Listener{Listener: ln, fresh: map[net.Conn]struct{}{}}
}

// Close closes the listener once.
func (l *Listener) Close() error {
	l.once.Do(func() { l.err = l.Listener.Close() })
	return l.err
}

// ConnState is the server's ConnState hook.
func (l *Listener) ConnState(c net.Conn, st http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st == http.StateNew {
		l.fresh[c] = struct{}{}
	} else {
		delete(l.fresh, c)
	}
}

// Stop closes the listener and waits until every connection already
// accepted has had its first request read, at most wait.
// http.Server.Shutdown drops a request it reads after it began (the
// connection just closes), which would lose a webhook whose connection was
// accepted a moment before the stop; read before Shutdown, the request is
// served. With an inherited socket, connections made from here on wait in
// the socket's queue for the next process.
func (l *Listener) Stop(wait time.Duration) {
	_ = l.Close() // Serve returns; the connections it accepted are still tracked and served
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		n := len(l.fresh)
		l.mu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(time.Millisecond) // a first request takes microseconds to arrive on loopback, milliseconds beyond
	}
}
