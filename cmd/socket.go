package cmd

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"
)

// listenFDsStart is the first file descriptor a supervisor passes
// (SD_LISTEN_FDS_START in sd_listen_fds(3)).
const listenFDsStart = 3

// inheritedGrace is how long running events may finish when serve stops
// and a socket it inherited keeps queueing webhooks for the next process.
const inheritedGrace = 3 * time.Second

// inheritedListener returns the listening socket a supervisor passed to
// this process (systemd socket activation: LISTEN_PID is this process and
// LISTEN_FDS is 1, the socket being file descriptor 3), or nil when none was
// passed. The variables are removed so that no child takes the socket for
// its own. The supervisor keeps the socket open while serve restarts, so
// connections made meanwhile wait in its queue instead of being refused.
func inheritedListener() (net.Listener, error) {
	fds, pid := os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_PID")
	if fds == "" {
		return nil, nil
	}
	if p, err := strconv.Atoi(pid); err != nil || p != os.Getpid() {
		return nil, nil // meant for another process (our parent's, say)
	}
	for _, k := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} {
		_ = os.Unsetenv(k) // cannot fail for these names
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n != 1 {
		return nil, fmt.Errorf("LISTEN_FDS=%s: serve takes exactly one socket (one ListenStream= in the socket unit)", fds)
	}
	syscall.CloseOnExec(listenFDsStart)
	f := os.NewFile(listenFDsStart, "inherited socket")
	ln, err := net.FileListener(f)
	_ = f.Close() // FileListener made its own copy
	if err != nil {
		return nil, fmt.Errorf("the socket passed in file descriptor %d: %w (want a listening stream socket)", listenFDsStart, err)
	}
	return ln, nil
}
