package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/imds-proxy/imds-proxy/internal/entraemu"
)

// TestBinaryAppServiceEndpoint runs the real binary against the Entra
// emulator with the App Service endpoint on, its secret once from
// IDENTITY_HEADER and once from --identity-header-file (with the trailing
// newline a file usually has): /msi/token with the secret gets the
// emulator's token, the IMDS endpoint beside it gets the same token from
// the one cache (one Entra call), a wrong secret gets 401, and the secret
// reaches no log line, even at the most verbose level.
func TestBinaryAppServiceEndpoint(t *testing.T) {
	t.Parallel()
	const (
		tenant   = "72f988bf-86f1-41af-91ab-2d7cd011db47"
		clientID = "33333333-3333-3333-3333-333333333333"
		secret   = "7f3c9a1e5b2d8f4a6c0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f2a4c6e8b0d1f3a"
	)
	emu, env, _ := emulatorEnv(t, entraemu.Options{
		Tenant: tenant,
		Apps: []entraemu.App{{ClientID: clientID,
			Federations: []entraemu.Federation{{Subject: "system:serviceaccount:default:workload"}}}},
	}, clientID)
	headerFile := writeFile(t, secret+"\n")
	for _, tt := range []struct {
		name, resource, from string
		env                  []string
		args                 []string
	}{
		{"IDENTITY_HEADER", "https://vault.azure.net", "IDENTITY_HEADER", append(env[:len(env):len(env)], "IDENTITY_HEADER="+secret), nil},
		{"--identity-header-file", "https://storage.azure.com/", "--identity-header-file " + headerFile, env, []string{"--identity-header-file=" + headerFile}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := start(t, tt.env, append([]string{"--proxy-port=0", "--log-level=all", "--shutdown-delay=0s"}, tt.args...)...)
			addr := p.listenAddr(t)
			get := func(path string, header ...string) (int, map[string]any) {
				t.Helper()
				req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
				for i := 0; i+1 < len(header); i += 2 {
					req.Header.Set(header[i], header[i+1])
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				var m map[string]any
				if err := json.Unmarshal(body, &m); err != nil {
					t.Fatalf("body %s: %v", body, err)
				}
				return resp.StatusCode, m
			}
			q := "?api-version=2019-08-01&resource=" + tt.resource
			status, m := get("/msi/token"+q, "X-IDENTITY-HEADER", secret)
			if status != 200 {
				t.Fatalf("App Service token = %d %v", status, m)
			}
			access, _ := m["access_token"].(string)
			claims, err := emu.VerifyAccessToken(access)
			if err != nil {
				t.Fatalf("access token: %v", err)
			}
			if claims.AppID != clientID || claims.Audience != tt.resource || m["client_id"] != clientID || m["resource"] != tt.resource {
				t.Errorf("reply %v, claims %+v", m, claims)
			}
			if _, ok := m["refresh_token"]; ok {
				t.Errorf("App Service reply has refresh_token: %v", m)
			}
			status, m = get("/metadata/identity/oauth2/token?api-version=2018-02-01&resource="+tt.resource, "Metadata", "true")
			if status != 200 || m["access_token"] != access {
				t.Errorf("IMDS beside it = %d, same token %v", status, m["access_token"] == access)
			}
			if n := emu.TokenCalls(clientID, tt.resource+"/.default"); n != 1 {
				t.Errorf("Entra token calls = %d; want 1", n)
			}
			status, m = get("/msi/token"+q, "X-IDENTITY-HEADER", secret[:63]+"0")
			if status != 401 || m["statusCode"] != float64(401) {
				t.Errorf("wrong secret = %d %v", status, m)
			}

			p.stop(t)
			log := strings.Join(p.logLines(), "\n")
			if strings.Contains(log, secret[:16]) || strings.Contains(log, access) {
				t.Error("the proxy log carries the secret or a token")
			}
			if !strings.Contains(log, `"appServiceEndpoint":"/msi/token, secret from `+tt.from+`"`) {
				t.Errorf("the start-up line does not say where the secret comes from:\n%s", log)
			}
			if !strings.Contains(log, `"route":"app_service_token","status":401`) {
				t.Errorf("no request line for the refused request at --log-level=all:\n%s", log)
			}
		})
	}
}
