package app

import (
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/imds-proxy/imds-proxy/pkg/iptables"
)

// The tests in this file run proxy-init against the real kernel in network
// namespaces they create, and check where real connections end up.

const (
	imds    = metadataIP + ":80"
	imds443 = metadataIP + ":443"
	proxy   = "127.0.0.1:8000"
	mesh    = "127.0.0.1:15001"

	// foreignRule is somebody else's nat rule that must survive everything
	// we do.
	foreignRule = "-A OUTPUT -p tcp -m tcp --dport 9999 -j RETURN"
	// foreignFilterRule is somebody else's filter rule that must survive
	// everything we do.
	foreignFilterRule = "-A OUTPUT -p tcp -m tcp --dport 25 -j REJECT --reject-with tcp-reset"
	// meshRule is a service mesh's catch-all capture, as iptables lists it.
	meshRule = "-A OUTPUT -p tcp -j REDIRECT --to-ports 15001"
)

// defaultPlan is the plan of the default configuration.
func defaultPlan() iptables.Ruleset {
	return iptables.Plan(iptables.Config{ProxyPort: 8000, ProxyUID: 1501, MetadataIP: iptables.DefaultMetadataIP, MetadataPort: 80})
}

// wantRules is what proxy-init prints on success with the default config:
// each table as iptables-save prints it, our part only.
func wantRules() string {
	var b strings.Builder
	for _, t := range defaultPlan().Tables {
		b.WriteString("*" + t.Table + "\n")
		for _, c := range t.Chains {
			b.WriteString(":" + c + " - [0:0]\n")
		}
		b.WriteString(t.Jump.String() + "\n")
		for _, r := range t.Rules {
			b.WriteString(r.String() + "\n")
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

// refused is what dial reports for a connection the guard (or a host without
// a listener) answers with a reset.
func refused(addr string) string {
	return "error: dial tcp4 " + addr + ": connect: connection refused"
}

// outputRules returns the -A lines of the OUTPUT chain in a save dump of one
// table.
func outputRules(save string) []string {
	var out []string
	for _, l := range strings.Split(save, "\n") {
		if strings.HasPrefix(l, "-A OUTPUT ") {
			out = append(out, l)
		}
	}
	return out
}

// tables returns the filter and the nat table of backend as save prints
// them, so a test can compare the state of both.
func (n *netns) tables(t *testing.T, backend string) string {
	t.Helper()
	return n.save(t, backend, "-t", "filter") + n.save(t, backend, "-t", "nat")
}

// guardCounters returns how many packets entered the guard from filter
// OUTPUT and how many its refusal rule answered with a reset.
func (n *netns) guardCounters(t *testing.T, backend string) (entered, refusedSYNs int) {
	t.Helper()
	r := n.run(t, nil, "iptables-"+backend+"-save", "-c", "-t", "filter")
	if r.code != 0 {
		t.Fatalf("iptables-%s-save -c: exit %d: %s", backend, r.code, r.stderr)
	}
	entered, refusedSYNs = -1, -1
	for _, l := range strings.Split(r.stdout, "\n") {
		var packets, bytes int
		if _, err := fmt.Sscanf(l, "[%d:%d]", &packets, &bytes); err != nil {
			continue
		}
		switch {
		case strings.Contains(l, " -A OUTPUT ") && strings.HasSuffix(l, " -j "+iptables.GuardChain):
			entered = packets
		case strings.Contains(l, " -A "+iptables.GuardChain+" ") && strings.Contains(l, " -j REJECT "):
			refusedSYNs = packets
		}
	}
	if entered < 0 || refusedSYNs < 0 {
		t.Fatalf("no guard in the filter table:\n%s", r.stdout)
	}
	return entered, refusedSYNs
}

func TestKernelApplyCheckCleanup(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"nft", "legacy"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			n := newNetns(t)
			mode := "--iptables-mode=" + backend
			n.iptables(t, backend, strings.Fields(strings.Replace(foreignRule, "-A OUTPUT", "-t nat -A OUTPUT", 1))...)
			n.iptables(t, backend, strings.Fields(strings.Replace(foreignFilterRule, "-A OUTPUT", "-t filter -A OUTPUT", 1))...)
			n.listen(t, proxy, "PROXY")
			n.listen(t, imds, "IMDS")
			n.listen(t, imds443, "IMDS-443")

			// Without rules everyone reaches the metadata address itself, so
			// the assertions below can tell the redirect apart.
			n.expectRoutes(t, []route{{0, imds, "IMDS"}, {1000, imds, "IMDS"}})
			before := n.tables(t, backend)

			r := n.mustProxyInit(t, ExitNotInPlace, mode, "--check")
			const missing = "rules are not in place: chain IMDS_PROXY_GUARD does not exist; chain OUTPUT of the filter table has no jump to IMDS_PROXY_GUARD; " +
				"chain IMDS_PROXY_OUTPUT does not exist; chain IMDS_PROXY_REDIRECT does not exist; chain OUTPUT of the nat table has no jump to IMDS_PROXY_OUTPUT"
			if !strings.Contains(r.stderr, missing) {
				t.Errorf("--check before apply did not say what is missing:\n%s", r.stderr)
			}

			r = n.mustProxyInit(t, ExitOK, mode)
			if r.stdout != wantRules() {
				t.Errorf("apply printed:\n%s\nwant:\n%s", r.stdout, wantRules())
			}
			n.expectRoutes(t, []route{
				{0, imds, "PROXY"},
				{1000, imds, "PROXY"},
				{1501, imds, "IMDS"},
				{0, imds443, "IMDS-443"},
				{1501, imds443, "IMDS-443"},
				{0, proxy, "PROXY"},
			})
			once := n.tables(t, backend)
			if got := outputRules(n.save(t, backend, "-t", "nat")); len(got) != 2 || got[1] != foreignRule || !strings.Contains(got[0], "-j IMDS_PROXY_OUTPUT") {
				t.Errorf("nat OUTPUT after apply = %q, want our jump then %q", got, foreignRule)
			}
			if got := outputRules(n.save(t, backend, "-t", "filter")); len(got) != 2 || got[1] != foreignFilterRule || !strings.Contains(got[0], "-j IMDS_PROXY_GUARD") {
				t.Errorf("filter OUTPUT after apply = %q, want our jump then %q", got, foreignFilterRule)
			}

			n.mustProxyInit(t, ExitOK, mode)
			if twice := n.tables(t, backend); twice != once {
				t.Errorf("second apply changed the ruleset:\n%s\nafter one apply:\n%s", twice, once)
			}
			other := map[string]string{"nft": "legacy", "legacy": "nft"}[backend]
			if s := n.save(t, other); strings.Contains(s, "IMDS_PROXY") {
				t.Errorf("the %s backend holds our rules:\n%s", other, s)
			}
			n.mustProxyInit(t, ExitOK, mode, "--check")

			n.mustProxyInit(t, ExitOK, mode, "--cleanup")
			if after := n.tables(t, backend); after != before {
				t.Errorf("cleanup left:\n%s\nbefore apply:\n%s", after, before)
			}
			n.mustProxyInit(t, ExitNotInPlace, mode, "--check")
			n.mustProxyInit(t, ExitOK, mode, "--cleanup")
			if after := n.tables(t, backend); after != before {
				t.Errorf("second cleanup changed:\n%s\nbefore apply:\n%s", after, before)
			}
			n.expectRoutes(t, []route{{0, imds, "IMDS"}, {1000, imds, "IMDS"}})
		})
	}
}

// TestKernelGuardRefusesWhatNATMisses: the guard in the filter table sees
// only metadata connections the nat rules did not redirect. Redirected
// connections never enter it; the proxy's own pass through it; and when
// our nat jump is gone (an escape without conntrack tricks: somebody
// deleted or flushed our nat rules) every other UID gets a reset instead of
// the node's metadata service, while UID 1501 still reaches it. A rerun
// restores the redirect.
func TestKernelGuardRefusesWhatNATMisses(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"nft", "legacy"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			n := newNetns(t)
			mode := "--iptables-mode=" + backend
			n.listen(t, proxy, "PROXY")
			n.listen(t, imds, "IMDS")
			n.listen(t, imds443, "IMDS-443")
			n.mustProxyInit(t, ExitOK, mode)

			n.expectRoutes(t, []route{{0, imds, "PROXY"}, {1000, imds, "PROXY"}})
			if entered, refusedSYNs := n.guardCounters(t, backend); entered != 0 || refusedSYNs != 0 {
				t.Errorf("redirected connections: %d packets entered the guard, %d SYNs refused; want none", entered, refusedSYNs)
			}
			n.expectRoutes(t, []route{{1501, imds, "IMDS"}})
			if entered, refusedSYNs := n.guardCounters(t, backend); entered == 0 || refusedSYNs != 0 {
				t.Errorf("UID 1501's connection: %d packets entered the guard, %d SYNs refused; want some and none", entered, refusedSYNs)
			}

			// The nat jump goes: nothing redirects any more.
			n.iptables(t, backend, "-t", "nat", "-D", "OUTPUT", "1")
			n.expectRoutes(t, []route{
				{0, imds, refused(imds)},
				{1000, imds, refused(imds)},
				{1501, imds, "IMDS"},
				{1000, imds443, "IMDS-443"},
				{1000, proxy, "PROXY"},
			})
			if _, refusedSYNs := n.guardCounters(t, backend); refusedSYNs != 2 {
				t.Errorf("the guard refused %d SYNs, want 2 (one per refused connection)", refusedSYNs)
			}
			log := termLog(t)
			n.mustProxyInit(t, ExitNotInPlace, mode, "--check", "--termination-log="+log)
			wantTermination(t, log, "rules are not in place: chain OUTPUT of the nat table has no jump to IMDS_PROXY_OUTPUT")

			// The whole nat table flushed and our chains deleted.
			n.iptables(t, backend, "-t", "nat", "-F")
			n.iptables(t, backend, "-t", "nat", "-X")
			n.expectRoutes(t, []route{{1000, imds, refused(imds)}, {1501, imds, "IMDS"}})

			n.mustProxyInit(t, ExitOK, mode)
			n.mustProxyInit(t, ExitOK, mode, "--check")
			n.expectRoutes(t, []route{{1000, imds, "PROXY"}, {1501, imds, "IMDS"}})
			if _, refusedSYNs := n.guardCounters(t, backend); refusedSYNs != 3 {
				t.Errorf("the guard refused %d SYNs in all, want 3", refusedSYNs)
			}
		})
	}
}

// TestKernelCheckAndApplyWhenJumpIsNotFirst: another tool inserts a rule in
// front of one of our jumps. In nat, a RETURN there keeps the app's metadata
// traffic from being redirected, and the guard refuses it; in filter, an
// ACCEPT there lets such traffic past the guard. --check says which jump
// is not first, and a rerun puts it first again, keeping the other rule.
func TestKernelCheckAndApplyWhenJumpIsNotFirst(t *testing.T) {
	t.Parallel()
	tests := []struct {
		table string
		// rule is inserted at position 1, as iptables lists it.
		rule string
		// routes are the paths with that rule in front of our jump.
		routes []route
		jump   string
	}{
		{"nat", "-A OUTPUT -d 169.254.169.254/32 -p tcp -j RETURN",
			[]route{{0, imds, refused(imds)}, {1501, imds, "IMDS"}}, "-j IMDS_PROXY_OUTPUT"},
		{"filter", "-A OUTPUT -d 169.254.169.254/32 -p tcp -j ACCEPT",
			// The redirect still works; only an escape would pass the guard.
			[]route{{0, imds, "PROXY"}, {1501, imds, "IMDS"}}, "-j IMDS_PROXY_GUARD"},
	}
	for _, tt := range tests {
		t.Run(tt.table, func(t *testing.T) {
			t.Parallel()
			n := newNetns(t)
			n.listen(t, proxy, "PROXY")
			n.listen(t, imds, "IMDS")
			n.mustProxyInit(t, ExitOK)
			n.iptables(t, "nft", append([]string{"-t", tt.table, "-I", "OUTPUT", "1"}, strings.Fields(strings.TrimPrefix(tt.rule, "-A OUTPUT "))...)...)
			n.expectRoutes(t, tt.routes)

			log := termLog(t)
			r := n.mustProxyInit(t, ExitNotInPlace, "--check", "--termination-log="+log)
			why := "our jump is not first in chain OUTPUT of the " + tt.table + " table: it is at position 2, behind [" + tt.rule + "]"
			if !strings.Contains(r.stderr, why) {
				t.Errorf("--check did not explain the order:\n%s", r.stderr)
			}
			wantTermination(t, log, "rules are not in place: "+why)

			n.mustProxyInit(t, ExitOK)
			rules := outputRules(n.save(t, "nft", "-t", tt.table))
			if len(rules) != 2 || !strings.HasSuffix(rules[0], tt.jump) || rules[1] != tt.rule {
				t.Errorf("%s OUTPUT after re-apply = %q, want our jump first and the other rule kept", tt.table, rules)
			}
			n.mustProxyInit(t, ExitOK, "--check")
			n.expectRoutes(t, []route{{0, imds, "PROXY"}, {1501, imds, "IMDS"}})
		})
	}
}

// TestKernelMeshCatchAllDoesNotTakeIMDSTraffic: istio-init and linkerd's
// proxy-init capture all outgoing TCP with a rule in nat OUTPUT, before or
// after ours. Apps' metadata traffic still reaches the proxy, and the
// proxy's own (UID 1501) still reaches the real metadata service: its rule
// ends nat processing, so the catch-all after our jump never sees it.
// Without a listener on the mesh port a capture would show as a refused
// connection; with a decoy, as its banner.
func TestKernelMeshCatchAllDoesNotTakeIMDSTraffic(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"nft", "legacy"} {
		for _, decoy := range []bool{true, false} {
			name := backend + "/nothing on the mesh port"
			if decoy {
				name = backend + "/decoy on the mesh port"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				n := newNetns(t)
				mode := "--iptables-mode=" + backend
				n.listen(t, proxy, "PROXY")
				n.listen(t, imds, "IMDS")
				n.listen(t, imds443, "IMDS-443")
				captured := "error: dial tcp4 " + imds443 + ": connect: connection refused"
				if decoy {
					n.listen(t, mesh, "MESH")
					captured = "MESH"
				}
				catchAll := strings.Fields(strings.Replace(meshRule, "-A OUTPUT", "-t nat -A OUTPUT", 1))
				n.iptables(t, backend, catchAll...)
				n.expectRoutes(t, []route{{0, imds443, captured}})

				n.mustProxyInit(t, ExitOK, mode)
				// A mesh that appends its capture again after us.
				n.iptables(t, backend, catchAll...)
				n.expectRoutes(t, []route{
					{0, imds, "PROXY"},
					{1000, imds, "PROXY"},
					{1501, imds, "IMDS"},
					{0, imds443, captured},
					{1501, imds443, captured},
				})
				rules := outputRules(n.save(t, backend, "-t", "nat"))
				if len(rules) != 3 || rules[1] != meshRule || rules[2] != meshRule {
					t.Errorf("OUTPUT = %q, want our jump and both mesh rules", rules)
				}
				n.mustProxyInit(t, ExitOK, mode, "--check")
			})
		}
	}
}

// TestKernelPreviousReleasesAreReplaced: the release before the guard wrote
// the nat table alone, and the releases before that also let the proxy's
// UID leave our nat chain with RETURN. --check calls either ruleset not in
// place, a rerun replaces it (writing only the tables that differ), and
// --cleanup removes it.
func TestKernelPreviousReleasesAreReplaced(t *testing.T) {
	t.Parallel()
	const uidRule = `-A IMDS_PROXY_OUTPUT -m owner --uid-owner 1501 -m comment --comment "imds-proxy: proxy UID 1501 reaches the real metadata service"`
	const noGuard = "rules are not in place: chain IMDS_PROXY_GUARD does not exist; chain OUTPUT of the filter table has no jump to IMDS_PROXY_GUARD"
	releases := []struct {
		name   string
		target string // of the proxy UID's nat rule
		// routes are the paths under that release, with a mesh catch-all
		// after its jump and nothing on the mesh port.
		routes []route
		want   string // the termination message of --check
	}{
		{"before the guard", "ACCEPT",
			[]route{{1000, imds, "PROXY"}, {1501, imds, "IMDS"}}, noGuard},
		{"with RETURN", "RETURN",
			[]route{{1000, imds, "PROXY"}, {1501, imds, refused(imds)}},
			noGuard + "; rule 1 of chain IMDS_PROXY_OUTPUT is [" + uidRule + " -j RETURN], want [" + uidRule + " -j ACCEPT]"},
	}
	for _, backend := range []string{"nft", "legacy"} {
		for _, rel := range releases {
			t.Run(backend+"/"+rel.name, func(t *testing.T) {
				t.Parallel()
				n := newNetns(t)
				mode := "--iptables-mode=" + backend
				n.listen(t, proxy, "PROXY")
				n.listen(t, imds, "IMDS")
				// The mesh port has no listener: a captured connection fails.
				catchAll := strings.Fields(strings.Replace(meshRule, "-A OUTPUT", "-t nat -A OUTPUT", 1))
				before := n.tables(t, backend)
				n.installPreviousRelease(t, backend, rel.target)
				n.iptables(t, backend, catchAll...)
				n.expectRoutes(t, rel.routes)

				log := termLog(t)
				n.mustProxyInit(t, ExitNotInPlace, mode, "--check", "--termination-log="+log)
				wantTermination(t, log, rel.want)

				natBefore := n.save(t, backend, "-t", "nat")
				r := n.mustProxyInit(t, ExitOK, mode)
				if r.stdout != wantRules() {
					t.Errorf("rerun printed:\n%s\nwant:\n%s", r.stdout, wantRules())
				}
				if nat := n.save(t, backend, "-t", "nat"); rel.target == "ACCEPT" && nat != natBefore {
					t.Errorf("the rerun rewrote a nat table that was in place:\n%s\nbefore:\n%s", nat, natBefore)
				}
				n.mustProxyInit(t, ExitOK, mode, "--check")
				n.expectRoutes(t, []route{{1000, imds, "PROXY"}, {1501, imds, "IMDS"}})

				// --cleanup removes an old ruleset as well.
				n.mustProxyInit(t, ExitOK, mode, "--cleanup")
				n.iptables(t, backend, "-t", "nat", "-D", "OUTPUT", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "15001")
				n.installPreviousRelease(t, backend, rel.target)
				n.mustProxyInit(t, ExitOK, mode, "--cleanup")
				if after := n.tables(t, backend); after != before {
					t.Errorf("cleanup of the previous release left:\n%s\nbefore:\n%s", after, before)
				}
			})
		}
	}
}

// installPreviousRelease writes the default ruleset as releases before the
// guard wrote it: the nat table only, with target for the proxy's UID.
func (n *netns) installPreviousRelease(t *testing.T, backend, target string) {
	t.Helper()
	nat, ok := defaultPlan().Table(iptables.NATTable)
	if !ok {
		t.Fatal("the plan has no nat table")
	}
	nat.Rules[0].Target = []string{"-j", target}
	for _, chain := range nat.Chains {
		n.iptables(t, backend, "-t", "nat", "-N", chain)
	}
	for _, r := range nat.Rules {
		n.iptables(t, backend, append([]string{"-t", "nat", "-A", r.Chain}, r.Spec()...)...)
	}
	n.iptables(t, backend, append([]string{"-t", "nat", "-I", "OUTPUT", "1"}, nat.Jump.Spec()...)...)
}

func TestKernelAutoModeFollowsExistingRules(t *testing.T) {
	t.Parallel()
	t.Run("legacy rules present", func(t *testing.T) {
		t.Parallel()
		n := newNetns(t)
		n.listen(t, proxy, "PROXY")
		n.listen(t, imds, "IMDS")
		n.iptables(t, "legacy", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "9999", "-j", "RETURN")

		r := n.mustProxyInit(t, ExitOK)
		if !strings.Contains(r.stderr, `"msg":"chose iptables backend","logger":"proxy-init","backend":"legacy"`) {
			t.Errorf("auto mode did not choose legacy:\n%s", r.stderr)
		}
		if r.stdout != wantRules() {
			t.Errorf("apply printed:\n%s\nwant:\n%s", r.stdout, wantRules())
		}
		once := n.save(t, "legacy", "-t", "nat")
		if !strings.Contains(once, ":IMDS_PROXY_OUTPUT") {
			t.Errorf("legacy holds no rules of ours:\n%s", once)
		}
		if s := n.save(t, "nft"); strings.Contains(s, "IMDS_PROXY") {
			t.Errorf("nft holds our rules:\n%s", s)
		}
		n.expectRoutes(t, []route{{0, imds, "PROXY"}, {1501, imds, "IMDS"}})

		// A rerun must not flip backends.
		r = n.mustProxyInit(t, ExitOK)
		if !strings.Contains(r.stderr, `"backend":"legacy"`) {
			t.Errorf("rerun did not stay on legacy:\n%s", r.stderr)
		}
		if twice := n.save(t, "legacy", "-t", "nat"); twice != once {
			t.Errorf("second apply changed the ruleset:\n%s\nwant:\n%s", twice, once)
		}
		n.mustProxyInit(t, ExitOK, "--check")

		// Rules of ours in the other backend are reported, not silently kept.
		n.mustProxyInit(t, ExitOK, "--iptables-mode=nft")
		r = n.mustProxyInit(t, ExitOK, "--check")
		if !strings.Contains(r.stderr, `the other iptables backend also holds imds-proxy rules and the kernel evaluates both; remove them with --cleanup --iptables-mode=nft","logger":"proxy-init","backend":"legacy","otherBackend":"nft"`) {
			t.Errorf("no warning about our rules in nft:\n%s", r.stderr)
		}
		n.mustProxyInit(t, ExitOK, "--iptables-mode=nft", "--cleanup")
		if s := n.save(t, "nft"); strings.Contains(s, "IMDS_PROXY") {
			t.Errorf("nft still holds our rules:\n%s", s)
		}

		n.mustProxyInit(t, ExitOK, "--cleanup")
		if s := n.save(t, "legacy", "-t", "nat"); strings.Contains(s, "IMDS_PROXY") || len(outputRules(s)) != 1 {
			t.Errorf("legacy after cleanup:\n%s", s)
		}
		if s := n.save(t, "legacy", "-t", "filter"); strings.Contains(s, "IMDS_PROXY") || len(outputRules(s)) != 0 {
			t.Errorf("legacy filter table after cleanup:\n%s", s)
		}
	})
	t.Run("legacy filter rules only", func(t *testing.T) {
		t.Parallel()
		n := newNetns(t)
		n.listen(t, proxy, "PROXY")
		n.listen(t, imds, "IMDS")
		// An egress policy in the legacy filter table, and no nat rule at all.
		n.iptables(t, "legacy", strings.Fields(strings.Replace(foreignFilterRule, "-A OUTPUT", "-t filter -A OUTPUT", 1))...)

		r := n.mustProxyInit(t, ExitOK)
		if !strings.Contains(r.stderr, `"backend":"legacy","reason":"nft holds 0 rules in 0 chains of its own, legacy 1 rules in 0; using legacy"`) {
			t.Errorf("auto mode did not choose legacy for a legacy filter rule:\n%s", r.stderr)
		}
		if r.stdout != wantRules() {
			t.Errorf("apply printed:\n%s\nwant:\n%s", r.stdout, wantRules())
		}
		if s := n.save(t, "nft"); strings.Contains(s, "IMDS_PROXY") {
			t.Errorf("nft holds our rules:\n%s", s)
		}
		n.expectRoutes(t, []route{{1000, imds, "PROXY"}, {1501, imds, "IMDS"}})
		n.mustProxyInit(t, ExitOK, "--cleanup")
		if got := outputRules(n.save(t, "legacy", "-t", "filter")); len(got) != 1 || got[0] != foreignFilterRule {
			t.Errorf("legacy filter OUTPUT after cleanup = %q, want only %q", got, foreignFilterRule)
		}
	})
	t.Run("fresh namespace", func(t *testing.T) {
		t.Parallel()
		n := newNetns(t)
		r := n.mustProxyInit(t, ExitOK)
		if !strings.Contains(r.stderr, `"backend":"nft","reason":"nft holds 0 rules in 0 chains of its own, legacy 0 rules in 0; neither holds rules, using nft"`) {
			t.Errorf("auto mode in a fresh namespace did not choose nft:\n%s", r.stderr)
		}
		if s := n.save(t, "legacy"); strings.Contains(s, "IMDS_PROXY") {
			t.Errorf("legacy holds our rules:\n%s", s)
		}
		n.mustProxyInit(t, ExitOK, "--cleanup")
		if s := n.tables(t, "nft"); strings.Contains(s, "IMDS_PROXY") || len(outputRules(s)) != 0 {
			t.Errorf("nft after cleanup:\n%s", s)
		}
	})
}

// TestKernelChildProcessesAsOtherUIDs repeats the key paths with separate
// client processes started with SysProcAttr.Credential, the way a container's
// process runs under its UID, instead of a thread's filesystem UID: the
// redirect, and the guard once the nat jump is gone.
func TestKernelChildProcessesAsOtherUIDs(t *testing.T) {
	t.Parallel()
	n := newNetns(t)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("bash is needed for the client processes: %v", err)
	}
	n.listen(t, proxy, "PROXY")
	n.listen(t, imds, "IMDS")
	n.mustProxyInit(t, ExitOK)
	dialAs := func(uid int, addr string) (string, error) {
		return inNetns(n, -1, func() (string, error) {
			// Started from a thread inside the namespace, the child inherits it.
			host, port, _ := strings.Cut(addr, ":")
			cmd := exec.Command(bash, "-c", `exec 3<>"/dev/tcp/$0/$1" && cat <&3`, host, port)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
			cmd.Dir = "/"
			out, err := cmd.CombinedOutput()
			return string(out), err
		})
	}
	for _, c := range []route{{0, imds, "PROXY"}, {1000, imds, "PROXY"}, {1501, imds, "IMDS"}} {
		if got, err := dialAs(c.uid, c.addr); err != nil || got != c.want {
			t.Errorf("process as uid %d dialing %s got %q (%v), want %q", c.uid, c.addr, got, err, c.want)
		}
	}

	n.iptables(t, "nft", "-t", "nat", "-D", "OUTPUT", "1")
	for _, uid := range []int{0, 1000} {
		// bash names itself after $0, the host.
		const want = "169.254.169.254: connect: Connection refused\n169.254.169.254: line 1: /dev/tcp/169.254.169.254/80: Connection refused\n"
		if got, err := dialAs(uid, imds); err == nil || got != want {
			t.Errorf("without the nat jump, process as uid %d dialing %s got %q (%v), want %q and exit 1", uid, imds, got, err, want)
		}
	}
	if got, err := dialAs(1501, imds); err != nil || got != "IMDS" {
		t.Errorf("without the nat jump, process as uid 1501 got %q (%v), want IMDS", got, err)
	}
}
