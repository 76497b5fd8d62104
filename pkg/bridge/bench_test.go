package bridge

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

// benchWebhook is a real-shaped, signed customer message for the handler
// benchmarks: each call gets a fresh message id, so every webhook is
// accepted and journaled durably (none is a duplicate).
type benchWebhook struct {
	head, tail []byte // the body around the message id
	secret     string
	next       atomic.Int64
}

func newBenchWebhook(b *testing.B) *benchWebhook {
	b.Helper()
	cw := simulate.NewChatwoot(simulate.ChatwootOptions{AccountID: 1, NoEcho: true})
	defer cw.Close()
	cw.AddInbox(1, "Website", "")
	conv := cw.NewConversation(1, simulate.Contact{Name: "Jane Doe", Email: "jane@example.com"}, "pending")
	d, _ := cw.CustomerSays(b.Context(), conv, "Where is my order #1234?") // no webhook URL: only the body is wanted
	id := []byte(`"id":` + strconv.FormatInt(d.MessageID, 10) + `,`)
	i := bytes.LastIndex(d.Body, id)
	if i < 0 {
		b.Fatalf("message id not found in %s", d.Body)
	}
	return &benchWebhook{head: d.Body[:i+len(`"id":`)], tail: d.Body[i+len(id)-1:], secret: "bench-secret"}
}

// request returns a signed POST of a new message.
func (w *benchWebhook) request() *http.Request {
	n := w.next.Add(1)
	body := make([]byte, 0, len(w.head)+len(w.tail)+20)
	body = append(body, w.head...)
	body = strconv.AppendInt(body, 1_000_000+n, 10)
	body = append(body, w.tail...)
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	r := httptest.NewRequest(http.MethodPost, "/webhooks/chatwoot", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("X-Chatwoot-Timestamp", ts)
	r.Header.Set("X-Chatwoot-Signature", chatwoot.Sign(w.secret, mustUnix(ts), body))
	r.Header.Set("X-Chatwoot-Delivery", "bench-"+strconv.FormatInt(n, 10))
	return r
}

func mustUnix(ts string) int64 {
	n, _ := strconv.ParseInt(ts, 10, 64) // formatted just above
	return n
}

// benchBridge is a Bridge on a real journal with one route, workers not
// running: the benchmarks measure the webhook path alone.
func benchBridge(b *testing.B, secret string) (*Bridge, *store.DB) {
	b.Helper()
	db, err := store.Open(context.Background(), filepath.Join(b.TempDir(), "bridge.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	if err := db.AddRoute(context.Background(), &store.Route{InboxID: 1, DifyKey: "app-bench", Mode: store.ModeAuto, Enabled: true}); err != nil {
		b.Fatal(err)
	}
	return New(Options{Store: db, WebhookSecret: secret}), db
}

// BenchmarkWebhook measures one webhook through the handler: read, verify
// the signature, parse, decide, journal durably (synchronous=FULL, group
// commit), answer. Parallel shows concurrent webhooks sharing fsyncs.
func BenchmarkWebhook(b *testing.B) {
	w := newBenchWebhook(b)
	check := func(b *testing.B, rec *httptest.ResponseRecorder) {
		if rec.Code != http.StatusOK || !bytes.Contains(rec.Body.Bytes(), []byte(`"accepted"`)) {
			b.Fatalf("webhook: %d %s", rec.Code, rec.Body.String())
		}
	}
	report := func(b *testing.B, db *store.DB, c0, w0 int64) {
		c, wr := db.Commits()
		if n := wr - w0; n > 0 {
			b.ReportMetric(float64(c-c0)/float64(n), "commits/webhook")
		}
	}
	b.Run("Serial", func(b *testing.B) {
		core, db := benchBridge(b, w.secret)
		h := core.Handler()
		c0, w0 := db.Commits()
		b.ReportAllocs()
		for b.Loop() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, w.request())
			check(b, rec)
		}
		report(b, db, c0, w0)
	})
	b.Run("Parallel", func(b *testing.B) {
		core, db := benchBridge(b, w.secret)
		h := core.Handler()
		c0, w0 := db.Commits()
		b.ReportAllocs()
		b.SetParallelism(32)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, w.request())
				if rec.Code != http.StatusOK {
					b.Errorf("webhook: %d %s", rec.Code, rec.Body.String())
					return
				}
			}
		})
		report(b, db, c0, w0)
	})
}
