package entraemu

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sync/singleflight"
)

// Federation is one federated identity credential of an App: an assertion
// is accepted when its "iss" equals Issuer, its "sub" equals Subject and its
// "aud" contains Audience (all case-sensitive, as Entra matches since 2025).
type Federation struct {
	// Issuer is the assertion issuer URL. Empty means the emulator's own
	// IssuerURL.
	Issuer string `json:"issuer"`
	// Subject is the assertion subject, e.g.
	// "system:serviceaccount:default:workload".
	Subject string `json:"subject"`
	// Audience is the required assertion audience. Empty means
	// "api://AzureADTokenExchange".
	Audience string `json:"audience"`
}

// App is an application registration (or user-assigned managed identity)
// known to the emulated tenant.
type App struct {
	// ClientID is the application (client) id, matched case-insensitively.
	ClientID string `json:"client_id"`
	// ObjectID becomes the "oid" (and "sub") claim of issued tokens. Empty
	// means a value derived from the client id.
	ObjectID string `json:"object_id"`
	// ResourceID becomes the "xms_mirid" claim when non-empty (the ARM
	// resource id of a user-assigned managed identity).
	ResourceID string `json:"resource_id"`
	// Federations are the app's federated identity credentials.
	Federations []Federation `json:"federations"`
}

// Options configures an Emulator. The zero value works: a random-port
// emulator on loopback for tenant "00000000-0000-0000-0000-000000000000"
// with no apps.
type Options struct {
	// Tenant is the tenant id the emulator answers for; requests for other
	// tenants get AADSTS90002. Matched case-insensitively.
	Tenant string
	// Host is the host name used in the TLS certificate and in all URLs,
	// default "localhost". The certificate also covers "localhost",
	// 127.0.0.1 and the Entra listener's IP address.
	Host string
	// ExtraHosts are more DNS names (or IPs) for the TLS certificate, e.g.
	// "login.microsoftonline.com" when a test maps that name to the
	// emulator so that clients with the default authority host reach it.
	ExtraHosts []string
	// Addr is the Entra TLS listen address, default "127.0.0.1:0".
	Addr string
	// IssuerAddr is the cluster OIDC issuer (plain HTTP) listen address,
	// default "127.0.0.1:0".
	IssuerAddr string
	// IssuerHost is the host name in IssuerURL. Default: Host when Host was
	// set, else the issuer listener's IP address.
	IssuerHost string
	// TokenLifetime is the lifetime of issued access tokens, default 1h.
	TokenLifetime time.Duration
	// TokenPadding adds a claim of this many bytes to issued access tokens,
	// so tokens can exceed 4 KB.
	TokenPadding int
	// Now is the clock for issued tokens and validity checks, default
	// time.Now. TLS certificates always use the real clock.
	Now func() time.Time
	// Apps are the applications registered at start.
	Apps []App
	// InvalidResources lists resource URIs (without "/.default") whose
	// tokens fail with AADSTS500011; every other resource is accepted.
	InvalidResources []string
	// KeyCacheTTL is how long fetched issuer discovery documents and JWKS
	// are reused, default 1 minute. An unknown key id always refetches.
	KeyCacheTTL time.Duration
	// TrustedIssuers are external https issuers fetched with their own CA
	// bundle (see TrustIssuer).
	TrustedIssuers []TrustedIssuer
	// EnableAdmin also serves AdminHandler under /admin/ on the issuer
	// listener (for out-of-process control).
	EnableAdmin bool
	// IssuerKey signs service-account tokens; generated (RSA 2048) when nil.
	IssuerKey *rsa.PrivateKey
	// TokenKey signs access tokens; generated (RSA 2048) when nil.
	TokenKey *rsa.PrivateKey
	// Logger receives request logs; unknown paths are logged at info level
	// (V(0)), every request at V(1).
	Logger logr.Logger
}

// Emulator is a running Entra ID and cluster issuer emulator. Create it with
// Start and stop it with Close. All methods are safe for concurrent use.
type Emulator struct {
	log           logr.Logger
	now           func() time.Time
	tenant        string
	lifetime      time.Duration
	padding       int
	keyTTL        time.Duration
	authorityBase string // "https://host[:port]"
	issuerURL     string // "http://host[:port]"
	pki           *pki
	issuerKey     *rsa.PrivateKey // guarded by mu (RotateIssuerKey)
	issuerKID     string          // guarded by mu
	retiredKeys   []jwk           // guarded by mu: published after a rotation
	tokenKey      *rsa.PrivateKey
	tokenKID      string
	fetchClient   *http.Client
	entraSrv      *http.Server
	issuerSrv     *http.Server
	done          chan struct{}
	closeOnce     sync.Once
	serveWG       sync.WaitGroup
	keyFetch      singleflight.Group

	mu                     sync.Mutex
	apps                   map[string]App // by lower-case client id
	invalidResources       map[string]bool
	fault                  Fault
	faultLeft              int // remaining requests for a counted fault
	tlsFault               TLSFault
	entraConns             map[net.Conn]struct{} // open connections of the Entra listener
	calls                  map[callKey]int
	totalCalls             int
	discoveryCalls         int
	instanceDiscoveryCalls int
	issuerFetches          int
	keyCache               map[string]*issuerKeys
	issuerClients          map[string]*http.Client // by issuer URL (TrustIssuer)
	requests               []TokenRequest          // the newest maxRequestLog token requests
	inFlight, maxInFlight  int                     // token requests being handled now, and the most at once
	issued                 []string                // the newest maxIssuedLog access tokens issued
	issuedDropped          int                     // access tokens issued but no longer in issued
}

// maxRequestLog is how many token requests Requests remembers.
const maxRequestLog = 1000

// TokenRequest records one token POST, as Requests lists them. Assertion
// fields come from an unverified parse of the client assertion (empty when
// it does not parse); the assertion itself is never kept.
type TokenRequest struct {
	// Time is the emulator clock's time of the request.
	Time time.Time `json:"time"`
	// ClientID is the client_id as sent.
	ClientID string `json:"client_id"`
	// Scope is the resource scope without the OIDC scopes (the counting
	// key).
	Scope string `json:"scope"`
	// AssertionIssuer, AssertionSubject and AssertionID are the
	// assertion's "iss", "sub" and "jti".
	AssertionIssuer  string `json:"assertion_issuer,omitempty"`
	AssertionSubject string `json:"assertion_subject,omitempty"`
	AssertionID      string `json:"assertion_id,omitempty"`
	// Status is the HTTP status answered; 0 for a dropped connection or a
	// client that left during injected latency.
	Status int `json:"status"`
	// ErrorCode is the AADSTS code of an error answer (0 for success and
	// for injected faults).
	ErrorCode int `json:"error_code,omitempty"`
	// Fault is true when an injected fault applied.
	Fault bool `json:"fault,omitempty"`
}

// recordRequest appends rec to the request log, dropping the oldest entry
// when full.
func (e *Emulator) recordRequest(rec TokenRequest) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.requests) == maxRequestLog {
		copy(e.requests, e.requests[1:])
		e.requests = e.requests[:maxRequestLog-1]
	}
	e.requests = append(e.requests, rec)
}

// Requests returns the most recent token requests (up to 1000), oldest
// first.
func (e *Emulator) Requests() []TokenRequest {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]TokenRequest(nil), e.requests...)
}

// maxIssuedLog is how many issued access tokens IssuedTokens remembers.
const maxIssuedLog = 10000

// recordIssued remembers an issued access token for IssuedTokens, dropping
// the oldest when full.
func (e *Emulator) recordIssued(tok string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.issued) == maxIssuedLog {
		copy(e.issued, e.issued[1:])
		e.issued = e.issued[:maxIssuedLog-1]
		e.issuedDropped++
	}
	e.issued = append(e.issued, tok)
}

// IssuedTokens returns the access tokens the token endpoint issued, oldest
// first (the newest 10000), and how many older ones it no longer holds.
// Tests scan logs for them: no token may ever reach a log line. The
// emulator itself never logs them.
func (e *Emulator) IssuedTokens() (tokens []string, dropped int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.issued...), e.issuedDropped
}

// MaxInFlight returns the largest number of token requests the emulator
// was handling at once (injected latency included) since it started or
// since ResetCounts: how many exchanges a client had in flight at most.
func (e *Emulator) MaxInFlight() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.maxInFlight
}

// callKey identifies a counter of token POSTs.
type callKey struct {
	clientID string // lower-case
	scope    string
}

// Start generates keys and certificates, opens both listeners and starts
// serving. Close stops it.
func Start(opts Options) (*Emulator, error) {
	if opts.Tenant == "" {
		opts.Tenant = "00000000-0000-0000-0000-000000000000"
	}
	hostSet := opts.Host != ""
	if !hostSet {
		opts.Host = "localhost"
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.IssuerAddr == "" {
		opts.IssuerAddr = "127.0.0.1:0"
	}
	if opts.TokenLifetime <= 0 {
		opts.TokenLifetime = time.Hour
	}
	if opts.TokenPadding < 0 {
		return nil, fmt.Errorf("token padding %d is negative", opts.TokenPadding)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.KeyCacheTTL <= 0 {
		opts.KeyCacheTTL = time.Minute
	}
	if strings.ContainsAny(opts.Host, "/:@?#[] ") && net.ParseIP(opts.Host) == nil {
		return nil, fmt.Errorf("host %q is not a host name or IP address", opts.Host)
	}
	for _, h := range opts.ExtraHosts {
		if h == "" || (strings.ContainsAny(h, "/:@?#[] ") && net.ParseIP(h) == nil) {
			return nil, fmt.Errorf("extra host %q is not a host name or IP address", h)
		}
	}
	if strings.ContainsAny(opts.Tenant, "/?#% ") {
		return nil, fmt.Errorf("tenant %q is not a usable path segment", opts.Tenant)
	}

	e := &Emulator{
		log:              opts.Logger,
		now:              opts.Now,
		tenant:           opts.Tenant,
		lifetime:         opts.TokenLifetime,
		padding:          opts.TokenPadding,
		keyTTL:           opts.KeyCacheTTL,
		done:             make(chan struct{}),
		apps:             map[string]App{},
		invalidResources: map[string]bool{},
		calls:            map[callKey]int{},
		keyCache:         map[string]*issuerKeys{},
		issuerClients:    map[string]*http.Client{},
		entraConns:       map[net.Conn]struct{}{},
	}
	for _, r := range opts.InvalidResources {
		e.invalidResources[r] = true
	}

	var err error
	if e.issuerKey, err = keyOrNew(opts.IssuerKey); err != nil {
		return nil, fmt.Errorf("issuer key: %w", err)
	}
	if e.tokenKey, err = keyOrNew(opts.TokenKey); err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	if e.issuerKID, err = keyID(&e.issuerKey.PublicKey); err != nil {
		return nil, err
	}
	if e.tokenKID, err = keyID(&e.tokenKey.PublicKey); err != nil {
		return nil, err
	}

	entraLn, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", opts.Addr, err)
	}
	issuerLn, err := net.Listen("tcp", opts.IssuerAddr)
	if err != nil {
		_ = entraLn.Close()
		return nil, fmt.Errorf("listen on %s: %w", opts.IssuerAddr, err)
	}
	closeAll := func() { _ = entraLn.Close(); _ = issuerLn.Close() }

	entraTCP := entraLn.Addr().(*net.TCPAddr)
	issuerTCP := issuerLn.Addr().(*net.TCPAddr)
	dnsNames, ips := certNames(opts.Host, entraTCP.IP, opts.ExtraHosts)
	if e.pki, err = newPKI(dnsNames, ips); err != nil {
		closeAll()
		return nil, err
	}
	e.authorityBase = "https://" + hostPort(opts.Host, entraTCP.Port, 443)
	issuerHost := opts.IssuerHost
	if issuerHost == "" {
		if hostSet {
			issuerHost = opts.Host
		} else {
			issuerHost = issuerTCP.IP.String()
			if issuerTCP.IP.IsUnspecified() {
				issuerHost = "127.0.0.1"
			}
		}
	}
	e.issuerURL = "http://" + hostPort(issuerHost, issuerTCP.Port, 80)

	e.fetchClient = &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 3 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     30 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}

	for _, a := range opts.Apps {
		if err := e.addApp(a); err != nil {
			closeAll()
			return nil, err
		}
	}
	for _, t := range opts.TrustedIssuers {
		c, err := trustedIssuerClient(t)
		if err != nil {
			closeAll()
			return nil, err
		}
		e.issuerClients[t.Issuer] = c
	}

	e.entraSrv = &http.Server{
		Handler:           e.entraHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		// An empty TLSNextProto map keeps the server on HTTP/1.1, so a
		// dropped-connection fault can hijack the connection.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		TLSConfig: &tls.Config{
			GetCertificate: e.serverCertificate, // SetTLSFault
			MinVersion:     tls.VersionTLS12,
			NextProtos:     []string{"http/1.1"},
		},
		ConnState: e.trackEntraConn,
		ErrorLog:  serverErrorLog(opts.Logger, "entra"),
	}
	e.issuerSrv = &http.Server{
		Handler:           e.issuerHandler(opts.EnableAdmin),
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          serverErrorLog(opts.Logger, "issuer"),
	}
	e.serveWG.Add(2)
	go func() {
		defer e.serveWG.Done()
		if err := e.entraSrv.ServeTLS(entraLn, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error(err, "Entra listener stopped")
		}
	}()
	go func() {
		defer e.serveWG.Done()
		if err := e.issuerSrv.Serve(issuerLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error(err, "issuer listener stopped")
		}
	}()
	e.log.V(1).Info("emulator started", "authorityHost", e.AuthorityHost(), "issuerURL", e.issuerURL, "tenant", e.tenant)
	return e, nil
}

// serverErrorLog routes net/http's own messages (TLS handshake failures,
// for instance) to the logger at V(1).
func serverErrorLog(l logr.Logger, listener string) *log.Logger {
	return slog.NewLogLogger(logr.ToSlogHandler(l.WithValues("listener", listener).V(1)), slog.LevelInfo)
}

// keyOrNew returns k, or a fresh RSA 2048 key when k is nil.
func keyOrNew(k *rsa.PrivateKey) (*rsa.PrivateKey, error) {
	if k != nil {
		return k, nil
	}
	return rsa.GenerateKey(rand.Reader, 2048)
}

// certNames lists the DNS names and IPs the server certificate covers.
func certNames(host string, listenIP net.IP, extra []string) ([]string, []net.IP) {
	var dns []string
	ips := []net.IP{net.IPv4(127, 0, 0, 1)}
	for _, h := range append([]string{host}, extra...) {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else if h != "" && h != "localhost" {
			dns = append(dns, h)
		}
	}
	dns = append(dns, "localhost")
	if listenIP != nil && !listenIP.IsUnspecified() && !listenIP.IsLoopback() {
		ips = append(ips, listenIP)
	}
	return dns, ips
}

// hostPort joins host and port, leaving out the scheme's default port.
func hostPort(host string, port, defaultPort int) string {
	if port == defaultPort {
		if strings.Contains(host, ":") {
			return "[" + host + "]"
		}
		return host
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// Close stops both listeners, aborts injected latencies and waits for the
// servers to finish. It is safe to call more than once.
func (e *Emulator) Close() {
	e.closeOnce.Do(func() {
		close(e.done)
		_ = e.entraSrv.Close()
		_ = e.issuerSrv.Close()
		e.serveWG.Wait()
		e.fetchClient.CloseIdleConnections()
		e.mu.Lock()
		for _, c := range e.issuerClients {
			c.CloseIdleConnections()
		}
		e.mu.Unlock()
	})
}

// Tenant returns the tenant id the emulator answers for.
func (e *Emulator) Tenant() string { return e.tenant }

// AuthorityHost returns the Entra base URL with a trailing slash, in the
// form AZURE_AUTHORITY_HOST takes ("https://<Host>:<port>/"; the port is
// left out when it is 443). The MSAL authority is AuthorityHost()+tenant.
func (e *Emulator) AuthorityHost() string { return e.authorityBase + "/" }

// Authority returns AuthorityHost()+tenant, the MSAL authority URL.
func (e *Emulator) Authority() string { return e.authorityBase + "/" + e.tenant }

// TokenEndpoint returns the URL of the token endpoint.
func (e *Emulator) TokenEndpoint() string {
	return e.authorityBase + "/" + e.tenant + "/oauth2/v2.0/token"
}

// IssuerURL returns the cluster issuer URL ("http://<host>:<port>", no
// trailing slash): the "iss" of minted service-account tokens.
func (e *Emulator) IssuerURL() string { return e.issuerURL }

// AccessTokenIssuer returns the "iss" claim of issued access tokens,
// "https://sts.windows.net/<tenant>/".
func (e *Emulator) AccessTokenIssuer() string { return "https://sts.windows.net/" + e.tenant + "/" }

// CACertPEM returns the generated CA certificate in PEM form (write it to a
// file for SSL_CERT_FILE or REQUESTS_CA_BUNDLE).
func (e *Emulator) CACertPEM() []byte { return append([]byte(nil), e.pki.caPEM...) }

// CertPool returns a pool holding only the generated CA.
func (e *Emulator) CertPool() *x509.CertPool { return e.pki.pool.Clone() }

// HTTPClient returns a new HTTP client that trusts the generated CA (for
// MSAL's WithHTTPClient in tests).
func (e *Emulator) HTTPClient() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			TLSClientConfig:     &tls.Config{RootCAs: e.pki.pool.Clone(), MinVersion: tls.VersionTLS12},
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     30 * time.Second,
		},
	}
}

// AddApp registers an app, replacing any app with the same client id.
// Federations with an empty Issuer get IssuerURL, with an empty Audience
// "api://AzureADTokenExchange". An empty client id is ignored with a log
// line; use AddAppErr to see the error.
func (e *Emulator) AddApp(a App) {
	if err := e.addApp(a); err != nil {
		e.log.Error(err, "app not added")
	}
}

// AddAppErr is AddApp returning the validation error.
func (e *Emulator) AddAppErr(a App) error { return e.addApp(a) }

// addApp validates a, applies the federation and object id defaults and
// registers it.
func (e *Emulator) addApp(a App) error {
	if strings.TrimSpace(a.ClientID) == "" {
		return errors.New("app has no client id")
	}
	feds := make([]Federation, 0, len(a.Federations))
	for _, f := range a.Federations {
		if f.Issuer == "" {
			f.Issuer = e.issuerURL
		}
		if f.Audience == "" {
			f.Audience = defaultFederationAudience
		}
		feds = append(feds, f)
	}
	a.Federations = feds
	if a.ObjectID == "" {
		a.ObjectID = derivedObjectID(a.ClientID)
	}
	e.mu.Lock()
	e.apps[strings.ToLower(a.ClientID)] = a
	e.mu.Unlock()
	return nil
}

// derivedObjectID makes a stable, UUID-shaped object id from a client id,
// for apps configured without one.
func derivedObjectID(clientID string) string {
	h := sha256.Sum256([]byte("entraemu-object-id:" + strings.ToLower(clientID)))
	h[6] = (h[6] & 0x0f) | 0x40
	h[8] = (h[8] & 0x3f) | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// App returns the registered app with that client id.
func (e *Emulator) App(clientID string) (App, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	a, ok := e.apps[strings.ToLower(clientID)]
	a.Federations = cloneFederations(a.Federations)
	return a, ok
}

// cloneFederations copies a federation list; the copy is never nil, so it
// renders as [] in JSON.
func cloneFederations(f []Federation) []Federation {
	out := make([]Federation, len(f))
	copy(out, f)
	return out
}

// RemoveApp unregisters an app; its next token request gets AADSTS700016.
func (e *Emulator) RemoveApp(clientID string) {
	e.mu.Lock()
	delete(e.apps, strings.ToLower(clientID))
	e.mu.Unlock()
}

// RemoveFederations deletes every federated credential of an app; its next
// token request gets AADSTS70021.
func (e *Emulator) RemoveFederations(clientID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if a, ok := e.apps[strings.ToLower(clientID)]; ok {
		a.Federations = nil
		e.apps[strings.ToLower(clientID)] = a
	}
}

// SetInvalidResource marks (or unmarks) a resource URI, without
// "/.default", as unknown to the tenant (AADSTS500011).
func (e *Emulator) SetInvalidResource(resource string, invalid bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if invalid {
		e.invalidResources[resource] = true
	} else {
		delete(e.invalidResources, resource)
	}
}

// TokenCalls returns how many POSTs reached the token endpoint for that
// client id (case-insensitive) and resource scope (e.g.
// "https://vault.azure.net/.default", without the OIDC scopes MSAL adds),
// successful, failed and faulted alike.
func (e *Emulator) TokenCalls(clientID, scope string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.calls[callKey{strings.ToLower(clientID), scope}]
}

// TotalTokenCalls returns how many POSTs reached the token endpoint.
func (e *Emulator) TotalTokenCalls() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.totalCalls
}

// DiscoveryCalls returns how many GETs of the tenant's openid-configuration
// the Entra listener answered (counted apart from token calls).
func (e *Emulator) DiscoveryCalls() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.discoveryCalls
}

// InstanceDiscoveryCalls returns how many GETs of /common/discovery/instance
// the Entra listener answered.
func (e *Emulator) InstanceDiscoveryCalls() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.instanceDiscoveryCalls
}

// IssuerFetches returns how many times the token endpoint fetched an
// assertion issuer's discovery document and JWKS over HTTP.
func (e *Emulator) IssuerFetches() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.issuerFetches
}

// CallCount is one token-endpoint counter, as listed by Calls.
type CallCount struct {
	ClientID string `json:"client_id"`
	Scope    string `json:"scope"`
	Calls    int    `json:"calls"`
}

// Calls lists every non-zero token-endpoint counter (client ids
// lower-cased), in no particular order.
func (e *Emulator) Calls() []CallCount {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]CallCount, 0, len(e.calls))
	for k, n := range e.calls {
		out = append(out, CallCount{ClientID: k.clientID, Scope: k.scope, Calls: n})
	}
	return out
}

// ResetCounts sets every call counter back to zero, empties the request
// log, and restarts MaxInFlight from the requests in flight now. The issued
// tokens are kept.
func (e *Emulator) ResetCounts() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls = map[callKey]int{}
	e.totalCalls, e.discoveryCalls, e.issuerFetches, e.instanceDiscoveryCalls = 0, 0, 0, 0
	e.requests = nil
	e.maxInFlight = e.inFlight
}

// sleep waits for d, or less when the request or the emulator ends first.
func (e *Emulator) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-e.done:
		return false
	}
}
