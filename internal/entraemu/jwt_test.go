package entraemu

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

// seg base64url-encodes a JWT segment.
func seg(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestParseAssertion(t *testing.T) {
	hdr := seg(`{"alg":"RS256","kid":"k"}`)
	sig := seg("sig")
	ok := func(claims string) string { return hdr + "." + seg(claims) + "." + sig }
	cases := []struct {
		name    string
		in      string
		wantErr bool
		iss     string
		sub     string
		aud     []string
		exp     time.Time
	}{
		{name: "minimal", in: ok(`{"iss":"https://i"}`), iss: "https://i"},
		{name: "full", in: ok(`{"iss":"https://i","sub":"s","aud":["a","b"],"exp":1700000000,"nbf":1699990000,"iat":1699990000}`),
			iss: "https://i", sub: "s", aud: []string{"a", "b"}, exp: time.Unix(1700000000, 0).UTC()},
		{name: "aud string", in: ok(`{"iss":"i","aud":"a"}`), iss: "i", aud: []string{"a"}},
		{name: "fractional exp", in: ok(`{"iss":"i","exp":1700000000.5}`), iss: "i", exp: time.Unix(1700000000, 5e8).UTC()},
		{name: "padded segments", in: hdr + "==." + seg(`{"iss":"i"}`) + "." + sig, iss: "i"},
		{name: "null sub", in: ok(`{"iss":"i","sub":null}`), iss: "i"},
		{name: "empty", in: "", wantErr: true},
		{name: "one segment", in: "abc", wantErr: true},
		{name: "two segments", in: "a.b", wantErr: true},
		{name: "four segments", in: ok(`{"iss":"i"}`) + ".x", wantErr: true},
		{name: "dots only", in: "..", wantErr: true},
		{name: "bad base64 header", in: "!!!." + seg(`{"iss":"i"}`) + "." + sig, wantErr: true},
		{name: "bad base64 claims", in: hdr + ".@@@." + sig, wantErr: true},
		{name: "bad base64 signature", in: hdr + "." + seg(`{"iss":"i"}`) + ".*", wantErr: true},
		{name: "standard base64 alphabet", in: hdr + "." + base64.StdEncoding.EncodeToString([]byte(`{"iss":"i??>"}`)) + "." + sig, wantErr: true},
		{name: "header not JSON", in: seg("alg") + "." + seg(`{"iss":"i"}`) + "." + sig, wantErr: true},
		{name: "header array", in: seg(`["RS256"]`) + "." + seg(`{"iss":"i"}`) + "." + sig, wantErr: true},
		{name: "header null", in: seg(`null`) + "." + seg(`{"iss":"i"}`) + "." + sig, wantErr: true},
		{name: "alg number", in: seg(`{"alg":256}`) + "." + seg(`{"iss":"i"}`) + "." + sig, wantErr: true},
		{name: "kid object", in: seg(`{"alg":"RS256","kid":{}}`) + "." + seg(`{"iss":"i"}`) + "." + sig, wantErr: true},
		{name: "claims null", in: ok(`null`), wantErr: true},
		{name: "claims string", in: ok(`"iss"`), wantErr: true},
		{name: "claims trailing data", in: ok(`{"iss":"i"}{}`), wantErr: true},
		{name: "claims truncated", in: ok(`{"iss":"i"`), wantErr: true},
		{name: "no iss", in: ok(`{"sub":"s"}`), wantErr: true},
		{name: "empty iss", in: ok(`{"iss":""}`), wantErr: true},
		{name: "iss number", in: ok(`{"iss":1}`), wantErr: true},
		{name: "iss array", in: ok(`{"iss":["i"]}`), wantErr: true},
		{name: "sub number", in: ok(`{"iss":"i","sub":5}`), wantErr: true},
		{name: "aud number", in: ok(`{"iss":"i","aud":5}`), wantErr: true},
		{name: "aud mixed array", in: ok(`{"iss":"i","aud":["a",1]}`), wantErr: true},
		{name: "exp string", in: ok(`{"iss":"i","exp":"1700000000"}`), wantErr: true},
		{name: "exp negative", in: ok(`{"iss":"i","exp":-1}`), wantErr: true},
		{name: "exp huge", in: ok(`{"iss":"i","exp":1e300}`), wantErr: true},
		{name: "exp overflow", in: ok(`{"iss":"i","exp":1e999}`), wantErr: true},
		{name: "nbf bool", in: ok(`{"iss":"i","nbf":true}`), wantErr: true},
		{name: "iat object", in: ok(`{"iss":"i","iat":{}}`), wantErr: true},
		{name: "too long", in: ok(`{"iss":"` + strings.Repeat("i", maxJWTLength) + `"}`), wantErr: true},
		{name: "deep nesting", in: ok(`{"iss":"i","x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`), wantErr: true},
		{name: "invalid UTF-8 claim", in: ok("{\"iss\":\"\xff\xfe\"}"), iss: "\ufffd\ufffd"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := parseAssertion(tc.in)
			if tc.wantErr {
				if err == nil || !errors.Is(err, errMalformed) {
					t.Fatalf("err = %v, want a malformed error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.issuer != tc.iss || a.subject != tc.sub || strings.Join(a.audiences, ",") != strings.Join(tc.aud, ",") || !a.expires.Equal(tc.exp) {
				t.Errorf("got iss %q sub %q aud %v exp %v", a.issuer, a.subject, a.audiences, a.expires)
			}
		})
	}
}

func FuzzParseAssertion(f *testing.F) {
	f.Add(seg(`{"alg":"RS256","kid":"k"}`) + "." + seg(`{"iss":"https://i","sub":"s","aud":["a"],"exp":1700000000}`) + "." + seg("sig"))
	f.Add("a.b.c")
	f.Add("..")
	f.Add(seg(`{"alg":"none"}`) + "." + seg(`{"iss":1}`) + ".")
	f.Fuzz(func(t *testing.T, in string) {
		a, err := parseAssertion(in)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("error %v does not wrap errMalformed", err)
			}
			return
		}
		if a.issuer == "" || a.jwt == nil || len(in) > maxJWTLength {
			t.Fatalf("accepted %q as %+v", in, a)
		}
	})
}

func FuzzVerifyAssertion(f *testing.F) {
	e := start(f, func(o *Options) { o.Now = func() time.Time { return fixedNow } })
	app, _ := e.App(testClientID)
	good := saToken(f, e)
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Add(strings.Replace(good, ".", "..", 1))
	f.Add("x.y.z")
	f.Fuzz(func(t *testing.T, in string) {
		err := e.verifyAssertion(context.Background(), app, in, fixedNow)
		if err == nil {
			// Only a token whose signed part is the good token's can pass.
			p, perr := parseJWT(in)
			if perr != nil || p.signingInput != good[:strings.LastIndex(good, ".")] {
				t.Fatalf("accepted %q", in)
			}
			return
		}
		if err.code == 0 || err.status < 400 || err.oauth == "" || err.message == "" {
			t.Fatalf("incomplete error %+v", err)
		}
	})
}

func TestJWKRSAKey(t *testing.T) {
	ks, err := testKeys()
	if err != nil {
		t.Fatal(err)
	}
	good := publicJWK(&ks[0].PublicKey, "k")
	cases := []struct {
		name    string
		k       jwk
		wantErr bool
	}{
		{name: "good", k: good},
		{name: "EC", k: jwk{Kty: "EC", Kid: "k", N: good.N, E: good.E}, wantErr: true},
		{name: "small modulus", k: jwk{Kty: "RSA", N: seg("\x01\x00"), E: good.E}, wantErr: true},
		{name: "empty modulus", k: jwk{Kty: "RSA", E: good.E}, wantErr: true},
		{name: "bad base64 modulus", k: jwk{Kty: "RSA", N: "+/=", E: good.E}, wantErr: true},
		{name: "huge exponent", k: jwk{Kty: "RSA", N: good.N, E: seg("\x01\x00\x00\x00\x01")}, wantErr: true},
		{name: "even exponent", k: jwk{Kty: "RSA", N: good.N, E: seg("\x02")}, wantErr: true},
		{name: "exponent one", k: jwk{Kty: "RSA", N: good.N, E: seg("\x01")}, wantErr: true},
		{name: "empty exponent", k: jwk{Kty: "RSA", N: good.N}, wantErr: true},
		{name: "huge modulus", k: jwk{Kty: "RSA", N: seg("\x01" + strings.Repeat("\x00", 1025)), E: good.E}, wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pub, err := tc.k.rsaKey()
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err == nil && (pub.N.Cmp(ks[0].N) != 0 || pub.E != ks[0].E) {
				t.Error("key differs")
			}
		})
	}
}

func FuzzJWK(f *testing.F) {
	f.Add("RSA", "sXch", "AQAB")
	f.Add("RSA", "", "")
	f.Fuzz(func(t *testing.T, kty, n, e string) {
		pub, err := jwk{Kty: kty, N: n, E: e}.rsaKey()
		if err == nil && (pub.N.BitLen() < 1024 || pub.E < 3) {
			t.Fatalf("accepted a weak key %d bits e=%d", pub.N.BitLen(), pub.E)
		}
	})
}

func TestResourceScope(t *testing.T) {
	cases := []struct {
		in, scope, key string
		code           int
	}{
		{in: "https://vault.azure.net/.default openid offline_access profile", scope: "https://vault.azure.net/.default", key: "https://vault.azure.net/.default"},
		{in: "https://database.windows.net//.default", scope: "https://database.windows.net//.default", key: "https://database.windows.net//.default"},
		{in: "OpenID https://x/.default PROFILE", scope: "https://x/.default", key: "https://x/.default"},
		{in: "  https://x/.default\t", scope: "https://x/.default", key: "https://x/.default"},
		{in: "api://00000000-0000-0000-0000-000000000001/.default", scope: "api://00000000-0000-0000-0000-000000000001/.default", key: "api://00000000-0000-0000-0000-000000000001/.default"},
		{in: "", code: 900144},
		{in: "   ", code: 900144},
		{in: "openid profile", code: 70011},
		{in: "/.default", key: "/.default", code: 70011},
		{in: "https://x/.default https://y/.default", key: "https://x/.default https://y/.default", code: 70011},
		{in: "https://x/user_impersonation", key: "https://x/user_impersonation", code: 70011},
		{in: "https://x/.DEFAULT", key: "https://x/.DEFAULT", code: 70011},
	}
	for _, tc := range cases {
		scope, key, err := resourceScope(tc.in)
		code := 0
		if err != nil {
			code = err.code
		}
		if scope != tc.scope || key != tc.key || code != tc.code {
			t.Errorf("resourceScope(%q) = %q, %q, %d; want %q, %q, %d", tc.in, scope, key, code, tc.scope, tc.key, tc.code)
		}
	}
}

func FuzzResourceScope(f *testing.F) {
	f.Add("https://vault.azure.net/.default openid offline_access profile")
	f.Add("a b c")
	f.Fuzz(func(t *testing.T, in string) {
		scope, _, err := resourceScope(in)
		if err == nil && (!strings.HasSuffix(scope, "/.default") || strings.ContainsAny(scope, " \t\n") || len(scope) <= len("/.default")) {
			t.Fatalf("accepted scope %q from %q", scope, in)
		}
	})
}
