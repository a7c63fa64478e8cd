package soak

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/podenv"
)

// Report is what a soak found.
type Report struct {
	// Schedule describes the run's timing.
	Schedule string
	// Rows are the table's rows, in order.
	Rows []Row
	// Faults are the faults switched on, in order.
	Faults []string
	// Flat compares the end with the warm-up.
	Flat []FlatCheck
	// Scan is the log scan for secrets.
	Scan ScanResult
	// Notes are figures beyond the table (loadgen, real clients,
	// exchanges by outcome, first errors).
	Notes []string
	// Failures says why the soak failed; empty when the proxy held.
	Failures []string
}

// ScanResult is what the log scan covered and found.
type ScanResult struct {
	Files                       []string
	Bytes                       int64
	AccessTokens, DroppedTokens int
	SATokens, AuthzValues       int
	Hits                        []ScanHit
}

func (r *Report) fail(format string, args ...any) {
	r.Failures = append(r.Failures, fmt.Sprintf(format, args...))
}

// Row is one line of the table.
type Row struct {
	Label   string
	Elapsed time.Duration
	Fault   string
	// Served is the proxy's count of requests answered (its own
	// imds_proxy_http_requests_total, scrapes and probes left out).
	Served int64
	// Replies are the clients' replies by status class (2xx, 4xx, 5xx).
	OK, Client4xx, Server5xx int64
	// Errors are the clients' errors by kind.
	Errors map[string]int64
	// The proxy's resident memory, goroutines and open file descriptors.
	RSS        int64
	Goroutines int
	FDs        int
}

func (s *soak) printHeader() {
	fmt.Fprintf(s.cfg.Out, "%-6s %7s  %-15s %9s %8s %7s %7s  %-33s %9s %5s %4s\n",
		"row", "time", "fault", "served", "2xx", "4xx", "5xx", "errors conn/io/time/bad/unexp/ref", "RSS", "gor", "fds")
}

func (s *soak) printRow(r Row) {
	var errs []string
	for _, k := range errorKinds {
		errs = append(errs, fmt.Sprint(r.Errors[k]))
	}
	fault := r.Fault
	if fault == "" {
		fault = "-"
	}
	fmt.Fprintf(s.cfg.Out, "%-6s %7s  %-15s %9d %8d %7d %7d  %-33s %5.1f MiB %5d %4d\n",
		r.Label, r.Elapsed.Round(time.Second), fault, r.Served, r.OK, r.Client4xx, r.Server5xx,
		strings.Join(errs, "/"), float64(r.RSS)/(1<<20), r.Goroutines, r.FDs)
}

// row samples the proxy and the clients' counters, prints the row and
// keeps it.
func (s *soak) row(ctx context.Context, label string, start time.Time) error {
	pid, err := s.env.ProxyPID()
	if err != nil {
		return err
	}
	st, err := podenv.ReadProcessStats(pid)
	if err != nil {
		return err
	}
	m, err := s.scrape(ctx)
	if err != nil {
		return err
	}
	r := Row{
		Label:      label,
		Elapsed:    time.Since(start),
		Fault:      s.currentFault(),
		RSS:        st.RSS,
		FDs:        st.FDs,
		Goroutines: int(m.Sum("go_goroutines")),
		OK:         s.stats.replies[2].Load(),
		Client4xx:  s.stats.replies[4].Load(),
		Server5xx:  s.stats.replies[5].Load(),
		Errors:     map[string]int64{},
	}
	r.Served = int64(m.Sum("imds_proxy_http_requests_total") - m.Sum("imds_proxy_http_requests_total", `route="metrics"`) -
		m.Sum("imds_proxy_http_requests_total", `route="readyz"`) - m.Sum("imds_proxy_http_requests_total", `route="healthz"`))
	for _, k := range errorKinds {
		r.Errors[k] = s.stats.errCount(k)
	}
	s.mu.Lock()
	s.rep.Rows = append(s.rep.Rows, r)
	s.mu.Unlock()
	s.printRow(r)
	return nil
}

// pausedRow pauses the load, lets the connections close, and takes a row:
// the samples compared for flatness.
func (s *soak) pausedRow(ctx context.Context, label string, start time.Time) error {
	s.gate.Lock()
	defer s.gate.Unlock()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(2 * time.Second):
	}
	return s.row(ctx, label, start)
}

// reportEvery prints a row every report interval until ctx ends.
func (s *soak) reportEvery(ctx context.Context, start time.Time) {
	n := 0
	for {
		n++
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(start.Add(time.Duration(n) * s.sch.report))):
		}
		if err := s.row(ctx, fmt.Sprintf("%d", n), start); err != nil && ctx.Err() == nil {
			s.rep.fail("sampling the proxy: %v", err)
		}
	}
}

// scrape reads the proxy's metrics listener from inside the pod.
func (s *soak) scrape(ctx context.Context) (podenv.Metrics, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: podenv.NetnsDialer(s.env.Pod), DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+metricsAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: %s", resp.Status)
	}
	m, err := podenv.ParseMetrics(resp.Body)
	if err == nil {
		s.mu.Lock()
		s.lastMetrics = m
		s.mu.Unlock()
	}
	return m, err
}

// judge compares the end with the warm-up and collects the failures.
func (s *soak) judge() {
	var warm, end *Row
	for i := range s.rep.Rows {
		switch s.rep.Rows[i].Label {
		case "warm":
			warm = &s.rep.Rows[i]
		case "end":
			end = &s.rep.Rows[i]
		}
	}
	if warm == nil || end == nil {
		s.rep.fail("no warm-up or end sample")
		return
	}
	s.rep.Flat = []FlatCheck{
		{Name: "RSS", Warm: warm.RSS, End: end.RSS, Unit: "MiB"},
		{Name: "goroutines", Warm: int64(warm.Goroutines), End: int64(end.Goroutines), Slack: 2},
		{Name: "fds", Warm: int64(warm.FDs), End: int64(end.FDs), Slack: 1},
	}
	for _, c := range s.rep.Flat {
		if !c.Flat() {
			s.rep.fail("%s", c)
		}
	}
	for _, k := range errorKinds {
		if k == errRefused {
			continue // judgeEscapes checks these against the guard
		}
		if n := end.Errors[k]; n > 0 {
			s.stats.mu.Lock()
			first := strings.Join(s.stats.firstErrs[k], "\n    ")
			s.stats.mu.Unlock()
			s.rep.fail("%d client errors of kind %s; first:\n    %s", n, k, first)
		}
	}
	if end.OK == 0 {
		s.rep.fail("no request succeeded")
	}
	st := &s.stats
	s.rep.Notes = append(s.rep.Notes,
		fmt.Sprintf("load generator bursts: %d requests, %d not 200, %d errors", st.loadgenRequests.Load(), st.loadgenNon200.Load(), st.loadgenErrors.Load()),
		fmt.Sprintf("curl: %d tokens, %d without a token (%d of them started with no fault on)", st.curlOK.Load(), st.curlFail.Load(), st.curlFailCalm.Load()),
		fmt.Sprintf("Go client (azidentity, MSAL Go): %d runs with two tokens, %d failed (%d of them started with no fault on)", st.goOK.Load(), st.goFail.Load(), st.goFailCalm.Load()),
	)
	if st.loadgenErrors.Load() > 0 {
		s.rep.fail("the load generator had %d errors", st.loadgenErrors.Load())
	}
	s.mu.Lock()
	m := s.lastMetrics
	s.mu.Unlock()
	var outcomes []string
	for series, v := range m {
		if strings.HasPrefix(series, "imds_proxy_exchanges_total{") {
			outcomes = append(outcomes, fmt.Sprintf("%s=%d", strings.TrimSuffix(strings.TrimPrefix(series, `imds_proxy_exchanges_total{outcome="`), `"}`), int64(v)))
		}
	}
	sort.Strings(outcomes)
	s.rep.Notes = append(s.rep.Notes, "Entra exchanges by outcome: "+strings.Join(outcomes, ", "))
}

// print writes the verdict after the table.
func (r *Report) print(w io.Writer) {
	fmt.Fprintf(w, "\nfaults switched on, in order: %s\n", strings.Join(r.Faults, ", "))
	for _, n := range r.Notes {
		fmt.Fprintln(w, n)
	}
	fmt.Fprintln(w, "flatness (end against the end of the warm-up, both with the load paused):")
	for _, c := range r.Flat {
		fmt.Fprintf(w, "  %s\n", c)
	}
	sc := r.Scan
	fmt.Fprintf(w, "log scan: %d bytes in %s; for %d access tokens (%d not kept by the emulator), %d projected tokens, %d Authorization values: %d found\n",
		sc.Bytes, strings.Join(sc.Files, ", "), sc.AccessTokens, sc.DroppedTokens, sc.SATokens, sc.AuthzValues, len(sc.Hits))
	if len(r.Failures) == 0 {
		fmt.Fprintln(w, "PASS: the proxy held")
		return
	}
	fmt.Fprintf(w, "FAIL: %d problems\n", len(r.Failures))
	for _, f := range r.Failures {
		fmt.Fprintf(w, "  - %s\n", f)
	}
}
