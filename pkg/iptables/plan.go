package iptables

import (
	"strconv"
	"strings"
)

// Names of the tables and chains this package manages.
const (
	// FilterTable holds the guard: it refuses connections to the metadata
	// service that left the nat table without being redirected.
	FilterTable = "filter"
	// NATTable holds the redirect to the proxy.
	NATTable = "nat"
	// BuiltinChain is the built-in chain of each table that receives our
	// single jump.
	BuiltinChain = "OUTPUT"
	// ChainPrefix starts the name of every chain this package owns.
	ChainPrefix = "IMDS_PROXY_"
	// GuardChain, in FilterTable, lets the proxy's own connections to the
	// metadata service pass and refuses every other one that reaches it.
	GuardChain = ChainPrefix + "GUARD"
	// OutputChain, in NATTable, receives metadata traffic from
	// BuiltinChain and accepts the proxy's own traffic, so nat leaves it
	// alone.
	OutputChain = ChainPrefix + "OUTPUT"
	// RedirectChain, in NATTable, redirects what OutputChain hands it to
	// the proxy.
	RedirectChain = ChainPrefix + "REDIRECT"
)

// Ruleset is the complete state this package maintains: our rules in each
// table, in the order Apply writes them.
type Ruleset struct {
	// Tables lists the tables, the guard's (FilterTable) first.
	Tables []TableRules
}

// TableRules is what this package keeps in one table: our chains with their
// rules, and the one jump at the head of the table's BuiltinChain.
type TableRules struct {
	// Table names the table, FilterTable or NATTable.
	Table string
	// Chains lists our chains in creation order.
	Chains []string
	// Rules lists the rules of our chains, each chain's rules in order.
	Rules []Rule
	// Jump is the rule inserted at position 1 of BuiltinChain.
	Jump Rule
}

// Plan returns the Ruleset for c. It performs no I/O and assumes c is valid
// (see Config.Validate).
//
// The filter table comes first, so that Apply has the guard in place before
// it (re)builds the redirect: a run that fails or is interrupted between the
// two leaves a pod that refuses metadata connections rather than one that
// lets them through.
func Plan(c Config) Ruleset {
	return Ruleset{Tables: []TableRules{planGuard(c), planRedirect(c)}}
}

// metadataMatch matches TCP to the metadata service, as iptables -S prints it.
func metadataMatch(c Config) []string {
	return []string{
		"-d", c.MetadataIP.String() + "/32",
		"-p", "tcp", "-m", "tcp", "--dport", strconv.Itoa(int(c.MetadataPort)),
	}
}

// metadataAddr is the metadata endpoint as host:port, for comments.
func metadataAddr(c Config) string {
	return c.MetadataIP.String() + ":" + strconv.Itoa(int(c.MetadataPort))
}

// planGuard returns the filter table's rules. In filter OUTPUT, which the
// kernel runs after nat OUTPUT, a redirected packet already carries its new
// destination (127.0.0.1:ProxyPort), so only a packet that the nat rules did
// not redirect still has the metadata destination there: the jump never
// sees redirected traffic.
//
// An app connection escapes the nat rules when its first packet matches an
// existing conntrack entry, since nat is consulted only for a connection's
// first packet: after the node resets a connection of the proxy's UID, the
// pod keeps a closed entry without NAT for that source port for about 10 s,
// and an app connecting from the same port reuses it. It also escapes when
// somebody flushes or bypasses our nat rules. The guard refuses all of them.
func planGuard(c Config) TableRules {
	uid := strconv.Itoa(c.ProxyUID)
	return TableRules{
		Table:  FilterTable,
		Chains: []string{GuardChain},
		Rules: []Rule{
			{
				// RETURN, not ACCEPT: the guard only takes away. ACCEPT
				// would exempt the proxy's connections from filter rules
				// of others after our jump (an egress policy of the pod),
				// and in filter nothing after our jump rewrites a
				// destination, so there is nothing to protect them from.
				Chain:   GuardChain,
				Match:   []string{"-m", "owner", "--uid-owner", uid},
				Purpose: "proxy UID " + uid + " may connect to the real metadata service",
				Target:  []string{"-j", "RETURN"},
			},
			{
				// SYNs only: a TCP connection can open only with a SYN
				// that passes here, so refusing it refuses the connection,
				// while the kernel's own packets of the proxy's closed
				// connections (resets and TIME-WAIT acknowledgements carry
				// no owner) pass untouched. A reset, not a drop: the
				// client fails at once with "connection refused" and
				// retries, instead of waiting for its connect timeout.
				Chain:   GuardChain,
				Match:   []string{"-p", "tcp", "-m", "tcp", "--tcp-flags", "FIN,SYN,RST,ACK", "SYN"},
				Purpose: "refuse every other connection to the real metadata service",
				Target:  []string{"-j", "REJECT", "--reject-with", "tcp-reset"},
			},
		},
		Jump: Rule{
			Chain:   BuiltinChain,
			Match:   metadataMatch(c),
			Purpose: "metadata traffic to " + metadataAddr(c) + " that nat did not redirect enters " + GuardChain,
			Target:  []string{"-j", GuardChain},
		},
	}
}

// planRedirect returns the nat table's rules, which send metadata traffic to
// the proxy.
func planRedirect(c Config) TableRules {
	uid := strconv.Itoa(c.ProxyUID)
	return TableRules{
		Table:  NATTable,
		Chains: []string{OutputChain, RedirectChain},
		Rules: []Rule{
			{
				// ACCEPT, not RETURN: ACCEPT ends the nat table's
				// traversal for the connection, so it keeps its real
				// destination. RETURN would resume OUTPUT after our jump,
				// where a service mesh's catch-all capture (appended by
				// istio-init or linkerd's proxy-init) would take the
				// proxy's own connection to the metadata service.
				Chain:   OutputChain,
				Match:   []string{"-m", "owner", "--uid-owner", uid},
				Purpose: "proxy UID " + uid + " reaches the real metadata service",
				Target:  []string{"-j", "ACCEPT"},
			},
			{
				Chain:   OutputChain,
				Purpose: "all other metadata traffic goes to the proxy",
				Target:  []string{"-j", RedirectChain},
			},
			{
				Chain:   RedirectChain,
				Match:   []string{"-p", "tcp"},
				Purpose: "redirect to the proxy on 127.0.0.1:" + strconv.Itoa(int(c.ProxyPort)),
				Target:  []string{"-j", "REDIRECT", "--to-ports", strconv.Itoa(int(c.ProxyPort))},
			},
		},
		Jump: Rule{
			Chain:   BuiltinChain,
			Match:   metadataMatch(c),
			Purpose: "metadata traffic to " + metadataAddr(c) + " enters " + OutputChain,
			Target:  []string{"-j", OutputChain},
		},
	}
}

// Table returns the rules rs keeps in table, and whether it keeps any.
func (rs Ruleset) Table(table string) (TableRules, bool) {
	for _, t := range rs.Tables {
		if t.Table == table {
			return t, true
		}
	}
	return TableRules{}, false
}

// String renders the Ruleset in iptables-save syntax, one section per table
// in order, each jump shown as the insertion at position 1 it is. Dry runs
// print it and golden tests compare it.
func (rs Ruleset) String() string {
	var b strings.Builder
	for _, t := range rs.Tables {
		b.WriteString(t.String())
	}
	return b.String()
}

// ChainRules returns the rules of chain in order, rendered as iptables -S
// prints them.
func (t TableRules) ChainRules(chain string) []string {
	var out []string
	for _, r := range t.Rules {
		if r.Chain == chain {
			out = append(out, r.String())
		}
	}
	return out
}

// Owns reports whether chain is one of the table's chains of ours.
func (t TableRules) Owns(chain string) bool {
	for _, c := range t.Chains {
		if c == chain {
			return true
		}
	}
	return false
}

// String renders the table's part of the Ruleset in iptables-save syntax.
func (t TableRules) String() string {
	var b strings.Builder
	b.WriteString("*" + t.Table + "\n")
	for _, c := range t.Chains {
		b.WriteString(":" + c + " - [0:0]\n")
	}
	b.WriteString("-I " + t.Jump.Chain + " 1" + strings.TrimPrefix(t.Jump.String(), "-A "+t.Jump.Chain) + "\n")
	for _, r := range t.Rules {
		b.WriteString(r.String() + "\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// builtin names the table's BuiltinChain in messages, where OUTPUT alone
// would not say which table's.
func (t TableRules) builtin() string {
	return "chain " + BuiltinChain + " of the " + t.Table + " table"
}
