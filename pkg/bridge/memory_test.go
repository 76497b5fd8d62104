package bridge

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

// memCalls is how many Dify calls TestMemoryPerWaitingCall holds at once.
const memCalls = 200

// maxBytesPerWaitingCall bounds the Go heap and goroutine stacks that one
// call waiting on Dify holds in bridge: the worker's stack (16 KiB: it read
// the journal before), the Dify connection (its read and write loops, 4 KiB
// of stack each, and 3 KiB of buffers), the stream reader, the request and
// response, the event. Measured at 43-45 KiB (17 of heap, 26-28 of stacks);
// 56 KiB before streams were read on the worker's goroutine with small
// buffers. The garbage collector lets the heap grow by about as much again,
// so the resident memory of a waiting call is about twice this.
const maxBytesPerWaitingCall = 52 << 10

// maxGoroutinesPerWaitingCall: the worker and the Dify connection's read
// and write loops, and a share of the idle Chatwoot connections the typing
// indicators left (3.12 measured; 4.12 with a stream reader goroutine).
const maxGoroutinesPerWaitingCall = 3.5

// TestMemoryPerWaitingCall holds memCalls Dify streams open at once and
// measures what each costs bridge: Go heap live after a collection and
// goroutine stacks, from runtime.MemStats. The simulators run in a child
// process, so that their own connections and buffers are not counted.
func TestMemoryPerWaitingCall(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes what goroutines and allocations cost")
	}
	sim := startSimChild(t)
	ctx := t.Context()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "bridge.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	core := New(Options{
		Store:          db,
		Chatwoot:       chatwoot.NewClient(chatwoot.Options{BaseURL: sim.chatwoot, Token: testBotToken}),
		Logger:         slog.New(slog.NewJSONHandler(io.Discard, nil)),
		WebhookSecret:  testSecret,
		BotStatuses:    []string{"pending"},
		DifyBaseURL:    sim.dify + "/v1",
		DifyTimeout:    time.Minute,
		DifyMaxRetries: 1,
		Concurrency:    memCalls + 16,
		RetryBase:      time.Millisecond,
		ShutdownGrace:  2 * time.Second,
		Handoff:        HandoffOptions{Keywords: []string{"human"}, AIMarker: "[[handoff]]", Message: "A human will answer."},
	})
	srv := httptest.NewServer(core.Handler())
	t.Cleanup(srv.Close)
	if err := db.AddRoute(ctx, &store.Route{InboxID: 1, Name: "support", DifyKey: testDifyKey, Mode: store.ModeAuto, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- core.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-ran; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	sim.say("webhook " + srv.URL + "/webhooks/chatwoot " + testSecret)
	sim.expect("ok")

	before := memNow(true)
	sim.say("customers " + strconv.Itoa(memCalls))
	sim.expect("held " + strconv.Itoa(memCalls))
	// Dify has every call; wait until bridge's workers have its streams too.
	deadline := time.Now().Add(10 * time.Second)
	for core.inDify.Load() < memCalls {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d calls waiting on Dify in bridge", core.inDify.Load(), memCalls)
		}
		time.Sleep(time.Millisecond) // polling an in-memory counter
	}
	raw := memNow(false)
	held := memNow(true)

	perCall := func(b, a uint64) float64 { return (float64(b) - float64(a)) / memCalls }
	heap, stack, rawStack := perCall(held.heap, before.heap), perCall(held.stack, before.stack), perCall(raw.stack, before.stack)
	goroutines := float64(held.goroutines-before.goroutines) / memCalls
	t.Logf("per waiting call: heap %.1f KiB, stacks %.1f KiB (%.1f KiB before a collection shrank them), %.2f goroutines",
		heap/1024, stack/1024, rawStack/1024, goroutines)
	if heap+stack > maxBytesPerWaitingCall {
		t.Errorf("a call waiting on Dify holds %.1f KiB of heap and stacks, over %d KiB", (heap+stack)/1024, maxBytesPerWaitingCall>>10)
	}
	if goroutines > maxGoroutinesPerWaitingCall {
		t.Errorf("a call waiting on Dify holds %.2f goroutines, over %.1f", goroutines, maxGoroutinesPerWaitingCall)
	}

	// The held calls are real: once Dify answers, every customer has an answer.
	sim.say("release")
	sim.expect("answered " + strconv.Itoa(memCalls))
	// Each event is finished in the journal just after its answer is posted.
	committed := make(chan struct{}, 1)
	db.OnCommit(func() {
		select {
		case committed <- struct{}{}:
		default:
		}
	})
	defer db.OnCommit(func() {})
	wait := time.NewTimer(10 * time.Second)
	defer wait.Stop()
	for {
		n, err := db.CountOpen(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		select {
		case <-committed:
		case <-wait.C:
			t.Fatalf("%d events still open after every answer was posted", n)
		}
	}
}

type memSample struct {
	heap, stack uint64
	goroutines  int
}

// memNow reads the live heap (after a collection, when gc) and the
// goroutine stacks.
func memNow(gc bool) memSample {
	if gc {
		runtime.GC()
		runtime.GC() // a second cycle frees what the first only found, and shrinks stacks again
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return memSample{heap: m.HeapAlloc, stack: m.StackInuse, goroutines: runtime.NumGoroutine()}
}

// simChild is the simulated Chatwoot and Dify in a child process, driven
// line by line over its standard input and output.
type simChild struct {
	t              *testing.T
	dify, chatwoot string
	in             io.Writer
	out            *bufio.Scanner
}

func startSimChild(t *testing.T) *simChild {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMemoryHelperSimulators$")
	cmd.Env = append(os.Environ(), "BRIDGE_TEST_SIM_CHILD=1")
	cmd.Stderr = t.Output()
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = in.Close() // the child ends at the end of its input
		if err := cmd.Wait(); err != nil {
			t.Errorf("simulators: %v", err)
		}
	})
	s := &simChild{t: t, in: in, out: bufio.NewScanner(out)}
	s.dify = strings.TrimPrefix(s.expect("dify "), "dify ")
	s.chatwoot = strings.TrimPrefix(s.expect("chatwoot "), "chatwoot ")
	return s
}

func (s *simChild) say(line string) {
	s.t.Helper()
	if _, err := fmt.Fprintln(s.in, line); err != nil {
		s.t.Fatal(err)
	}
}

// expect reads the child's next line and fails unless it starts with
// prefix.
func (s *simChild) expect(prefix string) string {
	s.t.Helper()
	if !s.out.Scan() {
		s.t.Fatalf("simulators ended before %q: %v", prefix, s.out.Err())
	}
	if line := s.out.Text(); strings.HasPrefix(line, prefix) {
		return line
	}
	s.t.Fatalf("simulators said %q, want %q", s.out.Text(), prefix)
	return ""
}

// TestMemoryHelperSimulators is the child of TestMemoryPerWaitingCall: a
// simulated Chatwoot and Dify whose streams are held open after their
// first ping until told to release them.
func TestMemoryHelperSimulators(t *testing.T) {
	if os.Getenv("BRIDGE_TEST_SIM_CHILD") == "" {
		t.Skip("run by TestMemoryPerWaitingCall")
	}
	d := simulate.NewDify(simulate.DifyApp{Key: testDifyKey, Name: "Support", Mode: simulate.ModeChat})
	d.HoldStreams()
	difySrv := httptest.NewServer(d)
	cw := simulate.NewChatwoot(simulate.ChatwootOptions{AccountID: 1, BotToken: testBotToken})
	cwSrv := httptest.NewServer(cw)
	defer func() {
		d.Close()
		cw.Close()
		difySrv.Close()
		cwSrv.Close()
	}()
	fmt.Printf("dify %s\nchatwoot %s\n", difySrv.URL, cwSrv.URL)
	ctx := context.Background()
	var convs []int64
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 3 && f[0] == "webhook":
			cw.SetWebhook(f[1], f[2])
			cw.AddInbox(1, "Website", f[1])
			fmt.Println("ok")
		case len(f) == 2 && f[0] == "customers":
			n, _ := strconv.Atoi(f[1])
			for range n {
				convs = append(convs, cw.NewConversation(1, simulate.Contact{}, "pending"))
			}
			// A few deliveries at a time, as Chatwoot's job workers send them.
			sem := make(chan struct{}, 8)
			var wg sync.WaitGroup
			failed := make(chan string, n)
			for i, conv := range convs {
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					if d, err := cw.CustomerSays(ctx, conv, fmt.Sprintf("question %d", i)); err != nil || d.Status != http.StatusOK {
						failed <- fmt.Sprintf("webhook %d: %v %d", i, err, d.Status)
					}
				})
			}
			wg.Wait()
			close(failed)
			if msg, ok := <-failed; ok {
				fmt.Println("error " + msg)
				continue
			}
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := d.WaitFor(wctx, func() bool { return d.Held() == n })
			cancel()
			if err != nil {
				fmt.Printf("error %d of %d streams held\n", d.Held(), n)
				continue
			}
			fmt.Println("held", n)
		case len(f) == 1 && f[0] == "release":
			d.Release()
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			answered := func() int {
				got := 0
				for _, c := range convs {
					for _, m := range cw.Messages(c) {
						if m.MessageType == "outgoing" && !m.Private && m.SenderType == "agent_bot" {
							got++
							break
						}
					}
				}
				return got
			}
			err := cw.WaitFor(wctx, func() bool { return answered() == len(convs) })
			cancel()
			if err != nil {
				fmt.Printf("error %d of %d answered\n", answered(), len(convs))
				continue
			}
			fmt.Println("answered", len(convs))
		default:
			fmt.Println("error unknown command " + sc.Text())
		}
	}
}
