package cli

import (
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// envFixture is a flag set with bound flags of each kind.
type envFixture struct {
	fs    *pflag.FlagSet
	env   *Env
	port  *int
	level *string
	delay *time.Duration
	ids   *[]string
	probe *bool
}

func newEnvFixture() envFixture {
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	x := envFixture{
		fs:    fs,
		port:  fs.Int("proxy-port", 8000, "Port"),
		level: fs.String("log-level", "", "Level"),
		delay: fs.Duration("shutdown-delay", 5*time.Second, "Delay"),
		ids:   fs.StringArray("identity", nil, "Identity"),
		probe: fs.Bool("probe", false, "Probe"),
	}
	x.env = NewEnv(fs)
	x.env.Bind("proxy-port", "PROXY_PORT")
	x.env.Bind("log-level", "LOG_LEVEL")
	x.env.Bind("shutdown-delay", "SHUTDOWN_DELAY")
	x.env.BindList("identity", "IDENTITIES", strings.Fields)
	return x
}

func lookupIn(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestEnvUsageNamesTheVariable(t *testing.T) {
	t.Parallel()
	x := newEnvFixture()
	for flag, want := range map[string]string{
		"proxy-port": "Port (env PROXY_PORT)",
		"identity":   "Identity (env IDENTITIES)",
		"probe":      "Probe",
	} {
		if got := x.fs.Lookup(flag).Usage; got != want {
			t.Errorf("usage of --%s = %q, want %q", flag, got, want)
		}
	}
}

func TestEnvApply(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		argv    []string
		env     map[string]string
		port    int
		level   string
		delay   time.Duration
		ids     []string
		sources Sources
	}{
		{"nothing set", nil, nil, 8000, "", 5 * time.Second, nil, Sources{}},
		{"every variable", nil, map[string]string{"PROXY_PORT": "9000", "LOG_LEVEL": "debug", "SHUTDOWN_DELAY": "1s", "IDENTITIES": "a b\tc"},
			9000, "debug", time.Second, []string{"a", "b", "c"},
			Sources{"proxy-port": "PROXY_PORT", "log-level": "LOG_LEVEL", "shutdown-delay": "SHUTDOWN_DELAY", "identity": "IDENTITIES"}},
		{"the command line wins", []string{"--proxy-port=9001", "--identity=x"}, map[string]string{"PROXY_PORT": "9000", "IDENTITIES": "a b"},
			9001, "", 5 * time.Second, []string{"x"}, Sources{}},
		{"a flag set to its default still wins", []string{"--proxy-port=8000"}, map[string]string{"PROXY_PORT": "9000"},
			8000, "", 5 * time.Second, nil, Sources{}},
		{"empty means unset", nil, map[string]string{"PROXY_PORT": "", "LOG_LEVEL": "", "SHUTDOWN_DELAY": "", "IDENTITIES": ""},
			8000, "", 5 * time.Second, nil, Sources{}},
		{"a list of blanks sets nothing", nil, map[string]string{"IDENTITIES": " \t "}, 8000, "", 5 * time.Second, nil, Sources{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			x := newEnvFixture()
			if err := x.fs.Parse(tt.argv); err != nil {
				t.Fatal(err)
			}
			sources, err := x.env.Apply(lookupIn(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			if *x.port != tt.port || *x.level != tt.level || *x.delay != tt.delay || !reflect.DeepEqual(*x.ids, tt.ids) {
				t.Errorf("port=%d level=%q delay=%v ids=%q; want %d %q %v %q", *x.port, *x.level, *x.delay, *x.ids, tt.port, tt.level, tt.delay, tt.ids)
			}
			if !reflect.DeepEqual(sources, tt.sources) {
				t.Errorf("sources = %v, want %v", sources, tt.sources)
			}
		})
	}
}

func TestEnvApplyErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"PROXY_PORT": "http"}, `invalid PROXY_PORT "http" (--proxy-port): strconv.ParseInt: parsing "http": invalid syntax`},
		{map[string]string{"PROXY_PORT": "80; rm -rf /"}, `invalid PROXY_PORT "80; rm -rf /" (--proxy-port): strconv.ParseInt: parsing "80; rm -rf /": invalid syntax`},
		{map[string]string{"SHUTDOWN_DELAY": "5"}, `invalid SHUTDOWN_DELAY "5" (--shutdown-delay): time: missing unit in duration "5"`},
		{map[string]string{"PROXY_PORT": "1", "SHUTDOWN_DELAY": "x"}, `invalid SHUTDOWN_DELAY "x" (--shutdown-delay): time: invalid duration "x"`},
	}
	for _, tt := range tests {
		x := newEnvFixture()
		_, err := x.env.Apply(lookupIn(tt.env))
		if err == nil || err.Error() != tt.want {
			t.Errorf("Apply(%v) error = %v\nwant %s", tt.env, err, tt.want)
		}
	}
}

func TestSourcesName(t *testing.T) {
	t.Parallel()
	s := Sources{"proxy-port": "PROXY_PORT"}
	if got := s.Name("proxy-port"); got != "PROXY_PORT" {
		t.Errorf("Name(proxy-port) = %q", got)
	}
	if got := s.Name("metadata-ip"); got != "--metadata-ip" {
		t.Errorf("Name(metadata-ip) = %q", got)
	}
	if got := Sources(nil).Name("x"); got != "--x" {
		t.Errorf("nil Sources: Name(x) = %q", got)
	}
}

func TestBindUndefinedFlagPanics(t *testing.T) {
	t.Parallel()
	defer func() {
		if r := recover(); r != "cli: binding undefined flag --nope to NOPE" {
			t.Errorf("recover() = %v", r)
		}
	}()
	NewEnv(pflag.NewFlagSet("x", pflag.ContinueOnError)).Bind("nope", "NOPE")
}

// A secret comes from its variable only: Apply sets it when the variable
// is set and not empty, leaves it alone otherwise, lists it in no Sources
// and puts it in no error, even when another variable is invalid.
func TestEnvSecret(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		initial string
		want    string
	}{
		{"unset", nil, "", ""},
		{"set", map[string]string{"SECRET": "s3cr3t"}, "", "s3cr3t"},
		{"empty means unset", map[string]string{"SECRET": ""}, "kept", "kept"},
		{"taken verbatim", map[string]string{"SECRET": " a b\n"}, "", " a b\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			x := newEnvFixture()
			secret := tt.initial
			x.env.Secret("SECRET", &secret)
			sources, err := x.env.Apply(lookupIn(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			if secret != tt.want {
				t.Errorf("secret = %q, want %q", secret, tt.want)
			}
			if len(sources) != 0 {
				t.Errorf("sources = %v, want none", sources)
			}
		})
	}
	x := newEnvFixture()
	var secret string
	x.env.Secret("SECRET", &secret)
	_, err := x.env.Apply(lookupIn(map[string]string{"SECRET": "s3cr3t-value", "PROXY_PORT": "x"}))
	if err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("Apply error = %v; want the port's error, without the secret", err)
	}
	if x.fs.Lookup("secret") != nil {
		t.Error("Secret defined a flag")
	}
}
