package imds

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/imds-proxy/imds-proxy/internal/logging"
	"github.com/imds-proxy/imds-proxy/pkg/exchange"
)

// Server is the IMDS HTTP surface of the proxy.
type Server struct {
	cfg      Config
	src      TokenSource
	log      logr.Logger
	upstream *url.URL
	metrics  *metrics

	// routes holds the handler of every route class; serve wraps them
	// with metrics and the request log line.
	routes [numRoutes]statusHandler
	// metricsOnly serves only /metrics, for the --metrics-addr listener.
	metricsOnly http.Handler
	// infoBody is the precomputed /metadata/identity/info reply.
	infoBody reply
	// loop is the precomputed reply to a request that came back through
	// the passthrough.
	loop reply
	// appService holds the App Service endpoint's secret; off when none
	// is configured.
	appService appServiceSecret
	// correlationID returns the correlationId of an App Service error
	// reply; tests replace it to assert exact bodies.
	correlationID func() string

	quitOnce sync.Once
	// quit is closed by POST /quitquitquit.
	quit chan struct{}
}

// New builds a Server: it fills the defaults of cfg and validates it
// (Config.Validate). It makes no network calls.
func New(cfg Config, src TokenSource, logger logr.Logger, reg prometheus.Registerer) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	upstream, err := parseUpstream(cfg.Upstream)
	if err != nil {
		return nil, err
	}
	if src == nil {
		return nil, errors.New("token source is required")
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		src:      src,
		log:      logger.WithName("imds"),
		upstream: upstream,
		metrics:  m,
		quit:     make(chan struct{}),
		infoBody: reply{status: http.StatusOK, body: infoJSON(cfg.TenantID)},
		loop:     loopReply(cfg.ExemptUID),

		appService:    newAppServiceSecret(cfg.IdentityHeader),
		correlationID: newCorrelationID,
	}
	metricsHandler := http.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeReply(w, &replyNotFound)
	}))
	if cfg.Gatherer != nil {
		metricsHandler = promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{
			ErrorLog:            promLogger{s.log},
			MaxRequestsInFlight: 4,
		})
	}
	s.routes = [numRoutes]statusHandler{
		routeBadTarget:     replyHandler(&replyBadTarget),
		routeBadPath:       replyHandler(&replyBadPath),
		routeToken:         s.serveToken,
		routeIdentityInfo:  s.serveInfo,
		routeIdentityOther: replyHandler(&replyIdentityPath),
		routePassthrough:   recorded(s.passthroughHandler()),
		// App Service paths never reach the passthrough: a disguised
		// spelling is refused like a disguised identity path.
		routeAppServiceToken: s.serveAppServiceToken,
		routeAppServiceOther: func(w http.ResponseWriter, _ *http.Request) int {
			return s.refuse(protocolAppService, w, &replyAppServicePath)
		},
		routeReadyz:   textHandler("ok\n"),
		routeHealthz:  textHandler("ok\n"),
		routeMetrics:  recorded(metricsHandler),
		routeQuit:     s.serveQuit,
		routeNotFound: replyHandler(&replyNotFound),
	}
	s.metricsOnly = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.RequestURI != "/metrics" {
			s.serve(routeNotFound, w, r)
			return
		}
		s.serve(routeMetrics, w, r)
	})
	return s, nil
}

// infoJSON renders the /metadata/identity/info body.
func infoJSON(tenant string) []byte {
	b := append([]byte(`{"tenantId":`), appendJSONString(nil, tenant)...)
	return append(b, '}')
}

// Handler returns the handler of the loopback listener: the IMDS endpoints,
// /readyz, /healthz, /metrics and /quitquitquit.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.route) }

// MetricsHandler returns a handler that serves /metrics only, for a
// listener reachable from outside the pod.
func (s *Server) MetricsHandler() http.Handler { return s.metricsOnly }

// Quit returns a channel that is closed once POST /quitquitquit was served.
func (s *Server) Quit() <-chan struct{} { return s.quit }

// route dispatches on the raw request target. The stdlib ServeMux is not
// used: it cleans paths and redirects ("//" becomes a 301), which would hide
// the spelling the IMDS rules are about.
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	s.serve(classify(r.RequestURI), w, r)
}

// serve runs the handler of route, unless checkFraming refuses the request
// first, and records the request: the request counter by status code, the
// latency histogram and, at V(1), the per-request log line (method, route
// class, status and duration). The query is never logged (it may carry a
// token hash), nor are headers (Authorization). This is the only
// middleware, and on the hot routes it allocates nothing: the handlers
// return the status they wrote.
func (s *Server) serve(route routeClass, w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var code int
	if rep := checkFraming(route, r); rep != nil {
		code = s.refuseFraming(route, w, rep)
	} else {
		code = s.routes[route](w, r)
	}
	d := time.Since(start)
	s.metrics.observe(route, code, d)
	if l := s.log.V(1); l.Enabled() {
		l.Info("request", "method", r.Method, "route", route.String(), "status", code,
			"duration", d.String(), "remote", r.RemoteAddr)
	}
}

func replyHandler(rep *reply) statusHandler {
	return func(w http.ResponseWriter, _ *http.Request) int { return writeReply(w, rep) }
}

func textHandler(body string) statusHandler {
	return func(w http.ResponseWriter, _ *http.Request) int {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write([]byte(body))
		// A Write without WriteHeader sends 200.
		return http.StatusOK
	}
}

// checkIMDSRequest applies the checks shared by every IMDS endpoint, in
// this order: method, X-Forwarded-For, Metadata header. It returns the
// reply that refuses the request, or nil.
func checkIMDSRequest(r *http.Request, method string) *reply {
	if rep := checkMethodAndForwarding(r, method); rep != nil {
		return rep
	}
	// The Metadata header is IMDS's SSRF guard; the value must be "true"
	// (IMDS how-to-use-vm-token). Checked exactly, as NMI does.
	if v := r.Header["Metadata"]; len(v) != 1 || v[0] != "true" {
		return &replyNoMetadata
	}
	return nil
}

// checkMethodAndForwarding applies the first two checks every token and
// metadata endpoint shares: the method, then no X-Forwarded-For. IMDS
// refuses requests that went through a forwarding proxy ("Security and
// authentication" in the IMDS documentation), and so does App Service.
func checkMethodAndForwarding(r *http.Request, method string) *reply {
	if r.Method != method {
		if method == http.MethodPost {
			return &replyMethodPOST
		}
		return &replyMethodGET
	}
	if _, ok := r.Header["X-Forwarded-For"]; ok {
		return &replyForwardedFor
	}
	return nil
}

// serveToken answers the IMDS managed-identity token endpoint.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) int {
	if rep := checkIMDSRequest(r, http.MethodGet); rep != nil {
		return writeReply(w, rep)
	}
	return s.answerToken(protocolIMDS, w, r)
}

// serveAppServiceToken answers the App Service token endpoint, /msi/token:
// 404 while it is off, then the method, X-Forwarded-For and secret checks
// (checkAppServiceRequest), then what the IMDS endpoint does after its own
// header checks.
func (s *Server) serveAppServiceToken(w http.ResponseWriter, r *http.Request) int {
	if !s.appService.on {
		return s.refuse(protocolAppService, w, &replyAppServiceOff)
	}
	if rep := checkAppServiceRequest(r, &s.appService); rep != nil {
		return s.refuse(protocolAppService, w, rep)
	}
	return s.answerToken(protocolAppService, w, r)
}

// answerToken is the part of a token request both protocols share, once
// its headers passed: the query (parseTokenQuery), the token source (the
// one cache and exchange, whichever protocol asked), and the reply in the
// shape of protocol p, with a failure mapped to its status by
// tokenErrorReply.
func (s *Server) answerToken(p protocol, w http.ResponseWriter, r *http.Request) int {
	req, rep := parseTokenQuery(r.URL.RawQuery, p)
	if rep != nil {
		return s.refuse(p, w, rep)
	}
	tok, err := s.src.Token(r.Context(), req)
	if err != nil {
		rep := tokenErrorReply(err)
		if p == protocolAppService {
			id := s.correlationID()
			s.logTokenError(r, &req, err, rep.status, "correlationID", id)
			return writeAppServiceError(w, &rep, id)
		}
		s.logTokenError(r, &req, err, rep.status)
		return writeReply(w, &rep)
	}
	code := writeToken(w, &tok, req.Resource, s.cfg.Now(), p)
	if _, probe := r.Header[ProbeHeader]; probe {
		s.log.Info("warm-up token obtained", "clientID", tok.ClientID, "resource", req.Resource,
			"expiresOn", tok.ExpiresOn.UTC().Format(time.RFC3339))
	}
	return code
}

// refuse sends rep in the error shape of protocol p: IMDS's static body,
// or App Service's with a fresh correlation id.
func (s *Server) refuse(p protocol, w http.ResponseWriter, rep *reply) int {
	if p == protocolAppService {
		return writeAppServiceError(w, rep, s.correlationID())
	}
	return writeReply(w, rep)
}

// refuseFraming sends a refusal of checkFraming in the shape of the route's
// protocol (framing.go).
func (s *Server) refuseFraming(route routeClass, w http.ResponseWriter, rep *reply) int {
	p := protocolIMDS
	if route.appService() {
		p = protocolAppService
	}
	boundBodyLinger(w, rep)
	return s.refuse(p, w, rep)
}

// logTokenError logs a failed token request, with the extra key/values
// after the request's own. Failures of the proxy or of Entra are errors;
// failures the client caused (an unknown identity or resource) are
// warnings. A failed --probe warm-up is always an error line
// with the diagnosis: kubelet discards the output of a postStart hook
// that exits 0, so the proxy's log is where users look.
func (s *Server) logTokenError(r *http.Request, req *exchange.Request, err error, status int, extra ...any) {
	kv := []any{"status", status, "reason", exchange.ReasonOf(err).String(),
		"selector", req.Identity.Kind.String(), "identity", req.Identity.Value, "resource", req.Resource}
	var e *exchange.Error
	if errors.As(err, &e) && e.Code != "" {
		kv = append(kv, "aadsts", e.Code)
	}
	kv = append(kv, extra...)
	if _, probe := r.Header[ProbeHeader]; probe {
		if s.cfg.ProbeDiagnostics != nil {
			kv = append(kv, s.cfg.ProbeDiagnostics()...)
		}
		s.log.Error(err, "warm-up token request from --probe failed; requests for this identity will fail the same way", kv...)
		return
	}
	switch exchange.ReasonOf(err) {
	case exchange.ReasonIdentityNotFound, exchange.ReasonInvalidResource:
		logging.Warn(s.log, "token request refused", append(kv, "error", err.Error())...)
	default:
		s.log.Error(err, "token request failed", kv...)
	}
}

// serveInfo answers /metadata/identity/info locally with the pod's tenant
// (the IMDS REST specification, example GetIdentityInfo.json).
func (s *Server) serveInfo(w http.ResponseWriter, r *http.Request) int {
	if rep := checkIMDSRequest(r, http.MethodGet); rep != nil {
		return writeReply(w, rep)
	}
	return writeReply(w, &s.infoBody)
}

// serveQuit answers POST /quitquitquit and then closes the quit channel, so
// a Job on a cluster without native sidecars can end its pod.
// The Metadata header keeps a forged cross-site form post from stopping the
// proxy.
func (s *Server) serveQuit(w http.ResponseWriter, r *http.Request) int {
	if rep := checkIMDSRequest(r, http.MethodPost); rep != nil {
		return writeReply(w, rep)
	}
	code := writeReply(w, &replyQuit)
	s.quitOnce.Do(func() {
		s.log.Info("quit requested through /quitquitquit")
		close(s.quit)
	})
	return code
}

// passthroughHandler forwards the non-identity IMDS categories to the real
// IMDS with httputil.ReverseProxy, or refuses them in block mode. Requests
// reach it without a body and without an upgrade (checkFraming), so it
// forwards neither; acknowledging a scheduled event, a POST with a JSON
// body, is not possible through the proxy.
func (s *Server) passthroughHandler() http.Handler {
	if s.cfg.InstanceMetadata == InstanceMetadataBlock {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { writeReply(w, &replyBlocked) })
	}
	transport := s.cfg.UpstreamTransport
	if transport == nil {
		transport = &http.Transport{
			// IMDS must never be reached through an HTTP proxy (IMDS
			// documentation, "Proxies").
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: s.cfg.PassthroughTimeout}).DialContext,
			ResponseHeaderTimeout: s.cfg.PassthroughTimeout,
			MaxIdleConns:          4,
			IdleConnTimeout:       30 * time.Second,
			DisableCompression:    true,
		}
	}
	proxy := &httputil.ReverseProxy{
		// Rewrite (unlike Director) starts from a request without
		// X-Forwarded-For, Forwarded and the hop-by-hop headers, and we
		// never call SetXForwarded: real IMDS refuses X-Forwarded-For.
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(s.upstream)
			pr.Out.Header.Set(HopHeader, "1")
		},
		Transport: transport,
		// checkFraming keeps upgrade requests from getting here, so a 101
		// is the upstream's own idea. ReverseProxy would splice the two
		// connections; failing here makes it close the upstream
		// connection and call ErrorHandler instead.
		ModifyResponse: func(res *http.Response) error {
			if res.StatusCode == http.StatusSwitchingProtocols {
				return errUpstreamSwitched
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			rep := &replyUpstreamUnreachable
			switch {
			case errors.Is(err, errUpstreamSwitched):
				rep = &replyUpstreamSwitched
			case errors.Is(err, context.DeadlineExceeded):
				rep = &replyUpstreamTimeout
			}
			logging.Warn(s.log, "passthrough to the instance metadata service failed",
				"upstream", s.upstream.String(), "path", r.URL.Path, "error", err.Error())
			writeReply(w, rep)
		},
		ErrorLog: slog.NewLogLogger(logging.SlogHandler(s.log), slog.LevelWarn),
	}
	timeout := s.cfg.PassthroughTimeout
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The hop marker on an incoming request means our own forwarded
		// request came back: answer instead of looping.
		if _, looped := r.Header[HopHeader]; looped {
			s.log.Error(nil, "passthrough loop detected: the proxy's UID is not exempted from the iptables redirect (pod-level runAsUser?)",
				"exemptUID", s.cfg.ExemptUID)
			writeReply(w, &s.loop)
			return
		}
		if _, ok := r.Header["X-Forwarded-For"]; ok {
			writeReply(w, &replyForwardedFor)
			return
		}
		if v := r.Header["Metadata"]; len(v) != 1 || v[0] != "true" {
			writeReply(w, &replyNoMetadata)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		proxy.ServeHTTP(w, r.WithContext(ctx))
	})
}

// errUpstreamSwitched is the passthrough's error for an upstream 101.
var errUpstreamSwitched = errors.New("the instance metadata service answered 101 Switching Protocols; refused")

// promLogger adapts logr to promhttp's error logger.
type promLogger struct{ log logr.Logger }

func (p promLogger) Println(v ...any) {
	p.log.Error(nil, "serving metrics failed", "details", v)
}

// Bounds of every connection of both listeners (newHTTPServer).
const (
	// readHeaderTimeout bounds the time from the first byte of a request
	// (or from accepting the connection) to the end of its head, however
	// steadily the bytes trickle in.
	readHeaderTimeout = 5 * time.Second
	// idleTimeout closes keep-alive connections left unused. It matches
	// the idle timeout of Go's and most HTTP client pools, so the server
	// rarely closes a connection a client is about to reuse.
	idleTimeout = 90 * time.Second
	// maxHeaderBytes caps a request head (net/http allows 4 KiB more).
	// IMDS requests carry a few hundred bytes of headers; 16 KiB leaves
	// room for tracing headers (W3C baggage is at most 8 KiB) and keeps
	// the memory of DefaultMaxConnections slow request heads bounded.
	maxHeaderBytes = 16 << 10
	// maxMetricsConnections bounds the connections of the --metrics-addr
	// listener, which may be reachable from outside the pod: a few
	// scrapers use it.
	maxMetricsConnections = 64
)

// newHTTPServer returns the http.Server of the loopback listener, with a
// header size cap and the timeouts that bound its clients:
// ReadHeaderTimeout (a client must send its request head in time) and
// IdleTimeout (keep-alive connections are closed when unused). Serve also
// caps the number of connections (limitListener). Together they bound what
// any client holds without making progress:
//
//   - a connection that sends nothing, or a request head slowly: 5 s;
//   - a request that declares a body: answered at once, closed within
//     bodyLinger (checkFraming);
//   - an idle keep-alive connection: 90 s, and the shutdown drain closes
//     idle connections at once;
//   - all of them together: MaxConnections goroutines and file
//     descriptors, and about 32 KiB of memory each at most.
//
// It sets no ReadTimeout and no WriteTimeout: with them net/http arms and
// clears a read and a write deadline on every request (two timer updates,
// measurable on a warm token reply), and here they would bound nothing
// that needs bounding: no route reads a request body, and replies are a
// few KB, which the loopback socket buffer takes whole, so a client that
// does not read cannot stall a handler's write. A token request that
// waits on Entra is bounded by the exchange timeout, a passthrough request
// by the passthrough timeout, and on shutdown the drain timeout closes
// whatever is left.
func (s *Server) newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		// "OPTIONS *" goes to the handler like any other request (it is
		// refused as a bad target) instead of net/http's own handler,
		// which would read a declared body without a deadline.
		DisableGeneralOptionsHandler: true,
		ErrorLog:                     slog.NewLogLogger(logging.SlogHandler(s.log), slog.LevelWarn),
	}
}

// Serve serves Handler on ln, at most MaxConnections connections at once,
// until ctx ends or /quitquitquit is called. When ctx ends it keeps
// serving for the shutdown delay (an app shutting down beside a regular
// sidecar may still need a token), then stops accepting, waits up to the
// drain timeout for in-flight requests, and returns nil.
// After /quitquitquit it stops at once, letting in-flight requests finish.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := s.newHTTPServer(s.Handler())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(newLimitListener(ln, s.cfg.MaxConnections)) }()

	select {
	case err := <-errc:
		return err
	case <-s.quit:
		return s.shutdown(srv, errc)
	case <-ctx.Done():
	}
	s.log.Info("shutting down: still serving during the shutdown delay", "delay", s.cfg.ShutdownDelay.String())
	if s.cfg.ShutdownDelay > 0 {
		select {
		case err := <-errc:
			return err
		case <-s.quit:
		case <-s.cfg.After(s.cfg.ShutdownDelay):
		}
	}
	return s.shutdown(srv, errc)
}

// ServeMetrics serves MetricsHandler on ln until ctx ends or /quitquitquit
// is called.
func (s *Server) ServeMetrics(ctx context.Context, ln net.Listener) error {
	srv := s.newHTTPServer(s.MetricsHandler())
	// This listener may be reachable from outside the pod and serves
	// rarely (scrapes): bound whole requests and replies too.
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 30 * time.Second
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(newLimitListener(ln, maxMetricsConnections)) }()
	select {
	case err := <-errc:
		return err
	case <-s.quit:
	case <-ctx.Done():
	}
	return s.shutdown(srv, errc)
}

// shutdown stops srv gracefully within the drain timeout, then forcibly.
func (s *Server) shutdown(srv *http.Server, errc <-chan error) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	defer cancel()
	err := srv.Shutdown(ctx)
	if err != nil {
		s.log.Error(err, "drain timed out; closing remaining connections")
		_ = srv.Close()
	}
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return nil
}
