package app

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/podenv"
)

// This file holds the scaffolding of the real-kernel tests: a throwaway
// network namespace per test, proxy-init and iptables run inside it, and
// sockets opened inside it by a thread that joined the namespace.

const metadataIP = "169.254.169.254"

// hangGuard bounds every socket operation so a broken rule fails the test
// instead of hanging it. It is not a timing assertion.
const hangGuard = 30 * time.Second

var nsCounter atomic.Int64

// netns is a network namespace created for one test, with lo up and the
// metadata address on lo (standing in for a pod's route to the real IMDS).
type netns struct {
	name     string
	lockfile string
}

// requireKernel skips unless the test can create namespaces and run iptables.
func requireKernel(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("real-kernel test skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("real-kernel test skipped: needs root to create network namespaces and run iptables (CI runs as root)")
	}
	for _, bin := range []string{"ip", "iptables-nft", "iptables-nft-save", "iptables-legacy", "iptables-legacy-save"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found on PATH: install the Debian packages iptables and iproute2 (%v)", bin, err)
		}
	}
}

// newNetns creates a namespace that is deleted when the test ends, however it ends.
func newNetns(t *testing.T) *netns {
	t.Helper()
	requireKernel(t)
	n := &netns{
		name:     fmt.Sprintf("imds-init-%d-%d", os.Getpid(), nsCounter.Add(1)),
		lockfile: filepath.Join(t.TempDir(), "xtables.lock"),
	}
	mustRun(t, "ip", "netns", "add", n.name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			t.Errorf("deleting netns %s: %v: %s", n.name, err, out)
		}
	})
	mustRun(t, "ip", "-n", n.name, "link", "set", "lo", "up")
	mustRun(t, "ip", "-n", n.name, "addr", "add", metadataIP+"/32", "dev", "lo")
	return n
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// result is what a command run in the namespace produced.
type result struct {
	stdout, stderr string
	code           int
}

// run runs a command inside n with a private xtables lock file and env added.
func (n *netns) run(t *testing.T, env []string, name string, args ...string) result {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.name, name}, args...)...)
	cmd.Env = append(cleanEnv(), "XTABLES_LOCKFILE="+n.lockfile)
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		r.code = exitErr.ExitCode()
	case err != nil:
		t.Fatalf("running %s in %s: %v", name, n.name, err)
	}
	return r
}

// cleanEnv is the test's environment without the variables proxy-init reads,
// so a developer's shell cannot change the outcome.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "PROXY_PORT", "PROXY_UID", "METADATA_IP", "METADATA_PORT", reexecEnv:
			continue
		}
		env = append(env, kv)
	}
	return env
}

// proxyInit runs this test binary as proxy-init inside n.
func (n *netns) proxyInit(t *testing.T, env []string, args ...string) result {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return n.run(t, append([]string{reexecEnv + "=1"}, env...), self, args...)
}

// mustProxyInit runs proxy-init and fails the test unless it exits with want.
func (n *netns) mustProxyInit(t *testing.T, want int, args ...string) result {
	t.Helper()
	r := n.proxyInit(t, nil, args...)
	if r.code != want {
		t.Fatalf("proxy-init %s exited %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, want, r.stdout, r.stderr)
	}
	return r
}

// iptables runs iptables-<backend> inside n and fails the test on error.
func (n *netns) iptables(t *testing.T, backend string, args ...string) {
	t.Helper()
	if r := n.run(t, nil, "iptables-"+backend, args...); r.code != 0 {
		t.Fatalf("iptables-%s %s: exit %d: %s", backend, strings.Join(args, " "), r.code, r.stderr)
	}
}

var (
	counters    = regexp.MustCompile(`\[\d+:\d+\]`)
	saveComment = regexp.MustCompile(`(?m)^#.*\n`)
)

// save returns iptables-<backend>-save with args, without comment lines and
// with every counter zeroed, so two dumps compare as rulesets.
func (n *netns) save(t *testing.T, backend string, args ...string) string {
	t.Helper()
	r := n.run(t, nil, "iptables-"+backend+"-save", args...)
	if r.code != 0 {
		t.Fatalf("iptables-%s-save: exit %d: %s", backend, r.code, r.stderr)
	}
	return counters.ReplaceAllString(saveComment.ReplaceAllString(r.stdout, ""), "[0:0]")
}

// inNetns runs fn in n's network namespace with podenv.InNetns and, when
// uid >= 0, with uid as its filesystem UID: the kernel records that as the
// owner of sockets the thread creates, which is what -m owner matches.
func inNetns[T any](n *netns, uid int, fn func() (T, error)) (T, error) {
	var v T
	err := podenv.InNetns(n.name, uid, func() (err error) {
		v, err = fn()
		return err
	})
	return v, err
}

// listen serves banner to every connection on addr inside n until the test ends.
func (n *netns) listen(t *testing.T, addr, banner string) {
	t.Helper()
	ln, err := inNetns(n, -1, func() (net.Listener, error) { return net.Listen("tcp4", addr) })
	if err != nil {
		t.Fatalf("listening on %s in %s: %v", addr, n.name, err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(hangGuard))
			_, _ = io.WriteString(c, banner)
			c.Close()
		}
	}()
}

// dial connects to addr from inside n as uid and returns the banner it reads,
// or a description of the error.
func (n *netns) dial(uid int, addr string) string {
	got, err := inNetns(n, uid, func() (string, error) {
		c, err := (&net.Dialer{Timeout: hangGuard}).Dial("tcp4", addr)
		if err != nil {
			return "", err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(hangGuard))
		b, err := io.ReadAll(c)
		return string(b), err
	})
	if err != nil {
		return "error: " + err.Error()
	}
	return got
}

// expectRoutes dials each case and reports every mismatch.
func (n *netns) expectRoutes(t *testing.T, cases []route) {
	t.Helper()
	for _, c := range cases {
		if got := n.dial(c.uid, c.addr); got != c.want {
			t.Errorf("uid %d dialing %s reached %q, want %q", c.uid, c.addr, got, c.want)
		}
	}
}

// route is one expected path of a connection.
type route struct {
	uid  int
	addr string
	want string
}
