package exchange

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestConfigDefaults(t *testing.T) {
	cfg := Config{TenantID: "t", TokenFile: "/f"}.withDefaults()
	want := Config{
		TenantID:               "t",
		TokenFile:              "/f",
		AuthorityHost:          DefaultAuthorityHost,
		ExchangeTimeout:        15 * time.Second,
		MinRemaining:           10 * time.Minute,
		StaleGrace:             5 * time.Minute,
		NegativeTTL:            30 * time.Second,
		ForceRefreshInterval:   30 * time.Second,
		MaxIdentities:          64,
		MaxEntries:             1024,
		MaxConcurrentExchanges: 8,
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("defaults =\n%+v\nwant\n%+v", cfg, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate(defaults) = %v", err)
	}
	// Explicit values are kept, and withDefaults does not touch what
	// Validate must see: a negative duration stays negative.
	kept := Config{TenantID: "t", TokenFile: "/f", AuthorityHost: "https://h/", ExchangeTimeout: time.Second,
		MinRemaining: -time.Second, MaxEntries: -1}.withDefaults()
	if kept.AuthorityHost != "https://h/" || kept.ExchangeTimeout != time.Second || kept.MinRemaining != -time.Second || kept.MaxEntries != -1 {
		t.Errorf("withDefaults changed explicit values: %+v", kept)
	}
}

// TestValidate: each hostile value yields exactly one *FieldError naming
// the field, with the exact message.
func TestValidate(t *testing.T) {
	valid := func(mutate func(*Config)) Config {
		c := Config{TenantID: "72f988bf-86f1-41af-91ab-2d7cd011db47", TokenFile: "/var/run/secrets/azure/tokens/azure-identity-token"}
		mutate(&c)
		return c
	}
	cases := []struct {
		name  string
		cfg   Config
		field string
		msg   string
	}{
		{"tenant missing", valid(func(c *Config) { c.TenantID = "" }), "TenantID", `TenantID "": is required`},
		{"tenant blank", valid(func(c *Config) { c.TenantID = " \t" }), "TenantID", `TenantID " \t": is required`},
		{"tenant slash", valid(func(c *Config) { c.TenantID = "t/x" }), "TenantID",
			`TenantID "t/x": contains '/': a tenant is a tenant ID (a GUID) or a domain name, made of letters, digits, '-' and '.'`},
		{"tenant dot-dot path", valid(func(c *Config) { c.TenantID = "../common" }), "TenantID",
			`TenantID "../common": contains '/': a tenant is a tenant ID (a GUID) or a domain name, made of letters, digits, '-' and '.'`},
		{"tenant query", valid(func(c *Config) { c.TenantID = "t?x=1" }), "TenantID",
			`TenantID "t?x=1": contains '?': a tenant is a tenant ID (a GUID) or a domain name, made of letters, digits, '-' and '.'`},
		{"tenant fragment", valid(func(c *Config) { c.TenantID = "t#x" }), "TenantID",
			`TenantID "t#x": contains '#': a tenant is a tenant ID (a GUID) or a domain name, made of letters, digits, '-' and '.'`},
		{"tenant percent", valid(func(c *Config) { c.TenantID = "t%2Fx" }), "TenantID",
			`TenantID "t%2Fx": contains '%': a tenant is a tenant ID (a GUID) or a domain name, made of letters, digits, '-' and '.'`},
		{"tenant inner space", valid(func(c *Config) { c.TenantID = "con toso" }), "TenantID",
			`TenantID "con toso": contains ' ': a tenant is a tenant ID (a GUID) or a domain name, made of letters, digits, '-' and '.'`},
		{"tenant trailing newline", valid(func(c *Config) { c.TenantID = "contoso.onmicrosoft.com\n" }), "TenantID",
			`TenantID "contoso.onmicrosoft.com\n": contains '\n': a tenant is a tenant ID (a GUID) or a domain name, made of letters, digits, '-' and '.'`},
		{"tenant NUL", valid(func(c *Config) { c.TenantID = "t\x00" }), "TenantID",
			`TenantID "t\x00": contains '\x00': a tenant is a tenant ID (a GUID) or a domain name, made of letters, digits, '-' and '.'`},
		{"tenant no-break space", valid(func(c *Config) { c.TenantID = "t\u00a0" }), "TenantID",
			`TenantID "t\u00a0": contains non-ASCII text: a tenant is a tenant ID (a GUID) or a domain name, made of letters, digits, '-' and '.'`},
		{"tenant adfs", valid(func(c *Config) { c.TenantID = "ADFS" }), "TenantID",
			`TenantID "ADFS": names an MSAL authority type, not an Entra tenant`},
		{"tenant dstsv2", valid(func(c *Config) { c.TenantID = "dstsv2" }), "TenantID",
			`TenantID "dstsv2": names an MSAL authority type, not an Entra tenant`},
		{"authority http", valid(func(c *Config) { c.AuthorityHost = "http://login.microsoftonline.com/" }), "AuthorityHost",
			`AuthorityHost "http://login.microsoftonline.com/": must be an https URL`},
		{"authority no scheme", valid(func(c *Config) { c.AuthorityHost = "login.microsoftonline.com" }), "AuthorityHost",
			`AuthorityHost "login.microsoftonline.com": must be an https URL`},
		{"authority opaque", valid(func(c *Config) { c.AuthorityHost = "https:login.microsoftonline.com" }), "AuthorityHost",
			`AuthorityHost "https:login.microsoftonline.com": has no host`},
		{"authority no host", valid(func(c *Config) { c.AuthorityHost = "https:///tenant" }), "AuthorityHost",
			`AuthorityHost "https:///tenant": has no host`},
		{"authority port only", valid(func(c *Config) { c.AuthorityHost = "https://:443/" }), "AuthorityHost",
			`AuthorityHost "https://:443/": has no host`},
		{"authority not a URL", valid(func(c *Config) { c.AuthorityHost = "://x" }), "AuthorityHost",
			`AuthorityHost "://x": is not a URL: missing protocol scheme`},
		{"authority bad port", valid(func(c *Config) { c.AuthorityHost = "https://h:port/" }), "AuthorityHost",
			`AuthorityHost "https://h:port/": is not a URL: invalid port ":port" after host`},
		{"authority control character", valid(func(c *Config) { c.AuthorityHost = "https://h/\x7f" }), "AuthorityHost",
			`AuthorityHost "https://h/\x7f": is not a URL: net/url: invalid control character in URL`},
		{"authority user info", valid(func(c *Config) { c.AuthorityHost = "https://user:pw@login.microsoftonline.com/" }), "AuthorityHost",
			`AuthorityHost "https://user:pw@login.microsoftonline.com/": must not carry user information`},
		{"authority query", valid(func(c *Config) { c.AuthorityHost = "https://login.microsoftonline.com/?x=1" }), "AuthorityHost",
			`AuthorityHost "https://login.microsoftonline.com/?x=1": must not carry a query`},
		{"authority empty query", valid(func(c *Config) { c.AuthorityHost = "https://login.microsoftonline.com/?" }), "AuthorityHost",
			`AuthorityHost "https://login.microsoftonline.com/?": must not carry a query`},
		{"authority fragment", valid(func(c *Config) { c.AuthorityHost = "https://login.microsoftonline.com/#x" }), "AuthorityHost",
			`AuthorityHost "https://login.microsoftonline.com/#x": must not carry a fragment`},
		{"authority empty fragment", valid(func(c *Config) { c.AuthorityHost = "https://login.microsoftonline.com/#" }), "AuthorityHost",
			`AuthorityHost "https://login.microsoftonline.com/#": must not carry a fragment`},
		{"authority path", valid(func(c *Config) { c.AuthorityHost = "https://login.microsoftonline.com/common" }), "AuthorityHost",
			`AuthorityHost "https://login.microsoftonline.com/common": must have no path beyond "/"`},
		{"authority double slash", valid(func(c *Config) { c.AuthorityHost = "https://login.microsoftonline.com//" }), "AuthorityHost",
			`AuthorityHost "https://login.microsoftonline.com//": must have no path beyond "/"`},
		{"token file missing", valid(func(c *Config) { c.TokenFile = "" }), "TokenFile", `TokenFile "": is required`},
		{"token file blank", valid(func(c *Config) { c.TokenFile = "  " }), "TokenFile", `TokenFile "  ": is required`},
		{"identity without client id", valid(func(c *Config) {
			c.Identities = []Identity{{ClientID: "a"}, {ObjectID: "o"}}
		}), "Identities[1].ClientID", `Identities[1].ClientID "": is required`},
		{"identity with blank client id", valid(func(c *Config) { c.Identities = []Identity{{ClientID: " ", ObjectID: "o"}} }),
			"Identities[0].ClientID", `Identities[0].ClientID " ": is required`},
		{"negative exchange timeout", valid(func(c *Config) { c.ExchangeTimeout = -time.Second }), "ExchangeTimeout",
			`ExchangeTimeout "-1s": must not be negative`},
		{"negative min remaining", valid(func(c *Config) { c.MinRemaining = -time.Minute }), "MinRemaining",
			`MinRemaining "-1m0s": must not be negative`},
		{"negative stale grace", valid(func(c *Config) { c.StaleGrace = -1 }), "StaleGrace", `StaleGrace "-1ns": must not be negative`},
		{"negative negative TTL", valid(func(c *Config) { c.NegativeTTL = -time.Hour }), "NegativeTTL",
			`NegativeTTL "-1h0m0s": must not be negative`},
		{"negative force refresh interval", valid(func(c *Config) { c.ForceRefreshInterval = -time.Second }), "ForceRefreshInterval",
			`ForceRefreshInterval "-1s": must not be negative`},
		{"negative max identities", valid(func(c *Config) { c.MaxIdentities = -1 }), "MaxIdentities", `MaxIdentities "-1": must not be negative`},
		{"negative max entries", valid(func(c *Config) { c.MaxEntries = -9 }), "MaxEntries", `MaxEntries "-9": must not be negative`},
		{"negative max concurrent exchanges", valid(func(c *Config) { c.MaxConcurrentExchanges = -1 }), "MaxConcurrentExchanges",
			`MaxConcurrentExchanges "-1": must not be negative`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, cfg := range []Config{tc.cfg, tc.cfg.withDefaults()} {
				errs := fieldErrors(t, cfg.Validate())
				if len(errs) != 1 {
					t.Fatalf("Validate = %d errors %v, want 1", len(errs), errs)
				}
				if errs[0].Field != tc.field || errs[0].Error() != tc.msg {
					t.Errorf("Validate = field %q %q\nwant       field %q %q", errs[0].Field, errs[0].Error(), tc.field, tc.msg)
				}
			}
		})
	}
}

// TestValidateAccepts: the shapes real pods have.
func TestValidateAccepts(t *testing.T) {
	for _, cfg := range []Config{
		{TenantID: "72f988bf-86f1-41af-91ab-2d7cd011db47", TokenFile: "/f"},
		{TenantID: "contoso.onmicrosoft.com", TokenFile: "/f", AuthorityHost: "https://login.microsoftonline.com/"},
		{TenantID: "t", TokenFile: "/f", AuthorityHost: "https://login.microsoftonline.us"},
		{TenantID: "t", TokenFile: "/f", AuthorityHost: "HTTPS://LOGIN.CHINACLOUDAPI.CN/"},
		{TenantID: "t", TokenFile: "/f", AuthorityHost: "https://127.0.0.1:8443/"},
		{TenantID: "t", TokenFile: "/f", Identities: []Identity{{ClientID: "c", ObjectID: "o", ResourceID: "/subscriptions/x"}}},
	} {
		if err := cfg.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", cfg, err)
		}
	}
}

// TestValidateReportsEveryField: one error per invalid field, in the order
// of Config, each reachable with errors.As through the join.
func TestValidateReportsEveryField(t *testing.T) {
	cfg := Config{
		TenantID:      "a b",
		AuthorityHost: "http://x",
		Identities:    []Identity{{}, {ClientID: "ok"}, {}},
		NegativeTTL:   -time.Second,
		MaxEntries:    -1,
	}
	err := cfg.Validate()
	var fields []string
	for _, fe := range fieldErrors(t, err) {
		fields = append(fields, fe.Field)
	}
	want := "TenantID AuthorityHost TokenFile Identities[0].ClientID Identities[2].ClientID NegativeTTL MaxEntries"
	if got := strings.Join(fields, " "); got != want {
		t.Errorf("fields = %s\nwant     %s", got, want)
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "TenantID" {
		t.Errorf("errors.As = %v", fe)
	}
	if !errors.Is(err, errRequired) {
		t.Error("errors.Is(err, errRequired) = false")
	}
	wantText := `TenantID "a b": contains ' ': a tenant is a tenant ID (a GUID) or a domain name, made of letters, digits, '-' and '.'
AuthorityHost "http://x": must be an https URL
TokenFile "": is required
Identities[0].ClientID "": is required
Identities[2].ClientID "": is required
NegativeTTL "-1s": must not be negative
MaxEntries "-1": must not be negative`
	if err.Error() != wantText {
		t.Errorf("text =\n%s\nwant\n%s", err, wantText)
	}
}

// TestNewValidates: New applies the defaults, then Validate, and builds
// nothing from an invalid Config.
func TestNewValidates(t *testing.T) {
	_, err := New(Config{TenantID: "t", TokenFile: "/f", ExchangeTimeout: -1}, Deps{Registerer: prometheus.NewRegistry()})
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "ExchangeTimeout" {
		t.Fatalf("New = %v, want a FieldError for ExchangeTimeout", err)
	}
	if want := `exchange config: ExchangeTimeout "-1ns": must not be negative`; err.Error() != want {
		t.Errorf("New = %q, want %q", err, want)
	}
}

// fieldErrors unpacks Validate's result into its *FieldErrors; anything
// else in it fails the test.
func fieldErrors(t *testing.T, err error) []*FieldError {
	t.Helper()
	if err == nil {
		return nil
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("Validate returned %T, want a joined error", err)
	}
	var out []*FieldError
	for _, e := range joined.Unwrap() {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("Validate joined a %T: %v", e, e)
		}
		out = append(out, fe)
	}
	return out
}
