package imds

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	bodyUpgrade  = `{"error":"invalid_request","error_description":"Protocol upgrades are not supported: imds-proxy opens no tunnels"}`
	bodyConnect  = `{"error":"method_not_allowed","error_description":"CONNECT is not supported: imds-proxy opens no tunnels"}`
	bodySwitched = `{"error":"service_unavailable","error_description":"The instance metadata service tried to switch protocols; imds-proxy opens no tunnels"}`
	// nodeToken is what the fake real IMDS hands out through a tunnel: the
	// node's identity, which must never reach a pod.
	nodeToken = "NODE-IDENTITY-TOKEN"
)

func TestHeaderHasToken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		values []string
		want   bool
	}{
		{nil, false},
		{[]string{""}, false},
		{[]string{"upgrade"}, true},
		{[]string{"Upgrade"}, true},
		{[]string{"UPGRADE"}, true},
		{[]string{"uPgRaDe"}, true},
		{[]string{"keep-alive, Upgrade"}, true},
		{[]string{"Upgrade,keep-alive"}, true},
		{[]string{" \tupgrade\t "}, true},
		{[]string{",,upgrade,,"}, true},
		{[]string{"close", "upgrade"}, true},
		{[]string{"close", "keep-alive, \t UPGRADE"}, true},
		{[]string{"upgrades"}, false},
		{[]string{"up grade"}, false},
		{[]string{"upgrade;q=1"}, false},
		{[]string{`"upgrade"`}, false},
		{[]string{"x-upgrade"}, false},
		{[]string{"keep-alive", "close"}, false},
		{[]string{"\u212aeep-alive"}, false},
		{[]string{"upgrade\x00"}, false},
		{[]string{"\nupgrade"}, false},
	}
	for _, tt := range tests {
		if got := headerHasToken(tt.values, "upgrade"); got != tt.want {
			t.Errorf("headerHasToken(%q) = %v; want %v", tt.values, got, tt.want)
		}
	}
}

// FuzzHeaderHasToken checks headerHasToken against the obvious definition
// built on strings.Split.
func FuzzHeaderHasToken(f *testing.F) {
	for _, s := range []string{"upgrade", "keep-alive, Upgrade", " \tUPGRADE ,", ",,", "upgrades", "up\tgrade"} {
		f.Add(s, "close")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		want := false
		for _, v := range []string{a, b} {
			for _, elem := range strings.Split(v, ",") {
				if strings.EqualFold(strings.Trim(elem, " \t"), "upgrade") {
					want = true
				}
			}
		}
		if got := headerHasToken([]string{a, b}, "upgrade"); got != want {
			t.Fatalf("headerHasToken(%q, %q) = %v; want %v", a, b, got, want)
		}
	})
}

// tunnelIMDS is a fake real IMDS that accepts protocol upgrades: it answers
// 101 to a request carrying Upgrade (to every request when always is set)
// and then answers every HTTP request that comes through the switched
// connection with the node's token. It counts the requests and upgrade
// requests it saw and the bytes it read after its 101.
type tunnelIMDS struct {
	*httptest.Server
	always bool
	// ended receives once per switched connection, when it ends.
	ended chan struct{}

	mu          sync.Mutex
	requests    int
	upgrades    int
	afterSwitch int64
}

func newTunnelIMDS(t *testing.T, always bool) *tunnelIMDS {
	t.Helper()
	u := &tunnelIMDS{always: always, ended: make(chan struct{}, 16)}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Close)
	return u
}

func (u *tunnelIMDS) serve(w http.ResponseWriter, r *http.Request) {
	_, upgrade := r.Header["Upgrade"]
	u.mu.Lock()
	u.requests++
	if upgrade {
		u.upgrades++
	}
	u.mu.Unlock()
	if !upgrade && !u.always {
		_, _ = io.WriteString(w, `{"compute":{}}`)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	defer func() { u.ended <- struct{}{} }()
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	_ = brw.Flush()
	cr := &countingReader{r: brw.Reader}
	tunnel := bufio.NewReader(cr)
	for {
		req, err := http.ReadRequest(tunnel)
		if err != nil {
			break
		}
		_ = req.Body.Close()
		body := `{"access_token":"` + nodeToken + `"}`
		_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "+
			strconv.Itoa(len(body))+"\r\n\r\n"+body)
	}
	u.mu.Lock()
	u.afterSwitch += cr.n
	u.mu.Unlock()
}

func (u *tunnelIMDS) counts() (requests, upgrades int, afterSwitch int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.requests, u.upgrades, u.afterSwitch
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// rawConn is a client connection that writes exactly the bytes a test
// gives it and reads replies one at a time, so a test can go on using the
// connection after a reply.
type rawConn struct {
	t *testing.T
	net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, Conn: c, br: bufio.NewReader(c)}
}

// send writes a request head (lines without "\r\n") and the blank line
// that ends it, then body.
func (c *rawConn) send(head []string, body string) {
	c.t.Helper()
	if _, err := io.WriteString(c, strings.Join(head, "\r\n")+"\r\n\r\n"+body); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// reply reads one response to a request of the given method, waiting at
// most wait for it.
func (c *rawConn) reply(method string, wait time.Duration) rawResponse {
	c.t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(wait))
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("no reply within %v: %v", wait, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("read body: %v", err)
	}
	chunked := len(resp.TransferEncoding) > 0 && resp.TransferEncoding[0] == "chunked"
	return rawResponse{status: resp.StatusCode, statusLine: resp.Status, header: resp.Header, body: string(body), chunked: chunked,
		contentLength: resp.ContentLength, close: resp.Close}
}

// closedWithin reports whether the server closes the connection within
// wait; whatever arrives before the close is returned.
func (c *rawConn) closedWithin(wait time.Duration) (closed bool, rest string) {
	c.t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(wait))
	b, err := io.ReadAll(c.br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false, string(b)
	}
	// io.ReadAll returns nil at EOF; a reset also means closed.
	return true, string(b)
}

// trickle writes chunk to c every interval, as a slow client does, until
// a write fails or t ends.
func trickle(t *testing.T, c *rawConn, every time.Duration, chunk string) {
	t.Helper()
	stop := make(chan struct{})
	trickled := make(chan struct{})
	go func() {
		defer close(trickled)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := io.WriteString(c, chunk); err != nil {
					return
				}
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-trickled })
}

func TestRefusesUpgradesAndConnect(t *testing.T) {
	t.Parallel()
	upstream := newTunnelIMDS(t, false)
	src := &fakeSource{tok: testToken("pod-token")}
	s, _ := newTestServer(t, testConfig(upstream.URL), src)
	addr := hostOf(serve(t, s))

	const (
		md       = "Metadata: true"
		host     = "Host: 169.254.169.254"
		instance = "/metadata/instance?api-version=2021-02-01"
		token    = "/metadata/identity/oauth2/token" + okQuery
	)
	websocket := []string{"Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"}
	tests := []struct {
		name    string
		method  string
		target  string
		headers []string
		status  int
		body    string
		allow   string
	}{
		{"websocket to the passthrough", "GET", instance, websocket, 400, bodyUpgrade, ""},
		{"websocket to the token endpoint", "GET", token, websocket, 400, bodyUpgrade, ""},
		{"websocket to identity info", "GET", "/metadata/identity/info", websocket, 400, bodyUpgrade, ""},
		{"websocket to readyz", "GET", "/readyz", websocket, 400, bodyUpgrade, ""},
		{"websocket to metrics", "GET", "/metrics", websocket, 400, bodyUpgrade, ""},
		{"websocket to quit", "POST", "/quitquitquit", websocket, 400, bodyUpgrade, ""},
		{"websocket to an unknown path", "GET", "/nope", websocket, 400, bodyUpgrade, ""},
		{"h2c", "GET", instance, []string{"Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"}, 400, bodyUpgrade, ""},
		{"Upgrade alone", "GET", instance, []string{"Upgrade: websocket"}, 400, bodyUpgrade, ""},
		{"empty Upgrade", "GET", instance, []string{"Upgrade:"}, 400, bodyUpgrade, ""},
		{"lower-case header names", "GET", instance, []string{"connection: upgrade", "upgrade: websocket"}, 400, bodyUpgrade, ""},
		{"Connection token alone", "GET", instance, []string{"Connection: keep-alive, UPGRADE"}, 400, bodyUpgrade, ""},
		{"Connection token in a second line", "GET", instance, []string{"Connection: keep-alive", "Connection: \tUpGrade\t,"}, 400, bodyUpgrade, ""},
		{"CONNECT authority form", "CONNECT", "169.254.169.254:80", nil, 405, bodyConnect, "GET"},
		{"CONNECT to the passthrough", "CONNECT", instance, nil, 405, bodyConnect, "GET"},
		{"CONNECT to the token endpoint", "CONNECT", token, nil, 405, bodyConnect, "GET"},
		{"CONNECT to quit", "CONNECT", "/quitquitquit", nil, 405, bodyConnect, "POST"},
		{"CONNECT with upgrade", "CONNECT", instance, websocket, 405, bodyConnect, "GET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := dialRaw(t, addr)
			c.send(append([]string{tt.method + " " + tt.target + " HTTP/1.1", host, md}, tt.headers...), "")
			got := c.reply(tt.method, 5*time.Second)
			assertClosingRefusal(t, c, got, tt.status, tt.body, tt.allow)
		})
	}
	t.Cleanup(func() {
		if requests, upgrades, _ := upstream.counts(); requests != 0 || upgrades != 0 {
			t.Errorf("upstream saw %d requests, %d upgrades; want none", requests, upgrades)
		}
		select {
		case <-s.Quit():
			t.Error("an upgrade request stopped the proxy")
		default:
		}
		if n := len(src.calls()); n != 0 {
			t.Errorf("token source saw %d requests; want 0", n)
		}
	})
}

// TestNoTunnelAfterRefusedUpgrade is the attack: ask the passthrough for a
// websocket, and if the real IMDS accepts, write a token request into the
// tunnel. The refused upgrade must leave nothing to write into.
func TestNoTunnelAfterRefusedUpgrade(t *testing.T) {
	t.Parallel()
	upstream := newTunnelIMDS(t, false)
	s, _ := newTestServer(t, testConfig(upstream.URL), &fakeSource{tok: testToken("pod-token")})
	c := dialRaw(t, hostOf(serve(t, s)))

	c.send([]string{"GET /metadata/instance?api-version=2021-02-01 HTTP/1.1", "Host: 169.254.169.254", "Metadata: true",
		"Connection: Upgrade", "Upgrade: websocket"}, "")
	first := c.reply("GET", 5*time.Second)
	assertJSONReply(t, first, 400, bodyUpgrade)
	// What a client would send through the tunnel. The write may fail: the
	// proxy closes the connection after the refusal.
	_, _ = io.WriteString(c, "GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net HTTP/1.1\r\n"+
		"Host: 169.254.169.254\r\nMetadata: true\r\n\r\n")
	closed, rest := c.closedWithin(5 * time.Second)
	if !closed || rest != "" {
		t.Errorf("after the refused upgrade: closed=%v, then %q", closed, rest)
	}
	if strings.Contains(rest, nodeToken) {
		t.Fatal("the node's token came through a tunnel")
	}
	if requests, upgrades, after := upstream.counts(); requests != 0 || upgrades != 0 || after != 0 {
		t.Errorf("upstream saw %d requests, %d upgrades, %d bytes through a tunnel; want none", requests, upgrades, after)
	}
}

// TestUpstreamSwitchingProtocolsIs502 has a real IMDS that answers 101 to a
// plain request. Nothing may be spliced: the client gets 502, the next
// request on its connection is the proxy's to answer, and not one byte of
// it reaches the upstream.
func TestUpstreamSwitchingProtocolsIs502(t *testing.T) {
	t.Parallel()
	upstream := newTunnelIMDS(t, true)
	s, _ := newTestServer(t, testConfig(upstream.URL), &fakeSource{tok: testToken("pod-token")})
	c := dialRaw(t, hostOf(serve(t, s)))

	c.send([]string{"GET /metadata/instance?api-version=2021-02-01 HTTP/1.1", "Host: 169.254.169.254", "Metadata: true"}, "")
	assertJSONReply(t, c.reply("GET", 5*time.Second), 502, bodySwitched)
	c.send([]string{"GET /metadata/identity/oauth2/token" + okQuery + " HTTP/1.1", "Host: 169.254.169.254", "Metadata: true"}, "")
	second := c.reply("GET", 5*time.Second)
	if second.status != 200 || !strings.Contains(second.body, `"access_token":"pod-token"`) {
		t.Fatalf("second request on the connection = %d %s; want the proxy's own token reply", second.status, second.body)
	}
	select {
	case <-upstream.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the proxy kept the switched upstream connection open")
	}
	if requests, upgrades, after := upstream.counts(); requests != 1 || upgrades != 0 || after != 0 {
		t.Errorf("upstream saw %d requests, %d upgrades, %d bytes after its 101; want 1, 0, 0", requests, upgrades, after)
	}
}

const bodyBody = `{"error":"invalid_request","error_description":"Request bodies are not accepted; send no Content-Length or Transfer-Encoding"}`

// replyWait is how long a test waits for a reply the proxy sends at once:
// generous, so that a loaded machine never fails a test that is right.
const replyWait = 2 * time.Second

func TestRefusesDeclaredBodies(t *testing.T) {
	t.Parallel()
	upstream := newUpstream(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "{}") })
	src := &fakeSource{tok: testToken("pod-token")}
	s, _ := newTestServer(t, testConfig(upstream.URL), src)
	addr := hostOf(serve(t, s))

	const (
		md    = "Metadata: true"
		token = "/metadata/identity/oauth2/token" + okQuery
		// ackBody acknowledges a scheduled event, the one IMDS request
		// with a body.
		ackBody = `{"StartRequests":[{"EventId":"00000000-0000"}]}`
	)
	tests := []struct {
		name   string
		method string
		target string
		proto  string
		head   []string
		body   string
	}{
		{"token, declared body never sent", "GET", token, "HTTP/1.1", []string{md, "Content-Length: 100"}, ""},
		{"token, body half sent", "GET", token, "HTTP/1.1", []string{md, "Content-Length: 100"}, "resource=x"},
		{"token, body sent", "GET", token, "HTTP/1.1", []string{md, "Content-Length: 5"}, "hello"},
		{"token, huge declared body", "GET", token, "HTTP/1.1", []string{md, "Content-Length: 1000000000"}, ""},
		{"token, chunked and nothing sent", "GET", token, "HTTP/1.1", []string{md, "Transfer-Encoding: chunked"}, ""},
		{"token, chunked body sent", "GET", token, "HTTP/1.1", []string{md, "Transfer-Encoding: chunked"}, "5\r\nhello\r\n0\r\n\r\n"},
		{"token, Expect 100-continue", "POST", token, "HTTP/1.1", []string{md, "Content-Length: 10", "Expect: 100-continue"}, ""},
		{"token over HTTP/1.0", "GET", token, "HTTP/1.0", []string{md, "Content-Length: 100"}, ""},
		{"quit with a body", "POST", "/quitquitquit", "HTTP/1.1", []string{md, "Content-Length: 2", "Content-Type: application/json"}, "{}"},
		{"passthrough with a body", "POST", "/metadata/scheduledevents?api-version=2020-07-01", "HTTP/1.1",
			[]string{md, "Content-Length: " + strconv.Itoa(len(ackBody))}, ackBody},
		{"identity info with a body", "GET", "/metadata/identity/info", "HTTP/1.1", []string{md, "Content-Length: 100"}, ""},
		{"readyz with a body", "GET", "/readyz", "HTTP/1.1", []string{"Content-Length: 100"}, ""},
		{"metrics with a body", "GET", "/metrics", "HTTP/1.1", []string{"Transfer-Encoding: chunked"}, ""},
		{"disguised path with a body", "GET", `/metadata/identity\oauth2\token`, "HTTP/1.1", []string{md, "Content-Length: 100"}, ""},
		{"CONNECT with a body", "CONNECT", "/metadata/instance", "HTTP/1.1", []string{"Content-Length: 100"}, ""},
		{"OPTIONS * with a body", "OPTIONS", "*", "HTTP/1.1", []string{"Content-Length: 100"}, ""},
		{"upgrade with a body", "GET", "/metadata/instance", "HTTP/1.1", []string{md, "Upgrade: websocket", "Content-Length: 100"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := dialRaw(t, addr)
			c.send(append([]string{tt.method + " " + tt.target + " " + tt.proto, "Host: 169.254.169.254"}, tt.head...), tt.body)
			got := c.reply(tt.method, replyWait)
			assertClosingRefusal(t, c, got, 400, bodyBody, "")
		})
	}
	t.Cleanup(func() {
		if n := upstream.count(); n != 0 {
			t.Errorf("upstream saw %d requests; want 0", n)
		}
		if n := len(src.calls()); n != 0 {
			t.Errorf("token source saw %d requests; want 0", n)
		}
		select {
		case <-s.Quit():
			t.Error("/quitquitquit with a body stopped the proxy")
		default:
		}
	})
}

// logLines collects the lines of a funcr logger.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		l.mu.Lock()
		l.lines = append(l.lines, prefix+" "+args)
		l.mu.Unlock()
	}, funcr.Options{Verbosity: 1})
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// TestDeclaredBodyDoesNotHoldTheDrain declares a body and trickles it, a
// byte at a time, through SIGTERM: the drain must end with the connection,
// well before the drain timeout, and not by timing out.
func TestDeclaredBodyDoesNotHoldTheDrain(t *testing.T) {
	t.Parallel()
	fired := make(chan time.Time)
	close(fired)
	cfg := testConfig("")
	cfg.ShutdownDelay = time.Minute
	cfg.After = func(time.Duration) <-chan time.Time { return fired }
	cfg.DrainTimeout = 10 * time.Second
	var logs logLines
	s, err := New(cfg, &fakeSource{tok: testToken("tok")}, logs.logger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()

	c := dialRaw(t, ln.Addr().String())
	c.send([]string{"GET /metadata/identity/oauth2/token" + okQuery + " HTTP/1.1", "Host: 169.254.169.254", "Metadata: true",
		"Content-Length: 1000"}, "")
	assertJSONReply(t, c.reply("GET", replyWait), 400, bodyBody)
	trickle(t, c, 20*time.Millisecond, "x")

	cancel() // SIGTERM; the shutdown delay is over at once
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v", err)
		}
	case <-time.After(cfg.DrainTimeout + 5*time.Second):
		t.Fatal("Serve did not return")
	}
	if all := logs.String(); strings.Contains(all, "drain timed out") {
		t.Errorf("the drain timed out:\n%s", all)
	}
	if closed, _ := c.closedWithin(5 * time.Second); !closed {
		t.Error("connection still open after the drain")
	}
}

// TestTrickledHeaderIsCut sends a request head one line at a time, without
// ever ending it: the header read timeout closes the connection however
// steadily the lines come.
func TestTrickledHeaderIsCut(t *testing.T) {
	t.Parallel()
	s, _ := newTestServer(t, testConfig(""), &fakeSource{})
	c := dialRaw(t, serveLoopback(t, s))
	if _, err := io.WriteString(c, "GET /readyz HTTP/1.1\r\nHost: 169.254.169.254\r\n"); err != nil {
		t.Fatal(err)
	}
	trickle(t, c, 100*time.Millisecond, "X-Trickle: 1\r\n")
	// The header read timeout is 5 s; the deadline here is generous.
	if closed, rest := c.closedWithin(20 * time.Second); !closed || rest != "" {
		t.Errorf("trickled header: closed=%v, got %q", closed, rest)
	}
}
