package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/entraemu"
	"github.com/imds-proxy/imds-proxy/internal/podenv"
	"github.com/imds-proxy/imds-proxy/internal/podenv/podenvtest"
)

// Abuse: hostile or broken callers inside the pod, as raw TCP clients of
// 169.254.169.254:80 opened from the pod namespace (through the redirect),
// against the real proxy binary. The proxy must stay up, answer every
// request it answers with a well-formed reply of the exact expected status,
// and keep its goroutines, file descriptors and memory within bounds that
// follow from its configuration:
//
//   - connections: at most --max-connections (1024, the default) served at
//     once, further ones waiting in the kernel's accept queue, each a
//     goroutine and a file descriptor; a request head must arrive within
//     5 s (16 KiB at most), a declared body is refused at once and its
//     connection closed within half a second;
//   - cache: at most 1024 tokens (LRU), 64 MSAL clients, and at most
//     --max-concurrent-exchanges Entra exchanges at once (4 here, half the
//     default, to see the flag at work).
//
// Once the storm is over, goroutines and file descriptors go back to the
// baseline plus a small constant (idle connections to Entra), and resident
// memory stays below abuseRSSBound.

// Bounds asserted by TestAbuse.
const (
	// abuseMaxConnections is the proxy's --max-connections. While the cap
	// is reached, goroutines and file descriptors stay below the baseline
	// plus the cap plus the settle constants below.
	abuseMaxConnections = 1024
	// abuseMaxExchanges is the proxy's --max-concurrent-exchanges.
	abuseMaxExchanges = 4
	// abuseSettleGoroutines and abuseSettleFDs are what may remain above
	// the baseline once every abusive connection is gone: idle keep-alive
	// connections to Entra (two goroutines and one descriptor each, at most
	// two: net/http's MaxIdleConnsPerHost) and the metrics scrape itself.
	abuseSettleGoroutines = 12
	abuseSettleFDs        = 6
	// abuseRSSBound bounds resident memory at any time of the run (VmHWM):
	// the Go runtime and the proxy at rest (about 15 MiB), 1024 connections
	// reading heads of up to 16 KiB (about 32 MiB), 1024 cached tokens and
	// 64 MSAL clients (a few MiB), with room for the collector's headroom.
	abuseRSSBound = 96 << 20
	// abuseDrops is how many connections are opened and dropped at once.
	abuseDrops = 10000
	// floodResources and floodClientIDs are the distinct keys of the flood.
	floodResources = 1500
	floodClientIDs = 300
)

// proxySample is the proxy's goroutines, file descriptors and memory.
type proxySample struct {
	goroutines int
	fds        int
	rss, peak  int64
}

func (s proxySample) String() string {
	return fmt.Sprintf("%d goroutines, %d fds, RSS %.1f MiB (peak %.1f MiB)", s.goroutines, s.fds, mib(s.rss), mib(s.peak))
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// abuseMetricsAddr is the proxy's --metrics-addr in TestAbuse: a listener
// of its own, so scrapes are not queued behind the storms on the main one.
const abuseMetricsAddr = "127.0.0.1:9464"

// scrapeMetrics reads the proxy's --metrics-addr listener from inside the
// pod namespace.
func scrapeMetrics(env *podenv.Env) (podenv.Metrics, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: podenv.NetnsDialer(env.Pod), DisableKeepAlives: true}}
	resp, err := c.Get("http://" + abuseMetricsAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: %s", resp.Status)
	}
	return podenv.ParseMetrics(resp.Body)
}

// sampleProxy reads the proxy's figures; it may run off the test goroutine.
func sampleProxy(env *podenv.Env) (proxySample, error) {
	pid, err := env.ProxyPID()
	if err != nil {
		return proxySample{}, fmt.Errorf("the proxy is gone: %w", err)
	}
	st, err := podenv.ReadProcessStats(pid)
	if err != nil {
		return proxySample{}, err
	}
	m, err := scrapeMetrics(env)
	if err != nil {
		return proxySample{}, fmt.Errorf("proxy metrics: %w", err)
	}
	return proxySample{goroutines: int(m.Sum("go_goroutines")), fds: st.FDs, rss: st.RSS, peak: st.PeakRSS}, nil
}

// rawClient opens TCP connections to 169.254.169.254:80 from inside the
// pod namespace, so they cross the real redirect to the proxy.
type rawClient struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

func newRawClient(env *podenv.Env) rawClient {
	return rawClient{dial: podenv.NetnsDialer(env.Pod)}
}

// open dials one connection; it may run off the test goroutine.
func (c rawClient) open() (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := c.dial(ctx, "tcp", podenv.MetadataAddr+":80")
	if err != nil {
		return nil, fmt.Errorf("dial from the pod: %w", err)
	}
	return conn, nil
}

// mustOpen is open for the test goroutine.
func (c rawClient) mustOpen(t *testing.T) net.Conn {
	t.Helper()
	conn, err := c.open()
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// rawGet renders a GET request for target with the given extra header
// lines.
func rawGet(target string, headers ...string) string {
	var b strings.Builder
	b.WriteString("GET " + target + " HTTP/1.1\r\nHost: 169.254.169.254\r\n")
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// readWire reads one reply off a raw connection, exactly as sent: status
// line, header, and the body (Content-Length bytes, or up to EOF when the
// reply has no length and closes the connection, as net/http's own refusals
// do).
func readWire(br *bufio.Reader) (wireReply, error) {
	tp := textproto.NewReader(br)
	line, err := tp.ReadLine()
	if err != nil {
		return wireReply{}, err
	}
	r := wireReply{StatusLine: line}
	fields := strings.SplitN(line, " ", 3)
	if len(fields) < 2 || !strings.HasPrefix(fields[0], "HTTP/1.") {
		return r, fmt.Errorf("bad status line %q", line)
	}
	if r.Code, err = strconv.Atoi(fields[1]); err != nil {
		return r, fmt.Errorf("bad status line %q", line)
	}
	mh, err := tp.ReadMIMEHeader()
	if err != nil {
		return r, fmt.Errorf("header: %w", err)
	}
	r.Header = http.Header(mh)
	if te := r.Header.Values("Transfer-Encoding"); len(te) != 0 {
		return r, fmt.Errorf("chunked reply (Transfer-Encoding %q)", te)
	}
	var body []byte
	if cl := r.Header.Get("Content-Length"); cl != "" {
		n, err := strconv.Atoi(cl)
		if err != nil || n < 0 || n > 1<<20 {
			return r, fmt.Errorf("bad Content-Length %q", cl)
		}
		body = make([]byte, n)
		if _, err := io.ReadFull(br, body); err != nil {
			return r, fmt.Errorf("body: %w", err)
		}
	} else if strings.EqualFold(r.Header.Get("Connection"), "close") {
		if body, err = io.ReadAll(io.LimitReader(br, 1<<20)); err != nil {
			return r, fmt.Errorf("body: %w", err)
		}
	} else {
		return r, errors.New("reply without Content-Length that keeps the connection")
	}
	r.Body = string(body)
	return r, nil
}

// waitClosed reads until the server closes conn and returns what came
// before the end and how long the close took from start; it fails when
// the connection is still open after limit.
func waitClosed(conn net.Conn, start time.Time, limit time.Duration) (extra int, took time.Duration, err error) {
	_ = conn.SetReadDeadline(start.Add(limit))
	n, err := io.Copy(io.Discard, conn)
	took = time.Since(start)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return int(n), took, fmt.Errorf("still open after %s", limit)
	}
	// EOF, or a reset: either way the server ended the connection.
	return int(n), took, nil
}

// parallel runs fn(i) for i in [0, n) on the given number of workers and
// returns the first errors (at most 5) and how many failed.
func parallel(n, workers int, fn func(i int) error) (first []error, failed int) {
	var next atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					failed++
					if len(first) < 5 {
						first = append(first, fmt.Errorf("#%d: %w", i, err))
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return first, failed
}

func reportFailures(t *testing.T, what string, first []error, failed int) {
	t.Helper()
	if failed > 0 {
		t.Errorf("%s: %d failed; first: %v", what, failed, errors.Join(first...))
	}
}

var (
	bodyRefused = errorJSON("invalid_request", "Request bodies are not accepted; send no Content-Length or Transfer-Encoding")
	noMetadata  = `{"error":"invalid_request","error_description":"Required metadata header not specified"}`
)

// TestAbuse drives the storms one after another against one proxy and
// measures it before, during and after.
func TestAbuse(t *testing.T) {
	t.Parallel()
	env := podenvtest.Start(t, podenv.Options{ClientID: podenv.DefaultClientID, ProxyArgs: []string{
		"--metrics-addr=" + abuseMetricsAddr,
		"--max-connections=" + strconv.Itoa(abuseMaxConnections),
		"--max-concurrent-exchanges=" + strconv.Itoa(abuseMaxExchanges),
	}})
	c := newRawClient(env)
	pod := func(res string) wantToken {
		return wantToken{Resource: res, ClientID: podenv.DefaultClientID, Tenant: env.Tenant}
	}
	cached := checkToken(t, curlIMDS(t, env, tokenPath(vault)), pod(vault))
	pid, err := env.ProxyPID()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the warm-up's connections close
	base, err := sampleProxy(env)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("baseline: %s", base)
	var peakMu sync.Mutex
	peakG, peakFD, peakRSS := base.goroutines, base.fds, base.rss
	// during samples the proxy in the middle of a storm; it may run off
	// the test goroutine.
	during := func(what string) {
		s, err := sampleProxy(env)
		if err != nil {
			t.Errorf("during %s: %v", what, err)
			return
		}
		peakMu.Lock()
		peakG, peakFD, peakRSS = max(peakG, s.goroutines), max(peakFD, s.fds), max(peakRSS, s.rss)
		peakMu.Unlock()
		t.Logf("during %s: %s", what, s)
		if s.goroutines > base.goroutines+abuseMaxConnections+abuseSettleGoroutines {
			t.Errorf("during %s: %d goroutines, over the bound of the connection cap (%d + %d + %d)",
				what, s.goroutines, base.goroutines, abuseMaxConnections, abuseSettleGoroutines)
		}
		if s.fds > base.fds+abuseMaxConnections+abuseSettleFDs {
			t.Errorf("during %s: %d file descriptors, over the bound of the connection cap (%d + %d + %d)",
				what, s.fds, base.fds, abuseMaxConnections, abuseSettleFDs)
		}
	}
	// stillServesWithin: a well-behaved client is served while the storm
	// goes on, within limit.
	stillServesWithin := func(what string, limit time.Duration) {
		start := time.Now()
		r := curlIMDS(t, env, tokenPath(vault))
		if got := checkToken(t, r, pod(vault)); got != cached {
			t.Errorf("during %s: the cached token was not served", what)
		}
		d := time.Since(start)
		t.Logf("during %s: a well-behaved token request took %s", what, d.Round(time.Millisecond))
		if d > limit {
			t.Errorf("during %s: a token request took %s, want within %s", what, d, limit)
		}
	}
	stillServes := func(what string) { stillServesWithin(what, 5*time.Second) }
	settle := func(what string) proxySample {
		deadline := time.Now().Add(20 * time.Second)
		for {
			s, err := sampleProxy(env)
			if err != nil {
				t.Fatal(err)
			}
			if s.goroutines <= base.goroutines+abuseSettleGoroutines && s.fds <= base.fds+abuseSettleFDs {
				t.Logf("after %s: %s", what, s)
				return s
			}
			if time.Now().After(deadline) {
				t.Errorf("after %s: %s; want at most %d goroutines and %d fds (baseline + %d, + %d)", what, s,
					base.goroutines+abuseSettleGoroutines, base.fds+abuseSettleFDs, abuseSettleGoroutines, abuseSettleFDs)
				return s
			}
			time.Sleep(250 * time.Millisecond)
		}
	}

	t.Run("slow headers", func(t *testing.T) {
		// More clients than the connection cap connect, then send a
		// request head one byte every 250 ms. When the 5 s header timeout
		// of a connection ends, net/http itself answers its plain-text 400
		// (no handler has run: the reply is not the proxy's JSON) and
		// closes it; a close while the client still writes may reach it as
		// a reset instead. The clients over the cap wait in the kernel's
		// accept queue meanwhile, and so does a well-behaved client: it is
		// served once the first round of timeouts frees slots, within one
		// header timeout. That wait is the price of the cap, which bounds
		// memory; the metrics listener (--metrics-addr) has its own.
		const n = abuseMaxConnections + 76
		head := rawGet(tokenPath(vault), "Metadata: true")
		conns := make([]net.Conn, n)
		// The header timeout of a connection runs from when the proxy
		// accepted it, which for the first ones is while the others are
		// still connecting: a reset is judged from the connection's own
		// start, not from the storm's.
		opened := make([]time.Time, n)
		first, failed := parallel(n, 32, func(i int) (err error) {
			opened[i] = time.Now()
			conns[i], err = c.open()
			return err
		})
		reportFailures(t, "slow headers: connecting", first, failed)
		defer func() {
			for _, conn := range conns {
				if conn != nil {
					conn.Close()
				}
			}
		}()
		if failed > 0 {
			t.FailNow()
		}
		var slowest atomic.Int64
		var canned, reset atomic.Int32
		done := make(chan struct{})
		start := time.Now()
		go func() {
			defer close(done)
			first, failed := parallel(n, n, func(i int) error {
				conn := conns[i]
				stop := make(chan struct{})
				defer close(stop)
				go func() {
					for i := 0; i < len(head); i++ {
						if _, err := conn.Write([]byte{head[i]}); err != nil {
							return
						}
						select {
						case <-stop:
							return
						case <-time.After(250 * time.Millisecond):
						}
					}
				}()
				_ = conn.SetReadDeadline(start.Add(30 * time.Second))
				r, err := readWire(bufio.NewReader(conn))
				took := time.Since(start)
				switch {
				case errors.Is(err, syscall.ECONNRESET) && time.Since(opened[i]) >= 4*time.Second:
					reset.Add(1)
				case err != nil:
					return fmt.Errorf("after %s: %w", took, err)
				case r.StatusLine != "HTTP/1.1 400 Bad Request" || r.Body != "400 Bad Request" || r.Header.Get("Connection") != "close":
					return fmt.Errorf("got %q %v %q, want net/http's 400 and the close", r.StatusLine, r.Header, r.Body)
				default:
					canned.Add(1)
				}
				for {
					if old := slowest.Load(); int64(took) <= old || slowest.CompareAndSwap(old, int64(took)) {
						break
					}
				}
				return nil
			})
			reportFailures(t, "slow headers", first, failed)
		}()
		// Every connection is now served or queued: the well-behaved
		// request waits behind them.
		stillServesWithin("slow headers", 10*time.Second)
		during("slow headers")
		<-done
		t.Logf("slow headers: %d connections ended by the proxy within %s (%d with net/http's 400, %d reset)",
			n, time.Duration(slowest.Load()).Round(time.Millisecond), canned.Load(), reset.Load())
		// Two rounds of the 5 s header timeout (the clients over the cap
		// wait for the first), plus 5 s of slack.
		if took := time.Duration(slowest.Load()); took > 15*time.Second {
			t.Errorf("the slowest trickling head was ended after %s, want within two 5 s header timeouts (+5 s slack)", took)
		}
		settle("slow headers")
	})

	t.Run("unsent and trickled bodies", func(t *testing.T) {
		// Half declare a body and never send it; half send a chunked body
		// a byte every 200 ms. Each gets the refusal at once, and the
		// connection closes within the half second the proxy lingers.
		const n = 200
		var slowest atomic.Int64
		first, failed := parallel(n, 100, func(i int) error {
			conn, err := c.open()
			if err != nil {
				return err
			}
			defer conn.Close()
			head := rawGet(tokenPath(vault), "Metadata: true", "Content-Length: 1000000")
			if i%2 == 1 {
				head = rawGet(tokenPath(vault), "Metadata: true", "Transfer-Encoding: chunked")
			}
			start := time.Now()
			if _, err := io.WriteString(conn, head); err != nil {
				return err
			}
			stop := make(chan struct{})
			defer close(stop)
			if i%2 == 1 {
				go func() {
					for {
						select {
						case <-stop:
							return
						case <-time.After(200 * time.Millisecond):
						}
						if _, err := io.WriteString(conn, "1\r\na\r\n"); err != nil {
							return
						}
					}
				}()
			}
			_ = conn.SetReadDeadline(start.Add(5 * time.Second))
			br := bufio.NewReader(conn)
			r, err := readWire(br)
			if err != nil {
				return fmt.Errorf("reading the refusal: %w", err)
			}
			if r.StatusLine != "HTTP/1.1 400 Bad Request" || r.Body != bodyRefused || r.Header.Get("Connection") != "close" {
				return fmt.Errorf("got %q %v %s, want 400, Connection: close and the refusal", r.StatusLine, r.Header, r.Body)
			}
			if d := time.Since(start); d > 3*time.Second {
				return fmt.Errorf("refusal after %s, want at once", d)
			}
			extra, took, err := waitClosed(conn, start, 5*time.Second)
			if err != nil {
				return err
			}
			if extra != 0 {
				return fmt.Errorf("%d more bytes after the refusal", extra)
			}
			for {
				if old := slowest.Load(); int64(took) <= old || slowest.CompareAndSwap(old, int64(took)) {
					break
				}
			}
			return nil
		})
		reportFailures(t, "bodies", first, failed)
		t.Logf("bodies: %d refused, the slowest connection closed %s after its head", n, time.Duration(slowest.Load()).Round(time.Millisecond))
		stillServes("bodies")
		settle("bodies")
	})

	t.Run("10000 connections opened and dropped", func(t *testing.T) {
		// A quarter each: closed at once, reset at once (SO_LINGER 0),
		// closed after half a request line, reset after a whole request
		// without reading the reply.
		start := time.Now()
		var mid sync.Once
		first, failed := parallel(abuseDrops, 16, func(i int) error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, err := c.dial(ctx, "tcp", podenv.MetadataAddr+":80")
			if err != nil {
				return err
			}
			tc := conn.(*net.TCPConn)
			switch i % 4 {
			case 1:
				_ = tc.SetLinger(0)
			case 2:
				_, _ = io.WriteString(tc, "GET /metadata/identity/oauth2/tok")
			case 3:
				_, _ = io.WriteString(tc, rawGet(tokenPath(vault), "Metadata: true"))
				_ = tc.SetLinger(0)
			}
			if i == abuseDrops/2 {
				mid.Do(func() { during("the connection storm") })
			}
			return tc.Close()
		})
		reportFailures(t, "open and drop", first, failed)
		took := time.Since(start)
		t.Logf("%d connections opened and dropped in %s (%.0f/s)", abuseDrops, took.Round(time.Millisecond), abuseDrops/took.Seconds())
		if took > 2*time.Minute {
			t.Errorf("opening and dropping %d connections took %s, want well under 2 minutes", abuseDrops, took)
		}
		stillServes("after the connection storm")
		settle("the connection storm")
	})

	t.Run("oversized heads", func(t *testing.T) {
		long := strings.Repeat("a", 14<<10)
		for _, tc := range []struct {
			name   string
			req    string
			status string
			body   string // exact; "" for the cached token
		}{
			{"12 KiB of headers", rawGet(tokenPath(vault), "Metadata: true", "X-Padding: "+strings.Repeat("p", 12<<10)), "HTTP/1.1 200 OK", ""},
			{"24 KiB of headers", rawGet(tokenPath(vault), "Metadata: true", "X-Padding: "+strings.Repeat("p", 24<<10)),
				"HTTP/1.1 431 Request Header Fields Too Large", "431 Request Header Fields Too Large"},
			{"3000-byte path", rawGet("/metadata/"+strings.Repeat("x", 3000), "Metadata: true"), "HTTP/1.1 400 Bad Request",
				errorJSON("invalid_request", "The request path is malformed or not canonical")},
			{"40 query parameters", rawGet(tokenPath(vault)+manyParams(38), "Metadata: true"), "HTTP/1.1 400 Bad Request",
				errorJSON("invalid_request", "Too many query parameters")},
			{"a 14 KiB unknown parameter", rawGet(tokenPath(vault, "x", long), "Metadata: true"), "HTTP/1.1 200 OK", ""},
			{"a 40 KiB query", rawGet(tokenPath(vault, "x", strings.Repeat("q", 40<<10)), "Metadata: true"),
				"HTTP/1.1 431 Request Header Fields Too Large", "431 Request Header Fields Too Large"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				conn := c.mustOpen(t)
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.WriteString(conn, tc.req); err != nil {
					t.Fatal(err)
				}
				r, err := readWire(bufio.NewReader(conn))
				if err != nil {
					t.Fatal(err)
				}
				switch {
				case tc.body == "":
					if got := checkToken(t, r, pod(vault)); got != cached {
						t.Error("want the cached token")
					}
				case r.Code == http.StatusRequestHeaderFieldsTooLarge:
					// net/http's own refusal, before any handler: plain
					// text, closed.
					if r.StatusLine != tc.status || r.Body != tc.body || r.Header.Get("Connection") != "close" {
						t.Errorf("got %q %v %q", r.StatusLine, r.Header, r.Body)
					}
				default:
					if r.StatusLine != tc.status || r.Body != tc.body {
						t.Errorf("got %q %s, want %q %s", r.StatusLine, r.Body, tc.status, tc.body)
					}
					checkJSONWire(t, r)
				}
			})
		}
	})

	t.Run("pipelined requests", func(t *testing.T) {
		info := rawGet("/metadata/identity/info?api-version=2018-02-01", "Metadata: true")
		kinds := []struct {
			req    string
			status string
			body   string // exact; "" for a token
		}{
			{rawGet(tokenPath(vault), "Metadata: true"), "HTTP/1.1 200 OK", ""},
			{rawGet(tokenPath(vault)), "HTTP/1.1 400 Bad Request", noMetadata},
			{info, "HTTP/1.1 200 OK", `{"tenantId":"` + env.Tenant + `"}`},
			{rawGet("/metadata/nothing", "Metadata: true"), "HTTP/1.1 404 Not Found", string(notFoundBody)},
			{rawGet(tokenPath(storage), "Metadata: true"), "HTTP/1.1 200 OK", ""},
		}
		const rounds = 10
		var all strings.Builder
		for range rounds {
			for _, k := range kinds {
				all.WriteString(k.req)
			}
		}
		conn := c.mustOpen(t)
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.WriteString(conn, all.String()); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		for i := range rounds * len(kinds) {
			k := kinds[i%len(kinds)]
			r, err := readWire(br)
			if err != nil {
				t.Fatalf("reply %d: %v", i, err)
			}
			if k.body == "" {
				res := vault
				if strings.Contains(k.req, "storage") {
					res = storage
				}
				checkToken(t, r, pod(res))
				continue
			}
			checkJSONWire(t, r)
			if r.StatusLine != k.status || r.Body != k.body {
				t.Errorf("reply %d: %q %s, want %q %s", i, r.StatusLine, r.Body, k.status, k.body)
			}
		}
		wantCalls(t, env, podenv.DefaultClientID, storage, 1)

		// A declared body in the middle of a pipeline: answered with the
		// refusal, and nothing after it is read as a request.
		conn2 := c.mustOpen(t)
		defer conn2.Close()
		_ = conn2.SetDeadline(time.Now().Add(10 * time.Second))
		smuggled := rawGet("/metadata/identity/info?api-version=2018-02-01", "Metadata: true")
		withBody := "GET " + tokenPath(vault) + " HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\nContent-Length: " +
			strconv.Itoa(len(smuggled)) + "\r\n\r\n" + smuggled
		if _, err := io.WriteString(conn2, rawGet(tokenPath(vault), "Metadata: true")+withBody+info); err != nil {
			t.Fatal(err)
		}
		br2 := bufio.NewReader(conn2)
		r, err := readWire(br2)
		if err != nil {
			t.Fatal(err)
		}
		checkToken(t, r, pod(vault))
		r, err = readWire(br2)
		if err != nil {
			t.Fatal(err)
		}
		if r.StatusLine != "HTTP/1.1 400 Bad Request" || r.Body != bodyRefused {
			t.Errorf("declared body in a pipeline: %q %s", r.StatusLine, r.Body)
		}
		if rest, err := io.ReadAll(br2); len(rest) != 0 {
			t.Errorf("after the refusal the proxy sent %q (%v), want the connection closed", rest, err)
		}
	})

	t.Run("flood of resources and client ids", func(t *testing.T) {
		// Entra takes 30 ms per token, so exchanges overlap: the emulator
		// sees at most --max-concurrent-exchanges at once, however many
		// requests wait.
		podenvtest.SetFault(t, env, entraemu.Fault{Latency: 30 * time.Millisecond})
		defer podenvtest.SetFault(t, env, entraemu.Fault{})
		if err := env.ResetCalls(context.Background()); err != nil {
			t.Fatal(err)
		}
		const workers = 64
		conns := make(chan *bufio.ReadWriter, workers)
		var opened []net.Conn
		for range workers {
			conn := c.mustOpen(t)
			opened = append(opened, conn)
			conns <- bufio.NewReadWriter(bufio.NewReader(conn), bufio.NewWriter(conn))
		}
		defer func() {
			for _, conn := range opened {
				conn.Close()
			}
		}()
		var mid sync.Once
		total := floodResources + floodClientIDs
		first, failed := parallel(total, workers, func(i int) error {
			rw := <-conns
			defer func() { conns <- rw }()
			var req, resource, clientID string
			if i%5 == 4 && i/5 < floodClientIDs {
				clientID = fmt.Sprintf("f100d000-0000-4000-8000-%012d", i)
				resource = vault
				req = rawGet(tokenPath(vault, "client_id", clientID), "Metadata: true")
			} else {
				resource = fmt.Sprintf("api://flood/%d", i)
				req = rawGet(tokenPath(resource), "Metadata: true")
			}
			if _, err := rw.WriteString(req); err != nil {
				return err
			}
			if err := rw.Flush(); err != nil {
				return err
			}
			r, err := readWire(rw.Reader)
			if err != nil {
				return err
			}
			if i == total/2 {
				mid.Do(func() { during("the flood") })
			}
			return checkFloodReply(r, resource, clientID, env.Tenant)
		})
		reportFailures(t, "flood", first, failed)
		stats, err := env.CallStats(context.Background(), "", "")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("flood: %d token POSTs, at most %d at once at Entra", stats.Total, stats.MaxInFlight)
		if stats.MaxInFlight > abuseMaxExchanges || stats.MaxInFlight < 2 {
			t.Errorf("Entra saw at most %d token requests at once, want 2..%d (--max-concurrent-exchanges)", stats.MaxInFlight, abuseMaxExchanges)
		}
		// Every resource was asked once and every client id once: one
		// exchange each.
		if want := floodResources + floodClientIDs; stats.Total != want {
			t.Errorf("Entra got %d token POSTs, want %d (one per key)", stats.Total, want)
		}
		m, err := env.ProxyMetrics(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		// vault, storage and the flood's resources; the cap keeps 1024.
		if got := m.Sum("imds_proxy_token_cache_entries"); got != 1024 {
			t.Errorf("cached tokens = %v, want the cap, 1024", got)
		}
		if got, want := m.Sum("imds_proxy_token_cache_evictions_total", `cause="lru"`), float64(floodResources+2-1024); got != want {
			t.Errorf("LRU evictions = %v, want %v", got, want)
		}
		// Repeating an unknown client id within the negative TTL does not
		// reach Entra.
		id := fmt.Sprintf("f100d000-0000-4000-8000-%012d", 4)
		r := curlIMDS(t, env, tokenPath(vault, "client_id", id))
		if err := checkFloodReply(r, vault, id, env.Tenant); err != nil {
			t.Error(err)
		}
		wantCalls(t, env, id, vault, 1)
	})

	final := settle("every storm")
	t.Logf("peaks sampled: %d goroutines, %d fds, RSS %.1f MiB; VmHWM %.1f MiB", peakG, peakFD, mib(peakRSS), mib(final.peak))
	if final.peak > abuseRSSBound {
		t.Errorf("peak RSS %.1f MiB, over the bound of %.0f MiB", mib(final.peak), mib(abuseRSSBound))
	}
	if now, err := env.ProxyPID(); err != nil || now != pid {
		t.Errorf("the proxy did not survive: pid %d, now %d (%v)", pid, now, err)
	}
	out := podenvtest.Output(t, env.PodCommand(context.Background(), appUID, nil, "curl", "-sS", "--max-time", "10", "http://127.0.0.1:8000/healthz"))
	if out != "ok\n" {
		t.Errorf("/healthz = %q", out)
	}
}

// manyParams renders n distinct query parameters, each with a leading "&".
func manyParams(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "&p%d=1", i)
	}
	return b.String()
}

// notFoundBody is the proxy's 404 body.
var notFoundBody = errorJSON("not_found",
	"No such metadata endpoint; imds-proxy serves /metadata/identity/oauth2/token and /metadata/identity/info and forwards /metadata/{instance,versions,attested,scheduledevents,loadbalancer}")

// checkFloodReply checks one reply of the flood: a token for resource, or,
// for an unknown client id, 400 Identity not found naming it.
func checkFloodReply(r wireReply, resource, clientID, tenant string) error {
	if clientID != "" {
		want := errorJSON("invalid_request", "Identity not found (AADSTS700016: application "+clientID+" was not found in the tenant)")
		if r.StatusLine != "HTTP/1.1 400 Bad Request" || r.Body != want {
			return fmt.Errorf("unknown client id: %q %s, want 400 %s", r.StatusLine, r.Body, want)
		}
		return wellFormed(r)
	}
	if r.StatusLine != "HTTP/1.1 200 OK" {
		return fmt.Errorf("%s: %q %s", resource, r.StatusLine, r.Body)
	}
	if err := wellFormed(r); err != nil {
		return err
	}
	var body map[string]string
	if err := json.Unmarshal([]byte(r.Body), &body); err != nil {
		return fmt.Errorf("token body (every value a string): %w", err)
	}
	claims, err := podenv.DecodeClaims(body["access_token"])
	if err != nil {
		return err
	}
	if body["resource"] != resource || claims["aud"] != resource || claims["appid"] != podenv.DefaultClientID || claims["tid"] != tenant {
		return fmt.Errorf("token for %s: resource %q, aud %v, appid %v", resource, body["resource"], claims["aud"], claims["appid"])
	}
	return nil
}

// wellFormed is checkJSONWire as an error, for use off the test goroutine.
func wellFormed(r wireReply) error {
	if got := r.Header.Values("Content-Type"); len(got) != 1 || got[0] != "application/json; charset=utf-8" {
		return fmt.Errorf("Content-Type = %q", got)
	}
	if got := r.Header.Values("Content-Length"); len(got) != 1 || got[0] != strconv.Itoa(len(r.Body)) {
		return fmt.Errorf("Content-Length = %q for %d bytes", got, len(r.Body))
	}
	return nil
}
