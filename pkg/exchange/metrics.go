package exchange

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Cache lookup results, the values of the result label of
// imds_proxy_token_cache_requests_total.
const (
	resultHit      = "hit"      // served from the cache
	resultMiss     = "miss"     // no usable cached token: exchanged in the foreground
	resultForced   = "forced"   // bypass_cache / token_sha256_to_refresh honoured
	resultStale    = "stale"    // Entra failed; a cached token was served inside the stale grace
	resultNegative = "negative" // a remembered permanent failure was answered
)

// metrics are the exchange's Prometheus series. Labels are low-cardinality
// by construction: never a client id, object id or resource.
type metrics struct {
	cacheRequests *prometheus.CounterVec
	// The cacheRequests children, resolved once for the hot path.
	hit, miss, forced, stale, negative prometheus.Counter

	refreshes   *prometheus.CounterVec
	evictions   *prometheus.CounterVec
	exchanges   *prometheus.CounterVec
	latency     prometheus.Histogram
	resolutions *prometheus.CounterVec
	// exchangesQueued and exchangesRunning count the flights waiting for
	// an exchange slot and those holding one.
	exchangesQueued  prometheus.Gauge
	exchangesRunning prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, s *Source) (*metrics, error) {
	m := &metrics{
		cacheRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imds_proxy_token_cache_requests_total",
			Help: "Token requests by how the cache answered them: hit, miss, forced, stale, negative.",
		}, []string{"result"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imds_proxy_token_refreshes_total",
			Help: "Background refresh-ahead exchanges by result: success, failure.",
		}, []string{"result"}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imds_proxy_token_cache_evictions_total",
			Help: "Cached tokens dropped, by cause: idle (unused for a whole lifetime), expired, lru (entry cap reached).",
		}, []string{"cause"}),
		exchanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imds_proxy_exchanges_total",
			Help: "Entra token exchanges by outcome: success or the failure reason.",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "imds_proxy_exchange_duration_seconds",
			Help:    "Duration of Entra token exchanges, successful or not.",
			Buckets: []float64{0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30},
		}),
		resolutions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imds_proxy_identity_resolutions_total",
			Help: "object_id / msi_res_id selectors resolved to a client id, by how: configured, remembered, trial, not_found, failed.",
		}, []string{"result"}),
		exchangesQueued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "imds_proxy_exchanges_queued",
			Help: "Entra token exchanges waiting for a free slot (the concurrent exchange cap is reached).",
		}),
		exchangesRunning: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "imds_proxy_exchanges_in_flight",
			Help: "Entra token exchanges in flight.",
		}),
	}
	// Pre-create the series so dashboards see zeros rather than gaps.
	m.hit = m.cacheRequests.WithLabelValues(resultHit)
	m.miss = m.cacheRequests.WithLabelValues(resultMiss)
	m.forced = m.cacheRequests.WithLabelValues(resultForced)
	m.stale = m.cacheRequests.WithLabelValues(resultStale)
	m.negative = m.cacheRequests.WithLabelValues(resultNegative)
	for _, r := range []string{"success", "failure"} {
		m.refreshes.WithLabelValues(r)
	}
	for _, c := range []string{"idle", "expired", "lru"} {
		m.evictions.WithLabelValues(c)
	}
	m.exchanges.WithLabelValues("success")
	for r := ReasonUnavailable; r <= ReasonTokenFile; r++ {
		m.exchanges.WithLabelValues(r.String())
	}
	entries := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "imds_proxy_token_cache_entries",
		Help: "Tokens currently cached.",
	}, func() float64 { return float64(s.cacheLen()) })
	soonest := &soonestCollector{s: s, desc: prometheus.NewDesc(
		"imds_proxy_token_soonest_expiry_seconds",
		"Seconds until the soonest-expiring cached token expires (absent while the cache is empty).",
		nil, nil)}
	var errs []error
	for _, c := range []prometheus.Collector{m.cacheRequests, m.refreshes, m.evictions, m.exchanges, m.latency, m.resolutions, m.exchangesQueued, m.exchangesRunning, entries, soonest} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	return m, errors.Join(errs...)
}

func (m *metrics) observeExchange(d time.Duration, err *Error) {
	m.latency.Observe(d.Seconds())
	if err == nil {
		m.exchanges.WithLabelValues("success").Inc()
		return
	}
	m.exchanges.WithLabelValues(err.Reason.String()).Inc()
}

// soonestCollector exports the time left on the soonest-expiring cached
// token, and nothing while the cache is empty, so an empty cache does not
// look like an expired token.
type soonestCollector struct {
	s    *Source
	desc *prometheus.Desc
}

func (c *soonestCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *soonestCollector) Collect(ch chan<- prometheus.Metric) {
	if d, ok := c.s.SoonestExpiry(); ok {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, d.Seconds())
	}
}
