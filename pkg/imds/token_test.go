package imds

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/imds-proxy/imds-proxy/pkg/exchange"
)

// largeToken is a JWT-shaped token over 4 KB, the size at which chunked
// replies used to break Hadoop clients.
var largeToken = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9." + strings.Repeat("eyJhdWQiOiJodHRwczovL3ZhdWx0LmF6dXJlLm5ldCJ9", 100) + ".c2lnbmF0dXJl"

func TestTokenBodyGolden(t *testing.T) {
	t.Parallel()
	noExt := testToken("eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJ4In0.c2ln")
	noExt.ExtExpiresIn = 0
	noNbf := testToken("eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJ4In0.c2ln")
	noNbf.NotBefore = time.Time{}
	expired := testToken("eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJ4In0.c2ln")
	expired.ExpiresOn = fixedNow.Add(-time.Minute)
	tests := []struct {
		golden   string
		tok      exchange.Token
		resource string
	}{
		{"token_basic.golden", testToken("eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJ4In0.c2ln"), "https://vault.azure.net"},
		{"token_large.golden", testToken(largeToken), "https://management.azure.com/"},
		{"token_no_ext_expires.golden", noExt, "https://database.windows.net/"},
		{"token_no_not_before.golden", noNbf, "https://storage.azure.com/"},
		{"token_expired_clamped.golden", expired, "api://app"},
		{"token_odd_resource.golden", testToken("t"), "https://x/\"quoted\"\\ \u00e9\u2028\x01<&>"},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			got := string(appendTokenBody(nil, &tt.tok, tt.resource, fixedNow))
			golden(t, tt.golden, got)
			// Every value is a string, no error or scope key, and the
			// resource comes back verbatim.
			var m map[string]any
			if err := json.Unmarshal([]byte(got), &m); err != nil {
				t.Fatalf("invalid JSON: %v", err)
			}
			for k, v := range m {
				s, ok := v.(string)
				if !ok {
					t.Errorf("%s is %T, want string", k, v)
				}
				if strings.HasPrefix(k, "error") || k == "scope" {
					t.Errorf("forbidden key %s", k)
				}
				if s == "" && k != "refresh_token" {
					t.Errorf("%s is empty", k)
				}
			}
			if m["resource"] != tt.resource {
				t.Errorf("resource = %q; want %q", m["resource"], tt.resource)
			}
			if strings.HasSuffix(got, "\n") {
				t.Error("trailing newline")
			}
		})
	}
}

func TestAppendJSONString(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"", `""`},
		{"abc", `"abc"`},
		{`a"b\c`, `"a\"b\\c"`},
		{"\n\r\t\x00\x1f", `"\n\r\t\u0000\u001f"`},
		{"é€😀", `"é€😀"`},
		{"\u2028\u2029", `"\u2028\u2029"`},
		{"a\xffb", `"a\ufffdb"`},
		{"<&>", `"<&>"`},
	}
	for _, tt := range tests {
		if got := string(appendJSONString(nil, tt.in)); got != tt.want {
			t.Errorf("appendJSONString(%q) = %s; want %s", tt.in, got, tt.want)
		}
	}
}

// FuzzAppendJSONString checks that the output is valid JSON that decodes to
// the input (with invalid UTF-8 replaced, as encoding/json does).
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "abc", "\"\\\n", "\xff\xfe", "\u2028", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("appendJSONString(%q) = %s: invalid JSON: %v", s, out, err)
		}
		want := strings.ToValidUTF8(s, "\ufffd")
		if !utf8.ValidString(s) {
			// encoding/json replaces each invalid byte; ToValidUTF8
			// merges runs. Compare with encoding/json's own result.
			b, _ := json.Marshal(s)
			_ = json.Unmarshal(b, &want)
		}
		if got != want {
			t.Fatalf("round trip of %q = %q; want %q", s, got, want)
		}
	})
}

// plainASCIIPrefix must stop at the word holding the first byte that
// appendJSONString would not copy unchanged: every byte value, at every
// position of a 16- and a 24-byte string.
func TestPlainASCIIPrefix(t *testing.T) {
	t.Parallel()
	plain := func(c byte) bool { return c >= 0x20 && c < 0x80 && c != '"' && c != '\\' }
	for _, n := range []int{0, 7, 8, 16, 24} {
		if got := plainASCIIPrefix(strings.Repeat("a", n)); got != n/8*8 {
			t.Errorf("%d plain bytes: prefix %d, want %d", n, got, n/8*8)
		}
	}
	for _, n := range []int{16, 24} {
		for pos := range n {
			for c := range 256 {
				b := []byte(strings.Repeat("A", n))
				b[pos] = byte(c)
				want := n
				if !plain(byte(c)) {
					want = pos / 8 * 8
				}
				if got := plainASCIIPrefix(string(b)); got != want {
					t.Fatalf("byte %#x at %d of %d: prefix %d, want %d", c, pos, n, got, want)
				}
			}
		}
	}
	if got := plainASCIIPrefix(largeToken); got != len(largeToken)/8*8 {
		t.Errorf("JWT: prefix %d, want %d", got, len(largeToken)/8*8)
	}
}

func BenchmarkAppendJSONStringJWT(b *testing.B) {
	s := largeToken[:1400]
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = appendJSONString(buf[:0], s)
	}
}
