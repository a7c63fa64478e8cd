package imds

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/imds-proxy/imds-proxy/pkg/exchange"
)

// counts gathers reg and returns the request counters by "route/code" and
// the histogram sample counts by route.
func counts(t *testing.T, reg *prometheus.Registry) (requests, durations map[string]float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	requests, durations = map[string]float64{}, map[string]float64{}
	label := func(m *dto.Metric, name string) string {
		for _, l := range m.GetLabel() {
			if l.GetName() == name {
				return l.GetValue()
			}
		}
		return ""
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "imds_proxy_http_requests_total":
				requests[label(m, "route")+"/"+label(m, "code")] = m.GetCounter().GetValue()
			case "imds_proxy_http_request_duration_seconds":
				durations[label(m, "route")] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return requests, durations
}

func TestMetricsObserve(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.observe(routeToken, 200, time.Millisecond)
	m.observe(routeToken, 200, time.Millisecond)
	m.observe(routeToken, 400, time.Millisecond)
	// Codes without a cached counter are still counted, by their number.
	m.observe(routeToken, 999, time.Millisecond)
	m.observe(routeToken, 418, time.Millisecond)
	m.observe(routeToken, 418, time.Millisecond)
	m.observe(routeReadyz, 200, time.Millisecond)
	requests, durations := counts(t, reg)
	want := map[string]float64{"token/200": 2, "token/400": 1, "token/999": 1, "token/418": 2, "readyz/200": 1}
	if len(requests) != len(want) {
		t.Errorf("requests = %v, want %v", requests, want)
	}
	for k, v := range want {
		if requests[k] != v {
			t.Errorf("requests[%s] = %v, want %v", k, requests[k], v)
		}
	}
	// Only routes that were served have series.
	if len(durations) != 2 || durations["token"] != 6 || durations["readyz"] != 1 {
		t.Errorf("durations = %v", durations)
	}
}

// Every status the proxy writes itself has a cached counter, at its own
// slot.
func TestCachedCodes(t *testing.T) {
	t.Parallel()
	for i, c := range cachedCodes {
		if got := codeSlot(c); got != i {
			t.Errorf("codeSlot(%d) = %d, want %d", c, got, i)
		}
	}
	for _, c := range []int{0, 100, 201, 302, 418, 501, 599, 999, -1} {
		if got := codeSlot(c); got != -1 {
			t.Errorf("codeSlot(%d) = %d, want -1", c, got)
		}
	}
	for _, r := range []*reply{&replyBadTarget, &replyBadPath, &replyIdentityPath, &replyMethodGET, &replyMethodPOST,
		&replyForwardedFor, &replyNoMetadata, &replyMalformedQuery, &replyTooManyParams, &replyBadAPIVersion,
		&replyMissingResource, &replyManySelectors, &replyNotFound, &replyBlocked, &replyUpstreamTimeout,
		&replyUpstreamUnreachable, &replyQuit, &replyBody, &replyConnect, &replyConnectQuit, &replyUpgrade,
		&replyUpstreamSwitched, &replyAppServiceOff, &replyAppServicePath, &replyAppServiceAPIVersion,
		&replyIdentityHeaderMissing, &replyIdentityHeaderWrong, new(loopReply(1501))} {
		if codeSlot(r.status) < 0 {
			t.Errorf("status %d (%s) has no cached counter", r.status, r.body)
		}
	}
	for reason := exchange.ReasonUnavailable; reason <= exchange.ReasonTokenFile; reason++ {
		if r := tokenErrorReply(&exchange.Error{Reason: reason}); codeSlot(r.status) < 0 {
			t.Errorf("status %d of reason %s has no cached counter", r.status, reason)
		}
	}
}

func TestRecordedImplicitStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		h    http.HandlerFunc
		want int
	}{
		{"bare write", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("x")) }, 200},
		{"nothing written", func(http.ResponseWriter, *http.Request) {}, 200},
		{"explicit", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte("x"))
		}, 502},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		if got := recorded(tt.h)(rec, httptest.NewRequest(http.MethodGet, "/", nil)); got != tt.want {
			t.Errorf("%s: status %d, want %d", tt.name, got, tt.want)
		}
	}
}
