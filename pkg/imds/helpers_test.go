package imds

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/imds-proxy/imds-proxy/pkg/exchange"
)

// fixedNow is the clock of every test: 2023-11-14T22:13:20Z.
var fixedNow = time.Unix(1700000000, 0).UTC()

// fakeSource is a TokenSource that records requests and answers from its
// fields. When entered is set it signals each call there, and when release
// is set it waits for it before answering.
type fakeSource struct {
	mu       sync.Mutex
	requests []exchange.Request
	tok      exchange.Token
	err      error
	entered  chan struct{}
	release  chan struct{}
}

func (f *fakeSource) Token(ctx context.Context, req exchange.Request) (exchange.Token, error) {
	f.mu.Lock()
	f.requests = append(f.requests, req)
	f.mu.Unlock()
	if f.entered != nil {
		f.entered <- struct{}{}
	}
	if f.release != nil {
		select {
		case <-f.release:
		case <-ctx.Done():
			return exchange.Token{}, ctx.Err()
		}
	}
	if f.err != nil {
		return exchange.Token{}, f.err
	}
	return f.tok, nil
}

func (f *fakeSource) calls() []exchange.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]exchange.Request(nil), f.requests...)
}

// testToken is a token whose fields exercise every reply field.
func testToken(access string) exchange.Token {
	return exchange.Token{
		AccessToken:  access,
		ClientID:     "11111111-2222-3333-4444-555555555555",
		ExpiresOn:    fixedNow.Add(3599 * time.Second),
		NotBefore:    fixedNow.Add(-5 * time.Minute),
		ExtExpiresIn: 7199 * time.Second,
	}
}

// upstreamFake is a fake real IMDS that counts and records what reaches it.
type upstreamFake struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []*http.Request
}

func newUpstream(t *testing.T, h http.HandlerFunc) *upstreamFake {
	t.Helper()
	u := &upstreamFake{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.reqs = append(u.reqs, r.Clone(context.Background()))
		u.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstreamFake) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

func (u *upstreamFake) last() *http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.reqs[len(u.reqs)-1]
}

// testConfig returns a Config with the fixed clock and the given upstream.
func testConfig(upstream string) Config {
	return Config{
		TenantID:           "72f988bf-86f1-41af-91ab-2d7cd011db47",
		Upstream:           upstream,
		PassthroughTimeout: 5 * time.Second,
		Now:                func() time.Time { return fixedNow },
	}
}

// newTestServer builds a Server with a fresh registry and testr logging.
func newTestServer(t *testing.T, cfg Config, src TokenSource) (*Server, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	if cfg.Gatherer == nil {
		cfg.Gatherer = reg
	}
	s, err := New(cfg, src, testr.NewWithOptions(t, testr.Options{Verbosity: 2}), reg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s, reg
}

// serveLoopback runs s.Serve, the proxy's own serving loop, on a fresh
// 127.0.0.1 listener and returns its address. When t ends it stops the
// loop as SIGTERM does and fails t unless Serve returns nil.
func serveLoopback(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// serve runs s.Handler on an httptest server on 127.0.0.1, with the
// http.Server settings of the proxy's own listener.
func serve(t *testing.T, s *Server) *httptest.Server {
	t.Helper()
	hs := httptest.NewUnstartedServer(nil)
	hs.Config = s.newHTTPServer(s.Handler())
	hs.Start()
	t.Cleanup(hs.Close)
	return hs
}

// rawResponse is a parsed HTTP response with its body read.
type rawResponse struct {
	status int
	// statusLine is the status code and reason phrase, "400 Bad Request".
	statusLine string
	header     http.Header
	body       string
	// chunked is true when the reply used chunked transfer encoding.
	chunked bool
	// contentLength is the Content-Length the reply declared, or -1.
	contentLength int64
	// close is true when the reply said "Connection: close" (net/http
	// removes that header when it reads a response).
	close bool
}

// rawRequest writes request (a complete HTTP/1.1 request head, "\r\n"
// separated, without the final blank line) on a fresh connection to addr, so
// that no client library cleans the path, and reads the response.
func rawRequest(t *testing.T, addr, method, target string, headers ...string) rawResponse {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	var b strings.Builder
	b.WriteString(method + " " + target + " HTTP/1.1\r\nConnection: close\r\n")
	host := "Host: 169.254.169.254"
	for _, h := range headers {
		if strings.HasPrefix(strings.ToLower(h), "host:") {
			host = h
		}
	}
	b.WriteString(host + "\r\n")
	for _, h := range headers {
		if h == host {
			continue
		}
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatalf("write: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("read response to %s %q: %v", method, target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	chunked := len(resp.TransferEncoding) > 0 && resp.TransferEncoding[0] == "chunked"
	return rawResponse{status: resp.StatusCode, statusLine: resp.Status, header: resp.Header, body: string(body), chunked: chunked,
		contentLength: resp.ContentLength, close: resp.Close}
}

func hostOf(hs *httptest.Server) string { return strings.TrimPrefix(hs.URL, "http://") }

func testLogger(t *testing.T) logr.Logger { return testr.New(t) }

// checkErrorBody fails unless body is the IMDS error shape: a JSON object
// with exactly the keys error and error_description, both non-empty
// strings.
func checkErrorBody(t *testing.T, body []byte) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("error body %q is not a JSON object: %v", body, err)
	}
	if len(m) != 2 {
		t.Fatalf("error body %s has keys other than error and error_description", body)
	}
	for _, k := range []string{"error", "error_description"} {
		if v, ok := m[k].(string); !ok || v == "" {
			t.Fatalf("error body %s: %s is %#v; want a non-empty string", body, k, m[k])
		}
	}
}
