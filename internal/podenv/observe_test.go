package podenv

import (
	"os"
	"strings"
	"testing"
)

func TestParseMetrics(t *testing.T) {
	text := `# HELP go_goroutines Number of goroutines.
# TYPE go_goroutines gauge
go_goroutines 12
imds_proxy_http_requests_total{code="200",route="token"} 41
imds_proxy_http_requests_total{code="400",route="token"} 2
imds_proxy_http_requests_total{code="200",route="metrics"} 3
odd_label{v="a b}"} 1.5 1700000000000

process_resident_memory_bytes 1.6384e+07
`
	m, err := ParseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"go_goroutines", nil, 12},
		{"imds_proxy_http_requests_total", nil, 46},
		{"imds_proxy_http_requests_total", []string{`route="token"`}, 43},
		{"imds_proxy_http_requests_total", []string{`route="token"`, `code="400"`}, 2},
		{"imds_proxy_http_requests_total", []string{`route="quit"`}, 0},
		{"odd_label", nil, 1.5},
		{"process_resident_memory_bytes", nil, 16384000},
		{"go_gorout", nil, 0},
	} {
		if got := m.Sum(tc.name, tc.labels...); got != tc.want {
			t.Errorf("Sum(%s, %v) = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	for _, bad := range []string{"lonely_name\n", "name{a=\"b\"}\n", "name notanumber\n"} {
		if _, err := ParseMetrics(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseMetrics(%q) = nil error, want one", bad)
		}
	}
}

func TestReadProcessStats(t *testing.T) {
	st, err := ReadProcessStats(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.RSS <= 0 || st.PeakRSS < st.RSS || st.FDs < 3 || st.Threads < 1 {
		t.Errorf("stats of this test process look wrong: %+v", st)
	}
	if _, err := ReadProcessStats(-1); err == nil {
		t.Error("ReadProcessStats(-1) = nil error")
	}
}
