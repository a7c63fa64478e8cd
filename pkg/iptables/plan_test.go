package iptables

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/imds-proxy/imds-proxy/internal/golden"
)

func defaultConfig() Config {
	return Config{
		ProxyPort:    DefaultProxyPort,
		ProxyUID:     DefaultProxyUID,
		MetadataIP:   DefaultMetadataIP,
		MetadataPort: DefaultMetadataPort,
	}
}

func TestPlanGolden(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"default", defaultConfig()},
		{"custom-port-and-uid", Config{ProxyPort: 15123, ProxyUID: 2000, MetadataIP: DefaultMetadataIP, MetadataPort: 80}},
		{"other-endpoint", Config{ProxyPort: 8000, ProxyUID: 1501, MetadataIP: netip.MustParseAddr("168.63.129.16"), MetadataPort: 32526}},
		{"extremes", Config{ProxyPort: 65535, ProxyUID: 0, MetadataIP: netip.MustParseAddr("10.0.0.1"), MetadataPort: 1}},
		{"max-uid", Config{ProxyPort: 1, ProxyUID: MaxUID, MetadataIP: DefaultMetadataIP, MetadataPort: 65535}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); err != nil {
				t.Fatalf("Validate() = %v, want nil", err)
			}
			golden.Check(t, tt.name+".golden", Plan(tt.cfg).String())
		})
	}
}

func TestPlanIsDeterministicAndCommented(t *testing.T) {
	rs := Plan(defaultConfig())
	if a, b := rs.String(), Plan(defaultConfig()).String(); a != b {
		t.Fatalf("Plan is not deterministic:\n%s\n%s", a, b)
	}
	var tables []string
	for _, tr := range rs.Tables {
		tables = append(tables, tr.Table)
	}
	// The guard is written first: see Plan.
	if !slices.Equal(tables, []string{FilterTable, NATTable}) {
		t.Fatalf("tables %q, want filter then nat", tables)
	}
	perChain := map[string]int{}
	for _, tr := range rs.Tables {
		if got := tr.ChainRules(BuiltinChain); got != nil {
			t.Errorf("%s table: Rules contains rules for %s: %q; only Jump may go there", tr.Table, BuiltinChain, got)
		}
		if tr.Jump.Chain != BuiltinChain || !slices.Contains(tr.Chains, tr.Jump.Target[len(tr.Jump.Target)-1]) {
			t.Errorf("%s table: jump %q does not lead from %s into our chains", tr.Table, tr.Jump.String(), BuiltinChain)
		}
		for _, r := range append([]Rule{tr.Jump}, tr.Rules...) {
			if r.Purpose == "" {
				t.Errorf("rule %q has no purpose", r.String())
			}
		}
		for _, c := range tr.Chains {
			if !strings.HasPrefix(c, ChainPrefix) {
				t.Errorf("chain %s lacks the prefix %s", c, ChainPrefix)
			}
			perChain[c] = len(tr.ChainRules(c))
		}
	}
	want := map[string]int{GuardChain: 2, OutputChain: 2, RedirectChain: 1}
	if !maps.Equal(perChain, want) {
		t.Errorf("rules per chain %v, want %v", perChain, want)
	}
	if g, _ := rs.Table(FilterTable); !slices.Equal(g.Jump.Match, metadataMatch(defaultConfig())) {
		t.Errorf("the guard's jump matches %q, want the metadata destination as the nat jump does", g.Jump.Match)
	}
}

// ownedChain reports whether chain is one of rs's chains, in any table.
func ownedChain(rs Ruleset, chain string) bool {
	return slices.ContainsFunc(rs.Tables, func(t TableRules) bool { return t.Owns(chain) })
}

func TestRulesetLookups(t *testing.T) {
	rs := Plan(defaultConfig())
	owned := func(chain string) bool { return ownedChain(rs, chain) }
	for _, c := range []string{GuardChain, OutputChain, RedirectChain} {
		if !owned(c) {
			t.Errorf("Owns(%s) = false", c)
		}
	}
	for _, c := range []string{"OUTPUT", "IMDS_PROXY_", "IMDS_PROXY_GUARD2", ""} {
		if owned(c) {
			t.Errorf("Owns(%q) = true", c)
		}
	}
	g, ok := rs.Table(FilterTable)
	if !ok || !g.Owns(GuardChain) || g.Owns(OutputChain) {
		t.Errorf("Table(filter) = %+v, %v", g, ok)
	}
	if _, ok := rs.Table("mangle"); ok {
		t.Error("Table(mangle) found a table we never touch")
	}
}

func TestConfigValidate(t *testing.T) {
	ok := defaultConfig()
	tests := []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"valid", func(*Config) {}, ""},
		{"zero proxy port", func(c *Config) { c.ProxyPort = 0 }, "proxy port must be between 1 and 65535"},
		{"zero metadata port", func(c *Config) { c.MetadataPort = 0 }, "metadata port must be between 1 and 65535"},
		{"negative uid", func(c *Config) { c.ProxyUID = -1 }, "proxy UID must be between 0 and 4294967294"},
		{"uid -1 as unsigned", func(c *Config) { c.ProxyUID = 1<<32 - 1 }, "proxy UID must be between 0 and 4294967294"},
		{"no ip", func(c *Config) { c.MetadataIP = netip.Addr{} }, "metadata IP is not set"},
		{"ipv6", func(c *Config) { c.MetadataIP = netip.MustParseAddr("fd00:ec2::254") }, "metadata IP fd00:ec2::254 is not an IPv4 address"},
		{"ipv4-mapped", func(c *Config) { c.MetadataIP = netip.MustParseAddr("::ffff:169.254.169.254") }, "metadata IP ::ffff:169.254.169.254 is not an IPv4 address"},
		{"unspecified", func(c *Config) { c.MetadataIP = netip.MustParseAddr("0.0.0.0") }, "metadata IP 0.0.0.0 is not a unicast address"},
		{"multicast", func(c *Config) { c.MetadataIP = netip.MustParseAddr("224.0.0.1") }, "metadata IP 224.0.0.1 is not a unicast address"},
		{"broadcast", func(c *Config) { c.MetadataIP = netip.MustParseAddr("255.255.255.255") }, "metadata IP 255.255.255.255 is not a unicast address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.modify(&c)
			err := c.Validate()
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("Validate() = %q, want %q", got, tt.want)
			}
		})
	}
}
