package loadgen

import (
	"bufio"
	"context"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestRank(t *testing.T) {
	s := make([]time.Duration, 1000)
	for i := range s {
		s[i] = time.Duration(1000 - i) // reversed: Summarize must sort
	}
	p := Summarize(s)
	if p.N != 1000 || p.Min != 1 || p.Max != 1000 {
		t.Fatalf("min/max/n = %v/%v/%d", p.Min, p.Max, p.N)
	}
	// Nearest rank: the 500th, 990th and 999th smallest values.
	if p.P50 != 500 || p.P99 != 990 || p.P999 != 999 {
		t.Fatalf("p50/p99/p999 = %v/%v/%v, want 500/990/999", p.P50, p.P99, p.P999)
	}
	if got := Rank([]time.Duration{7}, 0.999); got != 7 {
		t.Fatalf("single sample rank = %v", got)
	}
	if got := Summarize(nil); got.N != 0 {
		t.Fatalf("empty summary = %+v", got)
	}
}

func TestReadResponse(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		status    int
		body      string
		close     bool
		wantErr   bool
	}{
		{name: "ok", raw: "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 4\r\n\r\n{\"a\"}", status: 200, body: "{\"a\""},
		{name: "close", raw: "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", status: 400, close: true},
		{name: "chunked", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n", status: 200, body: "abcde"},
		{name: "bad chunk", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", wantErr: true},
		{name: "gzip", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", wantErr: true},
		{name: "no length", raw: "HTTP/1.1 200 OK\r\n\r\n", wantErr: true},
		{name: "garbage", raw: "hello\r\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := readResponse(bufio.NewReader(strings.NewReader(tc.raw)), true)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("want error, got %+v", resp)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.Status != tc.status || string(resp.Body) != tc.body || resp.Close != tc.close {
				t.Fatalf("got status %d body %q close %v", resp.Status, resp.Body, resp.Close)
			}
		})
	}
}

func newServer(t *testing.T, h http.HandlerFunc) Target {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return Target{Addr: strings.TrimPrefix(srv.URL, "http://"), Host: "169.254.169.254", URI: "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x", Header: []string{"Metadata: true"}}
}

func TestSteady(t *testing.T) {
	body := []byte(`{"access_token":"t"}`)
	var bad atomic.Int64
	target := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Metadata") != "true" || r.Host != "169.254.169.254" || r.URL.Query().Get("resource") != "x" {
			bad.Add(1)
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	})
	res, err := Steady(context.Background(), SteadyConfig{Target: target, Concurrency: 4, Warmup: 20 * time.Millisecond, Duration: 150 * time.Millisecond, MaxRequests: 20000})
	if err != nil {
		t.Fatal(err)
	}
	if bad.Load() != 0 {
		t.Fatalf("%d requests arrived malformed", bad.Load())
	}
	if res.Requests == 0 || res.Errors != 0 || res.Non200 != 0 || res.Reconnects != 0 {
		t.Fatalf("result %+v", res)
	}
	if res.Latency.N != int(res.Requests) || res.Latency.P50 <= 0 || res.Latency.P999 < res.Latency.P50 {
		t.Fatalf("latency %+v", res.Latency)
	}
}

func TestSteadyBoundedByCount(t *testing.T) {
	var n atomic.Int64
	target := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Header().Set("Content-Length", "0")
	})
	_, err := Steady(context.Background(), SteadyConfig{Target: target, Concurrency: 2, Duration: 10 * time.Second, MaxRequests: 50})
	if err != nil {
		t.Fatal(err)
	}
	if n.Load() != 50 {
		t.Fatalf("server saw %d requests, want exactly 50", n.Load())
	}
}

func TestSteadyReconnectsOnClose(t *testing.T) {
	target := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		w.Header().Set("Content-Length", "2")
		_, _ = w.Write([]byte("ok"))
	})
	res, err := Steady(context.Background(), SteadyConfig{Target: target, Concurrency: 2, Duration: 100 * time.Millisecond, MaxRequests: 200})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests == 0 || res.Reconnects == 0 || res.Errors != 0 {
		t.Fatalf("result %+v", res)
	}
}

func TestStampede(t *testing.T) {
	release := make(chan struct{})
	var arrived atomic.Int64
	target := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if arrived.Add(1) == 50 {
			close(release)
		}
		<-release // every request is in flight before any is answered
		b := []byte(`{"access_token":"same"}`)
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b)
	})
	res, err := Stampede(context.Background(), StampedeConfig{Target: target, N: 50, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status[200] != 50 || res.Errors != 0 || res.DistinctTokens != 1 || res.Latency.N != 50 ||
		res.FirstDone <= 0 || res.FirstDone > res.Wall {
		t.Fatalf("result %+v", res)
	}
}

func TestGet(t *testing.T) {
	target := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_, _ = w.Write([]byte(`{"x":1}`))
	})
	resp, err := Get(context.Background(), target, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 200 || string(resp.Body) != `{"x":1}` || !strings.Contains(string(resp.Header), "application/json") {
		t.Fatalf("got %+v", resp)
	}
}

func TestFillURI(t *testing.T) {
	ids := []string{"a", "b"}
	for i, want := range []string{
		"/metadata/identity/oauth2/token?api-version=2018-02-01&client_id=a&resource=api%3A%2F%2Fimds-bench-fill-0000",
		"/metadata/identity/oauth2/token?api-version=2018-02-01&client_id=b&resource=api%3A%2F%2Fimds-bench-fill-0001",
		"/metadata/identity/oauth2/token?api-version=2018-02-01&client_id=a&resource=api%3A%2F%2Fimds-bench-fill-0002",
	} {
		if got := FillURI(i, ids); got != want {
			t.Errorf("FillURI(%d) = %q, want %q", i, got, want)
		}
	}
}

// TestFill checks that every pair is asked for exactly once and every
// status is counted.
func TestFill(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		mu.Lock()
		seen[q.Get("client_id")+" "+q.Get("resource")]++
		mu.Unlock()
		if q.Get("resource") == FillResource(3) {
			http.Error(w, "no", http.StatusBadRequest)
			return
		}
		_, _ = w.Write([]byte("{}"))
	}))
	defer srv.Close()
	res, err := Fill(context.Background(), FillConfig{
		Target:    Target{Addr: strings.TrimPrefix(srv.URL, "http://")},
		ClientIDs: []string{"a", "b", "c"}, Resources: 10, Concurrency: 4,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 10 || res.Identities != 3 || res.Status[200] != 9 || res.Status[400] != 1 || res.Errors != 0 ||
		!strings.Contains(res.FirstError, "status 400") {
		t.Fatalf("result %+v", res)
	}
	if len(seen) != 10 {
		t.Fatalf("%d distinct requests, want 10: %v", len(seen), seen)
	}
	for k, n := range seen {
		if n != 1 {
			t.Errorf("%s asked %d times", k, n)
		}
	}
	if seen["a "+FillResource(9)] != 1 || seen["b "+FillResource(1)] != 1 {
		t.Errorf("identities not round-robin: %v", seen)
	}
}

// TestEntraTiming runs the discovery and token requests against a TLS
// server shaped like Entra's endpoints and checks what each sends.
func TestEntraTiming(t *testing.T) {
	var tokenPosts, discoveries atomic.Int32
	var form atomic.Value
	var srv *httptest.Server
	srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/tenant-1/v2.0/.well-known/openid-configuration":
			discoveries.Add(1)
			_, _ = w.Write([]byte(`{"token_endpoint":"` + srv.URL + `/tenant-1/oauth2/v2.0/token"}`))
		case r.Method == http.MethodPost && r.URL.Path == "/tenant-1/oauth2/v2.0/token":
			tokenPosts.Add(1)
			_ = r.ParseForm()
			form.Store(r.PostForm.Encode())
			_, _ = w.Write([]byte(`{"access_token":"x"}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	tokenFile := t.TempDir() + "/token"
	if err := os.WriteFile(tokenFile, []byte("header.payload.signature\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	res, err := EntraTiming(context.Background(), EntraConfig{
		AuthorityHost: srv.URL + "/", Tenant: "tenant-1", ClientID: "client-1", Scope: "api://x/.default",
		TokenFile: tokenFile, Runs: 3, RootCAs: pool,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Runs) != 3 || discoveries.Load() != 6 || tokenPosts.Load() != 3 {
		t.Fatalf("%d runs, %d discoveries, %d token posts; want 3, 6, 3", len(res.Runs), discoveries.Load(), tokenPosts.Load())
	}
	want := "client_assertion=header.payload.signature&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer" +
		"&client_id=client-1&grant_type=client_credentials&scope=api%3A%2F%2Fx%2F.default"
	if got := form.Load(); got != want {
		t.Fatalf("token POST form\n got %v\nwant %v", got, want)
	}
	if res.Handshake <= 0 || res.TokenWarm <= 0 || res.DiscoveryWarm <= 0 || res.Answer != res.DiscoveryWarm+res.TokenWarm {
		t.Fatalf("durations %+v", res)
	}
}
