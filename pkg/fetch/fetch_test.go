package fetch

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// servers: origin plays Chatwoot (redirecting to storage), storage plays
// the storage service on another port of loopback.
func servers(t *testing.T, storage http.HandlerFunc) (origin, store *httptest.Server, redirectTo func(string)) {
	t.Helper()
	store = httptest.NewServer(storage)
	t.Cleanup(store.Close)
	target := store.URL + "/file.bin"
	origin = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/direct.txt":
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = io.WriteString(w, "hello")
		default:
			http.Redirect(w, r, target, http.StatusFound)
		}
	}))
	t.Cleanup(origin.Close)
	return origin, store, func(u string) { target = u }
}

func okStorage(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("Content-Disposition", `inline; filename="cat.png"`)
	_, _ = io.WriteString(w, "PNGDATA")
}

func mustNew(t *testing.T, p Policy) *Fetcher {
	t.Helper()
	f, err := New(p)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func readAll(t *testing.T, f *Fetcher, u string) (*Download, string, error) {
	t.Helper()
	d, err := f.Open(t.Context(), u)
	if err != nil {
		return nil, "", err
	}
	defer d.Close()
	b, err := io.ReadAll(d.Body)
	return d, string(b), err
}

func TestFollowsOriginRedirectToStorage(t *testing.T) {
	origin, _, _ := servers(t, okStorage)
	f := mustNew(t, Policy{Origin: origin.URL, AllowPrivate: true})
	d, body, err := readAll(t, f, origin.URL+"/rails/active_storage/blobs/redirect/x/cat.png")
	if err != nil {
		t.Fatal(err)
	}
	if body != "PNGDATA" || d.ContentType != "image/png" || d.Name != "cat.png" || d.Size != 7 {
		t.Fatalf("got %q %q %q %d", body, d.ContentType, d.Name, d.Size)
	}
}

func refused(t *testing.T, err error, want string) {
	t.Helper()
	var re *RefusedError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v, want a refusal", err)
	}
	if !strings.Contains(re.Reason, want) {
		t.Fatalf("reason %q, want %q", re.Reason, want)
	}
}

func TestRefusesOtherOrigin(t *testing.T) {
	origin, store, _ := servers(t, okStorage)
	f := mustNew(t, Policy{Origin: origin.URL, AllowPrivate: true})
	_, err := f.Open(t.Context(), store.URL+"/file.bin")
	refused(t, err, "not under "+origin.URL)
	_, err = f.Open(t.Context(), "ftp://"+strings.TrimPrefix(origin.URL, "http://")+"/x")
	refused(t, err, "only http and https")
	_, err = f.Open(t.Context(), strings.Replace(origin.URL, "http://", "http://user:pw@", 1)+"/x")
	refused(t, err, "credentials")
}

func TestRefusesRedirectToLoopbackUnlessAllowed(t *testing.T) {
	origin, _, _ := servers(t, okStorage)
	f := mustNew(t, Policy{Origin: origin.URL})
	// The origin itself is on loopback and still reachable: it is the
	// operator's configuration.
	if _, body, err := readAll(t, f, origin.URL+"/direct.txt"); err != nil || body != "hello" {
		t.Fatalf("origin: %q %v", body, err)
	}
	_, err := f.Open(t.Context(), origin.URL+"/redirect")
	refused(t, err, "no public address")
}

func TestRefusesRedirectToLinkLocalAndPrivateWithoutDialling(t *testing.T) {
	for _, tc := range []struct{ name, target string }{
		{"metadata service", "http://169.254.169.254/latest/meta-data/"},
		{"private literal", "http://10.1.2.3:9000/bucket/file"},
		{"ipv6 loopback", "http://[::1]:9000/file"},
		{"mapped private", "http://[::ffff:192.168.1.1]/file"},
		{"name resolving to private", "http://minio.internal:9000/file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			origin, _, redirect := servers(t, okStorage)
			redirect(tc.target)
			f := mustNew(t, Policy{Origin: origin.URL,
				Resolve: func(context.Context, string) ([]netip.Addr, error) {
					return []netip.Addr{netip.MustParseAddr("10.9.8.7")}, nil
				},
				Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
					if addr != strings.TrimPrefix(origin.URL, "http://") {
						t.Errorf("dialled %s", addr)
					}
					return (&net.Dialer{}).DialContext(ctx, network, addr)
				}})
			_, err := f.Open(t.Context(), origin.URL+"/redirect")
			refused(t, err, "no public address")
		})
	}
}

func TestRefusesRedirectToOtherSchemes(t *testing.T) {
	origin, _, redirect := servers(t, okStorage)
	redirect("file:///etc/passwd")
	f := mustNew(t, Policy{Origin: origin.URL, AllowPrivate: true})
	_, err := f.Open(t.Context(), origin.URL+"/redirect")
	refused(t, err, "non-http(s)")
}

func TestRefusesRedirectLoops(t *testing.T) {
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, srv.URL+r.URL.Path+"x", http.StatusFound)
	}))
	defer srv.Close()
	f := mustNew(t, Policy{Origin: srv.URL, MaxRedirects: 3})
	_, err := f.Open(t.Context(), srv.URL+"/a")
	refused(t, err, "more than 3 redirects")
}

func TestSizeCap(t *testing.T) {
	big := strings.Repeat("x", 1000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chunked" {
			// No Content-Length: the cap is found while reading.
			w.(http.Flusher).Flush()
		}
		_, _ = io.WriteString(w, big)
	}))
	defer srv.Close()
	f := mustNew(t, Policy{Origin: srv.URL, MaxBytes: 999})
	_, err := f.Open(t.Context(), srv.URL+"/known")
	var tl *TooLargeError
	if !errors.As(err, &tl) || tl.Size != 1000 || tl.Max != 999 {
		t.Fatalf("known length: %v", err)
	}
	_, _, err = readAll(t, f, srv.URL+"/chunked")
	if !errors.As(err, &tl) || tl.Size != -1 {
		t.Fatalf("chunked: %v", err)
	}
	f = mustNew(t, Policy{Origin: srv.URL, MaxBytes: 1000})
	if _, body, err := readAll(t, f, srv.URL+"/chunked"); err != nil || len(body) != 1000 {
		t.Fatalf("exactly the cap: %d %v", len(body), err)
	}
}

func TestTimeoutBoundsTheBody(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "start")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	f := mustNew(t, Policy{Origin: srv.URL, Timeout: 100 * time.Millisecond})
	_, _, err := readAll(t, f, srv.URL+"/slow")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the deadline", err)
	}
}

func TestStatusError(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	f := mustNew(t, Policy{Origin: srv.URL})
	_, err := f.Open(t.Context(), srv.URL+"/gone?sig=secret")
	var se *StatusError
	if !errors.As(err, &se) || se.Status != 404 || strings.Contains(err.Error(), "secret") {
		t.Fatalf("err = %v", err)
	}
}

func TestHostPrivate(t *testing.T) {
	resolve := func(_ context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "chatwoot.internal":
			return []netip.Addr{netip.MustParseAddr("172.18.0.4")}, nil
		case "chat.example.com":
			return []netip.Addr{netip.MustParseAddr("93.184.215.14")}, nil
		}
		return nil, errors.New("no such host")
	}
	for u, want := range map[string]bool{
		"http://127.0.0.1:3000/x":        true,
		"http://localhost:3000/x":        true,
		"http://chatwoot.internal/x":     true,
		"https://chat.example.com/x":     false,
		"http://[fe80::1]/x":             true,
		"https://93.184.215.14/x":        false,
		"http://host.docker.internal2/x": false,
	} {
		got, err := HostPrivate(t.Context(), u, resolve)
		if strings.Contains(u, "docker") {
			if err == nil {
				t.Errorf("%s: want a resolution error", u)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("%s: %v %v, want %v", u, got, err, want)
		}
	}
}

func TestRedact(t *testing.T) {
	if got := Redact("https://u:p@h/files/tools/1.png?timestamp=1&sign=abc#f"); got != "https://h/files/tools/1.png" {
		t.Fatal(got)
	}
}
