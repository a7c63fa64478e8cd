package main

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStaticHandler(t *testing.T) {
	body := []byte(`{"access_token":"x"}`)
	h := staticHandler(body, "application/json; charset=utf-8")
	for i := 0; i < 2; i++ { // shared header slices must survive reuse
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/anything", nil))
		if rec.Code != 200 || rec.Body.String() != string(body) ||
			rec.Header().Get("Content-Length") != "20" || rec.Header().Get("Content-Type") != "application/json; charset=utf-8" {
			t.Fatalf("got %d %q %v", rec.Code, rec.Body.String(), rec.Header())
		}
	}
}

func TestRunRefusesNonLoopback(t *testing.T) {
	f := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := run("0.0.0.0:0", f, "text/plain")
	if err == nil || !strings.Contains(err.Error(), "loopback only") {
		t.Fatalf("got %v, want a loopback-only refusal", err)
	}
}
