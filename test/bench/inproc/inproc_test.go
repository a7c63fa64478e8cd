// Package inproc compares, in one process and on loopback, what the
// proxy's HTTP surface (pkg/imds.Server, real net/http server, timeouts,
// metrics and routing, with a token source that answers from memory) costs
// per request against the limit server's static handler, with the load
// generator's client. It isolates the proxy's own CPU cost from the kernel
// path and from other load, and profiles cleanly:
//
//	go test -run '^$' -bench . -benchmem -cpuprofile cpu.out ./test/bench/inproc
//	go tool pprof -top -cum cpu.out
package inproc

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/imds-proxy/imds-proxy/pkg/exchange"
	"github.com/imds-proxy/imds-proxy/pkg/imds"
	"github.com/imds-proxy/imds-proxy/test/bench/loadgen"
)

const uri = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com"

// memSource answers every request with one token, like a warm cache.
type memSource struct{ tok exchange.Token }

func (m memSource) Token(context.Context, exchange.Request) (exchange.Token, error) {
	return m.tok, nil
}

func token() exchange.Token {
	at := make([]byte, 1400) // about an Entra access token's length
	for i := range at {
		at[i] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"[i%64]
	}
	now := time.Now()
	return exchange.Token{AccessToken: string(at), ClientID: "0b9d3c5e-7a1f-4e2b-9c8d-1f2e3a4b5c6d",
		ExpiresOn: now.Add(time.Hour), NotBefore: now, ExtExpiresIn: time.Hour}
}

// serve starts h (or the imds Server) on a loopback port and returns its address.
func serveLimit(b *testing.B, body []byte) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ct := []string{"application/json; charset=utf-8"}
	cl := []string{strconv.Itoa(len(body))}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h["Content-Type"] = ct
		h["Content-Length"] = cl
		_, _ = w.Write(body)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func serveIMDS(b *testing.B) string {
	reg := prometheus.NewRegistry()
	s, err := imds.New(imds.Config{TenantID: "72f988bf-86f1-41af-91ab-2d7cd011db47", Gatherer: reg, ShutdownDelay: time.Millisecond},
		memSource{token()}, logr.Discard(), reg)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Serve(ctx, ln); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// load runs b.N requests over 64 persistent connections (32 per P on the
// 2-core machine).
func load(b *testing.B, addr string) {
	t := loadgen.Target{Addr: addr, Host: "169.254.169.254", URI: uri, Header: []string{"Metadata: true"}}
	c, err := loadgen.Dial(context.Background(), t)
	if err != nil {
		b.Fatal(err)
	}
	resp, err := c.Do()
	c.Close()
	if err != nil || resp.Status != 200 {
		b.Fatalf("probe: status %d, %v", resp.Status, err)
	}
	b.SetParallelism(32)
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c, err := loadgen.Dial(context.Background(), t)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		for pb.Next() {
			resp, err := c.Do()
			if err != nil || resp.Status != 200 {
				b.Errorf("status %d, %v", resp.Status, err)
				return
			}
		}
	})
	b.StopTimer()
	// CPU time of the whole process (server and client) per request: unlike
	// ns/op it does not grow when other work on the machine takes the cores.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLoopback: ns/op is wall time per request with 64 connections in
// flight (the inverse of throughput); cpu-ns/op the process's CPU time per
// request; allocs/op counts server and client together (the client
// allocates nothing per request).
func BenchmarkLoopback(b *testing.B) {
	b.Run("limit", func(b *testing.B) {
		// The imds reply for token() is 1,642 bytes; the limit sends as many.
		load(b, serveLimit(b, make([]byte, 1642)))
	})
	b.Run("imds", func(b *testing.B) { load(b, serveIMDS(b)) })
}
