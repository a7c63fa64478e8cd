package app

import (
	"bytes"
	"context"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"

	"github.com/imds-proxy/imds-proxy/pkg/iptables"
)

// envMap is a lookupEnv over a fixed map.
func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// execute runs the command with a run function that records what it got.
func execute(t *testing.T, env map[string]string, args ...string) (*Options, iptables.Config, bool, error) {
	t.Helper()
	var (
		gotCfg iptables.Config
		ran    bool
	)
	cmd, o := NewCommand(args, envMap(env), func(_ context.Context, _ *Options, cfg iptables.Config, _ io.Writer, _ logr.Logger) error {
		gotCfg, ran = cfg, true
		return nil
	})
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	err := cmd.ExecuteContext(context.Background())
	return o, gotCfg, ran, err
}

func TestOptionsValid(t *testing.T) {
	def := iptables.Config{ProxyPort: 8000, ProxyUID: 1501, MetadataIP: netip.MustParseAddr("169.254.169.254"), MetadataPort: 80}
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want iptables.Config
	}{
		{"no args, no env: the webhook's defaults", nil, nil, def},
		{"webhook sets only PROXY_PORT", map[string]string{"PROXY_PORT": "15123"}, nil,
			iptables.Config{ProxyPort: 15123, ProxyUID: 1501, MetadataIP: def.MetadataIP, MetadataPort: 80}},
		{"every env var", map[string]string{"PROXY_PORT": "9000", "PROXY_UID": "0", "METADATA_IP": "10.1.2.3", "METADATA_PORT": "8080"}, nil,
			iptables.Config{ProxyPort: 9000, ProxyUID: 0, MetadataIP: netip.MustParseAddr("10.1.2.3"), MetadataPort: 8080}},
		{"flag wins over env", map[string]string{"PROXY_PORT": "9000"}, []string{"--proxy-port=9001"},
			iptables.Config{ProxyPort: 9001, ProxyUID: 1501, MetadataIP: def.MetadataIP, MetadataPort: 80}},
		{"empty env means unset", map[string]string{"PROXY_PORT": "", "PROXY_UID": ""}, nil, def},
		{"extremes", nil, []string{"--proxy-port=65535", "--proxy-uid=4294967294", "--metadata-port=1"},
			iptables.Config{ProxyPort: 65535, ProxyUID: 4294967294, MetadataIP: def.MetadataIP, MetadataPort: 1}},
		{"modes and knobs", nil, []string{"--check", "--iptables-mode=legacy", "--log-level=debug", "--lock-wait=1"}, def},
		// Go's flag package, which the upstream init container's manifests
		// were written for, takes one dash.
		{"one dash with =", nil, []string{"-proxy-port=9000", "-proxy-uid=0"},
			iptables.Config{ProxyPort: 9000, ProxyUID: 0, MetadataIP: def.MetadataIP, MetadataPort: 80}},
		{"one dash, value apart", map[string]string{"PROXY_PORT": "9000"}, []string{"-proxy-port", "9001", "-metadata-ip", "10.1.2.3", "-metadata-port", "8080"},
			iptables.Config{ProxyPort: 9001, ProxyUID: 1501, MetadataIP: netip.MustParseAddr("10.1.2.3"), MetadataPort: 8080}},
		{"one-dash modes and knobs", nil, []string{"-check", "-iptables-mode", "legacy", "-log-level=debug", "-lock-wait", "1"}, def},
		{"one-dash boolean with =", nil, []string{"-dry-run=true", "-check=false"}, def},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, cfg, ran, err := execute(t, tt.env, tt.args...)
			if err != nil || !ran {
				t.Fatalf("execute: ran=%v err=%v", ran, err)
			}
			if cfg != tt.want {
				t.Errorf("config = %+v, want %+v", cfg, tt.want)
			}
		})
	}
}

func TestOptionsInvalid(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"port not a number", map[string]string{"PROXY_PORT": "abc"}, nil, `invalid PROXY_PORT "abc": want a port number from 1 to 65535`},
		{"port zero", nil, []string{"--proxy-port=0"}, `invalid --proxy-port "0": want a port number from 1 to 65535`},
		{"port too big", nil, []string{"--proxy-port=65536"}, `invalid --proxy-port "65536": want a port number from 1 to 65535`},
		{"port negative", map[string]string{"PROXY_PORT": "-1"}, nil, `invalid PROXY_PORT "-1": want a port number from 1 to 65535`},
		{"port with sign", map[string]string{"PROXY_PORT": "+80"}, nil, `invalid PROXY_PORT "+80": want a port number from 1 to 65535`},
		{"port with space", map[string]string{"PROXY_PORT": " 80"}, nil, `invalid PROXY_PORT " 80": want a port number from 1 to 65535`},
		{"port with shell junk", map[string]string{"PROXY_PORT": "80; rm -rf /"}, nil, `invalid PROXY_PORT "80; rm -rf /": want a port number from 1 to 65535`},
		{"port hex", map[string]string{"PROXY_PORT": "0x50"}, nil, `invalid PROXY_PORT "0x50": want a port number from 1 to 65535`},
		{"metadata port", map[string]string{"METADATA_PORT": "http"}, nil, `invalid METADATA_PORT "http": want a port number from 1 to 65535`},
		{"uid negative", map[string]string{"PROXY_UID": "-1"}, nil, `invalid PROXY_UID "-1": want a numeric UID from 0 to 4294967294`},
		{"uid name", nil, []string{"--proxy-uid=nobody"}, `invalid --proxy-uid "nobody": want a numeric UID from 0 to 4294967294`},
		{"uid too big", map[string]string{"PROXY_UID": "4294967295"}, nil, `invalid PROXY_UID "4294967295": want a numeric UID from 0 to 4294967294`},
		{"uid overflow", map[string]string{"PROXY_UID": "99999999999999999999"}, nil, `invalid PROXY_UID "99999999999999999999": want a numeric UID from 0 to 4294967294`},
		{"ip hostname", map[string]string{"METADATA_IP": "metadata.internal"}, nil, `invalid METADATA_IP "metadata.internal": want an IPv4 address such as 169.254.169.254`},
		{"ip v6", nil, []string{"--metadata-ip=fd00:ec2::254"}, `invalid --metadata-ip "fd00:ec2::254": want an IPv4 address such as 169.254.169.254`},
		{"ip v4-mapped", map[string]string{"METADATA_IP": "::ffff:169.254.169.254"}, nil, `invalid METADATA_IP "::ffff:169.254.169.254": want an IPv4 address such as 169.254.169.254`},
		{"ip cidr", map[string]string{"METADATA_IP": "169.254.169.254/32"}, nil, `invalid METADATA_IP "169.254.169.254/32": want an IPv4 address such as 169.254.169.254`},
		{"ip octal-looking", map[string]string{"METADATA_IP": "169.254.169.0254"}, nil, `invalid METADATA_IP "169.254.169.0254": want an IPv4 address such as 169.254.169.254`},
		{"ip unspecified", map[string]string{"METADATA_IP": "0.0.0.0"}, nil, `invalid METADATA_IP "0.0.0.0": metadata IP 0.0.0.0 is not a unicast address`},
		{"ip multicast", nil, []string{"--metadata-ip=239.1.1.1"}, `invalid --metadata-ip "239.1.1.1": metadata IP 239.1.1.1 is not a unicast address`},
		{"mode", nil, []string{"--iptables-mode=nftables"}, `invalid --iptables-mode "nftables": want auto, nft or legacy`},
		{"two modes", nil, []string{"--check", "--cleanup"}, `--dry-run, --check and --cleanup exclude each other; give at most one`},
		{"log level", nil, []string{"--log-level=verbose"}, `invalid --log-level "verbose": want "" (warnings and errors), info, debug (every iptables step), trace or all`},
		{"lock wait", nil, []string{"--lock-wait=0"}, `invalid --lock-wait 0: want at least 1 second`},
		{"positional argument", nil, []string{"apply"}, `unexpected argument "apply": proxy-init takes flags only`},
		{"unknown flag", nil, []string{"--proxy-prot=1"}, `unknown flag: --proxy-prot`},
		{"unknown one-dash flag", nil, []string{"-proxy-prot=1"}, `unknown flag: --proxy-prot`},
		{"no -v shorthand", nil, []string{"-v"}, `unknown flag: --v`},
		{"no shorthand clusters", nil, []string{"-cd"}, `unknown flag: --cd`},
		{"unknown flag beside --help", nil, []string{"--help", "-bogus"}, `unknown flag: --bogus`},
		{"unknown flag after a valid one", nil, []string{"-check", "-bogus", "value"}, `unknown flag: --bogus`},
		{"three dashes", nil, []string{"---check"}, `bad flag syntax: ---check`},
		{"no name", nil, []string{"-=1"}, `unknown shorthand flag: '=' in -=1`},
		{"a value that starts with a dash", nil, []string{"-log-level", "-check"}, `invalid --log-level "-check": want "" (warnings and errors), info, debug (every iptables step), trace or all`},
		{"a value that looks like a flag", nil, []string{"--proxy-port", "-proxy-port=9000"}, `invalid --proxy-port "-proxy-port=9000": want a port number from 1 to 65535`},
		{"-- ends the flags", nil, []string{"--", "-check"}, `unexpected argument "-check": proxy-init takes flags only`},
		{"missing value", nil, []string{"-proxy-port"}, `flag needs an argument: --proxy-port`},
		{"bad bool", nil, []string{"--check=maybe"}, `invalid argument "maybe" for "--check" flag: strconv.ParseBool: parsing "maybe": invalid syntax`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, ran, err := execute(t, tt.env, tt.args...)
			if ran {
				t.Fatal("run was called with invalid options")
			}
			if err == nil || err.Error() != tt.want {
				t.Fatalf("error = %v\nwant    %s", err, tt.want)
			}
			if code := ExitCode(err); code != ExitInvalidConfig {
				t.Errorf("exit code = %d, want %d", code, ExitInvalidConfig)
			}
		})
	}
}

func TestMainDryRun(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), []string{"--dry-run"}, &stdout, &stderr, envMap(map[string]string{"PROXY_PORT": "8001"}))
	if code != ExitOK {
		t.Fatalf("exit code %d, stderr: %s", code, stderr.String())
	}
	cfg := iptables.Config{ProxyPort: 8001, ProxyUID: 1501, MetadataIP: netip.MustParseAddr("169.254.169.254"), MetadataPort: 80}
	want := "# proxy-init dry run (--iptables-mode=auto): nothing was changed\n" + iptables.Plan(cfg).String()
	if stdout.String() != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", stdout.String(), want)
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr = %q, want nothing", stderr.String())
	}
}

func TestMainVersion(t *testing.T) {
	for _, arg := range []string{"--version", "-version"} {
		var stdout bytes.Buffer
		if code := Main(context.Background(), []string{arg}, &stdout, io.Discard, envMap(nil)); code != ExitOK {
			t.Fatalf("%s: exit code %d", arg, code)
		}
		if got := stdout.String(); got != "proxy-init version dev\n" {
			t.Errorf("%s printed %q", arg, got)
		}
	}
}

func TestMainHelp(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"-help"}} {
		var stdout bytes.Buffer
		if code := Main(context.Background(), args, &stdout, io.Discard, envMap(nil)); code != ExitOK {
			t.Fatalf("%q: exit code %d", args, code)
		}
		if !strings.Contains(stdout.String(), "--proxy-port string") || !strings.Contains(stdout.String(), "(env PROXY_PORT)") {
			t.Errorf("%q printed %q", args, stdout.String())
		}
	}
}

// TestNoShorthands: no flag has a one-letter form but cobra's -h for
// --help, so a one-dash long option can never be read as a cluster of them.
func TestNoShorthands(t *testing.T) {
	cmd, _ := NewCommand(nil, envMap(nil), nil)
	n := 0
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		n++
		if f.Shorthand != "" && (f.Name != "help" || f.Shorthand != "h") {
			t.Errorf("--%s has the shorthand -%s", f.Name, f.Shorthand)
		}
	})
	if n != 13 {
		t.Errorf("visited %d flags, want 13", n)
	}
}

func TestMainTerminationLog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "termination-log")
	if err := os.WriteFile(path, []byte("stale content that must go\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	code := Main(context.Background(), []string{"--termination-log=" + path}, io.Discard, &stderr, envMap(map[string]string{"PROXY_UID": "-5"}))
	if code != ExitInvalidConfig {
		t.Fatalf("exit code %d, want %d", code, ExitInvalidConfig)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "proxy-init: invalid PROXY_UID \"-5\": want a numeric UID from 0 to 4294967294\n"
	if string(got) != want {
		t.Errorf("termination log = %q, want %q", got, want)
	}
	if !strings.Contains(stderr.String(), `"msg":"proxy-init failed"`) || strings.Count(stderr.String(), "\n") != 1 {
		t.Errorf("stderr should hold exactly one JSON error line, got %q", stderr.String())
	}

	// A missing termination log is not created.
	missing := filepath.Join(dir, "absent")
	Main(context.Background(), []string{"--termination-log=" + missing, "--proxy-port=x"}, io.Discard, io.Discard, envMap(nil))
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("termination log was created: %v", err)
	}
}

func TestWriteTerminationLogIsOneBoundedLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	writeTerminationLog(path, &exitError{code: 1, err: errString("first\nsecond\t" + strings.Repeat("é", 3000))})
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(got)
	if strings.Count(s, "\n") != 1 || !strings.HasSuffix(s, "\n") || !strings.HasPrefix(s, "proxy-init: first second éé") {
		t.Errorf("not one line: %.80q", s)
	}
	if len(s) > 4001 {
		t.Errorf("termination log is %d bytes, want at most 4001", len(s))
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// FuzzValidate feeds arbitrary environment values through the real flag and
// env handling. Whatever comes in, the result is either an invalid-config error
// or a config the iptables package accepts, equal to the parsed input.
func FuzzValidate(f *testing.F) {
	f.Add("8000", "1501", "169.254.169.254", "80")
	f.Add("0", "-1", "::1", "65536")
	f.Add("08000", "0001501", "1.2.3.4%eth0", "1e3")
	f.Add("\x00", "\xff", "169.254.169.254\n", "")
	f.Fuzz(func(t *testing.T, port, uid, ip, mport string) {
		env := map[string]string{"PROXY_PORT": port, "PROXY_UID": uid, "METADATA_IP": ip, "METADATA_PORT": mport}
		_, cfg, ran, err := execute(t, env)
		if err != nil {
			if ran || ExitCode(err) != ExitInvalidConfig || strings.Contains(err.Error(), "\n") {
				t.Fatalf("ran=%v code=%d err=%q", ran, ExitCode(err), err)
			}
			return
		}
		if verr := cfg.Validate(); verr != nil {
			t.Fatalf("accepted a config the iptables package rejects: %+v: %v", cfg, verr)
		}
		if ip != "" && cfg.MetadataIP.String() != ip && netip.MustParseAddr(ip) != cfg.MetadataIP {
			t.Fatalf("METADATA_IP %q became %s", ip, cfg.MetadataIP)
		}
		if port != "" {
			if p, perr := strconv.ParseUint(port, 10, 16); perr != nil || uint16(p) != cfg.ProxyPort {
				t.Fatalf("PROXY_PORT %q became %d", port, cfg.ProxyPort)
			}
		}
		if uid != "" {
			if u, perr := strconv.ParseInt(uid, 10, 64); perr != nil || int(u) != cfg.ProxyUID {
				t.Fatalf("PROXY_UID %q became %d", uid, cfg.ProxyUID)
			}
		}
	})
}
