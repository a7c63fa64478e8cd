package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksEveryProxyPackage fails when the proxy binary links a package
// this command does not: its start-up would then no longer be the floor of
// the proxy's.
func TestLinksEveryProxyPackage(t *testing.T) {
	deps := func(pkg string) map[string]bool {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		if err != nil {
			t.Skipf("go list -deps %s: %v", pkg, err)
		}
		set := map[string]bool{}
		for _, p := range strings.Fields(string(out)) {
			set[p] = true
		}
		return set
	}
	floor := deps(".")
	var missing []string
	for p := range deps("../../../cmd/proxy") {
		if !floor[p] && !strings.Contains(p, "imds-proxy/cmd/") {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		t.Errorf("the proxy links packages depfloor does not; add blank imports for them: %v", missing)
	}
}
