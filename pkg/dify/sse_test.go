package dify

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

const corpusDir = "../../testdata/corpus/dify"

// readAllEvents drains r and returns the events and the final error.
func readAllEvents(t testing.TB, r *SSEReader) ([]SSEEvent, error) {
	t.Helper()
	var evs []SSEEvent
	for {
		ev, err := r.Next()
		if err != nil {
			return evs, err
		}
		evs = append(evs, ev)
		if len(evs) > 1<<20 {
			t.Fatal("reader does not stop")
		}
	}
}

func TestSSEReader(t *testing.T) {
	big := strings.Repeat("x", 200<<10)
	tests := []struct {
		name    string
		in      string
		maxLine int
		want    []SSEEvent
		wantErr error
	}{
		{
			name: "DataOnly",
			in:   "data: {\"event\":\"message\"}\n\n",
			want: []SSEEvent{{Data: []byte(`{"event":"message"}`)}},
		},
		{
			name: "PingWithoutData",
			in:   "event: ping\n\ndata: a\n\n",
			want: []SSEEvent{{Name: "ping"}, {Data: []byte("a")}},
		},
		{
			name: "CRLF",
			in:   "event: ping\r\n\r\ndata: a\r\n\r\ndata: b\r\n\r\n",
			want: []SSEEvent{{Name: "ping"}, {Data: []byte("a")}, {Data: []byte("b")}},
		},
		{
			name: "CRLFMultiLineEvent",
			in:   "event: error\r\ndata: a\r\ndata: b\r\n\r\n",
			want: []SSEEvent{{Name: "error", Data: []byte("a\nb")}},
		},
		{
			name: "BareCR",
			in:   "data: a\r\rdata: b\r\r",
			want: []SSEEvent{{Data: []byte("a")}, {Data: []byte("b")}},
		},
		{
			name: "MultiLineData",
			in:   "data: one\ndata:two\ndata\ndata:  three\n\n",
			want: []SSEEvent{{Data: []byte("one\ntwo\n\n three")}},
		},
		{
			name: "CommentsIDRetryIgnored",
			in:   ": keep-alive\nid: 7\nretry: 1000\nfoo: bar\ndata: x\n\n: bye\n\n",
			want: []SSEEvent{{Data: []byte("x")}},
		},
		{
			name: "NamedEventWithData",
			in:   "event: error\ndata: {}\n\n",
			want: []SSEEvent{{Name: "error", Data: []byte("{}")}},
		},
		{
			name: "EmptyDataIsNotNil",
			in:   "data:\n\n",
			want: []SSEEvent{{Data: []byte{}}},
		},
		{
			name: "ExtraBlankLines",
			in:   "\n\n\ndata: a\n\n\n\n",
			want: []SSEEvent{{Data: []byte("a")}},
		},
		{
			name: "ByteOrderMark",
			in:   "\xef\xbb\xbfdata: a\n\n",
			want: []SSEEvent{{Data: []byte("a")}},
		},
		{
			name: "DataLine200KiB",
			in:   "data: " + big + "\n\nevent: ping\n\n",
			want: []SSEEvent{{Data: []byte(big)}, {Name: "ping"}},
		},
		{
			name:    "LineOverMax",
			in:      "data: a\n\ndata: " + strings.Repeat("y", 100) + "\n\n",
			maxLine: 64,
			want:    []SSEEvent{{Data: []byte("a")}},
			wantErr: ErrLineTooLong,
		},
		{
			name:    "LineAtMax",
			in:      "data: " + strings.Repeat("y", 58) + "\n\n",
			maxLine: 64,
			want:    []SSEEvent{{Data: []byte(strings.Repeat("y", 58))}},
		},
		{
			name:    "JoinedDataOverMax",
			in:      strings.Repeat("data: 0123456789\n", 10) + "\n",
			maxLine: 64,
			wantErr: ErrLineTooLong,
		},
		{
			name:    "CutInsideEvent",
			in:      "data: a\n\ndata: {\"ev",
			want:    []SSEEvent{{Data: []byte("a")}},
			wantErr: io.ErrUnexpectedEOF,
		},
		{
			name:    "CutBeforeBlankLine",
			in:      "data: a\n",
			wantErr: io.ErrUnexpectedEOF,
		},
	}
	readers := map[string]func(io.Reader) io.Reader{
		"Whole":   func(r io.Reader) io.Reader { return r },
		"OneByte": iotest.OneByteReader,
		"Half":    iotest.HalfReader,
	}
	for _, tc := range tests {
		for rname, wrap := range readers {
			t.Run(tc.name+"/"+rname, func(t *testing.T) {
				r := NewSSEReader(wrap(strings.NewReader(tc.in)), tc.maxLine)
				got, err := readAllEvents(t, r)
				wantErr := tc.wantErr
				if wantErr == nil {
					wantErr = io.EOF
				}
				if !errors.Is(err, wantErr) {
					t.Fatalf("error = %v, want %v", err, wantErr)
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("events = %q\nwant %q", got, tc.want)
				}
				if _, again := r.Next(); !errors.Is(again, wantErr) {
					t.Fatalf("second error = %v, want %v again", again, wantErr)
				}
			})
		}
	}
}

func TestSSEReaderDefaultMaxLine(t *testing.T) {
	// 64 KiB is bufio.Scanner's default; the reader must not inherit it.
	line := strings.Repeat("z", 5<<20)
	r := NewSSEReader(strings.NewReader("data: "+line+"\n\n"), 0)
	_, err := r.Next()
	if !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("5 MiB line with default limit: error = %v, want ErrLineTooLong", err)
	}
	r = NewSSEReader(strings.NewReader("data: "+line[:1<<20]+"\n\n"), 0)
	ev, err := r.Next()
	if err != nil || len(ev.Data) != 1<<20 {
		t.Fatalf("1 MiB line with default limit: len %d, error %v", len(ev.Data), err)
	}
}

func TestSSEReaderReadError(t *testing.T) {
	boom := errors.New("connection reset")
	r := NewSSEReader(io.MultiReader(strings.NewReader("data: a\n\n"), iotest.ErrReader(boom)), 0)
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); !errors.Is(err, boom) {
		t.Fatalf("error = %v, want %v", err, boom)
	}
}

func corpusSSE(t testing.TB) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(corpusDir, "*.sse"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatalf("no .sse files in %s", corpusDir)
	}
	out := map[string][]byte{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(filepath.Base(p), ".sse")] = b
	}
	return out
}

// FuzzSSE checks that the SSE reader and the stream assembler never panic or hang, that the
// reader's result does not depend on how the input is split into reads, and that ReadStream
// either succeeds with an answer or returns an error.
func FuzzSSE(f *testing.F) {
	for _, b := range corpusSSE(f) {
		f.Add(b, 0)
		f.Add(bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")), 64)
	}
	f.Add([]byte("event: ping\n\n"), 8)
	f.Add([]byte("data: {\"event\":\"error\",\"status\":\"500\"}\n\n"), 0)
	f.Fuzz(func(t *testing.T, in []byte, maxLine int) {
		maxLine %= 1 << 16
		whole, errWhole := readAllEvents(t, NewSSEReader(bytes.NewReader(in), maxLine))
		split, errSplit := readAllEvents(t, NewSSEReader(iotest.OneByteReader(bytes.NewReader(in)), maxLine))
		if !reflect.DeepEqual(whole, split) || !sameErr(errWhole, errSplit) {
			t.Fatalf("whole: %q, %v\nbyte by byte: %q, %v", whole, errWhole, split, errSplit)
		}
		limit := maxLine
		if limit <= 0 {
			limit = DefaultMaxLine
		}
		for _, ev := range whole {
			if len(ev.Data) > limit || len(ev.Name) > limit {
				t.Fatalf("event over the %d-byte limit: %d bytes", limit, len(ev.Data))
			}
		}

		a, err := ReadStreamWith(t.Context(), bytes.NewReader(in), StreamOptions{MaxLine: maxLine})
		if err == nil && a == nil {
			t.Fatal("nil answer without error")
		}
		if err == nil && a.Events == 0 {
			t.Fatal("success without a single event")
		}
	})
}

func sameErr(a, b error) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Error() == b.Error()
}
