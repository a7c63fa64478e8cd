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
	"os/exec"
	"path/filepath"
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
	apps := append([]entraemu.App(nil), e.opts.Apps...)
	if e.ClientID != "" {
		known := false
		for _, a := range apps {
			known = known || strings.EqualFold(a.ClientID, e.ClientID)
		}
		if !known {
			apps = append(apps, FederatedApp(e.ClientID, "", ""))
		}
	}
	cfg, err := json.Marshal(apps)
	if err != nil {
		return err
	}
	appsFile := filepath.Join(e.Dir, "emulator-apps.json")
	if err := os.WriteFile(appsFile, cfg, 0o644); err != nil {
		return err
	}
	args := []string{
		e.Bin(EmulatorBin),
		"--tenant=" + e.Tenant,
		"--host=" + EntraHost,
		"--addr=" + NodeAddr + ":" + strconv.Itoa(EntraPort),
		"--issuer-addr=" + NodeAddr + ":" + strconv.Itoa(IssuerPort),
		"--issuer-host=" + IssuerHost,
		"--admin",
		"--apps=" + appsFile,
		"--ca-out=" + e.CAFile,
	}
	if e.opts.TokenLifetime > 0 {
		args = append(args, "--token-lifetime="+e.opts.TokenLifetime.String())
	}
	for _, r := range e.opts.InvalidResources {
		args = append(args, "--invalid-resource="+r)
	}
	logf, err := os.OpenFile(e.EmulatorLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	argv := netnsExec(e.Node, -1, args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=" + safePath}
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := startProcess(cmd)
	if err != nil {
		return fmt.Errorf("start emulator: %w", err)
	}
	e.mu.Lock()
	e.emu = p
	e.mu.Unlock()

	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = poll(wctx, p, func() bool {
		_, err := e.adminGet(wctx, "calls", nil)
		return err == nil
	}, "emulator", e.EmulatorLog)
	if err != nil {
		return err
	}
	e.AuthorityHost = "https://" + EntraHost + "/"
	e.IssuerURL = "http://" + IssuerHost // port 80
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

func (e *Env) adminGet(ctx context.Context, path string, q url.Values) ([]byte, error) {
	return e.adminDo(ctx, http.MethodGet, path, q, nil)
}

// Calls returns how many token POSTs the emulator received for clientID
// (case-insensitive) and scope (e.g. "https://vault.azure.net/.default",
// without the OIDC scopes MSAL adds), failed and faulted ones included.
func (e *Env) Calls(ctx context.Context, clientID, scope string) (int, error) {
	b, err := e.adminGet(ctx, "calls", nil)
	if err != nil {
		return 0, err
	}
	var counts []entraemu.CallCount
	if err := json.Unmarshal(b, &counts); err != nil {
		return 0, fmt.Errorf("emulator calls: %w", err)
	}
	n := 0
	for _, c := range counts {
		if strings.EqualFold(c.ClientID, clientID) && c.Scope == scope {
			n += c.Calls
		}
	}
	return n, nil
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

// MintAndWriteToken has the emulator's issuer mint a fresh projected
// service-account token for the pod's service account and writes it to
// TokenFile the way kubelet rotates it (a new file renamed over the old
// one). The token is never logged.
func (e *Env) MintAndWriteToken(ctx context.Context, lifetime time.Duration) error {
	q := url.Values{"namespace": {Namespace}, "service_account": {ServiceAccount}, "lifetime": {lifetime.String()}}
	tok, err := e.adminDo(ctx, http.MethodPost, "mint", q, nil)
	if err != nil {
		return err
	}
	tmp := e.TokenFile + ".new"
	if err := os.WriteFile(tmp, bytes.TrimSpace(tok), 0o644); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, e.TokenFile)
}
