package app

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/imds-proxy/imds-proxy/internal/logging"
	"github.com/imds-proxy/imds-proxy/pkg/imds"
)

// fakeProxy stands in for a running proxy: /readyz fails notReady times,
// then answers 200; the token endpoint answers tokenStatus and tokenBody.
type fakeProxy struct {
	mu          sync.Mutex
	notReady    int
	readyCalls  int
	tokenCalls  []*http.Request
	tokenStatus int
	tokenBody   string
}

func (f *fakeProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.URL.Path {
	case "/readyz":
		f.readyCalls++
		if f.readyCalls <= f.notReady {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	case "/metadata/identity/oauth2/token":
		f.tokenCalls = append(f.tokenCalls, r.Clone(context.Background()))
		w.WriteHeader(f.tokenStatus)
		_, _ = io.WriteString(w, f.tokenBody)
	default:
		http.NotFound(w, r)
	}
}

func TestProbe(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		clientID  string
		strict    bool
		status    int
		body      string
		wantErr   string
		wantToken bool
		wantLog   string
	}{
		{"warm-up succeeds", "cid", false, 200, `{"access_token":"SECRETTOKEN"}`, "", true, "warm-up token obtained"},
		{"invalid_resource still proves federation", "cid", true, 400, `{"error":"invalid_resource","error_description":"AADSTS500011"}`, "", true, "warm-up token obtained"},
		{"failure exits 0", "cid", false, 400, `{"error":"invalid_request","error_description":"Identity not found (AADSTS70021: no match)"}`, "", true,
			`"msg":"warm-up failed; the proxy's log has the diagnosis"`},
		{"failure with --probe-strict", "cid", true, 503, `{"error":"service_unavailable","error_description":"Entra down"}`,
			"warm-up failed (--probe-strict): 503 Service Unavailable: service_unavailable: Entra down", true, ""},
		{"non-JSON failure with --probe-strict", "cid", true, 500, `oops`,
			"warm-up failed (--probe-strict): 500 Internal Server Error", true, ""},
		{"no client id skips the warm-up", "", true, 500, "", "", false, "skipping the warm-up"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fp := &fakeProxy{notReady: 2, tokenStatus: tt.status, tokenBody: tt.body}
			hs := httptest.NewServer(fp)
			t.Cleanup(hs.Close)
			var logs syncBuffer
			lv := new(slog.LevelVar)
			deps := Deps{Logger: logging.New(&logs, lv)}
			err := Probe(context.Background(), &ProbeConfig{BaseURL: hs.URL, ClientID: tt.clientID, Resource: "https://management.azure.com/", Strict: tt.strict}, deps)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("Probe = %v", err)
			}
			if tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr) {
				t.Fatalf("Probe = %v; want %s", err, tt.wantErr)
			}
			fp.mu.Lock()
			defer fp.mu.Unlock()
			if fp.readyCalls != 3 {
				t.Errorf("readyz calls = %d; want 3 (two failures, then ready)", fp.readyCalls)
			}
			if !tt.wantToken {
				if len(fp.tokenCalls) != 0 {
					t.Errorf("token requests = %d; want 0", len(fp.tokenCalls))
				}
			} else {
				if len(fp.tokenCalls) != 1 {
					t.Fatalf("token requests = %d; want 1", len(fp.tokenCalls))
				}
				r := fp.tokenCalls[0]
				if r.Header.Get("Metadata") != "true" || r.Header.Get(imds.ProbeHeader) != "warmup" ||
					r.URL.RawQuery != "api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F" {
					t.Errorf("warm-up request %s %v", r.URL.RawQuery, r.Header)
				}
			}
			log := logs.String()
			if tt.wantLog != "" && !strings.Contains(log, tt.wantLog) {
				t.Errorf("log lacks %s:\n%s", tt.wantLog, log)
			}
			if strings.Contains(log, "SECRETTOKEN") {
				t.Error("probe logged the token")
			}
		})
	}
}
