package exchange

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestDecodeClaims(t *testing.T) {
	hdr := b64(`{"alg":"RS256"}`)
	jws := func(payload string) string { return hdr + "." + b64(payload) + ".sig" }
	cases := []struct {
		name    string
		token   string
		want    claims
		wantErr bool
	}{
		{name: "full", token: jws(`{"iss":"https://i","sub":"s","aud":"a","exp":1795489200,"nbf":1795485600,"oid":"O","xms_mirid":"/subs/x"}`),
			want: claims{Issuer: "https://i", Subject: "s", Audience: []string{"a"}, Expiry: time.Unix(1795489200, 0).UTC(),
				NotBefore: time.Unix(1795485600, 0).UTC(), ObjectID: "O", ResourceID: "/subs/x"}},
		{name: "aud array", token: jws(`{"aud":["x","","y"]}`), want: claims{Audience: []string{"x", "y"}}},
		{name: "aud empty array", token: jws(`{"aud":[]}`), want: claims{}},
		{name: "aud mixed array", token: jws(`{"aud":["x",1]}`), want: claims{}},
		{name: "aud number", token: jws(`{"aud":5}`), want: claims{}},
		{name: "fractional exp", token: jws(`{"exp":1795489200.5}`), want: claims{Expiry: time.Unix(1795489200, 5e8).UTC()}},
		{name: "exp numeric string", token: jws(`{"exp":"1795489200"}`), want: claims{Expiry: time.Unix(1795489200, 0).UTC()}},
		{name: "exp word", token: jws(`{"exp":"tomorrow"}`), want: claims{}},
		{name: "exp negative", token: jws(`{"exp":-1}`), want: claims{}},
		{name: "exp zero", token: jws(`{"exp":0}`), want: claims{}},
		{name: "exp huge", token: jws(`{"exp":1e300}`), want: claims{}},
		{name: "exp beyond year 9999", token: jws(`{"exp":253402300800}`), want: claims{}},
		{name: "exp bool", token: jws(`{"exp":true}`), want: claims{}},
		{name: "exp null", token: jws(`{"exp":null}`), want: claims{}},
		{name: "exp overflow int", token: jws(`{"exp":99999999999999999999999999}`), want: claims{}},
		{name: "oid not string", token: jws(`{"oid":{"a":1},"xms_mirid":[1]}`), want: claims{}},
		{name: "padded payload", token: hdr + "." + base64.URLEncoding.EncodeToString([]byte(`{"sub":"p"}`)) + ".s", want: claims{Subject: "p"}},
		{name: "empty signature ok", token: jws(`{"sub":"u"}`)[:len(jws(`{"sub":"u"}`))-3], want: claims{Subject: "u"}},
		{name: "duplicate keys: last wins", token: jws(`{"sub":"a","sub":"b"}`), want: claims{Subject: "b"}},
		{name: "empty object", token: jws(`{}`), want: claims{}},
		{name: "no dots", token: "abc", wantErr: true},
		{name: "one dot", token: hdr + "." + b64(`{}`), wantErr: true},
		{name: "empty", token: "", wantErr: true},
		{name: "dots only", token: "..", wantErr: true},
		{name: "payload std base64", token: hdr + ".eyJzdWIiOiJ+/w==.s", wantErr: true},
		{name: "payload not json", token: jws(`not json`), wantErr: true},
		{name: "payload array", token: jws(`[1,2]`), wantErr: true},
		{name: "payload string", token: jws(`"x"`), wantErr: true},
		{name: "payload null", token: jws(`null`), wantErr: true},
		{name: "payload number", token: jws(`1795489200`), wantErr: true},
		{name: "payload empty", token: hdr + "..s", wantErr: true},
		{name: "payload trailing garbage", token: jws(`{"exp":1795489200}garbage`), wantErr: true},
		{name: "payload two objects", token: jws(`{"exp":1795489200} {"exp":1}`), wantErr: true},
		{name: "payload extra brace", token: jws(`{"exp":1795489200}}`), wantErr: true},
		{name: "payload truncated", token: jws(`{"exp":1795489200`), wantErr: true},
		{name: "payload no-break space", token: jws("\u00a0{}"), wantErr: true},
		{name: "payload surrounding blanks", token: jws(" \n{\"sub\":\"w\"}\r\n "), want: claims{Subject: "w"}},
		{name: "too long", token: jws(`{"x":"` + strings.Repeat("a", maxJWTLen) + `"}`), wantErr: true},
		{name: "nested depth", token: jws(strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5000)), wantErr: false, want: claims{}},
		{name: "JWE five parts", token: jws(`{"sub":"five"}`) + ".x.y", want: claims{Subject: "five"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeClaims(tc.token)
			if tc.wantErr {
				if !errors.Is(err, errNotJWT) {
					t.Fatalf("err = %v, want errNotJWT", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("claims = %+v\nwant     %+v", got, tc.want)
			}
		})
	}
}

// FuzzDecodeClaims feeds arbitrary text. Beyond not panicking: every
// failure is errNotJWT without the token in its text, and a success is
// checked against an independent reading of the input (a payload segment
// that is base64url of exactly one JSON object), so malformed input never
// passes as a token with zero claims.
func FuzzDecodeClaims(f *testing.F) {
	f.Add(unsignedJWT(map[string]any{"exp": 1795489200, "aud": []string{"a"}, "oid": "o"}))
	f.Add("a.b.c")
	f.Add("eyJ.eyJ.")
	f.Add(b64(`{}`) + "." + b64(`{"exp":1e400,"nbf":"x","aud":[null]}`) + ".")
	f.Add("h." + b64(`null`) + ".s")
	f.Add("h." + b64(`{"exp":1}{"exp":2}`) + ".s")
	f.Add("h." + b64("\u00a0{}") + ".s")
	f.Add("h." + base64.URLEncoding.EncodeToString([]byte(`{"sub":"p"}`)) + ".s")
	f.Fuzz(func(t *testing.T, token string) {
		c, err := decodeClaims(token)
		if err != nil {
			if !errors.Is(err, errNotJWT) {
				t.Fatalf("unexpected error type %v", err)
			}
			if strings.Contains(err.Error(), token) && len(token) > 8 {
				t.Fatalf("error echoes the token")
			}
			return
		}
		parts := strings.Split(token, ".")
		if len(token) > maxJWTLen || len(parts) < 3 {
			t.Fatalf("accepted %d bytes in %d segments", len(token), len(parts))
		}
		payload, perr := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
		trimmed := bytes.Trim(payload, " \t\r\n")
		if perr != nil || !json.Valid(payload) || len(trimmed) == 0 || trimmed[0] != '{' {
			t.Fatalf("accepted a payload that is not one JSON object: %q", payload)
		}
		for _, ts := range []time.Time{c.Expiry, c.NotBefore} {
			if !ts.IsZero() && (ts.Unix() <= 0 || ts.Unix() > maxNumericDate) {
				t.Fatalf("time out of range: %v", ts)
			}
		}
		for _, a := range c.Audience {
			if a == "" {
				t.Fatal("empty audience kept")
			}
		}
	})
}

// FuzzDecodeClaimsWellFormed builds a well-formed JWT from the fuzzer's
// values and checks that each claim comes back exactly: an exp or nbf in
// range is exactly the claim's integer, one out of range is absent (never
// a time that would make a cached token expire now), and the strings are
// the ones encoded.
func FuzzDecodeClaimsWellFormed(f *testing.F) {
	f.Add(int64(1795489200), int64(1795485600), "system:serviceaccount:ns:sa", "api://AzureADTokenExchange", "oid", false)
	f.Add(int64(0), int64(-1), "", "", "", true)
	f.Add(int64(maxNumericDate), int64(maxNumericDate+1), "\xff", "a", "b", false)
	f.Add(int64(math.MaxInt64), int64(math.MinInt64), "x", "", "o", true)
	f.Add(int64(1), int64(1<<53+1), "\u2028", "\x00", "\"", false)
	f.Fuzz(func(t *testing.T, exp, nbf int64, sub, aud, oid string, audArray bool) {
		payload := map[string]any{"exp": exp, "nbf": nbf, "sub": sub, "oid": oid}
		if audArray {
			payload["aud"] = []string{aud}
		} else {
			payload["aud"] = aud
		}
		token := unsignedJWT(payload)
		c, err := decodeClaims(token)
		if len(token) > maxJWTLen {
			if err == nil {
				t.Fatalf("accepted a %d-byte token", len(token))
			}
			return
		}
		if err != nil {
			t.Fatalf("well-formed token rejected: %v", err)
		}
		for _, d := range []struct {
			name string
			got  time.Time
			v    int64
		}{{"exp", c.Expiry, exp}, {"nbf", c.NotBefore, nbf}} {
			if d.v > 0 && d.v <= maxNumericDate {
				if d.got.Unix() != d.v || d.got.Nanosecond() != 0 || d.got.Location() != time.UTC {
					t.Fatalf("%s %d decoded as %v", d.name, d.v, d.got)
				}
			} else if !d.got.IsZero() {
				t.Fatalf("%s %d out of range decoded as %v, want absent", d.name, d.v, d.got)
			}
		}
		// json.Marshal replaces invalid UTF-8; what was encoded is what
		// must come back.
		if want := jsonRoundTrip(t, sub); c.Subject != want {
			t.Fatalf("sub = %q, want %q", c.Subject, want)
		}
		if want := jsonRoundTrip(t, oid); c.ObjectID != want {
			t.Fatalf("oid = %q, want %q", c.ObjectID, want)
		}
		wantAud := []string{jsonRoundTrip(t, aud)}
		if wantAud[0] == "" {
			wantAud = nil
		}
		if !reflect.DeepEqual(c.Audience, wantAud) {
			t.Fatalf("aud = %q, want %q", c.Audience, wantAud)
		}
	})
}

func jsonRoundTrip(t *testing.T, s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var out string
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDecodeClaimsHugeInput: an oversized token is refused before any
// decoding, in constant memory whatever its size.
func TestDecodeClaimsHugeInput(t *testing.T) {
	huge := "eyJhbGciOiJSUzI1NiJ9." + strings.Repeat("A", 16<<20) + ".sig"
	const runs = 10
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		if _, err := decodeClaims(huge); !errors.Is(err, errNotJWT) {
			t.Fatalf("err = %v", err)
		}
	}
	runtime.ReadMemStats(&after)
	// Decoding would allocate megabytes; refusing allocates an error.
	if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > 64<<10 {
		t.Errorf("refusing a 16 MiB token allocated %d bytes, want a constant few", per)
	}
	// Just below the bound: decoded, also quickly.
	big := unsignedJWT(map[string]any{"exp": 1795489200, "pad": strings.Repeat("x", maxJWTLen*3/4-200)})
	if len(big) > maxJWTLen {
		t.Fatalf("test token is %d bytes, over the bound", len(big))
	}
	if c, err := decodeClaims(big); err != nil || c.Expiry.Unix() != 1795489200 {
		t.Errorf("near the bound: %v, exp %v", err, c.Expiry)
	}
}

func TestReadProjectedToken(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "token")
	writeSAToken(t, good, "system:serviceaccount:ns:sa", t0.Add(time.Hour))
	pt, err := ReadProjectedToken(good)
	if err != nil {
		t.Fatal(err)
	}
	want := ProjectedToken{Issuer: "https://issuer.example/cluster", Subject: "system:serviceaccount:ns:sa",
		Audience: []string{"api://AzureADTokenExchange"}, Expiry: t0.Add(time.Hour)}
	if !reflect.DeepEqual(pt, want) {
		t.Errorf("ProjectedToken = %+v, want %+v", pt, want)
	}
	if s := pt.String(); s != "issuer=https://issuer.example/cluster, subject=system:serviceaccount:ns:sa, audience=api://AzureADTokenExchange" {
		t.Errorf("String() = %q", s)
	}
	if s := (ProjectedToken{}).String(); s != "issuer=(none), subject=(none), audience=(none)" {
		t.Errorf("zero String() = %q", s)
	}

	empty := filepath.Join(dir, "empty")
	big := filepath.Join(dir, "big")
	garbage := filepath.Join(dir, "garbage")
	for p, content := range map[string]string{empty: " \n", big: strings.Repeat("a", maxTokenFileSize+1), garbage: "not-a-jwt"} {
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{filepath.Join(dir, "missing"), empty, big, dir} {
		_, err := ReadProjectedToken(p)
		var xe *Error
		if !errors.As(err, &xe) || xe.Reason != ReasonTokenFile || !strings.Contains(xe.Detail, p) {
			t.Errorf("ReadProjectedToken(%s) = %v, want ReasonTokenFile naming the path", p, err)
		}
	}
	_, err = ReadProjectedToken(garbage)
	if !errors.Is(err, errNotJWT) || strings.Contains(err.Error(), "not-a-jwt") {
		t.Errorf("garbage: %v", err)
	}
}

func TestTokenFileChangeDetection(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "token")
	writeSAToken(t, p, "system:serviceaccount:ns:a", t0.Add(time.Hour))
	changes := 0
	tf := &tokenFile{path: p, onChange: func() { changes++ }}
	if tf.changed() {
		t.Error("first read reported a change")
	}
	if _, err := tf.read(); err != nil || tf.changed() || changes != 0 {
		t.Fatalf("unchanged file: err %v changes %d", err, changes)
	}
	// Same size, same second: only the content differs.
	writeSAToken(t, p, "system:serviceaccount:ns:b", t0.Add(time.Hour))
	if !tf.changed() || changes != 1 {
		t.Fatalf("content change not seen: changes %d", changes)
	}
	if got := tf.claims().Subject; got != "system:serviceaccount:ns:b" {
		t.Errorf("claims subject = %q", got)
	}
	os.Remove(p)
	if tf.changed() || changes != 1 {
		t.Error("a missing file counted as a change")
	}
}
