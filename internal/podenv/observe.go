package podenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// What the harness can see of the running proxy: its process (memory and
// file descriptors from /proc) and its own /metrics, read from inside the
// pod namespace. The abuse tests and the soak bound these.

// ProxyPID returns the pid of the running proxy. `ip netns exec` and
// setpriv exec in place, so it is the proxy binary's own pid.
func (e *Env) ProxyPID() (int, error) {
	e.mu.Lock()
	p := e.proxy
	e.mu.Unlock()
	if p == nil || p.exited() {
		return 0, errors.New("podenv: the proxy is not running")
	}
	return p.cmd.Process.Pid, nil
}

// ProcessStats is what /proc says about one process.
type ProcessStats struct {
	// RSS is VmRSS and PeakRSS VmHWM, in bytes.
	RSS, PeakRSS int64
	// FDs is the number of open file descriptors.
	FDs int
	// Threads is the number of OS threads.
	Threads int
}

// ReadProcessStats reads pid's resident memory, peak, threads and open file
// descriptors from /proc.
func ReadProcessStats(pid int) (ProcessStats, error) {
	var st ProcessStats
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, err
	}
	defer f.Close()
	found := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(value)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			continue
		}
		switch name {
		case "VmRSS":
			st.RSS = n << 10
			found++
		case "VmHWM":
			st.PeakRSS = n << 10
			found++
		case "Threads":
			st.Threads = int(n)
			found++
		}
	}
	if err := sc.Err(); err != nil {
		return st, err
	}
	if found != 3 {
		return st, fmt.Errorf("/proc/%d/status lacks VmRSS, VmHWM or Threads", pid)
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return st, err
	}
	st.FDs = len(fds)
	return st, nil
}

// ProxyMetrics fetches the proxy's /metrics from inside the pod namespace
// and parses it.
func (e *Env) ProxyMetrics(ctx context.Context) (Metrics, error) {
	url := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(e.ProxyPort)) + "/metrics"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := e.podHTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("proxy /metrics: %s", resp.Status)
	}
	return ParseMetrics(io.LimitReader(resp.Body, 16<<20))
}

// Metrics are the samples of a Prometheus text exposition, keyed by the
// series as the exposition writes it: the name, then the labels in braces
// when there are any (`imds_proxy_http_requests_total{code="200",route="token"}`).
type Metrics map[string]float64

// ParseMetrics reads the Prometheus text format: comments and blank lines
// are skipped, each other line is a series and its value (a timestamp, if
// any, is ignored).
func ParseMetrics(r io.Reader) (Metrics, error) {
	m := Metrics{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		// The series may hold spaces inside quoted label values; the value
		// follows the closing brace, or the name when there are no labels.
		var series, rest string
		if i := strings.LastIndexByte(line, '}'); i >= 0 {
			series, rest = line[:i+1], line[i+1:]
		} else {
			var ok bool
			series, rest, ok = strings.Cut(line, " ")
			if !ok {
				return nil, fmt.Errorf("metrics line without a value: %q", line)
			}
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return nil, fmt.Errorf("metrics line without a value: %q", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		m[series] = v
	}
	return m, sc.Err()
}

// Sum adds up every series of the metric name whose labels include all of
// labels (`route="token"`, as written in the exposition).
func (m Metrics) Sum(name string, labels ...string) float64 {
	var sum float64
	for series, v := range m {
		n, lbl, _ := strings.Cut(series, "{")
		if n != name {
			continue
		}
		lbl = strings.TrimSuffix(lbl, "}")
		if hasLabels(lbl, labels) {
			sum += v
		}
	}
	return sum
}

// hasLabels reports whether the label list set (`a="1",b="2"`) holds every
// one of want. Label values in our metrics hold no commas.
func hasLabels(set string, want []string) bool {
	have := strings.Split(set, ",")
	for _, w := range want {
		found := false
		for _, h := range have {
			if h == w {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
