package imds

import (
	"net/http"
	"net/http/httptest"
	"testing"

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

// discardWriter is the cheapest ResponseWriter, so the benchmark measures
// the handler and not a recorder's buffers.
type discardWriter struct {
	h      http.Header
	status int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(code int)        { d.status = code }
