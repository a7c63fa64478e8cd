package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"

	"github.com/imds-proxy/imds-proxy/internal/entraemu"
)

// stringList is a repeatable string flag.
type stringList []string

// String renders the list for flag's usage output.
func (s *stringList) String() string { return strings.Join(*s, " ") }

// Set appends one value.
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// config is the parsed command line.
type config struct {
	opts             entraemu.Options
	apps             stringList
	unfederatedApps  stringList
	subjects         stringList
	federateIssuer   string
	federateAudience string
	invalidResources stringList
	extraHosts       stringList
	caOut            string
	infoOut          string
	adminSocket      string
	saTokenOut       string
	saNamespace      string
	saName           string
	saLifetime       time.Duration
	saRefresh        time.Duration
	logLevel         string
}

// parseFlags turns the arguments into a config; it reads no environment.
func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("emulator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.opts.Tenant, "tenant", "00000000-0000-0000-0000-000000000000", "tenant id the emulator answers for")
	fs.StringVar(&c.opts.Host, "host", "", "host name in the TLS certificate and in Entra URLs (default \"localhost\")")
	fs.Var(&c.extraHosts, "extra-host", "another DNS name or IP for the TLS certificate, e.g. login.microsoftonline.com (repeatable)")
	fs.StringVar(&c.opts.Addr, "addr", "127.0.0.1:0", "Entra TLS listen address")
	fs.StringVar(&c.opts.IssuerAddr, "issuer-addr", "127.0.0.1:0", "cluster OIDC issuer (plain HTTP) listen address")
	fs.StringVar(&c.opts.IssuerHost, "issuer-host", "", "host name in the issuer URL (default: --host when given, else the listener IP)")
	fs.DurationVar(&c.opts.TokenLifetime, "token-lifetime", time.Hour, "lifetime of issued access tokens")
	fs.IntVar(&c.opts.TokenPadding, "token-padding", 0, "bytes of padding claim in access tokens (to exceed 4 KB)")
	fs.DurationVar(&c.opts.KeyCacheTTL, "key-cache-ttl", time.Minute, "how long fetched issuer JWKS are reused")
	fs.BoolVar(&c.opts.EnableAdmin, "admin", false, "serve the admin API under /admin/ on the issuer listener")
	fs.StringVar(&c.adminSocket, "admin-socket", "", "also serve the admin API on this Unix socket (reachable across network namespaces)")
	fs.Var(&c.apps, "app", "app `clientID[,objectID[,resourceID]]` federated with every --federate-subject (repeatable)")
	fs.Var(&c.unfederatedApps, "app-unfederated", "app `clientID[,objectID[,resourceID]]` without federated credentials (repeatable)")
	fs.Var(&c.subjects, "federate-subject", "federated credential subject for every --app, e.g. system:serviceaccount:default:workload (repeatable)")
	fs.StringVar(&c.federateIssuer, "federate-issuer", "", "federated credential issuer (default: the emulator's issuer URL)")
	fs.StringVar(&c.federateAudience, "federate-audience", "api://AzureADTokenExchange", "federated credential audience")
	fs.Var(&c.invalidResources, "invalid-resource", "resource URI answered with AADSTS500011 (repeatable)")
	fs.StringVar(&c.caOut, "ca-out", "", "write the generated CA certificate (PEM) to this file")
	fs.StringVar(&c.infoOut, "info-out", "", "also write the ready JSON line to this file")
	fs.StringVar(&c.saTokenOut, "sa-token-out", "", "mint a service-account token and write it to this file")
	fs.StringVar(&c.saNamespace, "sa-token-namespace", "default", "namespace of the --sa-token-out token")
	fs.StringVar(&c.saName, "sa-token-name", "default", "service account of the --sa-token-out token")
	fs.DurationVar(&c.saLifetime, "sa-token-lifetime", time.Hour, "lifetime of the --sa-token-out token")
	fs.DurationVar(&c.saRefresh, "sa-token-refresh", 0, "rewrite --sa-token-out with a fresh token this often, like kubelet rotation (0: never)")
	fs.StringVar(&c.logLevel, "log-level", "info", "info or debug (debug logs every request)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.logLevel != "info" && c.logLevel != "debug" {
		return nil, fmt.Errorf("--log-level %q is not info or debug", c.logLevel)
	}
	if c.saRefresh < 0 || c.saLifetime <= 0 {
		return nil, errors.New("--sa-token-lifetime must be positive and --sa-token-refresh not negative")
	}
	if c.saRefresh > 0 && c.saTokenOut == "" {
		return nil, errors.New("--sa-token-refresh needs --sa-token-out")
	}
	for _, list := range []struct {
		specs     stringList
		federated bool
	}{{c.apps, true}, {c.unfederatedApps, false}} {
		for _, spec := range list.specs {
			a, err := parseApp(spec)
			if err != nil {
				return nil, err
			}
			if list.federated {
				for _, s := range c.subjects {
					a.Federations = append(a.Federations, entraemu.Federation{Issuer: c.federateIssuer, Subject: s, Audience: c.federateAudience})
				}
			}
			c.opts.Apps = append(c.opts.Apps, a)
		}
	}
	c.opts.InvalidResources = c.invalidResources
	c.opts.ExtraHosts = c.extraHosts
	return c, nil
}

// parseApp parses "clientID[,objectID[,resourceID]]".
func parseApp(spec string) (entraemu.App, error) {
	parts := strings.Split(spec, ",")
	if len(parts) > 3 {
		return entraemu.App{}, fmt.Errorf("app %q: want clientID[,objectID[,resourceID]]", spec)
	}
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	a := entraemu.App{ClientID: parts[0]}
	if a.ClientID == "" || strings.ContainsAny(a.ClientID, "/?#% \t") {
		return entraemu.App{}, fmt.Errorf("app %q: client id %q is empty or holds URL syntax", spec, a.ClientID)
	}
	if len(parts) > 1 {
		a.ObjectID = parts[1]
	}
	if len(parts) > 2 {
		a.ResourceID = parts[2]
		if a.ResourceID != "" && !strings.HasPrefix(a.ResourceID, "/") {
			return entraemu.App{}, fmt.Errorf("app %q: resource id %q does not start with /", spec, a.ResourceID)
		}
	}
	return a, nil
}

// readyLine is the JSON line printed when the emulator is ready.
type readyLine struct {
	AuthorityHost string `json:"authority_host"`
	Authority     string `json:"authority"`
	TokenEndpoint string `json:"token_endpoint"`
	Tenant        string `json:"tenant"`
	IssuerURL     string `json:"issuer_url"`
	AdminURL      string `json:"admin_url,omitempty"`
	AdminSocket   string `json:"admin_socket,omitempty"`
	CAFile        string `json:"ca_file,omitempty"`
	SATokenFile   string `json:"sa_token_file,omitempty"`
	PID           int    `json:"pid"`
}

// run starts the emulator, writes the requested files, prints the ready
// line and serves until ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	level := slog.LevelInfo
	if c.logLevel == "debug" {
		level = slog.LevelDebug
	}
	log := logr.FromSlogHandler(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	c.opts.Logger = log.WithName("entraemu")

	emu, err := entraemu.Start(c.opts)
	if err != nil {
		return err
	}
	defer emu.Close()

	ready := readyLine{
		AuthorityHost: emu.AuthorityHost(), Authority: emu.Authority(), TokenEndpoint: emu.TokenEndpoint(),
		Tenant: emu.Tenant(), IssuerURL: emu.IssuerURL(), PID: os.Getpid(),
	}
	if c.opts.EnableAdmin {
		ready.AdminURL = emu.IssuerURL() + "/admin/"
	}
	if c.caOut != "" {
		if err := writeFileAtomic(c.caOut, emu.CACertPEM()); err != nil {
			return fmt.Errorf("--ca-out: %w", err)
		}
		ready.CAFile = c.caOut
	}
	writeToken := func() error {
		tok, err := emu.MintServiceAccountToken(c.saNamespace, c.saName, c.saLifetime)
		if err != nil {
			return err
		}
		return writeFileAtomic(c.saTokenOut, []byte(tok))
	}
	if c.saTokenOut != "" {
		if err := writeToken(); err != nil {
			return fmt.Errorf("--sa-token-out: %w", err)
		}
		ready.SATokenFile = c.saTokenOut
	}

	errc := make(chan error, 1)
	if c.adminSocket != "" {
		srv, err := serveAdminSocket(c.adminSocket, emu, errc)
		if err != nil {
			return err
		}
		defer func() {
			_ = srv.Close()
			_ = os.Remove(c.adminSocket)
		}()
		ready.AdminSocket = c.adminSocket
	}

	line, err := json.Marshal(ready)
	if err != nil {
		return err
	}
	if c.infoOut != "" {
		if err := writeFileAtomic(c.infoOut, append(line, '\n')); err != nil {
			return fmt.Errorf("--info-out: %w", err)
		}
	}
	if _, err := fmt.Fprintf(stdout, "%s\n", line); err != nil {
		return err
	}
	log.Info("emulator ready", "authorityHost", ready.AuthorityHost, "issuerURL", ready.IssuerURL, "tenant", ready.Tenant)

	var tick <-chan time.Time
	if c.saRefresh > 0 {
		t := time.NewTicker(c.saRefresh)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			log.Info("emulator stopping")
			return nil
		case err := <-errc:
			return err
		case <-tick:
			if err := writeToken(); err != nil {
				log.Error(err, "rotating the service-account token")
			} else {
				log.V(1).Info("service-account token rotated", "file", c.saTokenOut)
			}
		}
	}
}

// serveAdminSocket serves the admin API on a Unix socket, replacing a stale
// socket file.
func serveAdminSocket(path string, emu *entraemu.Emulator, errc chan<- error) (*http.Server, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("--admin-socket: %w", err)
	}
	srv := &http.Server{Handler: emu.AdminHandler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("admin socket: %w", err)
		}
	}()
	return srv, nil
}

// writeFileAtomic writes data to a temporary file beside path and renames
// it over path, so readers never see a partial file (kubelet replaces
// projected tokens atomically too). The file is world-readable: the proxy
// reads the token as UID 1501.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
