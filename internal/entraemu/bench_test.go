package entraemu

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkTokenEndpoint measures one verified token exchange over a kept-alive
// TLS connection (assertion parse, cached JWKS, RS256 verify and sign).
func BenchmarkTokenEndpoint(b *testing.B) {
	e := start(b, nil)
	body := tokenForm(testClientID, saToken(b, e), vaultScope).Encode()
	c := e.HTTPClient()
	defer c.CloseIdleConnections()
	b.ResetTimer()
	for b.Loop() {
		req, err := http.NewRequest(http.MethodPost, e.TokenEndpoint(), strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}
