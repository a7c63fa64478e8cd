package soak

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/podenv"
)

// Error kinds the clients count. Any of them but errRefused fails the soak:
// the proxy must answer every request with a well-formed reply of an
// expected status.
const (
	errConnect    = "connect"    // the connection could not be opened
	errIO         = "io"         // the connection broke (reset, EOF mid-reply)
	errTimeout    = "timeout"    // no answer within the client's 20 s
	errMalformed  = "malformed"  // not a well-formed reply of the proxy
	errUnexpected = "unexpected" // a status or body the request cannot get
	// errRefused is a connection to 169.254.169.254:80 refused while the
	// node's IMDS refuses connections, or shortly after. A connection of
	// the proxy's UID to the node's IMDS that the node reset leaves a
	// conntrack entry (closed, without NAT) for about 10 s; an app
	// connection that reuses its source port in that time matches the
	// entry instead of the nat rules, and proxy-init's guard refuses it
	// with a reset. It is counted and reported, and does not fail the
	// soak; that the guard, not the node, refused it is checked against
	// the guard's own counter, and a connection that got past the guard
	// fails the soak (see judgeEscapes).
	errRefused = "refused"
)

// refusalWindow is how long after the node's IMDS stops refusing a refused
// connection still counts as errRefused: the kernel keeps a closed TCP
// conntrack entry for 10 s.
const refusalWindow = 15 * time.Second

var errorKinds = []string{errConnect, errIO, errTimeout, errMalformed, errUnexpected, errRefused}

// stats are the clients' counters, safe for concurrent use.
type stats struct {
	replies [6]atomic.Int64 // by status class: 1xx..5xx (index 1..5)
	errs    sync.Map        // kind -> *atomic.Int64
	// firstErrs keeps the first few errors of each kind, for the report.
	mu        sync.Mutex
	firstErrs map[string][]string

	loadgenRequests, loadgenNon200, loadgenErrors atomic.Int64
	curlOK, curlFail, goOK, goFail                atomic.Int64
	// goFailCalm counts real-client failures that started with no fault
	// on; reported, as a client can fail on the after-effects of a fault
	// (a remembered throttle) too.
	curlFailCalm, goFailCalm atomic.Int64
}

func (st *stats) reply(status int) {
	if c := status / 100; c >= 1 && c <= 5 {
		st.replies[c].Add(1)
	}
}

func (st *stats) fail(kind string, err error) {
	v, _ := st.errs.LoadOrStore(kind, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.firstErrs == nil {
		st.firstErrs = map[string][]string{}
	}
	if len(st.firstErrs[kind]) < 5 {
		st.firstErrs[kind] = append(st.firstErrs[kind], err.Error())
	}
}

func (st *stats) errCount(kind string) int64 {
	if v, ok := st.errs.Load(kind); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

// startLoad starts every client; they stop when ctx ends.
func (s *soak) startLoad(ctx context.Context, wg *sync.WaitGroup) {
	const rawWorkers = 4
	for i := range rawWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.rawWorker(ctx, i)
		}()
	}
	every := func(d time.Duration, fn func(context.Context)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(d)
			defer t.Stop()
			for {
				s.gate.RLock()
				if ctx.Err() == nil {
					fn(ctx)
				}
				s.gate.RUnlock()
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		}()
	}
	every(clamp(s.sch.interval/6, time.Second, 5*time.Second), s.curl)
	every(clamp(s.sch.interval/3, 2*time.Second, 10*time.Second), s.goClient)
	every(s.sch.interval, s.loadgenBurst)
}

// rawOp is one kind of hand-written request and what it may get back.
type rawOp struct {
	name string
	// send writes the request(s) and checks the replies; it returns an
	// error kind and the error, or "" when all is well.
	send func(s *soak, conn net.Conn, br *bufio.Reader, i int) (string, error)
}

// rawOps are drawn in turn by the raw workers.
var rawOps = []rawOp{
	{"hot token", func(s *soak, c net.Conn, br *bufio.Reader, _ int) (string, error) {
		return s.roundTrip(c, br, get(tokenTarget(hotResource, ""), "Metadata: true"), tokenCheck(hotResource, podenv.DefaultClientID, s.env))
	}},
	{"cold token", func(s *soak, c net.Conn, br *bufio.Reader, i int) (string, error) {
		res := fmt.Sprintf("api://soak/cold/%d", i%50)
		return s.roundTrip(c, br, get(tokenTarget(res, ""), "Metadata: true"), tokenCheck(res, podenv.DefaultClientID, s.env))
	}},
	{"other identity", func(s *soak, c net.Conn, br *bufio.Reader, _ int) (string, error) {
		return s.roundTrip(c, br, get(tokenTarget(hotResource, "client_id="+otherClientID), "Metadata: true"), tokenCheck(hotResource, otherClientID, s.env))
	}},
	{"unknown identity", func(s *soak, c net.Conn, br *bufio.Reader, i int) (string, error) {
		id := fmt.Sprintf("00000000-50a6-4000-8000-%012d", i%20)
		want := errorJSON("invalid_request", "Identity not found (AADSTS700016: application "+id+" was not found in the tenant)")
		check := tokenCheck(hotResource, id, s.env)
		return s.roundTrip(c, br, get(tokenTarget(hotResource, "client_id="+id), "Metadata: true"), func(r reply) (string, error) {
			if r.status == http.StatusBadRequest {
				return exact(r, want)
			}
			return check(r) // a 200 would be wrong: tokenCheck refuses it for this id
		})
	}},
	{"forced refresh", func(s *soak, c net.Conn, br *bufio.Reader, _ int) (string, error) {
		return s.roundTrip(c, br, get(tokenTarget(hotResource, "bypass_cache=true"), "Metadata: true"), tokenCheck(hotResource, podenv.DefaultClientID, s.env))
	}},
	{"Authorization header", func(s *soak, c net.Conn, br *bufio.Reader, _ int) (string, error) {
		v := "soak-authz-" + randomHex(16)
		s.addAuthzSecret(v)
		return s.roundTrip(c, br, get(tokenTarget(hotResource, ""), "Metadata: true", "Authorization: Bearer "+v), tokenCheck(hotResource, podenv.DefaultClientID, s.env))
	}},
	{"no Metadata", func(s *soak, c net.Conn, br *bufio.Reader, _ int) (string, error) {
		return s.roundTrip(c, br, get(tokenTarget(hotResource, "")), exactCheck(400, noMetadata))
	}},
	{"disguised path", func(s *soak, c net.Conn, br *bufio.Reader, _ int) (string, error) {
		return s.roundTrip(c, br, get("/metadata/identity/oauth2/token/../token?api-version=2018-02-01&resource=x", "Metadata: true"),
			exactCheck(400, errorJSON("invalid_request", "Invalid identity endpoint path; the token endpoint is /metadata/identity/oauth2/token")))
	}},
	{"X-Forwarded-For", func(s *soak, c net.Conn, br *bufio.Reader, _ int) (string, error) {
		return s.roundTrip(c, br, get(tokenTarget(hotResource, ""), "Metadata: true", "X-Forwarded-For: 169.254.99.7"),
			exactCheck(400, errorJSON("invalid_request", "Requests with an X-Forwarded-For header are not accepted")))
	}},
	{"identity info", func(s *soak, c net.Conn, br *bufio.Reader, _ int) (string, error) {
		return s.roundTrip(c, br, get("/metadata/identity/info?api-version=2018-02-01", "Metadata: true"),
			exactCheck(200, `{"tenantId":"`+s.env.Tenant+`"}`))
	}},
	{"passthrough", func(s *soak, c net.Conn, br *bufio.Reader, _ int) (string, error) {
		return s.roundTrip(c, br, get("/metadata/instance?api-version=2021-02-01", "Metadata: true"), func(r reply) (string, error) {
			switch r.status {
			case http.StatusOK:
				return exact(r, podenv.InstanceMetadataBody)
			case http.StatusBadGateway:
				return exact(r, errorJSON("service_unavailable", "The instance metadata service could not be reached"))
			case http.StatusGatewayTimeout:
				return exact(r, errorJSON("service_unavailable", "The instance metadata service did not answer in time"))
			}
			return errUnexpected, fmt.Errorf("passthrough: status %d: %s", r.status, r.body)
		})
	}},
	{"declared body", func(s *soak, c net.Conn, br *bufio.Reader, _ int) (string, error) {
		req := "GET " + tokenTarget(hotResource, "") + " HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\nContent-Length: 7\r\n\r\n"
		kind, err := s.roundTrip(c, br, req, exactCheck(400, errorJSON("invalid_request", "Request bodies are not accepted; send no Content-Length or Transfer-Encoding")))
		if kind != "" {
			return kind, err
		}
		// The proxy closes the connection without reading the body.
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := io.Copy(io.Discard, br); n != 0 || isTimeout(err) {
			return errUnexpected, fmt.Errorf("after a refused body: %d more bytes, %v; want the close", n, err)
		}
		return "", nil
	}},
	{"pipelined", func(s *soak, c net.Conn, br *bufio.Reader, _ int) (string, error) {
		reqs := get(tokenTarget(hotResource, ""), "Metadata: true") + get("/metadata/identity/info?api-version=2018-02-01", "Metadata: true") + get(tokenTarget(hotResource, ""))
		if _, err := io.WriteString(c, reqs); err != nil {
			return errIO, err
		}
		for _, check := range []func(reply) (string, error){
			tokenCheck(hotResource, podenv.DefaultClientID, s.env),
			exactCheck(200, `{"tenantId":"`+s.env.Tenant+`"}`),
			exactCheck(400, noMetadata),
		} {
			if kind, err := s.readAndCheck(br, check); kind != "" {
				return kind, err
			}
		}
		return "", nil
	}},
}

// rawWorker sends rawOps in turn, each on a fresh connection from inside
// the pod, through the redirect.
func (s *soak) rawWorker(ctx context.Context, worker int) {
	dial := podenv.NetnsDialer(s.env.Pod)
	for i := worker; ctx.Err() == nil; i++ {
		op := rawOps[i%len(rawOps)]
		s.gate.RLock()
		if ctx.Err() == nil {
			func() {
				dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				conn, err := dial(dctx, "tcp", podenv.MetadataAddr+":80")
				if err != nil {
					kind := errConnect
					if errors.Is(err, syscall.ECONNREFUSED) && s.imdsRefusedRecently() {
						kind = errRefused
					}
					if ctx.Err() == nil {
						s.stats.fail(kind, fmt.Errorf("%s (fault %q): %w", op.name, s.currentFault(), err))
					}
					return
				}
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
				if kind, err := op.send(s, conn, bufio.NewReader(conn), i/len(rawOps)); kind != "" {
					s.stats.fail(kind, fmt.Errorf("%s (fault %q): %w", op.name, s.currentFault(), err))
				}
			}()
		}
		s.gate.RUnlock()
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// reply is one reply read off a raw connection.
type reply struct {
	status int
	header http.Header
	body   string
}

func (s *soak) roundTrip(c net.Conn, br *bufio.Reader, req string, check func(reply) (string, error)) (string, error) {
	if _, err := io.WriteString(c, req); err != nil {
		return errIO, err
	}
	return s.readAndCheck(br, check)
}

func (s *soak) readAndCheck(br *bufio.Reader, check func(reply) (string, error)) (string, error) {
	r, kind, err := readReply(br)
	if kind != "" {
		return kind, err
	}
	s.stats.reply(r.status)
	return check(r)
}

// readReply reads one reply and checks the wire shape every answer of the
// proxy has: a status line, the JSON content type, an explicit
// Content-Length, no chunking.
func readReply(br *bufio.Reader) (reply, string, error) {
	tp := textproto.NewReader(br)
	line, err := tp.ReadLine()
	if err != nil {
		return reply{}, ioKind(err), err
	}
	proto, rest, _ := strings.Cut(line, " ")
	code, _, _ := strings.Cut(rest, " ")
	status, err := strconv.Atoi(code)
	if proto != "HTTP/1.1" || err != nil {
		return reply{}, errMalformed, fmt.Errorf("status line %q", line)
	}
	mh, err := tp.ReadMIMEHeader()
	if err != nil {
		return reply{}, ioKind(err), err
	}
	r := reply{status: status, header: http.Header(mh)}
	if ct := r.header.Values("Content-Type"); len(ct) != 1 || ct[0] != "application/json; charset=utf-8" {
		return r, errMalformed, fmt.Errorf("status %d: Content-Type %q", status, ct)
	}
	if te := r.header.Values("Transfer-Encoding"); len(te) != 0 {
		return r, errMalformed, fmt.Errorf("status %d: Transfer-Encoding %q", status, te)
	}
	cl := r.header.Values("Content-Length")
	n, err := 0, error(nil)
	if len(cl) == 1 {
		n, err = strconv.Atoi(cl[0])
	}
	if len(cl) != 1 || err != nil || n < 0 || n > 1<<20 {
		return r, errMalformed, fmt.Errorf("status %d: Content-Length %q", status, cl)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return r, ioKind(err), fmt.Errorf("body: %w", err)
	}
	r.body = string(body)
	if !json.Valid(body) {
		return r, errMalformed, fmt.Errorf("status %d: body is not JSON: %q", status, body)
	}
	return r, "", nil
}

func ioKind(err error) string {
	if isTimeout(err) {
		return errTimeout
	}
	return errIO
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// get renders a GET request with the given header lines.
func get(target string, headers ...string) string {
	var b strings.Builder
	b.WriteString("GET " + target + " HTTP/1.1\r\nHost: 169.254.169.254\r\n")
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

func tokenTarget(resource, extra string) string {
	t := "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" + url.QueryEscape(resource)
	if extra != "" {
		t += "&" + extra
	}
	return t
}

// errorJSON renders the proxy's error body.
func errorJSON(code, description string) string {
	b, err := json.Marshal(struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}{code, description})
	if err != nil {
		panic(err)
	}
	return string(b)
}

var noMetadata = `{"error":"invalid_request","error_description":"Required metadata header not specified"}`

func exact(r reply, body string) (string, error) {
	if r.body != body {
		return errUnexpected, fmt.Errorf("status %d: body %s, want %s", r.status, r.body, body)
	}
	return "", nil
}

func exactCheck(status int, body string) func(reply) (string, error) {
	return func(r reply) (string, error) {
		if r.status != status {
			return errUnexpected, fmt.Errorf("status %d, want %d: %s", r.status, status, r.body)
		}
		return exact(r, body)
	}
}

// tokenCheck accepts what a token request may get while faults come and
// go: the token of clientID for resource, or one of the proxy's answers to
// a failing Entra or token file, each exact in shape.
func tokenCheck(resource, clientID string, env *podenv.Env) func(reply) (string, error) {
	return func(r reply) (string, error) {
		var body map[string]string
		if err := json.Unmarshal([]byte(r.body), &body); err != nil {
			return errMalformed, fmt.Errorf("status %d: %v: %s", r.status, err, r.body)
		}
		switch r.status {
		case http.StatusOK:
			claims, err := podenv.DecodeClaims(body["access_token"])
			if err != nil {
				return errMalformed, err
			}
			if body["resource"] != resource || claims["aud"] != resource || claims["appid"] != clientID || body["client_id"] != clientID ||
				body["token_type"] != "Bearer" || body["expires_on"] == "" || body["expires_in"] == "" {
				return errUnexpected, fmt.Errorf("token for %s as %s: resource %q, client_id %q, aud %v, appid %v", resource, clientID, body["resource"], body["client_id"], claims["aud"], claims["appid"])
			}
			return "", nil
		case http.StatusTooManyRequests:
			ra, err := strconv.Atoi(r.header.Get("Retry-After"))
			if body["error"] != "too_many_requests" || err != nil || ra < 1 || ra > 25 {
				return errUnexpected, fmt.Errorf("429 with Retry-After %q: %s", r.header.Get("Retry-After"), r.body)
			}
			return "", nil
		case http.StatusInternalServerError:
			return exact(r, errorJSON("server_error", "cannot read the projected service account token file "+env.TokenFile))
		case http.StatusServiceUnavailable:
			if body["error"] != "service_unavailable" || !strings.HasPrefix(body["error_description"], "Microsoft Entra ID is unavailable; retry later") {
				return errUnexpected, fmt.Errorf("503: %s", r.body)
			}
			return "", nil
		}
		return errUnexpected, fmt.Errorf("status %d: %s", r.status, r.body)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// logClient appends a real client's stderr to the clients log (never its
// stdout: curl's holds the token).
func (s *soak) logClient(what string, stderr []byte) {
	if len(stderr) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := os.OpenFile(s.clientsLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s %s:\n%s\n", time.Now().UTC().Format(time.RFC3339), what, stderr)
}

// curl asks for a token with curl as the app UID and checks the reply
// exactly like a raw one.
func (s *soak) curl(ctx context.Context) {
	fault := s.currentFault()
	cmd := s.env.PodCommand(ctx, clientUID, nil, "curl", "-sS", "-i", "--max-time", "30", "-H", "Metadata: true",
		"http://"+podenv.MetadataAddr+tokenTarget(curlResource, ""))
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	s.logClient("curl", []byte(stderr.String()))
	if ctx.Err() != nil {
		return
	}
	if err == nil {
		r, kind, rerr := readReply(bufio.NewReader(strings.NewReader(stdout.String())))
		if kind == "" {
			s.stats.reply(r.status)
			kind, rerr = tokenCheck(curlResource, podenv.DefaultClientID, s.env)(r)
		}
		if kind == "" {
			if r.status == http.StatusOK {
				s.stats.curlOK.Add(1)
				return
			}
		} else {
			s.stats.fail(kind, fmt.Errorf("curl (fault %q): %w", fault, rerr))
		}
	}
	s.stats.curlFail.Add(1)
	if fault == "" {
		s.stats.curlFailCalm.Add(1)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		s.stats.fail(errIO, fmt.Errorf("curl (fault %q): exit status %d: %s", fault, ee.ExitCode(), strings.TrimSpace(stderr.String())))
	}
}

var goClientTurn atomic.Int64

// goClient gets a token twice with the e2e suite's Go client (azidentity
// or MSAL Go, in turn), as the app UID, a fresh process each time.
func (s *soak) goClient(ctx context.Context) {
	fault := s.currentFault()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	args := []string{"azidentity", "-scope", goResource + "/.default"}
	if goClientTurn.Add(1)%2 == 0 {
		args = []string{"msal", "-resource", goResource}
	}
	cmd := s.env.PodCommand(ctx, clientUID, nil, append([]string{filepath.Join(s.cfg.BinDir, "goclient")}, args...)...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	s.logClient("goclient "+args[0], []byte(stderr.String()))
	if ctx.Err() != nil && err != nil {
		if fault == "" {
			s.stats.goFailCalm.Add(1)
		}
		s.stats.goFail.Add(1)
		return
	}
	var res struct {
		Claims map[string]any `json:"claims"`
	}
	if err == nil && json.Unmarshal([]byte(stdout.String()), &res) == nil &&
		res.Claims["aud"] == goResource && res.Claims["appid"] == podenv.DefaultClientID {
		s.stats.goOK.Add(1)
		return
	}
	s.stats.goFail.Add(1)
	if fault == "" {
		s.stats.goFailCalm.Add(1)
	}
}

// loadgenBurst runs the benchmark's load generator for one second at
// concurrency 2 against the hot resource, as the app UID.
func (s *soak) loadgenBurst(ctx context.Context) {
	cmd := s.env.PodCommand(ctx, clientUID, nil, filepath.Join(s.cfg.BinDir, "imds-loadgen"), "steady",
		"-c", "2", "-warmup", "0s", "-d", "1s", "-uri", tokenTarget(hotResource, ""))
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	s.logClient("imds-loadgen", []byte(stderr.String()))
	if ctx.Err() != nil {
		return
	}
	var res struct {
		Completed int64 `json:"completed"`
		Non200    int64 `json:"non_200"`
		Errors    int64 `json:"errors"`
	}
	if err != nil || json.Unmarshal([]byte(stdout.String()), &res) != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled() {
			return // stopped with the load
		}
		s.stats.fail(errIO, fmt.Errorf("imds-loadgen: %v: %s", err, strings.TrimSpace(stderr.String())))
		return
	}
	s.stats.loadgenRequests.Add(res.Completed)
	s.stats.loadgenNon200.Add(res.Non200)
	s.stats.loadgenErrors.Add(res.Errors)
}

// checkHotToken asks for the hot resource once before the load starts.
func (s *soak) checkHotToken(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	conn, err := podenv.NetnsDialer(s.env.Pod)(dctx, "tcp", podenv.MetadataAddr+":80")
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(conn)
	if _, err := io.WriteString(conn, get(tokenTarget(hotResource, ""), "Metadata: true")); err != nil {
		return err
	}
	r, kind, err := readReply(br)
	if kind != "" {
		return err
	}
	if r.status != http.StatusOK {
		return fmt.Errorf("status %d: %s", r.status, r.body)
	}
	if kind, err := tokenCheck(hotResource, podenv.DefaultClientID, s.env)(r); kind != "" {
		return err
	}
	return nil
}
