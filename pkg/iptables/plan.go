package iptables

import (
	"strconv"
	"strings"
)

// Names of the table and chains this package manages.
const (
	// Table is the only table the rules touch.
	Table = "nat"
	// BuiltinChain is the built-in chain that receives our single jump.
	BuiltinChain = "OUTPUT"
	// ChainPrefix starts the name of every chain this package owns.
	ChainPrefix = "IMDS_PROXY_"
	// OutputChain receives metadata traffic from BuiltinChain and accepts
	// the proxy's own traffic, so nat leaves it alone.
	OutputChain = ChainPrefix + "OUTPUT"
	// RedirectChain redirects what OutputChain hands it to the proxy.
	RedirectChain = ChainPrefix + "REDIRECT"
)

// Ruleset is the complete state this package maintains in the nat table: our
// chains with their rules, and the one jump at the head of BuiltinChain.
type Ruleset struct {
	// Chains lists our chains in creation order.
	Chains []string
	// Rules lists the rules of our chains, each chain's rules in order.
	Rules []Rule
	// Jump is the rule inserted at position 1 of BuiltinChain.
	Jump Rule
}

// Plan returns the Ruleset for c. It performs no I/O and assumes c is valid
// (see Config.Validate).
func Plan(c Config) Ruleset {
	return Ruleset{
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
				Match:   []string{"-m", "owner", "--uid-owner", strconv.Itoa(c.ProxyUID)},
				Purpose: "proxy UID " + strconv.Itoa(c.ProxyUID) + " reaches the real metadata service",
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
			Chain: BuiltinChain,
			Match: []string{
				"-d", c.MetadataIP.String() + "/32",
				"-p", "tcp", "-m", "tcp", "--dport", strconv.Itoa(int(c.MetadataPort)),
			},
			Purpose: "metadata traffic to " + c.MetadataIP.String() + ":" + strconv.Itoa(int(c.MetadataPort)) + " enters " + OutputChain,
			Target:  []string{"-j", OutputChain},
		},
	}
}

// ChainRules returns the rules of chain in order, rendered as iptables -S
// prints them.
func (rs Ruleset) ChainRules(chain string) []string {
	var out []string
	for _, r := range rs.Rules {
		if r.Chain == chain {
			out = append(out, r.String())
		}
	}
	return out
}

// Owns reports whether chain is one of the Ruleset's chains.
func (rs Ruleset) Owns(chain string) bool {
	for _, c := range rs.Chains {
		if c == chain {
			return true
		}
	}
	return false
}

// String renders the Ruleset in iptables-save syntax, with the jump shown as
// the insertion at position 1 it is. Dry runs print it and golden tests
// compare it.
func (rs Ruleset) String() string {
	var b strings.Builder
	b.WriteString("*" + Table + "\n")
	for _, c := range rs.Chains {
		b.WriteString(":" + c + " - [0:0]\n")
	}
	b.WriteString("-I " + rs.Jump.Chain + " 1" + strings.TrimPrefix(rs.Jump.String(), "-A "+rs.Jump.Chain) + "\n")
	for _, r := range rs.Rules {
		b.WriteString(r.String() + "\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}
