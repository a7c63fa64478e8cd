package loadgen

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"strings"
	"time"
)

// EntraConfig configures EntraTiming: the requests a proxy's first exchange
// sends to Entra (tenant discovery, then the client-credentials token POST
// with the projected token as client assertion), sent directly.
type EntraConfig struct {
	// AuthorityHost is AZURE_AUTHORITY_HOST, e.g. "https://login.emulator.test/".
	AuthorityHost string
	Tenant        string
	ClientID      string
	// Scope is the token's scope; the benchmark uses one no other phase
	// counts.
	Scope string
	// TokenFile is the projected service-account token, the assertion.
	TokenFile string
	Runs      int
	// Timeout bounds each run (default 10 s).
	Timeout time.Duration
	// RootCAs verifies Entra's certificate; nil means the system pool
	// (SSL_CERT_FILE names the emulator's CA).
	RootCAs *x509.CertPool
}

// EntraRun is one run on a fresh connection: the TLS handshake (client
// side, ClientHello to Finished), the discovery GET that opened the
// connection (dial and handshake included), then, on the warm connection,
// a second discovery GET and a token POST.
type EntraRun struct {
	Handshake     time.Duration `json:"handshake_ns"`
	DiscoveryCold time.Duration `json:"discovery_cold_ns"`
	DiscoveryWarm time.Duration `json:"discovery_warm_ns"`
	TokenWarm     time.Duration `json:"token_warm_ns"`
	Error         string        `json:"error,omitempty"`
}

// EntraResult is the JSON answer of imds-loadgen's entra subcommand. Answer
// is the Entra side's own answer time for a first exchange: the median warm
// discovery plus the median warm token POST.
type EntraResult struct {
	Runs          []EntraRun    `json:"runs"`
	Handshake     time.Duration `json:"handshake_ns"`
	DiscoveryCold time.Duration `json:"discovery_cold_ns"`
	DiscoveryWarm time.Duration `json:"discovery_warm_ns"`
	TokenWarm     time.Duration `json:"token_warm_ns"`
	Answer        time.Duration `json:"answer_ns"`
}

// EntraTiming measures how long Entra (in the benchmark, the emulator)
// takes to answer what a proxy's first exchange asks it, Runs times, each
// on a fresh connection and HTTP client. The system certificate pool is
// loaded before the first run (SSL_CERT_FILE names the emulator's CA), so
// no run pays for it.
func EntraTiming(ctx context.Context, cfg EntraConfig) (EntraResult, error) {
	if cfg.Runs < 1 {
		return EntraResult{}, errors.New("runs must be at least 1")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	assertion, err := os.ReadFile(cfg.TokenFile)
	if err != nil {
		return EntraResult{}, err
	}
	if _, err := x509.SystemCertPool(); err != nil {
		return EntraResult{}, err
	}
	base := strings.TrimSuffix(cfg.AuthorityHost, "/") + "/" + cfg.Tenant
	discovery := base + "/v2.0/.well-known/openid-configuration"
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"client_id":             {cfg.ClientID},
		"scope":                 {cfg.Scope},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {strings.TrimSpace(string(assertion))},
	}.Encode()
	var res EntraResult
	var hs, dc, dw, tw []time.Duration
	for i := 0; i < cfg.Runs && ctx.Err() == nil; i++ {
		r := entraOnce(ctx, cfg, discovery, form)
		res.Runs = append(res.Runs, r)
		if r.Error != "" {
			continue
		}
		hs, dc, dw, tw = append(hs, r.Handshake), append(dc, r.DiscoveryCold), append(dw, r.DiscoveryWarm), append(tw, r.TokenWarm)
	}
	if len(tw) == 0 {
		if len(res.Runs) > 0 {
			return res, fmt.Errorf("no successful run: %s", res.Runs[0].Error)
		}
		return res, ctx.Err()
	}
	res.Handshake = SummarizeStartup(hs).Median
	res.DiscoveryCold = SummarizeStartup(dc).Median
	res.DiscoveryWarm = SummarizeStartup(dw).Median
	res.TokenWarm = SummarizeStartup(tw).Median
	res.Answer = res.DiscoveryWarm + res.TokenWarm
	return res, nil
}

func entraOnce(ctx context.Context, cfg EntraConfig, discovery, form string) EntraRun {
	var run EntraRun
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	tr := &http.Transport{Proxy: nil, ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: cfg.RootCAs}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var hsStart time.Time
	trace := &httptrace.ClientTrace{
		TLSHandshakeStart: func() { hsStart = time.Now() },
		TLSHandshakeDone: func(tls.ConnectionState, error) {
			run.Handshake = time.Since(hsStart)
		},
	}
	do := func(req *http.Request) (time.Duration, []byte, error) {
		t0 := time.Now()
		resp, err := client.Do(req.WithContext(httptrace.WithClientTrace(ctx, trace)))
		if err != nil {
			return 0, nil, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		d := time.Since(t0)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s %s: %s: %.200s", req.Method, req.URL.Path, resp.Status, body)
		}
		return d, body, err
	}
	get := func() (time.Duration, []byte, error) {
		req, _ := http.NewRequest(http.MethodGet, discovery, nil)
		return do(req)
	}
	d, body, err := get()
	if err != nil {
		run.Error = err.Error()
		return run
	}
	run.DiscoveryCold = d
	var doc struct {
		TokenEndpoint string `json:"token_endpoint"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || doc.TokenEndpoint == "" {
		run.Error = fmt.Sprintf("discovery document without token_endpoint: %.200s", body)
		return run
	}
	if run.DiscoveryWarm, _, err = get(); err != nil {
		run.Error = err.Error()
		return run
	}
	req, _ := http.NewRequest(http.MethodPost, doc.TokenEndpoint, strings.NewReader(form))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if run.TokenWarm, _, err = do(req); err != nil {
		run.Error = err.Error()
	}
	return run
}
