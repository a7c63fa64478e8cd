package app

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/imds-proxy/imds-proxy/internal/logging"
	"github.com/imds-proxy/imds-proxy/pkg/exchange"
	"github.com/imds-proxy/imds-proxy/pkg/imds"
	"github.com/imds-proxy/imds-proxy/pkg/version"
)

// *exchange.Source is the proxy's token source.
var _ imds.TokenSource = (*exchange.Source)(nil)

// Run serves until ctx ends (SIGTERM, SIGINT) and the shutdown delay and
// drain are over, or until POST /quitquitquit. It listens before doing
// anything that could touch the network, so the proxy is ready within
// milliseconds of start: in a native sidecar, the app's containers may
// start right after.
func Run(ctx context.Context, cfg *Config, deps Deps) error {
	log := deps.Logger

	// The token file is checked first: without it no request can succeed,
	// and the reason belongs on one line at start.
	if _, err := os.Stat(cfg.Exchange.TokenFile); err != nil {
		return fmt.Errorf("AZURE_FEDERATED_TOKEN_FILE %s: %w", cfg.Exchange.TokenFile, unwrapPathError(err))
	}
	icfg := cfg.IMDS
	if cfg.IdentityHeaderFile != "" {
		h, err := readIdentityHeaderFile(cfg.IdentityHeaderFile)
		if err != nil {
			return fmt.Errorf("%s: %w", cfg.IdentityHeaderSource, err)
		}
		icfg.IdentityHeader = h
	}

	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.ListenAddr, err)
	}
	defer ln.Close()
	var metricsLn net.Listener
	if cfg.MetricsAddr != "" {
		metricsLn, err = net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("listen on --metrics-addr %s: %w", cfg.MetricsAddr, err)
		}
		defer metricsLn.Close()
	}

	// The proxy's own metrics go to a registry of their own; /metrics
	// serves them with the Go runtime and process collectors that
	// client_golang registers on its default registry when it initialises,
	// rather than a second pair built here (a tenth of a millisecond of
	// start-up and their descriptors on the heap).
	reg := prometheus.NewRegistry()
	src, err := exchange.New(cfg.Exchange, exchange.Deps{
		Logger:     log,
		Registerer: reg,
		// Entra may legitimately sit behind a corporate HTTP proxy, so
		// the usual proxy environment applies here (unlike the IMDS
		// passthrough, which never uses one).
		HTTPClient: &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()},
	})
	if err != nil {
		return err
	}
	icfg.Gatherer = prometheus.Gatherers{prometheus.DefaultGatherer, reg}
	tokenFile := cfg.Exchange.TokenFile
	icfg.ProbeDiagnostics = func() []any { return projectedTokenDiagnostics(tokenFile) }
	srv, err := imds.New(icfg, src, log, reg)
	if err != nil {
		return err
	}

	// The refresher and the metrics listener outlive ctx: tokens are still
	// served during the shutdown delay. They stop when the main listener
	// has drained.
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	startDebugProfiler(bg, log)
	var g errgroup.Group
	g.Go(func() error { return src.Run(bg) })
	if metricsLn != nil {
		g.Go(func() error { return srv.ServeMetrics(bg, metricsLn) })
	}
	g.Go(func() error {
		defer stopBG()
		return srv.Serve(ctx, ln)
	})
	// The start-up diagnosis once serving: building it (reading and
	// decoding the projected token) would otherwise hold up the first
	// /readyz.
	metricsAddr := ""
	if metricsLn != nil {
		metricsAddr = metricsLn.Addr().String()
	}
	logStartup(cfg, deps, ln.Addr().String(), metricsAddr)
	// Warm the first exchange in the background, now that we listen and
	// serve (no network call may come before Listen; started after Serve
	// so it does not hold up the first /readyz): a fresh proxy's first
	// token request would otherwise also pay for loading the system CA
	// pool, building the MSAL client, tenant discovery and the TLS
	// handshake with Entra. It never fails startup and requests no token
	// (the --probe warm-up does that); it stops with the background work.
	g.Go(func() error {
		prewarm(bg, log, src, tokenFile)
		return nil
	})
	err = g.Wait()
	log.Info("proxy stopped")
	return err
}

// prewarm loads the system certificate pool, which Go otherwise parses
// during the first TLS handshake (about 10 ms for a distribution's bundle
// on this project's machines, hundreds on a slow node: the longest part of
// a fresh proxy's first exchange), then prepares the default identity's
// exchange (src.Prewarm). One after the other, not at once: on two cores,
// two goroutines parsing and dialling beside the server held the first
// /readyz back by half a millisecond and brought the first token no
// sooner (interleaved starts, test/bench/README.md). Outcomes are logged
// at V(1) only: a failure here is met again, and reported, by the first
// token request.
//
// It runs only once the projected token is a readable JWT, the same
// precondition as any exchange. Go loads the system pool (SSL_CERT_FILE
// included) once per process, so warming it while the pod's volumes are
// still being filled would pin a pool that lacks a CA written a moment
// later; kubelet projects the token before the container starts, so in a
// pod this never delays the warm-up.
func prewarm(ctx context.Context, log logr.Logger, src *exchange.Source, tokenFile string) {
	log = log.V(1)
	if _, err := exchange.ReadProjectedToken(tokenFile); err != nil {
		log.Info("prewarm skipped: the projected token is not readable yet", "error", err.Error())
		return
	}
	start := time.Now()
	if _, err := x509.SystemCertPool(); err != nil {
		log.Info("prewarm: loading the system certificate pool failed", "error", err.Error())
	}
	certs := time.Since(start)
	if err := src.Prewarm(ctx); err != nil {
		log.Info("prewarm: preparing the default identity's exchange failed; the first token request will retry",
			"error", err.Error(), "duration", time.Since(start).String())
		return
	}
	log.Info("prewarm done", "certPool", certs.String(), "duration", time.Since(start).String())
}

// unwrapPathError drops the path from an *os.PathError, which the caller
// already names.
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// logStartup logs what a user needs to debug federation: the projected
// token's claims (never the token), the authority, tenant, default client
// id, the listener, and the UID, with a loud warning when the UID is not
// the one proxy-init exempts.
func logStartup(cfg *Config, deps Deps, addr, metricsAddr string) {
	log := deps.Logger
	ex := cfg.Exchange
	kv := []any{
		"version", version.Version,
		"listen", addr,
		"metricsListen", metricsAddr,
		"authorityHost", ex.AuthorityHost,
		"tenantID", ex.TenantID,
		"clientID", ex.DefaultClientID,
		"identities", len(ex.Identities),
		"instanceMetadata", string(cfg.IMDS.InstanceMetadata),
		"appServiceEndpoint", appServiceEndpoint(cfg),
		"uid", deps.Getuid(),
	}
	kv = append(kv, projectedTokenDiagnostics(ex.TokenFile)...)
	log.Info("imds-proxy listening", kv...)
	// The default level ("") shows warnings only; say at least where we
	// listen there too.
	if ex.DefaultClientID == "" {
		logging.Warn(log, "AZURE_CLIENT_ID is not set: requests that name no identity will get 400 Identity not found, and the --probe warm-up is skipped; requests with client_id still work",
			"listen", addr)
	}
	if uid := deps.Getuid(); uid != cfg.ExemptUID {
		logging.Warn(log, fmt.Sprintf("the proxy runs as UID %d, but proxy-init exempts UID %d from the redirect to the proxy: "+
			"a pod-level securityContext.runAsUser overrides the image's USER. Token requests still work, but requests "+
			"the proxy forwards to the real IMDS (/metadata/instance and the other passthrough categories) are "+
			"redirected back to it and answered 508. Remove the pod-level runAsUser or set runAsUser: %d on the proxy container",
			uid, cfg.ExemptUID, cfg.ExemptUID), "uid", uid, "exemptUID", cfg.ExemptUID)
	}
}

// appServiceEndpoint describes the App Service endpoint for the start-up
// log: where its secret comes from, never the secret.
func appServiceEndpoint(cfg *Config) string {
	if cfg.IdentityHeaderSource == "" {
		return "off"
	}
	return "/msi/token, secret from " + cfg.IdentityHeaderSource
}

// projectedTokenDiagnostics returns the projected token's issuer, subject,
// audience and expiry as log key/values: what a federated credential must
// match. The token itself is never logged.
func projectedTokenDiagnostics(path string) []any {
	pt, err := exchange.ReadProjectedToken(path)
	if err != nil {
		return []any{"tokenFile", path, "tokenFileError", err.Error()}
	}
	exp := ""
	if !pt.Expiry.IsZero() {
		exp = pt.Expiry.UTC().Format(time.RFC3339)
	}
	return []any{"tokenFile", path, "tokenIssuer", pt.Issuer, "tokenSubject", pt.Subject,
		"tokenAudience", pt.Audience, "tokenExpiry", exp}
}
