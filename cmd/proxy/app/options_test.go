package app

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/cli"
	"github.com/imds-proxy/imds-proxy/pkg/exchange"
	"github.com/imds-proxy/imds-proxy/pkg/imds"
)

// validOptions are the options of a webhook-injected pod.
func validOptions() *Options {
	o := NewOptions()
	o.TenantID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	o.TokenFile = "/var/run/secrets/azure/tokens/azure-identity-token"
	o.ClientID = "11111111-2222-3333-4444-555555555555"
	return o
}

func TestValidateDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := validOptions().Validate(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		ListenAddr: "127.0.0.1:8000",
		ExemptUID:  1501,
		IMDS: imds.Config{
			TenantID:           "72f988bf-86f1-41af-91ab-2d7cd011db47",
			Upstream:           "http://169.254.169.254",
			InstanceMetadata:   imds.InstanceMetadataPassthrough,
			PassthroughTimeout: 5 * time.Second,
			ShutdownDelay:      5 * time.Second,
			DrainTimeout:       20 * time.Second,
			MaxConnections:     1024,
			ExemptUID:          1501,
		},
		Exchange: exchange.Config{
			TenantID:               "72f988bf-86f1-41af-91ab-2d7cd011db47",
			AuthorityHost:          "https://login.microsoftonline.com/",
			TokenFile:              "/var/run/secrets/azure/tokens/azure-identity-token",
			DefaultClientID:        "11111111-2222-3333-4444-555555555555",
			ExchangeTimeout:        15 * time.Second,
			MinRemaining:           10 * time.Minute,
			StaleGrace:             5 * time.Minute,
			NegativeTTL:            30 * time.Second,
			ForceRefreshInterval:   30 * time.Second,
			MaxIdentities:          64,
			MaxEntries:             1024,
			MaxConcurrentExchanges: 8,
		},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Validate() =\n%+v\nwant\n%+v", cfg, want)
	}
}

func TestValidateTranslates(t *testing.T) {
	t.Parallel()
	o := validOptions()
	o.ProxyPort = 9000
	o.ClientID = ""
	o.Identities = []string{"c1", "c2,o2", "client_id=c3,resource_id=/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x"}
	o.InstanceMetadata = "block"
	o.MetricsAddr = ":9090"
	o.ShutdownDelay = 0
	o.Upstream = "http://127.0.0.1:8080"
	o.AuthorityHost = "https://login.microsoftonline.us/"
	cfg, err := o.Validate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ListenAddr != "127.0.0.1:9000" || cfg.MetricsAddr != ":9090" || cfg.IMDS.InstanceMetadata != imds.InstanceMetadataBlock ||
		cfg.IMDS.ShutdownDelay != 0 || cfg.IMDS.Upstream != "http://127.0.0.1:8080" || cfg.Exchange.DefaultClientID != "" ||
		cfg.Exchange.AuthorityHost != "https://login.microsoftonline.us/" {
		t.Errorf("unexpected config %+v", cfg)
	}
	wantIDs := []exchange.Identity{
		{ClientID: "c1"},
		{ClientID: "c2", ObjectID: "o2"},
		{ClientID: "c3", ResourceID: "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x"},
	}
	if !reflect.DeepEqual(cfg.Exchange.Identities, wantIDs) {
		t.Errorf("identities = %+v", cfg.Exchange.Identities)
	}
}

// TestValidateErrors checks the one line a bad configuration ends the
// start with: every problem, named after the flag or the environment
// variable its value came from, judged by the package that uses the value.
func TestValidateErrors(t *testing.T) {
	t.Parallel()
	const tenantRule = "a tenant is a tenant ID (a GUID) or a domain name, made of letters, digits, '-' and '.'"
	const noTenant = "AZURE_TENANT_ID (--tenant-id) is not set: the workload identity webhook injects it into pods whose service account is labelled azure.workload.identity/use"
	const noTokenFile = "AZURE_FEDERATED_TOKEN_FILE (--federated-token-file) is not set: the workload identity webhook injects it with the projected service account token volume"
	fromEnv := cli.Sources{"tenant-id": "AZURE_TENANT_ID", "authority-host": "AZURE_AUTHORITY_HOST", "exempt-uid": "PROXY_UID"}
	tests := []struct {
		name    string
		modify  func(*Options)
		sources cli.Sources
		want    string
	}{
		{"tenant missing", func(o *Options) { o.TenantID = "" }, nil, noTenant},
		{"tenant blank", func(o *Options) { o.TenantID = "  " }, nil, noTenant},
		{"token file missing", func(o *Options) { o.TokenFile = "" }, nil, noTokenFile},
		{"both missing, one line", func(o *Options) { o.TenantID = ""; o.TokenFile = "" }, nil, noTenant + "; " + noTokenFile},
		// These started the listener and failed only at the first exchange.
		{"tenant with a slash", func(o *Options) { o.TenantID = "a/b" }, nil,
			`invalid --tenant-id "a/b": contains '/': ` + tenantRule},
		{"tenant with a slash, from the environment", func(o *Options) { o.TenantID = "a/b" }, fromEnv,
			`invalid AZURE_TENANT_ID "a/b" (--tenant-id): contains '/': ` + tenantRule},
		{"authority with a query", func(o *Options) { o.AuthorityHost = "https://login.microsoftonline.com/?x=1" }, fromEnv,
			`invalid AZURE_AUTHORITY_HOST "https://login.microsoftonline.com/?x=1" (--authority-host): must not carry a query`},
		{"authority http", func(o *Options) { o.AuthorityHost = "http://login.microsoftonline.com/" }, nil,
			`invalid --authority-host "http://login.microsoftonline.com/": must be an https URL`},
		{"port negative", func(o *Options) { o.ProxyPort = -1 }, nil, `invalid --proxy-port "-1": not a port number`},
		{"port too large", func(o *Options) { o.ProxyPort = 65536 }, cli.Sources{"proxy-port": "PROXY_PORT"},
			`invalid PROXY_PORT "65536" (--proxy-port): not a port number`},
		{"upstream path", func(o *Options) { o.Upstream = "http://169.254.169.254/metadata" }, nil,
			`invalid --upstream "http://169.254.169.254/metadata": must be scheme://host[:port] without path, query or credentials`},
		{"instance metadata", func(o *Options) { o.InstanceMetadata = "deny" }, nil,
			`invalid --instance-metadata "deny": must be "passthrough" or "block"`},
		{"metrics addr", func(o *Options) { o.MetricsAddr = "9090" }, nil, `invalid --metrics-addr "9090": not host:port`},
		{"negative delay", func(o *Options) { o.ShutdownDelay = -time.Second }, nil, `invalid --shutdown-delay "-1s": must not be negative`},
		{"zero exchange timeout", func(o *Options) { o.ExchangeTimeout = 0 }, nil, `invalid --exchange-timeout "0s": must be positive`},
		{"zero passthrough timeout", func(o *Options) { o.PassthroughTimeout = 0 }, nil, `invalid --passthrough-timeout "0s": must be positive`},
		{"max entries", func(o *Options) { o.MaxEntries = 0 }, nil, `invalid --max-entries "0": must be at least 1`},
		{"zero concurrent exchanges", func(o *Options) { o.MaxConcurrentExchanges = 0 }, nil,
			`invalid --max-concurrent-exchanges "0": must be at least 1`},
		{"exempt uid", func(o *Options) { o.ExemptUID = -1 }, fromEnv, `invalid PROXY_UID "-1" (--exempt-uid): is not a UID (0 to 4294967294)`},
		{"identity without client id", func(o *Options) { o.Identities = []string{",oid"} }, nil,
			`invalid --identity ",oid": client id is missing`},
		{"identity bad key", func(o *Options) { o.Identities = []string{"client_id=c,tenant=t"} }, nil,
			`invalid --identity "client_id=c,tenant=t": unknown key "tenant" (want client_id, object_id, resource_id)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := validOptions()
			tt.modify(o)
			cfg, err := o.Validate(tt.sources)
			if err == nil {
				t.Fatalf("Validate() = %+v; want error %s", cfg, tt.want)
			}
			if err.Error() != tt.want {
				t.Fatalf("Validate() error\n got %s\nwant %s", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Error("error spans several lines")
			}
		})
	}
}

func TestProbeConfig(t *testing.T) {
	t.Parallel()
	// --probe needs no AZURE_* variable.
	o := NewOptions()
	o.ProbeStrict = true
	pc, err := o.ProbeConfig()
	if err != nil {
		t.Fatal(err)
	}
	want := &ProbeConfig{BaseURL: "http://127.0.0.1:8000", Resource: "https://management.azure.com/", Strict: true}
	if !reflect.DeepEqual(pc, want) {
		t.Errorf("ProbeConfig() = %+v; want %+v", pc, want)
	}
	o.ClientID = " cid "
	o.WarmupResource = "api://custom"
	o.ProxyPort = 8123
	pc, _ = o.ProbeConfig()
	if pc.ClientID != "cid" || pc.Resource != "api://custom" || pc.BaseURL != "http://127.0.0.1:8123" {
		t.Errorf("ProbeConfig() = %+v", pc)
	}
	o.ProxyPort = 0
	if _, err := o.ProbeConfig(); err == nil || err.Error() != `invalid --proxy-port "0": not a port number` {
		t.Errorf("port 0: %v", err)
	}
}

func TestParseIdentity(t *testing.T) {
	t.Parallel()
	const rid = "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x"
	tests := []struct {
		in      string
		want    exchange.Identity
		wantErr string
	}{
		{"cid", exchange.Identity{ClientID: "cid"}, ""},
		{" cid ", exchange.Identity{ClientID: "cid"}, ""},
		{"cid,oid", exchange.Identity{ClientID: "cid", ObjectID: "oid"}, ""},
		{"cid,oid," + rid, exchange.Identity{ClientID: "cid", ObjectID: "oid", ResourceID: rid}, ""},
		{"cid,," + rid, exchange.Identity{ClientID: "cid", ResourceID: rid}, ""},
		{"client_id=cid", exchange.Identity{ClientID: "cid"}, ""},
		{"object_id=oid,client_id=cid", exchange.Identity{ClientID: "cid", ObjectID: "oid"}, ""},
		{"clientID=cid,principal_id=oid,mi_res_id=" + rid, exchange.Identity{ClientID: "cid", ObjectID: "oid", ResourceID: rid}, ""},
		{"client_id=cid,msi_res_id=" + strings.ToUpper(rid), exchange.Identity{ClientID: "cid", ResourceID: strings.ToUpper(rid)}, ""},
		{"", exchange.Identity{}, "empty identity"},
		{" ", exchange.Identity{}, "empty identity"},
		{",oid", exchange.Identity{}, "client id is missing"},
		{"object_id=oid", exchange.Identity{}, "client id is missing"},
		{"a,b,c,d", exchange.Identity{}, "more than three fields (CLIENT_ID,OBJECT_ID,RESOURCE_ID)"},
		{"cid,oid,rg/x", exchange.Identity{}, `resource id "rg/x" does not start with /subscriptions/`},
		{"client_id=a,client_id=b", exchange.Identity{}, `key "client_id" given twice`},
		{"client_id=a,oid", exchange.Identity{}, `field "oid" is not key=value`},
		{"x=1", exchange.Identity{}, `unknown key "x" (want client_id, object_id, resource_id)`},
	}
	for _, tt := range tests {
		got, err := ParseIdentity(tt.in)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("ParseIdentity(%q) error = %v; want %s", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseIdentity(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func FuzzParseIdentity(f *testing.F) {
	for _, s := range []string{"cid", "cid,oid,/subscriptions/x", "client_id=a,object_id=b", "=,=", ",,,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseIdentity(s)
		if err != nil {
			return
		}
		if id.ClientID == "" {
			t.Fatalf("ParseIdentity(%q) accepted an identity without client id", s)
		}
	})
}

// TestProbeWarmupResource checks the warm-up resource --probe asks for
// when --warmup-resource is not set: the Resource Manager endpoint of the
// authority host's cloud, the public cloud's for hosts of no known cloud.
func TestProbeWarmupResource(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"https://login.microsoftonline.com/":        "https://management.azure.com/",
		"https://login.microsoftonline.com":         "https://management.azure.com/",
		"https://LOGIN.MICROSOFTONLINE.US/":         "https://management.usgovcloudapi.net/",
		"https://login.chinacloudapi.cn/":           "https://management.chinacloudapi.cn/",
		"https://login.partner.microsoftonline.cn/": "https://management.chinacloudapi.cn/",
		"https://127.0.0.1:8443/":                   "https://management.azure.com/",
		"::":                                        "https://management.azure.com/",
	}
	for host, want := range tests {
		o := NewOptions()
		o.AuthorityHost = host
		pc, err := o.ProbeConfig()
		if err != nil || pc.Resource != want {
			t.Errorf("authority host %q: warm-up resource %q, %v; want %q", host, pc.Resource, err, want)
		}
	}
}
