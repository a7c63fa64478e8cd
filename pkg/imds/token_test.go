package imds

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/imds-proxy/imds-proxy/internal/golden"
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
		p        protocol
	}{
		{"token_basic.golden", testToken("eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJ4In0.c2ln"), "https://vault.azure.net", protocolIMDS},
		{"token_large.golden", testToken(largeToken), "https://management.azure.com/", protocolIMDS},
		{"token_no_ext_expires.golden", noExt, "https://database.windows.net/", protocolIMDS},
		{"token_no_not_before.golden", noNbf, "https://storage.azure.com/", protocolIMDS},
		{"token_expired_clamped.golden", expired, "api://app", protocolIMDS},
		{"token_odd_resource.golden", testToken("t"), "https://x/\"quoted\"\\ \u00e9\u2028\x01<&>", protocolIMDS},
		// The App Service reply: no refresh_token, no ext_expires_in.
		{"appservice_token_basic.golden", testToken("eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJ4In0.c2ln"), "https://vault.azure.net", protocolAppService},
		{"appservice_token_no_not_before.golden", noNbf, "https://storage.azure.com/", protocolAppService},
		{"appservice_token_expired_clamped.golden", expired, "api://app", protocolAppService},
		{"appservice_token_odd_resource.golden", testToken("t"), "https://x/\"quoted\"\\ \u00e9\u2028\x01<&>", protocolAppService},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			got := string(appendTokenBody(nil, &tt.tok, tt.resource, fixedNow, tt.p))
			golden.Check(t, tt.golden, got)
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

// FuzzTokenReply checks the success reply of both protocols for arbitrary
// tokens, client ids, resources and times: valid compact JSON, every value
// a string, exactly the documented keys of the protocol (ext_expires_in
// only when known, and on IMDS only), numeric fields non-empty decimal
// integers with expires_in never negative, and the strings back as given
// (invalid UTF-8 replaced, as encoding/json does).
func FuzzTokenReply(f *testing.F) {
	f.Add("eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJ4In0.c2ln", "11111111-2222-3333-4444-555555555555", "https://vault.azure.net",
		int64(1700003599), int64(1699999700), int64(7199e9), int64(1700000000))
	f.Add("", "", "", int64(0), int64(-62135596800), int64(0), int64(0))
	f.Add("a\"b\\\n\u2028\xff", "<&>", "https://x/\"q\"", int64(-1), int64(math.MaxInt64), int64(1), int64(math.MinInt64))
	f.Fuzz(func(t *testing.T, access, clientID, resource string, expiresOn, notBefore, extExpiresIn, now int64) {
		tok := exchange.Token{
			AccessToken:  access,
			ClientID:     clientID,
			ExpiresOn:    time.Unix(expiresOn, 0),
			NotBefore:    time.Unix(notBefore, 0),
			ExtExpiresIn: time.Duration(extExpiresIn),
		}
		for _, p := range []protocol{protocolIMDS, protocolAppService} {
			checkTokenReply(t, p, &tok, appendTokenBody(nil, &tok, resource, time.Unix(now, 0), p), access, clientID, resource)
		}
	})
}

// checkTokenReply checks one success body of protocol p (FuzzTokenReply).
func checkTokenReply(t *testing.T, p protocol, tok *exchange.Token, body []byte, access, clientID, resource string) {
	t.Helper()
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&m); err != nil || dec.More() {
		t.Fatalf("reply %q is not one JSON object: %v", body, err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, body); err != nil || !bytes.Equal(compact.Bytes(), body) {
		t.Fatalf("reply %q is not compact JSON", body)
	}
	want := []string{"access_token", "expires_in", "expires_on", "not_before", "resource", "token_type", "client_id"}
	if p == protocolIMDS {
		want = append(want, "refresh_token")
		if tok.ExtExpiresIn > 0 {
			want = append(want, "ext_expires_in")
		}
	}
	if len(m) != len(want) {
		t.Fatalf("reply %s has %d keys; want %v", body, len(m), want)
	}
	got := map[string]string{}
	for _, k := range want {
		v, ok := m[k].(string)
		if !ok {
			t.Fatalf("reply %s: %s is %#v; want a string", body, k, m[k])
		}
		got[k] = v
	}
	for _, k := range []string{"expires_in", "expires_on", "not_before", "ext_expires_in"} {
		if _, present := got[k]; !present {
			continue
		}
		n, err := strconv.ParseInt(got[k], 10, 64)
		if err != nil || strconv.FormatInt(n, 10) != got[k] {
			t.Fatalf("reply %s: %s %q is not a decimal integer", body, k, got[k])
		}
		if k == "expires_in" && n < 0 {
			t.Fatalf("reply %s: negative expires_in", body)
		}
	}
	for k, in := range map[string]string{"access_token": access, "client_id": clientID, "resource": resource} {
		if want := validJSONString(in); got[k] != want {
			t.Fatalf("reply %s: %s = %q; want %q", body, k, got[k], want)
		}
	}
	if got["refresh_token"] != "" || got["token_type"] != "Bearer" {
		t.Fatalf("reply %s: refresh_token %q, token_type %q", body, got["refresh_token"], got["token_type"])
	}
}

// validJSONString is s as encoding/json decodes it after encoding it: each
// invalid UTF-8 byte replaced by U+FFFD.
func validJSONString(s string) string {
	b, _ := json.Marshal(s)
	var out string
	_ = json.Unmarshal(b, &out)
	return out
}
