package imds

import (
	"net/http"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imds-proxy/imds-proxy/pkg/version"
)

// metrics are the HTTP-surface metrics. Labels are low-cardinality only: the
// route class and the status code, never a client id or a resource.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// routes holds the label children of every route class, resolved on
	// first use (so /metrics shows only series that were served, as
	// promhttp's wrappers did) and then reused without a lookup.
	routes [numRoutes]routeChildren
}

// newMetrics creates the metrics and registers them, with the build info
// gauge, on reg.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imds_proxy_http_requests_total",
			Help: "HTTP requests answered by the proxy, by route class and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "imds_proxy_http_request_duration_seconds",
			Help: "Time to answer an HTTP request, by route class.",
			// From cache hits (microseconds) to a slow Entra exchange
			// (up to the 15 s exchange timeout).
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15, 30},
		}, []string{"route"}),
	}
	for r := range m.routes {
		m.routes[r].name = routeClass(r).String()
	}
	build := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "imds_proxy_build_info",
		Help:        "Always 1; the labels carry the proxy version and the Go version it was built with.",
		ConstLabels: prometheus.Labels{"version": version.Version, "go_version": runtime.Version()},
	}, func() float64 { return 1 })
	for _, c := range []prometheus.Collector{m.requests, m.duration, build} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// cachedCodes are the status codes the proxy writes itself; each route
// resolves their counters once. Other codes (the passthrough copies the real
// IMDS's) are looked up per request.
var cachedCodes = [...]int{200, 400, 401, 403, 404, 405, 429, 500, 502, 503, 504, 508}

// codeSlot returns the index of code in cachedCodes, or -1. 200 comes
// first, so a served token costs one comparison.
func codeSlot(code int) int {
	for i, c := range cachedCodes {
		if c == code {
			return i
		}
	}
	return -1
}

// routeChildren are the label children of one route class: a few hundred
// bytes each, where a slot for every possible status code took 4 KB.
type routeChildren struct {
	name     string
	duration atomic.Pointer[prometheus.Observer]
	codes    [len(cachedCodes)]atomic.Pointer[prometheus.Counter]
}

// observe records one answered request of route with status code, which
// took d. It takes no lock and allocates nothing once the route's children
// exist. Two first requests racing may both resolve a child: the vector
// hands both the same one.
func (m *metrics) observe(route routeClass, code int, d time.Duration) {
	rm := &m.routes[route]
	obs := rm.duration.Load()
	if obs == nil {
		o := m.duration.WithLabelValues(rm.name)
		obs = &o
		rm.duration.Store(obs)
	}
	(*obs).Observe(d.Seconds())

	i := codeSlot(code)
	if i < 0 {
		m.requests.WithLabelValues(rm.name, strconv.Itoa(code)).Inc()
		return
	}
	slot := &rm.codes[i]
	c := slot.Load()
	if c == nil {
		cc := m.requests.WithLabelValues(rm.name, strconv.Itoa(code))
		c = &cc
		slot.Store(c)
	}
	(*c).Inc()
}

// statusHandler serves a request and returns the status code it answered
// with (200 when it wrote a body without calling WriteHeader, as net/http
// sends then). The hot routes return the code their write helper used, so
// recording it costs no wrapper around the ResponseWriter.
type statusHandler func(w http.ResponseWriter, r *http.Request) int

// recorded adapts a plain handler (the passthrough reverse proxy, the
// /metrics handler) to statusHandler with a statusRecorder.
func recorded(h http.Handler) statusHandler {
	return func(w http.ResponseWriter, r *http.Request) int {
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		if rec.status == 0 {
			return http.StatusOK
		}
		return rec.status
	}
}

// statusRecorder remembers the status a handler wrote, including the
// implicit 200 of a bare Write.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Flush forwards to the underlying writer when it can flush, so streamed
// passthrough replies keep working.
func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
