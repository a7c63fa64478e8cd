package imds

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkTokenHandlerWarm measures the handler path of a token request
// served from a warm cache: routing, validation, query parsing, the token
// source call (a fake returning a fixed token) and the reply, with metrics
// and logging as in production (logging at the default level).
//
//	go test -run '^$' -bench BenchmarkTokenHandlerWarm -benchmem ./pkg/imds
func BenchmarkTokenHandlerWarm(b *testing.B) {
	src := &fakeSource{tok: testToken(largeToken[:1800])}
	s, err := New(testConfig(""), src, logr.Discard(), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	h := s.Handler()
	req := httptest.NewRequest(http.MethodGet,
		"/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net%2F&client_id=11111111-2222-3333-4444-555555555555", nil)
	req.Header.Set("Metadata", "true")
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		src.requests = src.requests[:0]
		h.ServeHTTP(w, req)
		if w.status != http.StatusOK {
			b.Fatalf("status %d", w.status)
		}
	}
}

// BenchmarkAppServiceTokenHandlerWarm is BenchmarkTokenHandlerWarm for the
// App Service endpoint: the same path plus the secret's digest and its
// constant-time comparison.
//
//	go test -run '^$' -bench BenchmarkAppServiceTokenHandlerWarm -benchmem ./pkg/imds
func BenchmarkAppServiceTokenHandlerWarm(b *testing.B) {
	src := &fakeSource{tok: testToken(largeToken[:1800])}
	cfg := testConfig("")
	cfg.IdentityHeader = testIdentityHeader
	s, err := New(cfg, src, logr.Discard(), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	h := s.Handler()
	req := httptest.NewRequest(http.MethodGet,
		"/msi/token?api-version=2019-08-01&client_id=11111111-2222-3333-4444-555555555555&resource=https%3A%2F%2Fvault.azure.net%2F", nil)
	req.Header.Set("X-IDENTITY-HEADER", testIdentityHeader)
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		src.requests = src.requests[:0]
		h.ServeHTTP(w, req)
		if w.status != http.StatusOK {
			b.Fatalf("status %d", w.status)
		}
	}
}

// discardWriter is the cheapest ResponseWriter, so the benchmark measures
// the handler and not a recorder's buffers.
type discardWriter struct {
	h      http.Header
	status int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(code int)        { d.status = code }

// BenchmarkHostileConnections opens connections the way broken or hostile
// clients in the pod do and reports what the proxy holds for them, with
// the default connection cap and without one: the peak and settled number
// of goroutines serving connections, and the heap and stack memory held
// once settled (it includes the client ends, a few hundred bytes each).
// It prints figures and asserts nothing.
//
//	go test -run '^$' -bench HostileConnections -benchtime 1x ./pkg/imds
func BenchmarkHostileConnections(b *testing.B) {
	head := "GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=r HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n"
	modes := []struct {
		name string
		n    int
		// send is written on each connection; nil closes it at once.
		send []byte
	}{
		{"open-and-drop", 10000, nil},
		{"silent", 4000, []byte{}},
		{"slow-header-16KiB", 4000, []byte(head + "X-Pad: " + strings.Repeat("a", 16<<10-200) + "\r\n")},
		{"unsent-body", 4000, []byte(head + "Content-Length: 100\r\n\r\n")},
		{"idle-keep-alive", 4000, []byte(head + "\r\n")},
	}
	for _, mode := range modes {
		for _, limit := range []int{DefaultMaxConnections, 1 << 20} {
			name := mode.name + "/cap=" + strconv.Itoa(limit)
			if limit != DefaultMaxConnections {
				name = mode.name + "/cap=none"
			}
			b.Run(name, func(b *testing.B) {
				for b.Loop() {
					peak, settled, mib := floodOnce(b, limit, mode.n, mode.send)
					b.ReportMetric(float64(peak), "peak-goroutines")
					b.ReportMetric(float64(settled), "goroutines")
					b.ReportMetric(mib, "MiB-held")
				}
			})
		}
	}
}

// floodOnce serves a fresh Server with the given connection cap, opens n
// connections writing send on each (closing them at once when send is
// nil), waits for the server to settle and measures, then closes
// everything.
func floodOnce(b *testing.B, limit, n int, send []byte) (peak, settled int, mib float64) {
	cfg := testConfig("")
	cfg.MaxConnections = limit
	src := &fakeSource{tok: testToken("tok")}
	s, err := New(cfg, src, logr.Discard(), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()

	runtime.GC()
	base := runtime.NumGoroutine()
	mem0 := heldMemory()
	conns := make([]net.Conn, 0, n)
	for i := range n {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		if err != nil {
			b.Fatalf("dial %d: %v", i, err)
		}
		if send == nil {
			c.Close()
		} else {
			_, _ = c.Write(send)
			conns = append(conns, c)
		}
		if i%100 == 0 {
			peak = max(peak, runtime.NumGoroutine()-base)
		}
	}
	// Settle: sample until the goroutine count stops moving.
	last := -1
	for range 50 {
		time.Sleep(100 * time.Millisecond)
		g := runtime.NumGoroutine() - base
		peak = max(peak, g)
		if g == last {
			break
		}
		last = g
	}
	settled = runtime.NumGoroutine() - base
	mib = float64(heldMemory()-mem0) / (1 << 20)
	for _, c := range conns {
		c.Close()
	}
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	return peak, settled, mib
}

// heldMemory is the heap and stack memory in use after a collection.
func heldMemory() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse + m.StackInuse)
}
