package kubenode

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/imds-proxy/imds-proxy/internal/podenv"
)

func TestBridgeMAC(t *testing.T) {
	for gw, want := range map[string]string{
		"169.254.200.1":   "02:00:a9:fe:c8:01",
		"169.254.0.255":   "02:00:a9:fe:00:ff",
		"169.254.255.254": "02:00:a9:fe:ff:fe",
	} {
		if got := bridgeMAC(netip.MustParseAddr(gw)); got != want {
			t.Errorf("bridgeMAC(%s) = %s, want %s", gw, got, want)
		}
	}
}

// TestBridgeKeepsItsAddress: the pods' bridge keeps its MAC address while
// pods' veths join and leave, one with a lower address included (a bridge
// with no address of its own would take that one, then lose it).
func TestBridgeKeepsItsAddress(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (network namespaces); CI runs as root")
	}
	ctx := context.Background()
	ns, err := podenv.NewNetns(ctx, "bridge")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = podenv.DeleteNetns(ns) })
	n := &Node{Netns: ns, Gateway: netip.MustParseAddr("169.254.200.1")}
	if err := n.addBridge(ctx, netip.MustParsePrefix("169.254.200.0/24")); err != nil {
		t.Fatal(err)
	}
	want := "02:00:a9:fe:c8:01"
	ip := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	mac := func() string {
		t.Helper()
		f := strings.Fields(ip("-br", "link", "show", cniBridge))
		if len(f) < 3 {
			t.Fatalf("ip -br link show %s: %q", cniBridge, f)
		}
		return f[2]
	}
	if got := mac(); got != want {
		t.Fatalf("new bridge: %s, want %s", got, want)
	}
	ip("link", "add", "vethlow", "address", "02:00:00:00:00:01", "type", "veth", "peer", "name", "vethpeer")
	ip("link", "set", "vethlow", "master", cniBridge)
	ip("link", "set", "vethlow", "up")
	if got := mac(); got != want {
		t.Errorf("with a lower port address: %s, want %s", got, want)
	}
	ip("link", "del", "vethlow")
	if got := mac(); got != want {
		t.Errorf("after the port left: %s, want %s", got, want)
	}
}
