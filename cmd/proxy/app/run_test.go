package app

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/imds-proxy/imds-proxy/pkg/exchange"
)

// TestPrewarmWaitsForAReadableToken checks that the background warm-up
// touches neither the network nor the process-wide CA pool while the
// projected token is not a JWT yet: a pool loaded then would miss a CA the
// pod's volumes provide a moment later.
func TestPrewarmWaitsForAReadableToken(t *testing.T) {
	var hits atomic.Int32
	entra := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.NotFound(w, r)
	}))
	t.Cleanup(entra.Close)

	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("placeholder, not a JWT"), 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := exchange.New(exchange.Config{
		TenantID:        "tenant",
		AuthorityHost:   entra.URL + "/",
		TokenFile:       tokenFile,
		DefaultClientID: "11111111-2222-3333-4444-555555555555",
	}, exchange.Deps{Registerer: prometheus.NewRegistry(), HTTPClient: entra.Client()})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	log := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{Verbosity: 1})

	prewarm(context.Background(), log, src, tokenFile)

	if n := hits.Load(); n != 0 {
		t.Errorf("Entra saw %d requests during a skipped prewarm, want 0", n)
	}
	if len(lines) != 1 || !strings.Contains(lines[0], `"msg"="prewarm skipped: the projected token is not readable yet"`) {
		t.Errorf("log lines = %q, want exactly the skip line", lines)
	}
}
