// Package loadgen is a small closed-loop HTTP/1.1 load generator for the
// imds-proxy benchmark. It speaks just enough HTTP/1.1 over persistent
// connections to keep its own cost per request low and predictable (it
// shares the machine's cores with the server it measures), keeps every
// latency sample, and computes exact percentiles from the sorted samples.
//
// The same client measures the proxy and the limit server, so whatever it
// costs is paid equally by both sides of every ratio the benchmark reports.
package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Target is one request, sent again and again.
type Target struct {
	// Addr is the TCP address to dial, e.g. "169.254.169.254:80".
	Addr string
	// Host is the Host header; defaults to Addr.
	Host string
	// URI is the request target, e.g. "/metadata/identity/oauth2/token?...".
	URI string
	// Header holds extra request headers in order, as "Name: value" lines
	// without the CRLF (e.g. "Metadata: true").
	Header []string
}

// request renders the target as raw HTTP/1.1 request bytes.
func (t Target) request(closeConn bool) []byte {
	host := t.Host
	if host == "" {
		host = t.Addr
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: imds-bench-loadgen\r\n", t.URI, host)
	for _, h := range t.Header {
		b.WriteString(h)
		b.WriteString("\r\n")
	}
	if closeConn {
		b.WriteString("Connection: close\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// Response is what the minimal client read for one request.
type Response struct {
	Status int
	// Close is set when the server asked to close the connection.
	Close bool
	// Body is filled only when the caller asked for it.
	Body []byte
	// Header holds the raw header block when the caller asked for the body.
	Header []byte
	// Chunked is set for a chunked reply. Token replies must never be
	// chunked (docs/imds.md, Success reply); /metrics may be.
	Chunked bool
}

// conn is one persistent client connection.
type conn struct {
	c   net.Conn
	r   *bufio.Reader
	req []byte
}

func dial(ctx context.Context, t Target, req []byte) (*conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", t.Addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	return &conn{c: c, r: bufio.NewReaderSize(c, 16<<10), req: req}, nil
}

// roundTrip writes the request and reads one reply. With keepBody the body
// and header block are copied into the Response.
func (c *conn) roundTrip(keepBody bool) (Response, error) {
	if _, err := c.c.Write(c.req); err != nil {
		return Response{}, err
	}
	return readResponse(c.r, keepBody)
}

// readResponse parses one HTTP/1.1 reply with a Content-Length body.
func readResponse(r *bufio.Reader, keepBody bool) (Response, error) {
	var resp Response
	line, err := r.ReadSlice('\n')
	if err != nil {
		return resp, fmt.Errorf("status line: %w", err)
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return resp, fmt.Errorf("bad status line %q", line)
	}
	resp.Status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return resp, fmt.Errorf("bad status line %q", line)
	}
	if line[7] == '0' { // HTTP/1.0 closes unless told otherwise; we never expect it.
		resp.Close = true
	}
	var hdr []byte
	length := -1
	for {
		line, err = r.ReadSlice('\n')
		if err != nil {
			return resp, fmt.Errorf("header: %w", err)
		}
		if len(line) <= 2 {
			break
		}
		if keepBody {
			hdr = append(hdr, line...)
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			return resp, fmt.Errorf("bad header line %q", line)
		}
		name := line[:colon]
		val := bytes.TrimSpace(line[colon+1:])
		switch {
		case asciiEqualFold(name, "Content-Length"):
			length, err = strconv.Atoi(string(val))
			if err != nil || length < 0 {
				return resp, fmt.Errorf("bad Content-Length %q", val)
			}
		case asciiEqualFold(name, "Transfer-Encoding"):
			if !asciiEqualFold(val, "chunked") {
				return resp, fmt.Errorf("unsupported Transfer-Encoding %q", val)
			}
			resp.Chunked = true
		case asciiEqualFold(name, "Connection"):
			if asciiEqualFold(val, "close") {
				resp.Close = true
			}
		}
	}
	resp.Header = hdr
	if resp.Chunked {
		body, err := readChunked(r, keepBody)
		resp.Body = body
		return resp, err
	}
	if length < 0 {
		return resp, errors.New("response without Content-Length")
	}
	if keepBody {
		resp.Body = make([]byte, length)
		if _, err := io.ReadFull(r, resp.Body); err != nil {
			return resp, fmt.Errorf("body: %w", err)
		}
		return resp, nil
	}
	if _, err := r.Discard(length); err != nil {
		return resp, fmt.Errorf("body: %w", err)
	}
	return resp, nil
}

// maxChunkedBody bounds a chunked body the client is willing to read.
const maxChunkedBody = 16 << 20

// readChunked reads a chunked body and its trailer.
func readChunked(r *bufio.Reader, keep bool) ([]byte, error) {
	var body []byte
	total := 0
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return body, fmt.Errorf("chunk size: %w", err)
		}
		sz := bytes.TrimSpace(line)
		if i := bytes.IndexByte(sz, ';'); i >= 0 {
			sz = sz[:i]
		}
		n, err := strconv.ParseInt(string(sz), 16, 32)
		if err != nil || n < 0 {
			return body, fmt.Errorf("bad chunk size %q", line)
		}
		if n == 0 {
			for { // trailer, up to the empty line
				line, err := r.ReadSlice('\n')
				if err != nil {
					return body, fmt.Errorf("trailer: %w", err)
				}
				if len(bytes.TrimSpace(line)) == 0 {
					return body, nil
				}
			}
		}
		total += int(n)
		if total > maxChunkedBody {
			return body, fmt.Errorf("chunked body longer than %d bytes", maxChunkedBody)
		}
		if keep {
			start := len(body)
			body = append(body, make([]byte, n)...)
			if _, err := io.ReadFull(r, body[start:]); err != nil {
				return body, fmt.Errorf("chunk: %w", err)
			}
		} else if _, err := r.Discard(int(n)); err != nil {
			return body, fmt.Errorf("chunk: %w", err)
		}
		if _, err := r.Discard(2); err != nil { // CRLF after the chunk
			return body, fmt.Errorf("chunk end: %w", err)
		}
	}
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// Conn is a persistent connection that sends one Target again and again.
type Conn struct{ c *conn }

// Dial opens a persistent connection for t.
func Dial(ctx context.Context, t Target) (*Conn, error) {
	c, err := dial(ctx, t, t.request(false))
	if err != nil {
		return nil, err
	}
	return &Conn{c}, nil
}

// Do sends the request and reads the reply, discarding the body.
func (c *Conn) Do() (Response, error) { return c.c.roundTrip(false) }

// Close closes the connection.
func (c *Conn) Close() error { return c.c.c.Close() }

// Get sends one request on a fresh connection and returns the full reply.
func Get(ctx context.Context, t Target, timeout time.Duration) (Response, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := dial(ctx, t, t.request(true))
	if err != nil {
		return Response{}, err
	}
	defer c.c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.c.SetDeadline(dl)
	}
	return c.roundTrip(true)
}

// SteadyConfig configures one closed-loop run at a fixed concurrency.
type SteadyConfig struct {
	Target      Target
	Concurrency int
	// Warmup runs before the measured window; its requests are not counted.
	Warmup time.Duration
	// Duration is the measured window.
	Duration time.Duration
	// MaxRequests bounds the total number of requests (warm-up included) so
	// the loop is bounded in count as well as in time. 0 means 10 million.
	MaxRequests int64
	// RequestTimeout bounds each request (default 5 s).
	RequestTimeout time.Duration
}

// SteadyResult is what a steady run measured.
type SteadyResult struct {
	Concurrency int           `json:"concurrency"`
	Window      time.Duration `json:"window_ns"`
	Requests    int64         `json:"requests"`  // completed with status 200 in the window
	Completed   int64         `json:"completed"` // every reply read, warm-up included
	Non200      int64         `json:"non_200"`
	Errors      int64         `json:"errors"`
	FirstError  string        `json:"first_error,omitempty"`
	Reconnects  int64         `json:"reconnects"`
	RPS         float64       `json:"rps"`
	Latency     Percentiles   `json:"latency"`
}

// Percentiles are exact nearest-rank percentiles of the recorded samples.
type Percentiles struct {
	N     int           `json:"n"`
	Min   time.Duration `json:"min_ns"`
	P50   time.Duration `json:"p50_ns"`
	P90   time.Duration `json:"p90_ns"`
	P99   time.Duration `json:"p99_ns"`
	P999  time.Duration `json:"p999_ns"`
	Max   time.Duration `json:"max_ns"`
	Mean  time.Duration `json:"mean_ns"`
	Total time.Duration `json:"-"`
}

// Summarize sorts samples in place and returns their exact percentiles.
func Summarize(samples []time.Duration) Percentiles {
	var p Percentiles
	p.N = len(samples)
	if p.N == 0 {
		return p
	}
	slices.Sort(samples)
	var sum time.Duration
	for _, s := range samples {
		sum += s
	}
	p.Min = samples[0]
	p.Max = samples[p.N-1]
	p.Mean = sum / time.Duration(p.N)
	p.P50 = Rank(samples, 0.50)
	p.P90 = Rank(samples, 0.90)
	p.P99 = Rank(samples, 0.99)
	p.P999 = Rank(samples, 0.999)
	return p
}

// Rank returns the nearest-rank q-quantile of sorted samples: the smallest
// sample such that at least q of all samples are less than or equal to it.
func Rank(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

// Steady runs Concurrency workers, each with its own persistent connection,
// each sending the next request as soon as the previous reply is read.
func Steady(ctx context.Context, cfg SteadyConfig) (SteadyResult, error) {
	if cfg.Concurrency < 1 {
		return SteadyResult{}, errors.New("concurrency must be at least 1")
	}
	if cfg.Duration <= 0 {
		return SteadyResult{}, errors.New("duration must be positive")
	}
	if cfg.MaxRequests <= 0 {
		cfg.MaxRequests = 10_000_000
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 5 * time.Second
	}
	req := cfg.Target.request(false)
	perWorker := cfg.MaxRequests / int64(cfg.Concurrency)
	if perWorker < 1 {
		perWorker = 1
	}

	// Open every connection before the clock starts.
	conns := make([]*conn, cfg.Concurrency)
	for i := range conns {
		dctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
		c, err := dial(dctx, cfg.Target, req)
		cancel()
		if err != nil {
			for _, c := range conns[:i] {
				c.c.Close()
			}
			return SteadyResult{}, fmt.Errorf("dial %s: %w", cfg.Target.Addr, err)
		}
		conns[i] = c
	}

	type workerResult struct {
		samples    []time.Duration
		non200     int64
		errs       int64
		firstErr   error
		reconnects int64
		completed  int64
	}
	results := make([]workerResult, cfg.Concurrency)
	start := time.Now()
	measureFrom := start.Add(cfg.Warmup)
	end := measureFrom.Add(cfg.Duration)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			wr := &results[i]
			wr.samples = make([]time.Duration, 0, 4096)
			c := conns[i]
			defer func() {
				if c != nil {
					c.c.Close()
				}
			}()
			for n := int64(0); n < perWorker && ctx.Err() == nil; n++ {
				if c == nil {
					dctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
					nc, err := dial(dctx, cfg.Target, req)
					cancel()
					if err != nil {
						wr.errs++
						if wr.firstErr == nil {
							wr.firstErr = err
						}
						if time.Now().After(end) {
							return
						}
						time.Sleep(10 * time.Millisecond)
						continue
					}
					c = nc
					wr.reconnects++
				}
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				_ = c.c.SetDeadline(t0.Add(cfg.RequestTimeout))
				resp, err := c.roundTrip(false)
				t1 := time.Now()
				if err != nil {
					wr.errs++
					if wr.firstErr == nil {
						wr.firstErr = err
					}
					c.c.Close()
					c = nil
					continue
				}
				wr.completed++
				if !t0.Before(measureFrom) && !t1.After(end) {
					if resp.Status == 200 {
						wr.samples = append(wr.samples, t1.Sub(t0))
					} else {
						wr.non200++
					}
				}
				if resp.Close {
					c.c.Close()
					c = nil
				}
			}
		}(i)
	}
	wg.Wait()

	res := SteadyResult{Concurrency: cfg.Concurrency, Window: cfg.Duration}
	total := 0
	for _, wr := range results {
		total += len(wr.samples)
	}
	all := make([]time.Duration, 0, total)
	for _, wr := range results {
		all = append(all, wr.samples...)
		res.Non200 += wr.non200
		res.Errors += wr.errs
		res.Reconnects += wr.reconnects
		res.Completed += wr.completed
		if wr.firstErr != nil && res.FirstError == "" {
			res.FirstError = wr.firstErr.Error()
		}
	}
	res.Requests = int64(len(all))
	res.RPS = float64(res.Requests) / cfg.Duration.Seconds()
	res.Latency = Summarize(all)
	return res, ctx.Err()
}

// StampedeConfig configures a burst of simultaneous first requests.
type StampedeConfig struct {
	Target Target
	// N requests, each on its own connection, all connected before any
	// request is written, then released together.
	N int
	// Timeout bounds the whole stampede (default 30 s).
	Timeout time.Duration
}

// StampedeResult is what a stampede measured.
type StampedeResult struct {
	N          int           `json:"n"`
	Status     map[int]int   `json:"status"` // count per HTTP status
	Errors     int           `json:"errors"`
	FirstError string        `json:"first_error,omitempty"`
	Latency    Percentiles   `json:"latency"` // write of the request to end of reply
	Wall       time.Duration `json:"wall_ns"` // release to the last reply
	// FirstDone is the time from the release to the earliest reply: the
	// shortest time anyone waited for the shared work. Per-request
	// latencies can be shorter for requests whose writer ran late.
	FirstDone time.Duration `json:"first_done_ns"`
	// DistinctTokens counts distinct access_token values among the 200s: a
	// stampede served from one exchange yields exactly one.
	DistinctTokens int `json:"distinct_tokens"`
}

// Stampede connects N clients, releases them at once, and records each
// request's latency.
func Stampede(ctx context.Context, cfg StampedeConfig) (StampedeResult, error) {
	if cfg.N < 1 {
		return StampedeResult{}, errors.New("n must be at least 1")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	req := cfg.Target.request(false)
	conns := make([]*conn, cfg.N)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.c.Close()
			}
		}
	}()
	for i := range conns {
		c, err := dial(ctx, cfg.Target, req)
		if err != nil {
			return StampedeResult{}, fmt.Errorf("dial %d of %d: %w", i+1, cfg.N, err)
		}
		conns[i] = c
		if dl, ok := ctx.Deadline(); ok {
			_ = c.c.SetDeadline(dl)
		}
	}
	type one struct {
		done   time.Time
		lat    time.Duration
		status int
		body   string
		err    error
	}
	out := make([]one, cfg.N)
	var ready, wg sync.WaitGroup
	release := make(chan struct{})
	ready.Add(cfg.N)
	for i := range conns {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ready.Done()
			<-release
			t0 := time.Now()
			resp, err := conns[i].roundTrip(true)
			now := time.Now()
			out[i] = one{done: now, lat: now.Sub(t0), status: resp.Status, body: string(resp.Body), err: err}
		}(i)
	}
	ready.Wait()
	start := time.Now()
	close(release)
	wg.Wait()
	res := StampedeResult{N: cfg.N, Wall: time.Since(start), Status: map[int]int{}}
	tokens := map[string]bool{}
	var lats []time.Duration
	for _, o := range out {
		if o.err != nil {
			res.Errors++
			if res.FirstError == "" {
				res.FirstError = o.err.Error()
			}
			continue
		}
		res.Status[o.status]++
		lats = append(lats, o.lat)
		if d := o.done.Sub(start); res.FirstDone == 0 || d < res.FirstDone {
			res.FirstDone = d
		}
		if o.status == 200 {
			var tok struct {
				AccessToken string `json:"access_token"`
			}
			_ = json.Unmarshal([]byte(o.body), &tok)
			tokens[tok.AccessToken] = true
		}
	}
	res.DistinctTokens = len(tokens)
	res.Latency = Summarize(lats)
	return res, nil
}
