// Package fetch downloads files whose URLs bridge did not choose (a
// webhook's attachment data_url, a Dify answer's file) without letting the
// URL steer bridge somewhere it should not go, and without holding a file
// in memory: the body is streamed to the caller, bounded in size and time.
//
// The rules: the first request goes only to the configured origin (when one
// is set) over http(s); redirects are followed over http(s) only, a bounded
// number of times; a host other than the origin's is dialled only at a
// public address, unless the policy allows private ones (the origin itself
// is on a private network, so its storage service may be too). Addresses
// are checked when the connection is made, on the address actually dialled,
// so a name that resolves differently later cannot slip past.
package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/bridge-dev/bridge/internal/netaddr"
)

// Defaults of a Policy's zero fields.
const (
	DefaultMaxBytes     = 25 << 20
	DefaultTimeout      = 60 * time.Second
	DefaultMaxRedirects = 5
)

// RefusedError is a download the policy does not allow. It is never worth
// retrying.
type RefusedError struct {
	URL    string // without its query, which may carry a signature
	Reason string
}

func (e *RefusedError) Error() string { return "download refused: " + e.Reason + " (" + e.URL + ")" }

// TooLargeError is a file over the size cap, known from Content-Length or
// found while reading.
type TooLargeError struct {
	Size int64 // -1 when the cap was passed while reading
	Max  int64
}

func (e *TooLargeError) Error() string {
	if e.Size < 0 {
		return fmt.Sprintf("file larger than the %s limit", Bytes(e.Max))
	}
	return fmt.Sprintf("file of %s is over the %s limit", Bytes(e.Size), Bytes(e.Max))
}

// StatusError is a download answered with a non-2xx status.
type StatusError struct {
	URL    string
	Status int
}

func (e *StatusError) Error() string { return fmt.Sprintf("download %s: http %d", e.URL, e.Status) }

// Policy says what a Fetcher may fetch.
type Policy struct {
	// Origin (scheme://host[:port]) is where every download must start; ""
	// allows any http(s) URL. Connections to the origin's own host are made
	// as configured (it is the operator's choice), whatever its address.
	Origin string
	// AllowPrivate lets other hosts (redirect targets, or any host when
	// Origin is "") be private, loopback or link-local addresses.
	AllowPrivate bool
	// MaxBytes caps a file; 0 means DefaultMaxBytes.
	MaxBytes int64
	// Timeout bounds a whole download, the body included; 0 means
	// DefaultTimeout.
	Timeout time.Duration
	// MaxRedirects bounds redirects; 0 means DefaultMaxRedirects.
	MaxRedirects int
	// Resolve looks a host name up; nil means the system resolver.
	Resolve func(ctx context.Context, host string) ([]netip.Addr, error)
	// Dial connects to an address checked by the policy; nil means a
	// net.Dialer with a 10 s timeout.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Fetcher downloads under one Policy. It is safe for concurrent use.
type Fetcher struct {
	p      Policy
	origin *url.URL
	hc     *http.Client
}

// New returns a Fetcher; it fails only on a malformed Origin.
func New(p Policy) (*Fetcher, error) {
	if p.MaxBytes <= 0 {
		p.MaxBytes = DefaultMaxBytes
	}
	if p.Timeout <= 0 {
		p.Timeout = DefaultTimeout
	}
	if p.MaxRedirects <= 0 {
		p.MaxRedirects = DefaultMaxRedirects
	}
	if p.Resolve == nil {
		p.Resolve = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	if p.Dial == nil {
		p.Dial = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	f := &Fetcher{p: p}
	if p.Origin != "" {
		u, err := url.Parse(p.Origin)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("fetch origin %q: want an http(s) URL", p.Origin)
		}
		f.origin = u
	}
	tr := &http.Transport{
		// No proxy: the address checks below must see the host really
		// dialled, which a proxy would hide.
		Proxy:                 nil,
		DialContext:           f.dial,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		IdleConnTimeout:       30 * time.Second,
		MaxIdleConnsPerHost:   4,
		// A file is passed on as it is; a transparently decompressed body
		// would not match its Content-Length.
		DisableCompression: true,
	}
	f.hc = &http.Client{Transport: tr, CheckRedirect: f.checkRedirect}
	return f, nil
}

// MaxBytes is the size cap in force.
func (f *Fetcher) MaxBytes() int64 { return f.p.MaxBytes }

// Download is an open download. Close it in every case.
type Download struct {
	// Body yields at most the policy's MaxBytes; reading past that fails
	// with a *TooLargeError.
	Body io.ReadCloser
	// ContentType is the media type the server gave (parameters dropped).
	ContentType string
	// Size is Content-Length, -1 when unknown.
	Size int64
	// Name is the file name from Content-Disposition or the final URL's
	// path ("" if neither has one).
	Name string
}

// Close releases the connection and the download's timer.
func (d *Download) Close() error { return d.Body.Close() }

// Open starts downloading rawURL and returns once the headers are in.
func (f *Fetcher) Open(ctx context.Context, rawURL string) (*Download, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, &RefusedError{URL: Redact(rawURL), Reason: "not a URL"}
	}
	if err := f.checkFirst(u); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, f.p.Timeout)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("download %s: %w", Redact(rawURL), err)
	}
	req.Header.Set("User-Agent", "bridge")
	resp, err := f.hc.Do(req)
	if err != nil {
		cancel()
		var re *RefusedError
		if errors.As(err, &re) {
			return nil, re
		}
		return nil, fmt.Errorf("download %s: %w", Redact(rawURL), err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10)) // lets the connection be reused
		_ = resp.Body.Close()                                        // nothing more is read from it
		cancel()
		return nil, &StatusError{URL: Redact(rawURL), Status: resp.StatusCode}
	}
	if resp.ContentLength > f.p.MaxBytes {
		_ = resp.Body.Close() // refused before reading
		cancel()
		return nil, &TooLargeError{Size: resp.ContentLength, Max: f.p.MaxBytes}
	}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return &Download{
		Body:        &capped{r: resp.Body, left: f.p.MaxBytes, max: f.p.MaxBytes, cancel: cancel},
		ContentType: ct,
		Size:        resp.ContentLength,
		Name:        fileName(resp),
	}, nil
}

// checkFirst applies the scheme and origin rules to the URL asked for.
func (f *Fetcher) checkFirst(u *url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		return &RefusedError{URL: Redact(u.String()), Reason: "only http and https URLs are fetched"}
	}
	if u.Host == "" {
		return &RefusedError{URL: Redact(u.String()), Reason: "no host"}
	}
	if u.User != nil {
		return &RefusedError{URL: Redact(u.String()), Reason: "URLs with credentials are not fetched"}
	}
	if f.origin != nil && !sameOrigin(u, f.origin) {
		return &RefusedError{URL: Redact(u.String()), Reason: "not under " + f.origin.Scheme + "://" + f.origin.Host}
	}
	return nil
}

func (f *Fetcher) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > f.p.MaxRedirects {
		return &RefusedError{URL: Redact(req.URL.String()), Reason: fmt.Sprintf("more than %d redirects", f.p.MaxRedirects)}
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return &RefusedError{URL: Redact(req.URL.String()), Reason: "redirect to a non-http(s) URL"}
	}
	if req.URL.User != nil {
		return &RefusedError{URL: Redact(req.URL.String()), Reason: "redirect to a URL with credentials"}
	}
	return nil
}

// dial connects to the origin's host as it is, and to any other host only
// at an address the policy allows.
func (f *Fetcher) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if f.origin != nil && addr == hostPort(f.origin) {
		return f.p.Dial(ctx, network, addr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else if addrs, err = f.p.Resolve(ctx, host); err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	var allowed []netip.Addr
	for _, a := range addrs {
		if f.p.AllowPrivate || !netaddr.Private(a.Unmap()) {
			allowed = append(allowed, a)
		}
	}
	if len(allowed) == 0 {
		return nil, &RefusedError{URL: host, Reason: fmt.Sprintf("%s has no public address (private, loopback and link-local addresses are refused unless chatwoot.base_url is on one)", host)}
	}
	var lastErr error
	for _, a := range allowed {
		c, err := f.p.Dial(ctx, network, net.JoinHostPort(a.Unmap().String(), port))
		if err == nil {
			return c, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// capped stops a body at the size cap and ends the download's timer on
// Close.
type capped struct {
	r      io.ReadCloser
	left   int64
	max    int64
	cancel context.CancelFunc
}

func (c *capped) Read(p []byte) (int, error) {
	if c.left <= 0 {
		// One byte more tells a file of exactly max bytes from a larger one.
		var one [1]byte
		if n, _ := c.r.Read(one[:]); n > 0 {
			return 0, &TooLargeError{Size: -1, Max: c.max}
		}
		return 0, io.EOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

func (c *capped) Close() error {
	err := c.r.Close()
	c.cancel()
	return err
}

func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) && hostPort(a) == hostPort(b)
}

// hostPort is the URL's host and port as the transport dials it.
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if strings.EqualFold(u.Scheme, "https") {
			port = "443"
		}
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

func fileName(resp *http.Response) string {
	if _, params, err := mime.ParseMediaType(resp.Header.Get("Content-Disposition")); err == nil {
		if n := path.Base(strings.ReplaceAll(params["filename"], "\\", "/")); n != "" && n != "." && n != "/" {
			return n
		}
	}
	if resp.Request != nil && resp.Request.URL != nil {
		if n := path.Base(resp.Request.URL.Path); n != "" && n != "." && n != "/" {
			if un, err := url.PathUnescape(n); err == nil {
				return un
			}
			return n
		}
	}
	return ""
}

// Redact drops a URL's query and credentials, which may carry a signature
// or a token, so the URL can go into a trace or a log.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if i := strings.IndexAny(raw, "?#"); i >= 0 {
			return raw[:i]
		}
		return raw
	}
	u.User, u.RawQuery, u.Fragment, u.ForceQuery = nil, "", "", false
	return u.String()
}

// HostPrivate reports whether rawURL's host is, or resolves only to,
// private, loopback or link-local addresses: a host a service outside the
// operator's network (Dify, fetching a remote_url) could not reach.
func HostPrivate(ctx context.Context, rawURL string, resolve func(context.Context, string) ([]netip.Addr, error)) (bool, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Hostname() == "" {
		return false, fmt.Errorf("no host in %q", Redact(rawURL))
	}
	host := u.Hostname()
	if a, err := netip.ParseAddr(host); err == nil {
		return netaddr.Private(a.Unmap()), nil
	}
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true, nil
	}
	if resolve == nil {
		resolve = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	addrs, err := resolve(ctx, host)
	if err != nil {
		return false, fmt.Errorf("resolve %s: %w", host, err)
	}
	for _, a := range addrs {
		if !netaddr.Private(a.Unmap()) {
			return false, nil
		}
	}
	return len(addrs) > 0, nil
}

// Bytes formats a size for people in binary units, as Chatwoot's and
// Dify's limits are meant: "812 B", "14.2 KB", "20.0 MB".
func Bytes(n int64) string {
	switch {
	case n < 1<<10:
		return strconv.FormatInt(n, 10) + " B"
	case n < 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KB"
	default:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MB"
	}
}
