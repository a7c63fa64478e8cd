package soak

import (
	"strings"
	"testing"
)

// A JWT-shaped secret whose segments are longer than two chunks.
const testJWT = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9." +
	"eyJhdWQiOiJodHRwczovL3ZhdWx0LmF6dXJlLm5ldCIsImp0aSI6IjEyMzQ1Njc4OTAiLCJvaWQiOiJhYmNkZWYifQ." +
	"c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmUtc2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU"

func TestSecretScanner(t *testing.T) {
	s := newSecretScanner()
	if n := s.add("access token #1", testJWT); n < 4 {
		t.Fatalf("indexed %d chunks of the JWT, want its payload and signature", n)
	}
	s.add("Authorization value #1", "soak-authz-0123456789abcdef0123456789abcdef")
	header, payload, signature := strings.Split(testJWT, ".")[0], strings.Split(testJWT, ".")[1], strings.Split(testJWT, ".")[2]
	for _, tc := range []struct {
		name, text string
		want       []string
	}{
		{"clean", `{"msg":"request","status":200,"route":"token"}`, nil},
		{"whole token", `{"token":"` + testJWT + `"}`, []string{"access token #1"}},
		{"signature only", "sig=" + signature + "\n", []string{"access token #1"}},
		{"middle of the payload", "x" + payload[10:10+2*chunkLen] + "x", []string{"access token #1"}},
		{"the shared header is no secret", header + "." + header, nil},
		{"a piece too short to tell", payload[:chunkLen-1], nil},
		{"authorization value", "Authorization: Bearer soak-authz-0123456789abcdef0123456789abcdef", []string{"Authorization value #1"}},
		{"both, each once", testJWT + " " + testJWT + " soak-authz-0123456789abcdef0123456789abcdef", []string{"access token #1", "Authorization value #1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hits, n, err := s.scan(tc.name, strings.NewReader(tc.text))
			if err != nil || n != int64(len(tc.text)) {
				t.Fatalf("scan: %d bytes, %v", n, err)
			}
			var got []string
			for _, h := range hits {
				got = append(got, h.Secret)
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("hits %v, want %v", got, tc.want)
			}
		})
	}
}

// TestSecretScannerAcrossBlocks: a secret that straddles the scanner's
// 1 MiB read blocks is found, at its offset.
func TestSecretScannerAcrossBlocks(t *testing.T) {
	s := newSecretScanner()
	s.add("access token #1", testJWT)
	sig := strings.Split(testJWT, ".")[2]
	for _, at := range []int{1<<20 - 10, 1<<20 - chunkLen + 1, 3 << 20} {
		text := strings.Repeat("-", at) + sig + strings.Repeat("-", 100)
		hits, _, err := s.scan("big", strings.NewReader(text))
		if err != nil {
			t.Fatal(err)
		}
		if len(hits) != 1 || hits[0].Offset != int64(at) {
			t.Errorf("secret at %d: hits %+v", at, hits)
		}
	}
}

func TestFlatCheck(t *testing.T) {
	for _, tc := range []struct {
		c    FlatCheck
		flat bool
	}{
		{FlatCheck{Name: "rss", Warm: 20 << 20, End: 21 << 20, Unit: "MiB"}, true},
		{FlatCheck{Name: "rss", Warm: 20 << 20, End: 23 << 20, Unit: "MiB"}, false},
		{FlatCheck{Name: "rss", Warm: 20 << 20, End: 17 << 20, Unit: "MiB"}, false},
		{FlatCheck{Name: "goroutines", Warm: 15, End: 17, Slack: 2}, true},
		{FlatCheck{Name: "goroutines", Warm: 15, End: 18, Slack: 2}, false},
		{FlatCheck{Name: "goroutines", Warm: 100, End: 110, Slack: 2}, true},
		{FlatCheck{Name: "goroutines", Warm: 100, End: 111, Slack: 2}, false},
	} {
		if got := tc.c.Flat(); got != tc.flat {
			t.Errorf("%s: Flat() = %v, want %v", tc.c, got, tc.flat)
		}
	}
	if s := (FlatCheck{Name: "fds", Warm: 10, End: 30, Slack: 1}).String(); !strings.Contains(s, "NOT FLAT") || !strings.Contains(s, "+200.0 %") {
		t.Errorf("String() = %q", s)
	}
}
