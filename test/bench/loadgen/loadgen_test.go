package loadgen

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
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
