package app

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/spf13/pflag"

	"github.com/imds-proxy/imds-proxy/internal/logging"
	"github.com/imds-proxy/imds-proxy/pkg/exchange"
)

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// result is what one command execution produced.
type result struct {
	cfg    *Config
	probe  *ProbeConfig
	err    error
	level  slog.Level
	log    string
	stdout string
}

// execute runs the command with args and env, capturing the configuration
// instead of serving or probing.
func execute(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var logs syncBuffer
	var stdout bytes.Buffer
	lv := new(slog.LevelVar)
	var res result
	deps := Deps{
		Args:      args,
		Logger:    logging.New(&logs, lv),
		Level:     lv,
		LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok },
		Stdout:    &stdout,
		Getuid:    func() int { return 1501 },
	}
	cmd := newCommand(deps,
		func(_ context.Context, cfg *Config, _ Deps) error { res.cfg = cfg; return nil },
		func(_ context.Context, pc *ProbeConfig, _ Deps) error { res.probe = pc; return nil })
	res.err = cmd.ExecuteContext(context.Background())
	res.level = lv.Level()
	res.log = logs.String()
	res.stdout = stdout.String()
	return res
}

// webhookEnv is the environment the workload-identity webhook injects.
var webhookEnv = map[string]string{
	"AZURE_TENANT_ID":            "tenant",
	"AZURE_FEDERATED_TOKEN_FILE": "/var/run/secrets/azure/tokens/azure-identity-token",
	"AZURE_AUTHORITY_HOST":       "https://login.microsoftonline.com/",
	"AZURE_CLIENT_ID":            "cid",
}

func TestWebhookArguments(t *testing.T) {
	t.Parallel()
	// The sidecar's args, exactly as the webhook writes them.
	res := execute(t, webhookEnv, "--proxy-port=8000", "--log-level=")
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.cfg.ListenAddr != "127.0.0.1:8000" || res.cfg.Exchange.TenantID != "tenant" || res.cfg.Exchange.DefaultClientID != "cid" ||
		res.cfg.Exchange.TokenFile != "/var/run/secrets/azure/tokens/azure-identity-token" {
		t.Errorf("config %+v", res.cfg)
	}
	if res.level != slog.LevelWarn {
		t.Errorf("level = %v; want warnings only", res.level)
	}
	if res.log != "" {
		t.Errorf("unexpected log output: %s", res.log)
	}

	// The postStart hook, with no AZURE_* variable at all.
	res = execute(t, nil, "--proxy-port=8123", "--probe", "--log-level=info")
	if res.err != nil || res.cfg != nil || res.probe == nil {
		t.Fatalf("probe: err=%v cfg=%v probe=%v", res.err, res.cfg, res.probe)
	}
	if res.probe.BaseURL != "http://127.0.0.1:8123" || res.probe.ClientID != "" || res.probe.Strict {
		t.Errorf("probe config %+v", res.probe)
	}
	if res.level != slog.LevelInfo {
		t.Errorf("level = %v", res.level)
	}
}

func TestUnknownFlagsAndLevelsAreIgnored(t *testing.T) {
	t.Parallel()
	res := execute(t, webhookEnv, "--proxy-port=8000", "--log-level=verbose", "--future-flag=secret-value", "--other", "value", "-z", "stray")
	if res.err != nil {
		t.Fatalf("error: %v", res.err)
	}
	if res.cfg == nil || res.cfg.ListenAddr != "127.0.0.1:8000" {
		t.Fatalf("config %+v", res.cfg)
	}
	if res.level != slog.LevelInfo {
		t.Errorf("level = %v; want info", res.level)
	}
	for _, want := range []string{
		`"level":"warning","msg":"unknown --log-level, using info","logLevel":"verbose"`,
		`"msg":"ignoring unknown flag","flag":"--future-flag"`,
		`"msg":"ignoring unknown flag","flag":"--other"`,
		`"msg":"ignoring unknown flag","flag":"-z"`,
	} {
		if !strings.Contains(res.log, want) {
			t.Errorf("log lacks %s:\n%s", want, res.log)
		}
	}
	if strings.Contains(res.log, "secret-value") {
		t.Error("log carries the value of an unknown flag")
	}
}

func TestEnvFallbacks(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"AZURE_TENANT_ID":                "tenant",
		"AZURE_FEDERATED_TOKEN_FILE":     "/token",
		"PROXY_PORT":                     "8100",
		"IMDS_PROXY_IDENTITIES":          "c1,o1; c2 client_id=c3,object_id=o3",
		"IMDS_PROXY_INSTANCE_METADATA":   "block",
		"IMDS_PROXY_SHUTDOWN_DELAY":      "1s",
		"IMDS_PROXY_EXCHANGE_TIMEOUT":    "3s",
		"AZURE_CLIENT_ID":                "",
		"IMDS_PROXY_PASSTHROUGH_TIMEOUT": "",
	}
	res := execute(t, env)
	if res.err != nil {
		t.Fatal(res.err)
	}
	c := res.cfg
	if c.ListenAddr != "127.0.0.1:8100" || string(c.IMDS.InstanceMetadata) != "block" || c.IMDS.ShutdownDelay.String() != "1s" ||
		c.Exchange.ExchangeTimeout.String() != "3s" || c.Exchange.DefaultClientID != "" || c.IMDS.PassthroughTimeout.String() != "5s" {
		t.Errorf("config %+v", c)
	}
	want := []exchange.Identity{{ClientID: "c1", ObjectID: "o1"}, {ClientID: "c2"}, {ClientID: "c3", ObjectID: "o3"}}
	if len(c.Exchange.Identities) != 3 || c.Exchange.Identities[0] != want[0] || c.Exchange.Identities[1] != want[1] || c.Exchange.Identities[2] != want[2] {
		t.Errorf("identities %+v", c.Exchange.Identities)
	}

	// A flag wins over its variable.
	res = execute(t, env, "--proxy-port=8200", "--identity=x")
	if res.err != nil || res.cfg.ListenAddr != "127.0.0.1:8200" || len(res.cfg.Exchange.Identities) != 1 {
		t.Errorf("flag over env: %v %+v", res.err, res.cfg)
	}
}

func TestCommandErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no tenant", map[string]string{"AZURE_FEDERATED_TOKEN_FILE": "/t"}, nil,
			"AZURE_TENANT_ID (--tenant-id) is not set: the workload identity webhook injects it into pods whose service account is labelled azure.workload.identity/use"},
		{"no token file", map[string]string{"AZURE_TENANT_ID": "t"}, []string{"--proxy-port=8000"},
			"AZURE_FEDERATED_TOKEN_FILE (--federated-token-file) is not set: the workload identity webhook injects it with the projected service account token volume"},
		{"bad PROXY_PORT", map[string]string{"PROXY_PORT": "http"}, []string{"--probe"},
			`invalid PROXY_PORT "http" (--proxy-port): strconv.ParseInt: parsing "http": invalid syntax`},
		{"bad duration env", map[string]string{"AZURE_TENANT_ID": "t", "AZURE_FEDERATED_TOKEN_FILE": "/t", "IMDS_PROXY_SHUTDOWN_DELAY": "5"}, nil,
			`invalid IMDS_PROXY_SHUTDOWN_DELAY "5" (--shutdown-delay): time: missing unit in duration "5"`},
		{"bad port flag", webhookEnv, []string{"--proxy-port=abc"},
			`invalid argument "abc" for "--proxy-port" flag: strconv.ParseInt: parsing "abc": invalid syntax`},
		{"bad authority", map[string]string{"AZURE_TENANT_ID": "t", "AZURE_FEDERATED_TOKEN_FILE": "/t", "AZURE_AUTHORITY_HOST": "login.microsoftonline.com"}, nil,
			`invalid AZURE_AUTHORITY_HOST "login.microsoftonline.com" (--authority-host): must be an https URL`},
		{"tenant unusable in the authority URL", map[string]string{"AZURE_TENANT_ID": "a/b", "AZURE_FEDERATED_TOKEN_FILE": "/t"}, nil,
			`invalid AZURE_TENANT_ID "a/b" (--tenant-id): contains '/': a tenant is a tenant ID (a GUID) or a domain name, made of letters, digits, '-' and '.'`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := execute(t, tt.env, tt.args...)
			if res.err == nil || res.err.Error() != tt.want {
				t.Fatalf("error = %v\nwant    %s", res.err, tt.want)
			}
			if res.cfg != nil || res.probe != nil {
				t.Error("ran despite the error")
			}
		})
	}
}

func TestHelpAndVersion(t *testing.T) {
	t.Parallel()
	res := execute(t, nil, "--help")
	if res.err != nil {
		t.Fatal(res.err)
	}
	for _, want := range []string{
		"--proxy-port int", "(env PROXY_PORT)", "(env AZURE_TENANT_ID)", "(env AZURE_FEDERATED_TOKEN_FILE)",
		"(env AZURE_AUTHORITY_HOST)", "(env AZURE_CLIENT_ID)", "(env IMDS_PROXY_IDENTITIES)", "(env IMDS_PROXY_UPSTREAM)",
		"(env IMDS_PROXY_INSTANCE_METADATA)", "(env IMDS_PROXY_METRICS_ADDR)", "(env IMDS_PROXY_SHUTDOWN_DELAY)",
		"(env IMDS_PROXY_EXCHANGE_TIMEOUT)", "(env IMDS_PROXY_MAX_CONCURRENT_EXCHANGES)", "(env IMDS_PROXY_MAX_CONNECTIONS)", "(env IMDS_PROXY_MIN_REMAINING)", "(env IMDS_PROXY_STALE_GRACE)", "(env PROXY_UID)",
		"--probe-strict", "--version",
	} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	res = execute(t, nil, "--version")
	if res.err != nil || !strings.HasPrefix(res.stdout, "imds-proxy dev go1.") || res.cfg != nil {
		t.Errorf("--version: %v %q", res.err, res.stdout)
	}
}

// TestSingleDashOptions: the upstream proxy reads its options with Go's
// flag package, so manifests written for it say -proxy-port=8006; pflag
// alone would read that as shorthands, ignore it, and bind 8000 while the
// redirect points at 8006.
func TestSingleDashOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		args  []string
		addr  string
		level slog.Level
	}{
		{"one dash with =", []string{"-proxy-port=8006", "-log-level=info"}, "127.0.0.1:8006", slog.LevelInfo},
		{"one dash, value apart", []string{"-proxy-port", "9000", "-log-level", "debug"}, "127.0.0.1:9000", logging.LevelDebug},
		{"two dashes, value apart", []string{"--proxy-port", "9000"}, "127.0.0.1:9000", slog.LevelWarn},
		{"mixed", []string{"-proxy-port=9001", "--log-level=info", "-instance-metadata", "block"}, "127.0.0.1:9001", slog.LevelInfo},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := execute(t, webhookEnv, tt.args...)
			if res.err != nil {
				t.Fatal(res.err)
			}
			if res.cfg.ListenAddr != tt.addr || res.level != tt.level {
				t.Errorf("listen %s level %v; want %s %v", res.cfg.ListenAddr, res.level, tt.addr, tt.level)
			}
			if res.log != "" {
				t.Errorf("unexpected log output: %s", res.log)
			}
		})
	}

	// The postStart hook of a hand-written manifest, booleans included.
	for _, args := range [][]string{
		{"-proxy-port=8006", "-probe", "-log-level=info"},
		{"-proxy-port", "8006", "-probe=true", "-probe-strict"},
	} {
		res := execute(t, nil, args...)
		if res.err != nil || res.cfg != nil || res.probe == nil || res.probe.BaseURL != "http://127.0.0.1:8006" {
			t.Fatalf("%q: err=%v cfg=%v probe=%+v", args, res.err, res.cfg, res.probe)
		}
		if strict := len(args) == 4; res.probe.Strict != strict {
			t.Errorf("%q: strict = %v", args, res.probe.Strict)
		}
	}
	res := execute(t, nil, "-version")
	if res.err != nil || !strings.HasPrefix(res.stdout, "imds-proxy dev go1.") {
		t.Errorf("-version: %v %q", res.err, res.stdout)
	}
}

// TestHostileArguments: values that look like options stay values, "--"
// ends the options, and an unknown one-dash option is reported whole,
// never as a cluster of one-letter shorthands.
func TestHostileArguments(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		addr     string
		logLevel string
		warnings []string
	}{
		{"a log level that starts with a dash", []string{"--log-level", "-x"}, "127.0.0.1:8000", "-x",
			[]string{`"msg":"unknown --log-level, using info","logLevel":"-x"`}},
		{"a log level that looks like an option", []string{"-log-level", "-proxy-port=9"}, "127.0.0.1:8000", "-proxy-port=9",
			[]string{`"msg":"unknown --log-level, using info","logLevel":"-proxy-port=9"`}},
		{"-- ends the options", []string{"-log-level=info", "--", "-proxy-port=9000"}, "127.0.0.1:8000", "info",
			[]string{`"msg":"ignoring positional arguments","count":1`}},
		{"unknown one-dash options", []string{"-future-flag=secret-value", "-proxy-port=8006", "-pz", "-v"}, "127.0.0.1:8006", "",
			[]string{`"flag":"-future-flag"`, `"flag":"-pz"`, `"flag":"-v"`}},
		{"unknown option before a value", []string{"-future", "secret-value", "-proxy-port=8006"}, "127.0.0.1:8006", "",
			[]string{`"msg":"ignoring unknown flag","flag":"-future"`}},
		{"malformed options", []string{"---x", "--=secret-value", "-=secret-value"}, "127.0.0.1:8000", "",
			[]string{`"flag":"---x"`, `"flag":"--="`, `"flag":"-="`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := execute(t, webhookEnv, tt.args...)
			if res.err != nil {
				t.Fatal(res.err)
			}
			if res.cfg.ListenAddr != tt.addr {
				t.Errorf("listen %s, want %s", res.cfg.ListenAddr, tt.addr)
			}
			for _, want := range tt.warnings {
				if !strings.Contains(res.log, want) {
					t.Errorf("log lacks %s:\n%s", want, res.log)
				}
			}
			if got := strings.Count(res.log, "\n"); got != len(tt.warnings) {
				t.Errorf("%d log lines, want %d:\n%s", got, len(tt.warnings), res.log)
			}
			if strings.Contains(res.log, "secret-value") {
				t.Error("log carries the value of an unknown option")
			}
		})
	}
}

// TestNoShorthands: no option has a one-letter shorthand but cobra's -h for
// --help, so no one-dash long option can be read as a cluster of them.
func TestNoShorthands(t *testing.T) {
	t.Parallel()
	cmd := newCommand(Deps{}, nil, nil)
	n := 0
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		n++
		if f.Shorthand != "" && (f.Name != "help" || f.Shorthand != "h") {
			t.Errorf("--%s has the shorthand -%s", f.Name, f.Shorthand)
		}
	})
	if n < 25 {
		t.Errorf("only %d flags visited", n)
	}
	for _, args := range [][]string{{"-h"}, {"-help"}} {
		if res := execute(t, nil, args...); res.err != nil || !strings.Contains(res.stdout, "--proxy-port int") || res.cfg != nil {
			t.Errorf("%q: %v %q", args, res.err, res.stdout)
		}
	}
}
