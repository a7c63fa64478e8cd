package podenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/entraemu"
)

// The emulator runs as its own process in the node namespace (test/emulator,
// as root), so that its Entra and issuer listeners and its own JWKS fetches
// all live there. The harness drives it through the admin API on the issuer
// listener, http://169.254.99.1:80/admin/..., over connections it opens
// from inside the node namespace (netnsDialer): the host namespace has no
// route to it.

func (e *Env) adminURL(path string, q url.Values) string {
	u := "http://" + NodeAddr + ":" + strconv.Itoa(IssuerPort) + "/admin/" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

func (e *Env) startEmulator(ctx context.Context) error {
	args := []string{
		e.Bin(EmulatorBin),
		"--tenant=" + e.Tenant,
		"--host=" + EntraHost,
		"--addr=" + NodeAddr + ":" + strconv.Itoa(EntraPort),
		"--issuer-addr=" + NodeAddr + ":" + strconv.Itoa(IssuerPort),
		"--issuer-host=" + IssuerHost,
		"--admin",
		"--log-level=debug",
	}
	if e.opts.TokenLifetime > 0 {
		args = append(args, "--token-lifetime="+e.opts.TokenLifetime.String())
	}
	if e.opts.TokenPadding > 0 {
		args = append(args, "--token-padding="+strconv.Itoa(e.opts.TokenPadding))
	}
	p, err := spawn(netnsExec(e.Node, -1, args...), []string{"PATH=" + safePath}, e.EmulatorLog)
	if err != nil {
		return fmt.Errorf("start emulator: %w", err)
	}
	e.mu.Lock()
	e.emu = p
	e.mu.Unlock()

	// Ready once the admin API answers; it tells the URLs and the CA.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var info entraemu.Info
	err = poll(wctx, p, func() bool {
		b, err := e.adminDo(wctx, http.MethodGet, "info", nil, nil)
		return err == nil && json.Unmarshal(b, &info) == nil
	}, "emulator", e.EmulatorLog)
	if err != nil {
		return err
	}
	e.AuthorityHost, e.IssuerURL = info.AuthorityHost, info.IssuerURL
	if err := os.WriteFile(e.CAFile, []byte(info.CACertPEM), 0o644); err != nil {
		return err
	}

	apps := append([]entraemu.App(nil), e.opts.Apps...)
	if e.ClientID != "" && !slices.ContainsFunc(apps, func(a entraemu.App) bool { return strings.EqualFold(a.ClientID, e.ClientID) }) {
		apps = append(apps, FederatedApp(e.ClientID, "", ""))
	}
	for _, a := range apps {
		if err := e.AddApp(ctx, a); err != nil {
			return err
		}
	}
	for _, r := range e.opts.InvalidResources {
		q := url.Values{"resource": {r}, "invalid": {"true"}}
		if _, err := e.adminDo(ctx, http.MethodPost, "invalid-resources", q, nil); err != nil {
			return err
		}
	}
	return nil
}

func (e *Env) adminDo(ctx context.Context, method, path string, q url.Values, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, e.adminURL(path, q), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.admin.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("emulator %s /admin/%s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	return b, nil
}

// AddApp registers (or replaces) an app in the emulated tenant; see
// FederatedApp.
func (e *Env) AddApp(ctx context.Context, a entraemu.App) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	_, err = e.adminDo(ctx, http.MethodPost, "apps", nil, b)
	return err
}

// Calls returns how many token POSTs the emulator received for clientID
// (case-insensitive) and scope (e.g. "https://vault.azure.net/.default",
// without the OIDC scopes MSAL adds), failed and faulted ones included.
func (e *Env) Calls(ctx context.Context, clientID, scope string) (int, error) {
	stats, err := e.CallStats(ctx, clientID, scope)
	return stats.Calls, err
}

// CallStats is the emulator's counters: Calls for the asked (client id,
// scope), Total token POSTs, Discovery GETs of the tenant's
// openid-configuration, IssuerFetches of an assertion issuer's discovery
// document and JWKS, MaxInFlight, the most token requests it handled at
// once, and ByIdentity, every non-zero token counter.
type CallStats struct {
	Calls         int                  `json:"calls"`
	Total         int                  `json:"total"`
	Discovery     int                  `json:"discovery"`
	IssuerFetches int                  `json:"issuer_fetches"`
	MaxInFlight   int                  `json:"max_in_flight"`
	ByIdentity    []entraemu.CallCount `json:"by_identity"`
}

// CallStats returns the emulator's counters, Calls for clientID and scope.
func (e *Env) CallStats(ctx context.Context, clientID, scope string) (CallStats, error) {
	var stats CallStats
	b, err := e.adminDo(ctx, http.MethodGet, "calls", url.Values{"client_id": {clientID}, "scope": {scope}}, nil)
	if err != nil {
		return stats, err
	}
	if err := json.Unmarshal(b, &stats); err != nil {
		return stats, fmt.Errorf("emulator calls: %w", err)
	}
	return stats, nil
}

// Requests returns the emulator's log of token requests, oldest first:
// each one's client id, scope, status, AADSTS code, and the assertion's
// issuer, subject and jti (never the assertion itself).
func (e *Env) Requests(ctx context.Context) ([]entraemu.TokenRequest, error) {
	b, err := e.adminDo(ctx, http.MethodGet, "requests", nil, nil)
	if err != nil {
		return nil, err
	}
	var reqs []entraemu.TokenRequest
	if err := json.Unmarshal(b, &reqs); err != nil {
		return nil, fmt.Errorf("emulator requests: %w", err)
	}
	return reqs, nil
}

// SetFault injects f into the emulator's token endpoint (see
// entraemu.Fault); SetFault(ctx, entraemu.Fault{}) clears it.
func (e *Env) SetFault(ctx context.Context, f entraemu.Fault) error {
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	_, err = e.adminDo(ctx, http.MethodPost, "fault", nil, b)
	return err
}

// MintToken has the emulator's cluster issuer mint a projected
// service-account token (audience api://AzureADTokenExchange) for
// namespace/serviceAccount.
func (e *Env) MintToken(ctx context.Context, namespace, serviceAccount string, lifetime time.Duration) (string, error) {
	q := url.Values{"namespace": {namespace}, "sa": {serviceAccount}, "lifetime": {lifetime.String()}}
	tok, err := e.adminDo(ctx, http.MethodPost, "token", q, nil)
	return string(bytes.TrimSpace(tok)), err
}

// MintAndWriteToken mints a token for namespace/serviceAccount and writes
// it to TokenFile (WriteToken). The pod's own account is
// Namespace/ServiceAccount. The token is never logged.
func (e *Env) MintAndWriteToken(ctx context.Context, namespace, serviceAccount string, lifetime time.Duration) error {
	tok, err := e.MintToken(ctx, namespace, serviceAccount, lifetime)
	if err != nil {
		return err
	}
	return e.WriteToken(tok)
}

// WriteToken writes a projected service-account token to TokenFile the way
// kubelet rotates it: a new file renamed over the old one, so the proxy
// never reads half a token.
func (e *Env) WriteToken(token string) error {
	tmp := e.TokenFile + ".new"
	if err := os.WriteFile(tmp, []byte(token), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, e.TokenFile)
}

// TrustIssuer makes the emulator fetch the discovery document and JWKS of
// an https assertion issuer (a real kube-apiserver's, say) trusting only
// the CA certificates in caPEM. Federations name that issuer like any
// other (entraemu.Federation.Issuer).
func (e *Env) TrustIssuer(ctx context.Context, issuer string, caPEM []byte) error {
	b, err := json.Marshal(entraemu.TrustedIssuer{Issuer: issuer, CACertPEM: string(caPEM)})
	if err != nil {
		return err
	}
	_, err = e.adminDo(ctx, http.MethodPost, "trusted-issuers", nil, b)
	return err
}
