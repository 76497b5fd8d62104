package dify

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
)

// DefaultMaxLine is the line limit used when none is given. A Dify event is one data line, and
// one carrying retriever resources or a long answer can pass bufio.Scanner's 64 KiB default.
const DefaultMaxLine = 4 << 20

// sseBuffer is the read buffer of an SSEReader. Lines longer than it are
// assembled in the reader's line buffer, so it bounds no line; it is small
// because bridge may hold a thousand streams open at once, each waiting for
// Dify, and the bytes of one stream arrive a network packet at a time anyway.
const sseBuffer = 4 << 10

// SSEEvent is one dispatched server-sent event.
type SSEEvent struct {
	Name string // the "event:" field; "" for data-only frames, "ping" for Dify's keep-alive
	Data []byte // data lines joined by "\n"; nil when the event had no data line
}

// SSEReader reads server-sent events (the text/event-stream format) with a bounded line size.
// It is not safe for concurrent use.
type SSEReader struct {
	br      *bufio.Reader
	max     int
	line    []byte
	data    []byte
	skipLF  bool // the previous line ended in '\r'; a '\n' right after it belongs to it
	started bool // past the optional byte order mark
	err     error
}

// NewSSEReader returns a reader that fails with ErrLineTooLong on a line, or on the joined data
// of one event, longer than maxLine bytes. maxLine <= 0 means DefaultMaxLine.
func NewSSEReader(r io.Reader, maxLine int) *SSEReader {
	if maxLine <= 0 {
		maxLine = DefaultMaxLine
	}
	return &SSEReader{br: bufio.NewReaderSize(r, min(maxLine+2, sseBuffer)), max: maxLine}
}

// Next returns the next event. Unlike a browser's EventSource it also returns events that have
// no data (Dify's "event: ping"), so a caller can reset an idle timer on them. Comments, "id:"
// and "retry:" lines are skipped. Lines may end in "\n", "\r\n" or "\r".
//
// Next returns io.EOF when the input ends between events, and io.ErrUnexpectedEOF when it ends
// inside one; the unfinished event is dropped either way. After an error every call returns it.
func (r *SSEReader) Next() (SSEEvent, error) {
	if r.err != nil {
		return SSEEvent{}, r.err
	}
	var (
		name    string
		hasName bool
		hasData bool
	)
	r.data = r.data[:0]
	for {
		line, err := r.readLine()
		if err != nil {
			if err == io.EOF && (hasName || hasData) {
				err = io.ErrUnexpectedEOF
			}
			r.err = err
			return SSEEvent{}, err
		}
		if !r.started {
			r.started = true
			line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf"))
		}
		if len(line) == 0 {
			if !hasName && !hasData {
				continue
			}
			ev := SSEEvent{Name: name}
			if hasData {
				ev.Data = bytes.Clone(r.data)
				if ev.Data == nil {
					ev.Data = []byte{}
				}
			}
			return ev, nil
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i == 0 {
			continue // comment
		} else if i > 0 {
			field, value = line[:i], line[i+1:]
			value = bytes.TrimPrefix(value, []byte(" "))
		}
		switch string(field) {
		case "event":
			name, hasName = string(value), true
		case "data":
			if hasData {
				if len(r.data)+1+len(value) > r.max {
					r.err = fmt.Errorf("event data over %d bytes: %w", r.max, ErrLineTooLong)
					return SSEEvent{}, r.err
				}
				r.data = append(r.data, '\n')
			}
			r.data = append(r.data, value...)
			hasData = true
		}
	}
}

// readLine returns the next line without its terminator. The slice is valid until the next call.
func (r *SSEReader) readLine() ([]byte, error) {
	r.line = r.line[:0]
	for {
		if r.br.Buffered() == 0 {
			if _, err := r.br.Peek(1); err != nil {
				if err == io.EOF && len(r.line) > 0 {
					return nil, io.ErrUnexpectedEOF
				}
				if err != io.EOF {
					err = fmt.Errorf("read event stream: %w", err)
				}
				return nil, err
			}
		}
		buf, _ := r.br.Peek(r.br.Buffered())
		if r.skipLF {
			r.skipLF = false
			if buf[0] == '\n' {
				_, _ = r.br.Discard(1) // cannot fail: the byte is buffered
				continue
			}
		}
		i := bytes.IndexAny(buf, "\r\n")
		n := i
		if i < 0 {
			n = len(buf)
		}
		if len(r.line)+n > r.max {
			return nil, fmt.Errorf("line over %d bytes: %w", r.max, ErrLineTooLong)
		}
		r.line = append(r.line, buf[:n]...)
		if i >= 0 {
			r.skipLF = buf[i] == '\r'
			_, _ = r.br.Discard(i + 1) // cannot fail: the bytes are buffered
			return r.line, nil
		}
		_, _ = r.br.Discard(n) // cannot fail: the bytes are buffered
	}
}
