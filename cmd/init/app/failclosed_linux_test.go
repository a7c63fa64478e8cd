package app

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imds-proxy/imds-proxy/pkg/iptables"
)

// The tests in this file break what proxy-init needs, one thing at a time,
// and check that it exits non-zero without leaving a redirect, and that
// its one-line termination message says what is wrong.

// termLog returns an empty termination-log file for one run.
func termLog(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "termination-log")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// wantTermination checks the termination message exactly.
func wantTermination(t *testing.T, path, want string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "proxy-init: "+want+"\n" {
		t.Errorf("termination log:\n got %q\nwant %q", got, "proxy-init: "+want+"\n")
	}
}

// iptablesSays is how a binary names itself in its error messages, e.g.
// "iptables v1.8.9 (nf_tables)": its --version line.
func iptablesSays(t *testing.T, bin string) string {
	t.Helper()
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", bin, err)
	}
	return strings.TrimSpace(string(out))
}

// lookPath returns where the test's PATH finds bin.
func lookPath(t *testing.T, bin string) string {
	t.Helper()
	p, err := exec.LookPath(bin)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// proxyInitThrough runs proxy-init inside n through wrapper, a command that
// ends by executing its arguments (setpriv, unshare).
func (n *netns) proxyInitThrough(t *testing.T, wrapper []string, args ...string) result {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	argv := append(append(append([]string{}, wrapper[1:]...), self), args...)
	return n.run(t, []string{reexecEnv + "=1"}, wrapper[0], argv...)
}

// wantNoRulesOfOurs checks that neither backend holds a rule or chain of
// ours: nothing redirects the pod's metadata traffic.
func (n *netns) wantNoRulesOfOurs(t *testing.T) {
	t.Helper()
	for _, backend := range []string{"nft", "legacy"} {
		if s := n.save(t, backend); strings.Contains(s, "IMDS_PROXY") {
			t.Errorf("the %s backend holds rules of ours:\n%s", backend, s)
		}
	}
}

const iptablesPackageHint = "the image needs the iptables package, which provides iptables-nft, iptables-legacy and their -save commands"

func TestKernelFailsClosedWithoutIPTables(t *testing.T) {
	t.Parallel()
	empty := t.TempDir()
	// Files with the right names that cannot be executed.
	noexec := t.TempDir()
	for _, bin := range []string{"iptables-nft", "iptables-nft-save", "iptables-legacy", "iptables-legacy-save"} {
		if err := os.WriteFile(filepath.Join(noexec, bin), []byte("#!/bin/sh\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Only one of a backend's binaries.
	half := t.TempDir()
	if err := os.Symlink(lookPath(t, "iptables-nft"), filepath.Join(half, "iptables-nft")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		args []string
		want string
	}{
		{"none on PATH, auto mode", empty, nil,
			"neither iptables-nft-save nor iptables-legacy-save is installed and executable on PATH (" + empty + "): " + iptablesPackageHint},
		{"none on PATH, nft", empty, []string{"--iptables-mode=nft"},
			"iptables-nft and iptables-nft-save are not installed or not executable on PATH (" + empty + "): " + iptablesPackageHint},
		{"not executable, auto mode", noexec, nil,
			"neither iptables-nft-save nor iptables-legacy-save is installed and executable on PATH (" + noexec + "): " + iptablesPackageHint},
		{"not executable, legacy", noexec, []string{"--iptables-mode=legacy"},
			"iptables-legacy and iptables-legacy-save are not installed or not executable on PATH (" + noexec + "): " + iptablesPackageHint},
		{"one binary of two, --check", half, []string{"--iptables-mode=nft", "--check"},
			"iptables-nft-save is not installed or not executable on PATH (" + half + "): " + iptablesPackageHint},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n := newNetns(t)
			log := termLog(t)
			r := n.proxyInit(t, []string{"PATH=" + tt.path}, append(tt.args, "--termination-log="+log)...)
			if r.code != ExitFailed {
				t.Fatalf("exit code %d, want %d\nstderr:\n%s", r.code, ExitFailed, r.stderr)
			}
			wantTermination(t, log, tt.want)
			if !strings.Contains(r.stderr, `"msg":"proxy-init failed"`) || r.stdout != "" {
				t.Errorf("stdout %q, stderr:\n%s", r.stdout, r.stderr)
			}
			n.wantNoRulesOfOurs(t)
		})
	}
}

func TestKernelFailsClosedWithoutNetAdmin(t *testing.T) {
	t.Parallel()
	const why = "no permission to read or change the iptables rules of this network namespace: " +
		"proxy-init must run as root with the NET_ADMIN capability in the pod's network namespace " +
		"(securityContext: runAsUser: 0, capabilities: add: [NET_ADMIN]): "
	nftSaveRefused := "running iptables-nft-save: exit status 4: " + iptablesSays(t, "iptables-nft-save") +
		": Could not fetch rule set generation id: Permission denied (you must be root)"
	dropped := []string{"setpriv", "--inh-caps=-all", "--bounding-set=-net_admin"}
	// A user namespace of its own: root with every capability there, none
	// in the network namespace, which the initial user namespace owns.
	userns := []string{"unshare", "--user", "--map-root-user"}
	tests := []struct {
		name    string
		wrapper []string
		args    []string
		want    string
	}{
		{"capabilities dropped, auto mode", dropped, nil, why + nftSaveRefused},
		{"capabilities dropped, nft, --check", dropped, []string{"--iptables-mode=nft", "--check"},
			why + "looking up chain IMDS_PROXY_GUARD: running [" + lookPath(t, "iptables-nft") + " -t filter -S IMDS_PROXY_GUARD 1 --wait 5]: exit status 4: " +
				iptablesSays(t, "iptables-nft") + ": Could not fetch rule set generation id: Permission denied (you must be root)"},
		{"capabilities dropped, legacy", dropped, []string{"--iptables-mode=legacy"},
			why + "apply: looking up chain IMDS_PROXY_GUARD: running [" + lookPath(t, "iptables-legacy") + " -t filter -S IMDS_PROXY_GUARD 1 --wait 5]: exit status 3: " +
				iptablesSays(t, "iptables-legacy") + ": can't initialize iptables table `filter': Permission denied (you must be root) Perhaps iptables or your kernel needs to be upgraded."},
		{"user namespace not owning the network namespace", userns, nil, why + nftSaveRefused},
		{"user namespace, --cleanup", userns, []string{"--cleanup"}, why + nftSaveRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n := newNetns(t)
			log := termLog(t)
			r := n.proxyInitThrough(t, tt.wrapper, append(tt.args, "--termination-log="+log)...)
			if r.code != ExitFailed {
				t.Fatalf("exit code %d, want %d\nstderr:\n%s", r.code, ExitFailed, r.stderr)
			}
			wantTermination(t, log, tt.want)
			n.wantNoRulesOfOurs(t)
		})
	}
}

// TestKernelFailsClosedOnConflictingRules: rules of others that jump into
// our chains stop apply (a jump from nat POSTROUTING makes the kernel refuse
// REDIRECT in our nat chain, one from filter INPUT the owner match in the
// guard) or cleanup (a referenced chain cannot be deleted); the message names
// them.
func TestKernelFailsClosedOnConflictingRules(t *testing.T) {
	t.Parallel()
	// The rules whose append fails, as the message quotes them and as the
	// command line shows them.
	rs := defaultPlan()
	guard, _ := rs.Table(iptables.FilterTable)
	nat, _ := rs.Table(iptables.NATTable)
	quoted := func(r iptables.Rule) string { return `"` + strings.ReplaceAll(r.String(), `"`, `\"`) + `"` }
	argv := func(table string, r iptables.Rule) string {
		return "-t " + table + " -A " + r.Chain + " " + strings.Join(r.Spec(), " ") + " --wait 5"
	}
	refusedBy := func(backend, chain string) string {
		if backend == "nft" {
			return "exit status 4: " + iptablesSays(t, "iptables-nft") + ": RULE_APPEND failed (Invalid argument): rule in chain " + chain
		}
		return "exit status 1: iptables: Invalid argument. Run `dmesg' for more information."
	}
	busy := func(backend, chain string) string {
		if backend == "nft" {
			return "exit status 4: " + iptablesSays(t, "iptables-nft") + ": CHAIN_DEL failed (Device or resource busy): chain " + chain
		}
		return "exit status 1: iptables: Too many links."
	}
	tests := []struct {
		table string
		chain string // ours, which the rule of others jumps into
		from  string // the built-in chain the rule of others hangs from
		rule  iptables.Rule
		// routes are the paths after the failed apply, with no pod started.
		routes []route
	}{
		// The guard went in first, so the app is refused rather than let through.
		{"nat", "IMDS_PROXY_REDIRECT", "POSTROUTING", nat.Rules[2], []route{{1000, imds, refused(imds)}, {1501, imds, "IMDS"}}},
		// Nothing of ours is in place: the app reaches the metadata address itself.
		{"filter", "IMDS_PROXY_GUARD", "INPUT", guard.Rules[0], []route{{1000, imds, "IMDS"}}},
	}
	for _, backend := range []string{"nft", "legacy"} {
		for _, tt := range tests {
			t.Run(backend+"/"+tt.table+"/apply", func(t *testing.T) {
				t.Parallel()
				n := newNetns(t)
				mode := "--iptables-mode=" + backend
				n.listen(t, proxy, "PROXY")
				n.listen(t, imds, "IMDS")
				// A chain of ours left empty, and another tool's rule sending
				// traffic of another hook into it.
				foreign := "-A " + tt.from + " -p tcp -j " + tt.chain
				n.iptables(t, backend, "-t", tt.table, "-N", tt.chain)
				n.iptables(t, backend, append([]string{"-t", tt.table}, strings.Fields(foreign)...)...)
				log := termLog(t)
				r := n.mustProxyInit(t, ExitFailed, mode, "--termination-log="+log)
				wantTermination(t, log, "rules that are not ours jump into our chains: ["+foreign+"]; remove them and run proxy-init again: "+
					"apply: appending "+quoted(tt.rule)+": running ["+lookPath(t, "iptables-"+backend)+" "+argv(tt.table, tt.rule)+"]: "+refusedBy(backend, tt.chain))
				if !strings.Contains(r.stderr, `"msg":"the ruleset after the failure"`) {
					t.Errorf("stderr lacks our tables:\n%s", r.stderr)
				}
				// Nothing redirects (in a pod, the pod never starts), and
				// --check says so.
				if rules := outputRules(n.save(t, backend, "-t", "nat")); len(rules) != 0 {
					t.Errorf("nat OUTPUT after the failure = %q, want no rule", rules)
				}
				n.expectRoutes(t, tt.routes)
				n.mustProxyInit(t, ExitNotInPlace, mode, "--check")

				// Once the rule is gone, a rerun succeeds.
				n.iptables(t, backend, append([]string{"-t", tt.table}, strings.Fields(strings.Replace(foreign, "-A ", "-D ", 1))...)...)
				n.mustProxyInit(t, ExitOK, mode)
				n.expectRoutes(t, []route{{1000, imds, "PROXY"}, {1501, imds, "IMDS"}})
			})
			t.Run(backend+"/"+tt.table+"/cleanup", func(t *testing.T) {
				t.Parallel()
				n := newNetns(t)
				mode := "--iptables-mode=" + backend
				n.listen(t, proxy, "PROXY")
				n.listen(t, imds, "IMDS")
				n.mustProxyInit(t, ExitOK, mode)
				// Somebody else's chain jumps into ours, so ours cannot be deleted.
				n.iptables(t, backend, "-t", tt.table, "-N", "OTHER")
				n.iptables(t, backend, "-t", tt.table, "-A", "OTHER", "-j", tt.chain)
				log := termLog(t)
				r := n.mustProxyInit(t, ExitFailed, mode, "--cleanup", "--termination-log="+log)
				wantTermination(t, log, "rules that are not ours jump into our chains: [-A OTHER -j "+tt.chain+"]; remove them and run proxy-init again: "+
					"cleanup: deleting chain "+tt.chain+": running ["+lookPath(t, "iptables-"+backend)+" -t "+tt.table+" -X "+tt.chain+" --wait 5]: "+busy(backend, tt.chain))
				for _, want := range []string{"-t " + tt.table + " -X " + tt.chain, `"msg":"the ruleset after the failure"`} {
					if !strings.Contains(r.stderr, want) {
						t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
					}
				}
				if tt.table == "nat" {
					// The redirect is gone, and the guard, removed after it,
					// still refuses.
					n.expectRoutes(t, []route{{1000, imds, refused(imds)}, {1501, imds, "IMDS"}})
				} else {
					// The redirect went first and is gone; the guard's chain
					// is empty and no longer jumped to.
					n.expectRoutes(t, []route{{1000, imds, "IMDS"}})
				}
			})
		}
	}
}
