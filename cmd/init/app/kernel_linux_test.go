package app

import (
	"os"
	"os/exec"
	"path/filepath"
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

	// foreignRule is somebody else's rule that must survive everything we do.
	foreignRule = "-A OUTPUT -p tcp -m tcp --dport 9999 -j RETURN"
	// meshRule is a service mesh's catch-all capture, as iptables lists it.
	meshRule = "-A OUTPUT -p tcp -j REDIRECT --to-ports 15001"
)

// wantRules is what proxy-init prints on success with the default config.
func wantRules() string {
	rs := iptables.Plan(iptables.Config{ProxyPort: 8000, ProxyUID: 1501, MetadataIP: iptables.DefaultMetadataIP, MetadataPort: 80})
	return "*nat\n:IMDS_PROXY_OUTPUT - [0:0]\n:IMDS_PROXY_REDIRECT - [0:0]\n" + rs.Jump.String() + "\n" +
		rs.Rules[0].String() + "\n" + rs.Rules[1].String() + "\n" + rs.Rules[2].String() + "\nCOMMIT\n"
}

// outputRules returns the -A lines of the nat OUTPUT chain in a save dump.
func outputRules(save string) []string {
	var out []string
	for _, l := range strings.Split(save, "\n") {
		if strings.HasPrefix(l, "-A OUTPUT ") {
			out = append(out, l)
		}
	}
	return out
}

func TestKernelApplyCheckCleanup(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"nft", "legacy"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			n := newNetns(t)
			mode := "--iptables-mode=" + backend
			n.iptables(t, backend, strings.Fields(strings.Replace(foreignRule, "-A OUTPUT", "-t nat -A OUTPUT", 1))...)
			n.listen(t, proxy, "PROXY")
			n.listen(t, imds, "IMDS")
			n.listen(t, imds443, "IMDS-443")

			// Without rules everyone reaches the metadata address itself, so
			// the assertions below can tell the redirect apart.
			n.expectRoutes(t, []route{{0, imds, "IMDS"}, {1000, imds, "IMDS"}})
			before := n.save(t, backend, "-t", "nat")

			r := n.mustProxyInit(t, ExitNotInPlace, mode, "--check")
			if !strings.Contains(r.stderr, "chain IMDS_PROXY_OUTPUT does not exist; chain IMDS_PROXY_REDIRECT does not exist; chain OUTPUT has no jump to IMDS_PROXY_OUTPUT") {
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
			once := n.save(t, backend, "-t", "nat")
			if got := outputRules(once); len(got) != 2 || got[1] != foreignRule || !strings.Contains(got[0], "-j IMDS_PROXY_OUTPUT") {
				t.Errorf("OUTPUT after apply = %q, want our jump then %q", got, foreignRule)
			}

			n.mustProxyInit(t, ExitOK, mode)
			if twice := n.save(t, backend, "-t", "nat"); twice != once {
				t.Errorf("second apply changed the ruleset:\n%s\nafter one apply:\n%s", twice, once)
			}
			other := map[string]string{"nft": "legacy", "legacy": "nft"}[backend]
			if s := n.save(t, other); strings.Contains(s, "IMDS_PROXY") {
				t.Errorf("the %s backend holds our rules:\n%s", other, s)
			}
			n.mustProxyInit(t, ExitOK, mode, "--check")

			n.mustProxyInit(t, ExitOK, mode, "--cleanup")
			if after := n.save(t, backend, "-t", "nat"); after != before {
				t.Errorf("cleanup left:\n%s\nbefore apply:\n%s", after, before)
			}
			n.mustProxyInit(t, ExitNotInPlace, mode, "--check")
			n.mustProxyInit(t, ExitOK, mode, "--cleanup")
			if after := n.save(t, backend, "-t", "nat"); after != before {
				t.Errorf("second cleanup changed:\n%s\nbefore apply:\n%s", after, before)
			}
			n.expectRoutes(t, []route{{0, imds, "IMDS"}, {1000, imds, "IMDS"}})
		})
	}
}

func TestKernelCheckAndApplyWhenJumpIsNotFirst(t *testing.T) {
	t.Parallel()
	n := newNetns(t)
	n.listen(t, proxy, "PROXY")
	n.listen(t, imds, "IMDS")
	n.mustProxyInit(t, ExitOK)
	// Another tool inserts a rule in front of ours; it returns IMDS traffic
	// from OUTPUT before our jump sees it.
	n.iptables(t, "nft", "-t", "nat", "-I", "OUTPUT", "1", "-p", "tcp", "-d", metadataIP, "-j", "RETURN")
	n.expectRoutes(t, []route{{0, imds, "IMDS"}})

	termLog := filepath.Join(t.TempDir(), "termination-log")
	if err := os.WriteFile(termLog, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := n.mustProxyInit(t, ExitNotInPlace, "--check", "--termination-log="+termLog)
	const why = "our jump is not first in chain OUTPUT: it is at position 2, behind [-A OUTPUT -d 169.254.169.254/32 -p tcp -j RETURN]"
	if !strings.Contains(r.stderr, why) {
		t.Errorf("--check did not explain the order:\n%s", r.stderr)
	}
	got, err := os.ReadFile(termLog)
	if err != nil {
		t.Fatal(err)
	}
	if want := "proxy-init: rules are not in place: " + why + "\n"; string(got) != want {
		t.Errorf("termination log = %q, want %q", got, want)
	}

	n.mustProxyInit(t, ExitOK)
	rules := outputRules(n.save(t, "nft", "-t", "nat"))
	if len(rules) != 2 || !strings.Contains(rules[0], "-j IMDS_PROXY_OUTPUT") || rules[1] != "-A OUTPUT -d 169.254.169.254/32 -p tcp -j RETURN" {
		t.Errorf("OUTPUT after re-apply = %q, want our jump first and the other rule kept", rules)
	}
	n.mustProxyInit(t, ExitOK, "--check")
	n.expectRoutes(t, []route{{0, imds, "PROXY"}, {1501, imds, "IMDS"}})
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

// TestKernelPreviousReleaseIsReplaced: releases before ACCEPT let the
// proxy's UID leave our chain with RETURN. --check calls that ruleset not in
// place, a rerun replaces it, and --cleanup removes it.
func TestKernelPreviousReleaseIsReplaced(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"nft", "legacy"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			n := newNetns(t)
			mode := "--iptables-mode=" + backend
			n.listen(t, proxy, "PROXY")
			n.listen(t, imds, "IMDS")
			// The mesh port has no listener: a captured connection fails.
			catchAll := strings.Fields(strings.Replace(meshRule, "-A OUTPUT", "-t nat -A OUTPUT", 1))
			before := n.save(t, backend, "-t", "nat")
			n.installPreviousRelease(t, backend)
			n.iptables(t, backend, catchAll...)
			n.expectRoutes(t, []route{
				{1000, imds, "PROXY"},
				{1501, imds, "error: dial tcp4 " + imds + ": connect: connection refused"},
			})

			termLog := filepath.Join(t.TempDir(), "termination-log")
			if err := os.WriteFile(termLog, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			n.mustProxyInit(t, ExitNotInPlace, mode, "--check", "--termination-log="+termLog)
			const uidRule = `-A IMDS_PROXY_OUTPUT -m owner --uid-owner 1501 -m comment --comment "imds-proxy: proxy UID 1501 reaches the real metadata service"`
			want := "proxy-init: rules are not in place: rule 1 of chain IMDS_PROXY_OUTPUT is [" + uidRule + " -j RETURN], want [" + uidRule + " -j ACCEPT]\n"
			if got, err := os.ReadFile(termLog); err != nil || string(got) != want {
				t.Errorf("termination log = %q (%v), want %q", got, err, want)
			}

			r := n.mustProxyInit(t, ExitOK, mode)
			if r.stdout != wantRules() {
				t.Errorf("rerun printed:\n%s\nwant:\n%s", r.stdout, wantRules())
			}
			n.mustProxyInit(t, ExitOK, mode, "--check")
			n.expectRoutes(t, []route{{1000, imds, "PROXY"}, {1501, imds, "IMDS"}})

			// --cleanup removes an old ruleset as well.
			n.mustProxyInit(t, ExitOK, mode, "--cleanup")
			n.iptables(t, backend, "-t", "nat", "-D", "OUTPUT", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "15001")
			n.installPreviousRelease(t, backend)
			n.mustProxyInit(t, ExitOK, mode, "--cleanup")
			if after := n.save(t, backend, "-t", "nat"); after != before {
				t.Errorf("cleanup of the previous release left:\n%s\nbefore:\n%s", after, before)
			}
		})
	}
}

// installPreviousRelease writes the default ruleset as releases that used
// RETURN for the proxy's UID wrote it.
func (n *netns) installPreviousRelease(t *testing.T, backend string) {
	t.Helper()
	rs := iptables.Plan(iptables.Config{ProxyPort: 8000, ProxyUID: 1501, MetadataIP: iptables.DefaultMetadataIP, MetadataPort: 80})
	rs.Rules[0].Target = []string{"-j", "RETURN"}
	for _, chain := range rs.Chains {
		n.iptables(t, backend, "-t", "nat", "-N", chain)
	}
	for _, r := range rs.Rules {
		n.iptables(t, backend, append([]string{"-t", "nat", "-A", r.Chain}, r.Spec()...)...)
	}
	n.iptables(t, backend, append([]string{"-t", "nat", "-I", "OUTPUT", "1"}, rs.Jump.Spec()...)...)
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
		if s := n.save(t, "nft", "-t", "nat"); strings.Contains(s, "IMDS_PROXY") || len(outputRules(s)) != 0 {
			t.Errorf("nft after cleanup:\n%s", s)
		}
	})
}

// TestKernelChildProcessesAsOtherUIDs repeats the key paths with separate
// client processes started with SysProcAttr.Credential, the way a container's
// process runs under its UID, instead of a thread's filesystem UID.
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
	for _, c := range []route{{0, imds, "PROXY"}, {1000, imds, "PROXY"}, {1501, imds, "IMDS"}} {
		got, err := inNetns(n, -1, func() (string, error) {
			// Started from a thread inside the namespace, the child inherits it.
			host, port, _ := strings.Cut(c.addr, ":")
			cmd := exec.Command(bash, "-c", `exec 3<>"/dev/tcp/$0/$1" && cat <&3`, host, port)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(c.uid), Gid: uint32(c.uid)}}
			cmd.Dir = "/"
			out, err := cmd.CombinedOutput()
			return string(out), err
		})
		if err != nil || got != c.want {
			t.Errorf("process as uid %d dialing %s got %q (%v), want %q", c.uid, c.addr, got, err, c.want)
		}
	}
}
