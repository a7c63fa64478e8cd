// Package e2e runs the real proxy-init and proxy binaries in pod-shaped
// network namespaces (internal/podenv) against the local Entra emulator, and
// talks to http://169.254.169.254 from inside the pod, through the real
// iptables redirect, as an unprivileged UID. The tests need root; they skip
// with a message otherwise (CI runs as root).
package e2e

import (
	"os"
	"testing"

	"github.com/imds-proxy/imds-proxy/internal/podenv/podenvtest"
)

// TestMain removes the shared binary directory after the run. It serves
// every test of the package, the SDK client tests included.
func TestMain(m *testing.M) { os.Exit(podenvtest.Main(m)) }
