package imds

import (
	"net/http"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/imds-proxy/imds-proxy/pkg/version"
)

// metrics are the HTTP-surface metrics. Labels are low-cardinality only: the
// route class and the status code, never a client id or a resource.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
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

// instrument wraps the handler of one route class with the request counter
// and the latency histogram. promhttp counts the implicit 200 of a handler
// that writes without calling WriteHeader.
func (m *metrics) instrument(route routeClass, h http.Handler) http.Handler {
	label := prometheus.Labels{"route": route.String()}
	return promhttp.InstrumentHandlerDuration(m.duration.MustCurryWith(label),
		promhttp.InstrumentHandlerCounter(m.requests.MustCurryWith(label), h))
}
