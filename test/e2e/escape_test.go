package e2e

import (
	"bufio"
	"context"
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/podenv"
	"github.com/imds-proxy/imds-proxy/internal/podenv/podenvtest"
)

// holdConnection is run by python3 as the proxy's UID: it opens a
// connection to the metadata address from a fixed source port, says so,
// and waits until its stdin closes.
const holdConnection = `
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", int(sys.argv[1])))
s.connect(("169.254.169.254", 80))
print("connected", flush=True)
sys.stdin.read()
`

// TestRedirectAfterNodeReset: a connection of the proxy's UID to the
// node's metadata service that the node resets (the service restarts, or
// drops it) leaves a closed conntrack entry without NAT in the pod for
// about 10 s. An app connection from the same source port in that time
// matches that entry instead of proxy-init's nat rules (nat is consulted
// only for a connection's first packet), so the redirect cannot take it.
// proxy-init's guard in the filter table refuses it with a reset instead of
// letting it reach the node's real metadata service, where it could ask
// for the node's identity. Connections from any other port are redirected
// as always, and so is the same port once the stale entry has expired.
func TestRedirectAfterNodeReset(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("ss"); err != nil {
		t.Fatalf("ss (iproute2) is needed to reset the node's side of a connection: %v", err)
	}
	env := podenvtest.Start(t, podenv.Options{ClientID: podenv.DefaultClientID})
	ctx := context.Background()
	const port = 40999
	hold := env.PodCommand(ctx, podenv.DefaultProxyUID, nil, "/usr/bin/python3", "-c", holdConnection, strconv.Itoa(port))
	stdin, err := hold.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := hold.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := hold.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		_ = hold.Wait()
	}()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "connected\n" {
		t.Fatalf("the proxy-UID connection did not open: %q %v", line, err)
	}
	// The node's side dies with a reset, as when the service restarts.
	argv := podenv.NetnsExec(env.Node, -1, "ss", "-K", "-t", "dst", podenv.PodAddr, "dport", "=", ":"+strconv.Itoa(port))
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("ss -K: %v\n%s", err, out)
	}
	stdin.Close()
	_ = hold.Wait()

	// The precondition of the escape: the pod keeps the closed entry, with
	// the metadata address as its reply source (no NAT), once the reset has
	// arrived.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(staleEntry(t, env, port), " CLOSE "); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no closed conntrack entry for source port %d after the reset; the test cannot show the escape: %q", port, staleEntry(t, env, port))
		}
	}

	// An app connection from that port: refused by the guard (curl's exit
	// code 7, "couldn't connect"), nothing received.
	var reply, stderr strings.Builder
	cmd := env.PodCommand(ctx, appUID, nil, "curl", "-sS", "-i", "--local-port", strconv.Itoa(port), "--max-time", "10",
		"-H", "Metadata: true", imdsBase+tokenPath(vault))
	cmd.Stdout, cmd.Stderr = &reply, &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 || reply.Len() != 0 {
		t.Errorf("curl from the stale entry's port: %v, reply %q, stderr %q; want exit 7 (connection refused) and no reply", err, reply.String(), stderr.String())
	}
	wantNoDirectIMDSRequests(t, env)

	// Any other source port is redirected to the proxy at once.
	want := wantToken{Resource: vault, ClientID: podenv.DefaultClientID, Tenant: env.Tenant}
	checkToken(t, curlIMDS(t, env, tokenPath(vault)), want)

	// Once the stale entry has expired (10 s after the refusal, which
	// renewed it), the same port is redirected too.
	deadline := time.Now().Add(time.Minute)
	for staleEntry(t, env, port) != "" {
		if time.Now().After(deadline) {
			t.Fatalf("the conntrack entry for source port %d did not expire within a minute", port)
		}
		time.Sleep(time.Second)
	}
	out := podenvtest.Output(t, env.PodCommand(ctx, appUID, nil, append(curlArgs(tokenPath(vault), "Metadata: true"), "--local-port", strconv.Itoa(port))...))
	checkToken(t, parseWire(t, out), want)
	wantCalls(t, env, podenv.DefaultClientID, vault, 1)
	wantNoDirectIMDSRequests(t, env)
}

// staleEntry returns the pod's conntrack entry of a connection from port
// to 169.254.169.254:80 whose replies come from that address (not
// redirected), as /proc/net/nf_conntrack lists it, or "" when there is
// none.
func staleEntry(t *testing.T, env *podenv.Env, port int) string {
	t.Helper()
	out := podenvtest.Output(t, env.PodCommand(context.Background(), -1, nil, "cat", "/proc/net/nf_conntrack"))
	p := strconv.Itoa(port)
	orig := "src=" + podenv.PodAddr + " dst=" + podenv.MetadataAddr + " sport=" + p + " dport=80 "
	reply := "src=" + podenv.MetadataAddr + " dst=" + podenv.PodAddr + " sport=80 dport=" + p + " "
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, orig) && strings.Contains(l, reply) {
			return l
		}
	}
	return ""
}

// wantNoDirectIMDSRequests asserts that nothing but the proxy talked to the
// node's metadata service: every request it received carries the proxy's
// hop marker.
func wantNoDirectIMDSRequests(t *testing.T, env *podenv.Env) {
	t.Helper()
	for _, req := range env.IMDSRequests() {
		if req.Header.Get("X-Imds-Proxy-Hop") == "" {
			t.Errorf("the node's metadata service got %s from %s directly, not through the proxy", req.RequestURI, req.RemoteAddr)
		}
	}
}
