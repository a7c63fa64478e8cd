package e2e

import (
	"bufio"
	"context"
	"errors"
	"os"
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
// about 10 s. An app connection from the same source port in that time must
// still be redirected to the proxy; today its first packet matches that
// entry instead of proxy-init's nat rules, and the app talks to the node's
// real metadata service directly, where it could ask for the node's
// identity. nat rules alone cannot prevent it: the packet never reaches
// them. A rule outside the nat table can: a filter-table guard that refuses
// TCP SYNs to the metadata address from any UID but the proxy's (a
// redirected SYN no longer has that destination there) makes the app's
// connection fail closed, and separate conntrack zones for the proxy's
// connections would let it be redirected. proxy-init installs neither yet;
// until it does, this test runs only with IMDS_PROXY_KNOWN_ISSUES=1, and
// fails.
func TestRedirectAfterNodeReset(t *testing.T) {
	if os.Getenv("IMDS_PROXY_KNOWN_ISSUES") == "" {
		t.Skip("known issue: an app connection reusing the source port of a reset proxy connection escapes the redirect; set IMDS_PROXY_KNOWN_ISSUES=1 to run")
	}
	t.Parallel()
	if _, err := exec.LookPath("ss"); err != nil {
		t.Skip("ss (iproute2) is needed to reset the node's side of a connection")
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
	time.Sleep(100 * time.Millisecond)

	cmd := env.PodCommand(ctx, appUID, nil, "curl", "-sS", "-i", "--local-port", strconv.Itoa(port), "--max-time", "10",
		"-H", "Metadata: true", imdsBase+tokenPath(vault))
	var reply strings.Builder
	cmd.Stdout = &reply
	err = cmd.Run()
	// The property: nothing but the proxy talks to the node's metadata
	// service. The app itself may get its token through the proxy, or be
	// refused (fail closed) until the stale entry expires.
	for _, req := range env.IMDSRequests() {
		if req.Header.Get("X-Imds-Proxy-Hop") == "" {
			t.Errorf("the node's metadata service got %s from %s directly, not through the proxy", req.RequestURI, req.RemoteAddr)
		}
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		checkToken(t, parseWire(t, reply.String()), wantToken{Resource: vault, ClientID: podenv.DefaultClientID, Tenant: env.Tenant})
	case errors.As(err, &ee) && ee.ExitCode() == 7:
		t.Logf("the app's connection was refused (fail closed)")
	default:
		t.Errorf("curl: %v", err)
	}
}
