package imds

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	valid := Config{TenantID: "72f988bf-86f1-41af-91ab-2d7cd011db47"}
	tests := []struct {
		name string
		edit func(*Config)
		want string // "" when valid
	}{
		{"zero values stand for defaults", func(*Config) {}, ""},
		{"every field set", func(c *Config) {
			*c = Config{TenantID: "contoso.onmicrosoft.com", Upstream: "https://[fd00::1]:8443/", InstanceMetadata: InstanceMetadataBlock,
				PassthroughTimeout: time.Second, ShutdownDelay: 0, DrainTimeout: time.Minute, MaxConnections: 1, ExemptUID: 65534}
		}, ""},
		{"defaults filled in", func(c *Config) { *c = c.withDefaults() }, ""},

		{"tenant missing", func(c *Config) { c.TenantID = "" }, `TenantID "": is required`},
		{"tenant with a space", func(c *Config) { c.TenantID = " 72f988bf" },
			`TenantID " 72f988bf": contains ' ': a tenant is a tenant ID (a GUID) or a domain name, made of letters, digits, '-' and '.'`},
		{"tenant with a slash", func(c *Config) { c.TenantID = "t/../common" },
			`TenantID "t/../common": contains '/': a tenant is a tenant ID (a GUID) or a domain name, made of letters, digits, '-' and '.'`},
		{"tenant with a quote", func(c *Config) { c.TenantID = `t","x":"y` },
			`TenantID "t\",\"x\":\"y": contains '"': a tenant is a tenant ID (a GUID) or a domain name, made of letters, digits, '-' and '.'`},
		{"tenant with a control character", func(c *Config) { c.TenantID = "t\n" },
			`TenantID "t\n": contains '\n': a tenant is a tenant ID (a GUID) or a domain name, made of letters, digits, '-' and '.'`},
		{"tenant not UTF-8", func(c *Config) { c.TenantID = "t\xff" },
			`TenantID "t\xff": contains non-ASCII text: a tenant is a tenant ID (a GUID) or a domain name, made of letters, digits, '-' and '.'`},
		{"tenant too long", func(c *Config) { c.TenantID = strings.Repeat("a", 254) },
			`TenantID "` + strings.Repeat("a", 254) + `": is longer than 253 bytes`},

		{"upstream scheme", func(c *Config) { c.Upstream = "ftp://x" }, `Upstream "ftp://x": scheme must be http or https`},
		{"upstream without scheme", func(c *Config) { c.Upstream = "169.254.169.254" }, `Upstream "169.254.169.254": scheme must be http or https`},
		{"upstream host missing", func(c *Config) { c.Upstream = "http://" }, `Upstream "http://": host is missing`},
		{"upstream opaque", func(c *Config) { c.Upstream = "http:169.254.169.254" }, `Upstream "http:169.254.169.254": host is missing`},
		{"upstream path", func(c *Config) { c.Upstream = "http://x/metadata" },
			`Upstream "http://x/metadata": must be scheme://host[:port] without path, query or credentials`},
		{"upstream query", func(c *Config) { c.Upstream = "http://x?a=b" },
			`Upstream "http://x?a=b": must be scheme://host[:port] without path, query or credentials`},
		{"upstream empty query", func(c *Config) { c.Upstream = "http://x?" },
			`Upstream "http://x?": must be scheme://host[:port] without path, query or credentials`},
		{"upstream fragment", func(c *Config) { c.Upstream = "http://x#f" },
			`Upstream "http://x#f": must be scheme://host[:port] without path, query or credentials`},
		{"upstream credentials", func(c *Config) { c.Upstream = "http://u:p@x" },
			`Upstream "http://u:p@x": must be scheme://host[:port] without path, query or credentials`},
		{"upstream port too large", func(c *Config) { c.Upstream = "http://x:65536" }, `Upstream "http://x:65536": port "65536" is not a port number`},
		{"upstream port zero", func(c *Config) { c.Upstream = "http://x:0" }, `Upstream "http://x:0": port "0" is not a port number`},
		{"upstream port not a number", func(c *Config) { c.Upstream = "http://x:http" },
			`Upstream "http://x:http": parse "http://x:http": invalid port ":http" after host`},
		{"upstream control character", func(c *Config) { c.Upstream = "http://x\x00" },
			`Upstream "http://x\x00": parse "http://x\x00": net/url: invalid control character in URL`},

		{"instance metadata mode", func(c *Config) { c.InstanceMetadata = "allow" }, `InstanceMetadata "allow": must be "passthrough" or "block"`},
		{"instance metadata mode case", func(c *Config) { c.InstanceMetadata = "Block" }, `InstanceMetadata "Block": must be "passthrough" or "block"`},

		{"negative passthrough timeout", func(c *Config) { c.PassthroughTimeout = -time.Second }, `PassthroughTimeout "-1s": must not be negative`},
		{"negative shutdown delay", func(c *Config) { c.ShutdownDelay = -time.Nanosecond }, `ShutdownDelay "-1ns": must not be negative`},
		{"negative drain timeout", func(c *Config) { c.DrainTimeout = math.MinInt64 }, `DrainTimeout "-2562047h47m16.854775808s": must not be negative`},
		{"negative connection cap", func(c *Config) { c.MaxConnections = -1 }, `MaxConnections "-1": must not be negative`},
		{"largest UID", func(c *Config) { c.ExemptUID = 4294967294 }, ""},
		{"negative UID", func(c *Config) { c.ExemptUID = -1 }, `ExemptUID "-1": is not a UID (0 to 4294967294)`},
		{"UID of nobody", func(c *Config) { c.ExemptUID = 4294967295 }, `ExemptUID "4294967295": is not a UID (0 to 4294967294)`},

		{"identity header of the minimum length", func(c *Config) { c.IdentityHeader = IdentityHeader(strings.Repeat("a", 32)) }, ""},
		{"identity header of the maximum length", func(c *Config) { c.IdentityHeader = IdentityHeader(strings.Repeat("~", 1024)) }, ""},
		{"identity header too short", func(c *Config) { c.IdentityHeader = "s3cr3t-but-short" },
			`IdentityHeader "[redacted]": is 16 characters long; at least 32 are required (e.g. openssl rand -hex 32)`},
		{"identity header too long", func(c *Config) { c.IdentityHeader = IdentityHeader(strings.Repeat("a", 1025)) },
			`IdentityHeader "[redacted]": is 1025 characters long; at most 1024 are allowed`},
		{"identity header with a space", func(c *Config) { c.IdentityHeader = "0123456789abcdef 0123456789abcdef" },
			`IdentityHeader "[redacted]": character 17 is not visible ASCII (0x21 to 0x7e), which a header value needs`},
		{"identity header with a trailing newline", func(c *Config) { c.IdentityHeader = "0123456789abcdef0123456789abcdef\n" },
			`IdentityHeader "[redacted]": character 33 is not visible ASCII (0x21 to 0x7e), which a header value needs`},
		{"identity header not ASCII", func(c *Config) { c.IdentityHeader = "0123456789abcdef0123456789abcdé" },
			`IdentityHeader "[redacted]": character 31 is not visible ASCII (0x21 to 0x7e), which a header value needs`},

		{"every problem at once", func(c *Config) {
			*c = Config{Upstream: "gopher://x", InstanceMetadata: "x", PassthroughTimeout: -1, ShutdownDelay: -1, DrainTimeout: -1, MaxConnections: -1,
				ExemptUID: -1}
		}, `TenantID "": is required` + "\n" +
			`Upstream "gopher://x": scheme must be http or https` + "\n" +
			`InstanceMetadata "x": must be "passthrough" or "block"` + "\n" +
			`PassthroughTimeout "-1ns": must not be negative` + "\n" +
			`ShutdownDelay "-1ns": must not be negative` + "\n" +
			`DrainTimeout "-1ns": must not be negative` + "\n" +
			`MaxConnections "-1": must not be negative` + "\n" +
			`ExemptUID "-1": is not a UID (0 to 4294967294)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid
			tt.edit(&cfg)
			err := cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v; want nil", err)
				}
				return
			}
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Validate() = %v\nwant %s", err, tt.want)
			}
			// Every problem is a *FieldError naming a field of Config.
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field == "" || fe.Err == nil {
				t.Fatalf("Validate() = %#v; want *FieldError", err)
			}
		})
	}
}

// The command names the flag from FieldError.Field: every problem is
// reachable as its own *FieldError.
func TestValidateFieldErrors(t *testing.T) {
	t.Parallel()
	err := Config{Upstream: "http://x/p", DrainTimeout: -1}.Validate()
	var fields []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("%v is not a *FieldError", e)
		}
		fields = append(fields, fe.Field+"="+fe.Value)
	}
	if got := strings.Join(fields, " "); got != "TenantID= Upstream=http://x/p DrainTimeout=-1ns" {
		t.Errorf("fields = %s", got)
	}
	if !errors.Is(err, errNegative) {
		t.Error("errors.Is does not reach the reason")
	}
}

// parseUpstream checks Config.Upstream; its messages leave the value out,
// which the FieldError around them names.
func TestParseUpstream(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ in, want, err string }{
		{"http://169.254.169.254", "http://169.254.169.254", ""},
		{"http://169.254.169.254/", "http://169.254.169.254", ""},
		{"HTTPS://Host:443", "https://Host:443", ""},
		{"http://x/metadata", "", `must be scheme://host[:port] without path, query or credentials`},
		{"http://x:99999", "", `port "99999" is not a port number`},
	} {
		u, err := parseUpstream(tt.in)
		switch {
		case tt.err != "" && (err == nil || err.Error() != tt.err):
			t.Errorf("parseUpstream(%q) error = %v; want %s", tt.in, err, tt.err)
		case tt.err == "" && (err != nil || u.String() != tt.want):
			t.Errorf("parseUpstream(%q) = %v, %v; want %s", tt.in, u, err, tt.want)
		}
	}
}
