package soak

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"

	"github.com/imds-proxy/imds-proxy/internal/podenv"
	"github.com/imds-proxy/imds-proxy/pkg/iptables"
)

// The soak watches for escapes from the redirect independently of the guard
// that should prevent them: a rule of its own, after the guard, counts what
// gets past both.

// escapeComment tags the soak's counting rule in the pod. iptables-save
// escapes some characters (an apostrophe, say), so it holds none of them.
const escapeComment = "imds-proxy soak: app connections that left for the metadata service"

// escapeRule is the soak's counting rule in the pod's mangle table: packets
// to 169.254.169.254:80 from a socket of any UID but the proxy's, of a
// connection that conntrack tracks without the redirect's NAT. The kernel
// runs mangle POSTROUTING after filter OUTPUT, so a packet counted there
// belongs to an app connection that got past proxy-init's redirect and its
// guard and left the pod for the node's metadata service. The rule has no
// target: it only counts.
//
// Two matches keep the kernel's own packets out. "--uid-owner 0-4294967294"
// matches only sockets that have an owner: the resets the kernel sends from
// its control socket (to stray segments of the node's metadata service for
// connections the proxy gave up) have none, and "! --uid-owner 1501" alone
// would count them. Packets that conntrack could not place in a connection
// (INVALID) are not counted either: they cannot open one.
var escapeRule = []string{"POSTROUTING",
	"-d", podenv.MetadataAddr + "/32", "-p", "tcp", "-m", "tcp", "--dport", "80",
	"-m", "owner", "--uid-owner", "0-4294967294",
	"-m", "owner", "!", "--uid-owner", strconv.Itoa(podenv.DefaultProxyUID),
	"-m", "conntrack", "--ctstate", "NEW,RELATED,ESTABLISHED",
	"-m", "conntrack", "!", "--ctstate", "DNAT",
	"-m", "comment", "--comment", escapeComment}

// iptablesBackend is the backend proxy-init chooses in the soak's fresh pod
// namespace (auto mode: nft when no backend holds rules); the soak's rule
// goes into the same one.
const iptablesBackend = "iptables-nft"

// watchEscapes adds escapeRule to the pod's mangle table.
func (s *soak) watchEscapes(ctx context.Context) error {
	argv := podenv.NetnsExec(s.env.Pod, -1, append([]string{iptablesBackend, "-w", "5", "-t", "mangle", "-A"}, escapeRule...)...)
	if out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("adding the escape counter in the pod: %v: %s", err, out)
	}
	return nil
}

// guardCounters is what the pod's kernel counted.
type guardCounters struct {
	// Escaped is the packets escapeRule counted.
	Escaped int64
	// Refused is the SYNs proxy-init's guard answered with a reset.
	Refused int64
}

// readCounters reads escapeRule's and the guard's counters in the pod.
func (s *soak) readCounters(ctx context.Context) (guardCounters, error) {
	var c guardCounters
	dump := func(table string) (string, error) {
		argv := podenv.NetnsExec(s.env.Pod, -1, iptablesBackend+"-save", "-c", "-t", table)
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).Output()
		if err != nil {
			return "", fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
		}
		return string(out), nil
	}
	mangle, err := dump("mangle")
	if err != nil {
		return c, err
	}
	filter, err := dump("filter")
	if err != nil {
		return c, err
	}
	var ok bool
	if c.Escaped, ok = ruleCounter(mangle, func(rule string) bool {
		return strings.HasPrefix(rule, "-A POSTROUTING ") && strings.Contains(rule, ` --comment "`+escapeComment+`"`)
	}); !ok {
		return c, fmt.Errorf("the escape counter is missing from the pod's mangle table:\n%s", mangle)
	}
	if c.Refused, ok = ruleCounter(filter, func(rule string) bool {
		return strings.HasPrefix(rule, "-A "+iptables.GuardChain+" ") && strings.Contains(rule, " -j REJECT ")
	}); !ok {
		return c, fmt.Errorf("proxy-init's guard is missing from the pod's filter table:\n%s", filter)
	}
	return c, nil
}

// ruleCounter returns the packet count of the first rule in an
// iptables-save -c dump that match accepts, given the rule as printed after
// its counters ("-A chain ..."), and whether there was one. Lines that are
// not counted rules are skipped; a count that does not parse counts as no
// rule.
func ruleCounter(save string, match func(rule string) bool) (int64, bool) {
	for _, line := range strings.Split(save, "\n") {
		counters, rule, ok := strings.Cut(strings.TrimRight(line, "\r"), " ")
		if !ok || !strings.HasPrefix(counters, "[") || !strings.HasSuffix(counters, "]") || !strings.HasPrefix(rule, "-A ") {
			continue
		}
		packets, _, ok := strings.Cut(counters[1:len(counters)-1], ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(packets, 10, 64)
		if err != nil || n < 0 {
			continue
		}
		if match(rule) {
			return n, true
		}
	}
	return 0, false
}

// judgeEscapes reads the pod's counters and the node's metadata service's
// log: a packet of an app connection that left the pod for the metadata
// address, or a request there without the proxy's hop marker, fails the
// soak; every connection the clients saw refused in the window after the
// node's IMDS refused must be one the guard refused.
func (s *soak) judgeEscapes(ctx context.Context) error {
	c, err := s.readCounters(ctx)
	if err != nil {
		return err
	}
	if c.Escaped > 0 {
		s.rep.fail("%d packets of app connections left the pod for %s:80 past proxy-init's redirect and guard: an escape, through which an app could ask the node's metadata service for the node's identity",
			c.Escaped, podenv.MetadataAddr)
	}
	direct := 0
	var first string
	for _, req := range s.env.IMDSRequests() {
		if req.Header.Get("X-Imds-Proxy-Hop") == "" {
			if direct == 0 {
				first = req.RequestURI + " from " + req.RemoteAddr
			}
			direct++
		}
	}
	if direct > 0 {
		s.rep.fail("the node's metadata service got %d requests without the proxy's hop marker (an escape); first: %s", direct, first)
	}
	refused := s.stats.errCount(errRefused)
	if refused > c.Refused {
		s.rep.fail("the clients saw %d connections to %s:80 refused while or just after the node's IMDS refused, the guard refused only %d: "+
			"something else refused the rest (the node's IMDS, after an escape the counter missed, or a proxy that stopped listening)",
			refused, podenv.MetadataAddr, c.Refused)
	}
	s.rep.Notes = append(s.rep.Notes, fmt.Sprintf("redirect escapes: %d packets counted leaving the pod, %d direct requests at the node's IMDS; "+
		"the guard refused %d connections in all (%d of them raw connections while or just after the node's IMDS refused)", c.Escaped, direct, c.Refused, refused))
	return nil
}
