package app

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
			why + "looking up chain IMDS_PROXY_OUTPUT: running [" + lookPath(t, "iptables-nft") + " -t nat -S IMDS_PROXY_OUTPUT 1 --wait 5]: exit status 4: " +
				iptablesSays(t, "iptables-nft") + ": Could not fetch rule set generation id: Permission denied (you must be root)"},
		{"capabilities dropped, legacy", dropped, []string{"--iptables-mode=legacy"},
			why + "apply: looking up chain IMDS_PROXY_OUTPUT: running [" + lookPath(t, "iptables-legacy") + " -t nat -S IMDS_PROXY_OUTPUT 1 --wait 5]: exit status 3: " +
				iptablesSays(t, "iptables-legacy") + ": can't initialize iptables table `nat': Permission denied (you must be root) Perhaps iptables or your kernel needs to be upgraded."},
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
// our chains stop apply (a jump from POSTROUTING makes the kernel refuse
// REDIRECT in our chain) or cleanup (a referenced chain cannot be deleted);
// the message names them.
func TestKernelFailsClosedOnConflictingRules(t *testing.T) {
	t.Parallel()
	const redirectRule = `-A IMDS_PROXY_REDIRECT -p tcp -m comment --comment "imds-proxy: redirect to the proxy on 127.0.0.1:8000" -j REDIRECT --to-ports 8000`
	const redirectArgs = "-t nat -A IMDS_PROXY_REDIRECT -p tcp -m comment --comment imds-proxy: redirect to the proxy on 127.0.0.1:8000 -j REDIRECT --to-ports 8000 --wait 5"
	refused := map[string]string{
		"nft":    "exit status 4: " + iptablesSays(t, "iptables-nft") + ": RULE_APPEND failed (Invalid argument): rule in chain IMDS_PROXY_REDIRECT",
		"legacy": "exit status 1: iptables: Invalid argument. Run `dmesg' for more information.",
	}
	busy := map[string]string{
		"nft":    "exit status 4: " + iptablesSays(t, "iptables-nft") + ": CHAIN_DEL failed (Device or resource busy): chain IMDS_PROXY_REDIRECT",
		"legacy": "exit status 1: iptables: Too many links.",
	}
	for _, backend := range []string{"nft", "legacy"} {
		t.Run(backend+"/apply", func(t *testing.T) {
			t.Parallel()
			n := newNetns(t)
			mode := "--iptables-mode=" + backend
			n.listen(t, proxy, "PROXY")
			n.listen(t, imds, "IMDS")
			// A chain of ours left empty, and another tool's rule sending
			// POSTROUTING traffic into it.
			n.iptables(t, backend, "-t", "nat", "-N", "IMDS_PROXY_REDIRECT")
			n.iptables(t, backend, "-t", "nat", "-A", "POSTROUTING", "-p", "tcp", "-j", "IMDS_PROXY_REDIRECT")
			log := termLog(t)
			r := n.mustProxyInit(t, ExitFailed, mode, "--termination-log="+log)
			wantTermination(t, log, "rules that are not ours jump into our chains: [-A POSTROUTING -p tcp -j IMDS_PROXY_REDIRECT]; remove them and run proxy-init again: "+
				`apply: appending "`+strings.ReplaceAll(redirectRule, `"`, `\"`)+`": running [`+lookPath(t, "iptables-"+backend)+" "+redirectArgs+"]: "+refused[backend])
			if !strings.Contains(r.stderr, `"msg":"nat table after the failure"`) {
				t.Errorf("stderr lacks the nat table:\n%s", r.stderr)
			}
			// Nothing redirects: the app reaches the metadata address itself
			// (in a pod, the pod never starts), and --check says so.
			if rules := outputRules(n.save(t, backend, "-t", "nat")); len(rules) != 0 {
				t.Errorf("OUTPUT after the failure = %q, want no rule", rules)
			}
			n.expectRoutes(t, []route{{1000, imds, "IMDS"}})
			n.mustProxyInit(t, ExitNotInPlace, mode, "--check")

			// Once the rule is gone, a rerun succeeds.
			n.iptables(t, backend, "-t", "nat", "-D", "POSTROUTING", "-p", "tcp", "-j", "IMDS_PROXY_REDIRECT")
			n.mustProxyInit(t, ExitOK, mode)
			n.expectRoutes(t, []route{{1000, imds, "PROXY"}, {1501, imds, "IMDS"}})
		})
		t.Run(backend+"/cleanup", func(t *testing.T) {
			t.Parallel()
			n := newNetns(t)
			mode := "--iptables-mode=" + backend
			n.mustProxyInit(t, ExitOK, mode)
			// Somebody else's chain jumps into ours, so ours cannot be deleted.
			n.iptables(t, backend, "-t", "nat", "-N", "OTHER")
			n.iptables(t, backend, "-t", "nat", "-A", "OTHER", "-j", "IMDS_PROXY_REDIRECT")
			log := termLog(t)
			r := n.mustProxyInit(t, ExitFailed, mode, "--cleanup", "--termination-log="+log)
			wantTermination(t, log, "rules that are not ours jump into our chains: [-A OTHER -j IMDS_PROXY_REDIRECT]; remove them and run proxy-init again: "+
				"cleanup: deleting chain IMDS_PROXY_REDIRECT: running ["+lookPath(t, "iptables-"+backend)+" -t nat -X IMDS_PROXY_REDIRECT --wait 5]: "+busy[backend])
			for _, want := range []string{`-t nat -X IMDS_PROXY_REDIRECT`, `"msg":"nat table after the failure"`} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
				}
			}
		})
	}
}
