package exchange

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// t0 is the fake clock's start: a fixed instant so expected values are
// exact.
var t0 = time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)

// fakeClock is a Clock tests move by hand. It counts its readings, which
// shows whether background work ran.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	reads int
}

func newFakeClock() *fakeClock { return &fakeClock{now: t0} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads++
	return c.now
}

func (c *fakeClock) Reads() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// unsignedJWT builds a compact JWS with the given claims and a dummy
// signature: the exchange never verifies signatures.
func unsignedJWT(claims map[string]any) string {
	h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`))
	b, err := json.Marshal(claims)
	if err != nil {
		panic(err)
	}
	return h + "." + base64.RawURLEncoding.EncodeToString(b) + ".c2ln"
}

// call records one fake exchange.
type call struct {
	clientID, scope string
}

// fakeAcquirer is the test double of acquirer. By default it issues a JWT
// for the client id and scope valid for lifetime from the clock's now;
// respond overrides that per call.
type fakeAcquirer struct {
	clock    *fakeClock
	lifetime time.Duration
	// assertion, when set, is called like MSAL calls the assertion
	// callback: once per exchange.
	assertion func() (string, error)
	// respond, when set, decides the outcome of a call.
	respond func(n int, c call) (acquired, error)
	// block, when set, is received from before answering, unless ctx ends
	// first; hold, when set, is received from whatever ctx does.
	block chan struct{}
	hold  chan struct{}

	mu    sync.Mutex
	calls []call
	seq   int
	// running counts the calls in progress, maxRunning its high mark.
	running, maxRunning int
}

func (f *fakeAcquirer) acquire(ctx context.Context, clientID, scope string) (acquired, error) {
	f.mu.Lock()
	f.calls = append(f.calls, call{clientID, scope})
	f.seq++
	n := f.seq
	f.running++
	f.maxRunning = max(f.maxRunning, f.running)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.running--
		f.mu.Unlock()
	}()
	if f.hold != nil {
		<-f.hold
	}
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return acquired{}, ctx.Err()
		}
	}
	if f.assertion != nil {
		if _, err := f.assertion(); err != nil {
			return acquired{}, err
		}
	}
	if f.respond != nil {
		return f.respond(n, call{clientID, scope})
	}
	return f.issue(n, clientID, scope, nil), nil
}

// issue mints the n-th token for clientID and scope with extra claims.
func (f *fakeAcquirer) issue(n int, clientID, scope string, extra map[string]any) acquired {
	now := f.clock.Now()
	exp := now.Add(f.lifetime)
	cl := map[string]any{
		"aud":   scope,
		"appid": clientID,
		"exp":   exp.Unix(),
		"nbf":   now.Add(-5 * time.Minute).Unix(),
		"n":     n,
	}
	for k, v := range extra {
		cl[k] = v
	}
	return acquired{AccessToken: unsignedJWT(cl), ExpiresOn: exp}
}

func (f *fakeAcquirer) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// inFlight returns the calls in progress and the most there ever were.
func (f *fakeAcquirer) inFlight() (now, most int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.running, f.maxRunning
}

func (f *fakeAcquirer) callsFor(clientID, scope string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c.clientID == clientID && c.scope == scope {
			n++
		}
	}
	return n
}

// logBuffer collects every log line (all verbosities) as text.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		b.mu.Lock()
		defer b.mu.Unlock()
		fmt.Fprintf(&b.buf, "%s %s\n", prefix, args)
	}, funcr.Options{Verbosity: 10})
}

// Write lets a logBuffer also sit under a slog handler.
func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// harness is a Source over a fakeAcquirer and a fakeClock.
type harness struct {
	t     testing.TB
	src   *Source
	acq   *fakeAcquirer
	clock *fakeClock
	reg   *prometheus.Registry
	logs  *logBuffer
	file  string
}

const (
	clientA = "11111111-1111-1111-1111-111111111111"
	clientB = "22222222-2222-2222-2222-222222222222"
	vault   = "https://vault.azure.net"
	vaultSc = "https://vault.azure.net/.default"
)

func newHarness(t testing.TB, mutate func(*Config)) *harness {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	writeSAToken(t, file, "system:serviceaccount:default:app", t0.Add(time.Hour))
	cfg := Config{
		TenantID:        "tenant-1",
		TokenFile:       file,
		DefaultClientID: clientA,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	clock := newFakeClock()
	reg := prometheus.NewRegistry()
	logs := &logBuffer{}
	src, err := newSource(cfg, Deps{Logger: logs.logger(), Registerer: reg, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	acq := &fakeAcquirer{clock: clock, lifetime: time.Hour, assertion: src.tf.read}
	src.ex.acq = acq
	return &harness{t: t, src: src, acq: acq, clock: clock, reg: reg, logs: logs, file: file}
}

// setLogger replaces the logger of every part of the Source.
func (h *harness) setLogger(l logr.Logger) {
	h.src.log = l
	h.src.ex.log = l
	h.src.ex.failures.log = l
}

// writeSAToken writes a projected service-account token with the given
// subject and expiry.
func writeSAToken(t testing.TB, path, subject string, exp time.Time) string {
	t.Helper()
	tok := unsignedJWT(map[string]any{
		"iss": "https://issuer.example/cluster",
		"sub": subject,
		"aud": []string{"api://AzureADTokenExchange"},
		"exp": exp.Unix(),
	})
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return tok
}

func (h *harness) token(req Request) (Token, error) {
	h.t.Helper()
	return h.src.Token(context.Background(), req)
}

func (h *harness) mustToken(req Request) Token {
	h.t.Helper()
	tok, err := h.token(req)
	if err != nil {
		h.t.Fatalf("Token(%+v): %v", req, err)
	}
	return tok
}

func (h *harness) counter(vec *prometheus.CounterVec, label string) float64 {
	return testutil.ToFloat64(vec.WithLabelValues(label))
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func defaultReq(resource string) Request {
	return Request{Resource: resource}
}

func upstream(status int, body string, hdr ...string) *upstreamError {
	h := http.Header{}
	for i := 0; i+1 < len(hdr); i += 2 {
		h.Set(hdr[i], hdr[i+1])
	}
	return &upstreamError{Status: status, Header: h, Body: []byte(body), Err: fmt.Errorf("http %d", status)}
}

func aadstsBody(errName string, code int, desc string) string {
	b, _ := json.Marshal(map[string]any{
		"error":             errName,
		"error_description": fmt.Sprintf("AADSTS%d: %s Trace ID: abc Correlation ID: def Timestamp: 2026-11-24 03:00:00Z", code, desc),
		"error_codes":       []int{code},
		"trace_id":          "abc",
		"correlation_id":    "def",
	})
	return string(b)
}
