package imds

import (
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/imds-proxy/imds-proxy/pkg/exchange"
)

func TestValidAPIVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		v    string
		want bool
	}{
		{"2018-02-01", true},
		{"2019-08-01", true},
		{"2025-04-07", true},
		{"2024-02-29", true},
		{"9999-12-31", true},
		{"2018-01-31", false},
		{"2017-12-01", false},
		{"2023-02-29", false},
		{"2100-02-29", false},
		{"2400-02-29", true},
		{"2000-02-29", false},
		{"2018-13-01", false},
		{"2018-00-01", false},
		{"2018-02-00", false},
		{"2018-04-31", false},
		{"2018-2-01", false},
		{"2018-02-1", false},
		{"2018/02/01", false},
		{"2018-02-01-preview", false},
		{" 2018-02-01", false},
		{"2018-02-01 ", false},
		{"+018-02-01", false},
		{"２０１８-02-01", false},
		{"abcd-ef-gh", false},
		{"", false},
		{"latest", false},
	}
	for _, tt := range tests {
		if got := validAPIVersion(tt.v); got != tt.want {
			t.Errorf("validAPIVersion(%q) = %v; want %v", tt.v, got, tt.want)
		}
	}
}

func TestParseTokenQuery(t *testing.T) {
	t.Parallel()
	const base = "api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net"
	tests := []struct {
		name     string
		raw      string
		want     exchange.Request
		wantBody string // empty when the query is accepted
	}{
		{"default identity", base,
			exchange.Request{Resource: "https://vault.azure.net"}, ""},
		{"resource with trailing slash kept verbatim", "api-version=2018-02-01&resource=https://database.windows.net/",
			exchange.Request{Resource: "https://database.windows.net/"}, ""},
		{"plus is a space", "api-version=2018-02-01&resource=a+b",
			exchange.Request{Resource: "a b"}, ""},
		{"client_id", base + "&client_id=abc",
			exchange.Request{Resource: "https://vault.azure.net", Identity: exchange.Selector{Kind: exchange.SelectClientID, Value: "abc"}}, ""},
		{"object_id", base + "&object_id=oid",
			exchange.Request{Resource: "https://vault.azure.net", Identity: exchange.Selector{Kind: exchange.SelectObjectID, Value: "oid"}}, ""},
		{"principal_id alias", base + "&principal_id=oid",
			exchange.Request{Resource: "https://vault.azure.net", Identity: exchange.Selector{Kind: exchange.SelectObjectID, Value: "oid"}}, ""},
		{"msi_res_id", base + "&msi_res_id=%2Fsubscriptions%2Fs%2FresourceGroups%2Fg",
			exchange.Request{Resource: "https://vault.azure.net", Identity: exchange.Selector{Kind: exchange.SelectResourceID, Value: "/subscriptions/s/resourceGroups/g"}}, ""},
		{"mi_res_id alias", base + "&mi_res_id=%2Fsubscriptions%2Fs",
			exchange.Request{Resource: "https://vault.azure.net", Identity: exchange.Selector{Kind: exchange.SelectResourceID, Value: "/subscriptions/s"}}, ""},
		{"unknown parameters ignored", base + "&xms_cc=cp1&foo=bar&&",
			exchange.Request{Resource: "https://vault.azure.net"}, ""},
		{"names that differ by more than case are unknown", base + "&client-id=b&clientid=b&+client_id=b&client_id_=b",
			exchange.Request{Resource: "https://vault.azure.net"}, ""},
		{"bypass_cache", base + "&bypass_cache=true",
			exchange.Request{Resource: "https://vault.azure.net", ForceRefresh: true}, ""},
		{"bypass_cache other value", base + "&bypass_cache=1",
			exchange.Request{Resource: "https://vault.azure.net"}, ""},
		{"token_sha256_to_refresh", base + "&token_sha256_to_refresh=abcdef",
			exchange.Request{Resource: "https://vault.azure.net", RefreshTokenSHA256: "abcdef"}, ""},
		{"newer api-version", "api-version=2025-04-07&resource=r",
			exchange.Request{Resource: "r"}, ""},
		{"parameter order irrelevant", "resource=r&client_id=c&api-version=2018-02-01",
			exchange.Request{Resource: "r", Identity: exchange.Selector{Kind: exchange.SelectClientID, Value: "c"}}, ""},

		{"empty query", "", exchange.Request{},
			`{"error":"invalid_request","error_description":"api-version is missing or older than 2018-02-01"}`},
		{"api-version missing", "resource=r", exchange.Request{},
			`{"error":"invalid_request","error_description":"api-version is missing or older than 2018-02-01"}`},
		{"api-version old", "api-version=2017-12-01&resource=r", exchange.Request{},
			`{"error":"invalid_request","error_description":"api-version is missing or older than 2018-02-01"}`},
		{"api-version not a date", "api-version=latest&resource=r", exchange.Request{},
			`{"error":"invalid_request","error_description":"api-version is missing or older than 2018-02-01"}`},
		{"api-version in upper case", "API-VERSION=2018-02-01&resource=r", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'API-VERSION' must be spelled 'api-version' (parameter names are case-sensitive)"}`},
		{"repeated resource", base + "&resource=https://evil", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'resource' is repeated"}`},
		{"repeated api-version before validation", "api-version=x&api-version=y", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'api-version' is repeated"}`},
		{"repeated unknown parameter", base + "&x=1&x=2", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'x' is repeated"}`},
		{"repeated through escaping", base + "&client_id=a&client%5Fid=b", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'client_id' is repeated"}`},
		{"repeated name with quotes is escaped", `a"b=1&a%22b=2`, exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'a\"b' is repeated"}`},
		{"long repeated name truncated", strings.Repeat("n", 100) + "=1&" + strings.Repeat("n", 100) + "=2", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter '` + strings.Repeat("n", 64) + `...' is repeated"}`},
		{"malformed escape in value", "api-version=2018-02-01&resource=%zz", exchange.Request{},
			`{"error":"invalid_request","error_description":"The query string is malformed"}`},
		{"malformed escape in name", "%=1", exchange.Request{},
			`{"error":"invalid_request","error_description":"The query string is malformed"}`},
		{"too many parameters", strings.Repeat("a=1&", 0) + manyParams(33), exchange.Request{},
			`{"error":"invalid_request","error_description":"Too many query parameters"}`},
		{"resource missing", "api-version=2018-02-01", exchange.Request{},
			`{"error":"invalid_request","error_description":"Required query variable 'resource' is missing"}`},
		{"resource empty", "api-version=2018-02-01&resource=", exchange.Request{},
			`{"error":"invalid_request","error_description":"Required query variable 'resource' is missing"}`},
		// A selector never falls open to the default identity.
		{"Client_ID", base + "&Client_ID=b", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'Client_ID' must be spelled 'client_id' (parameter names are case-sensitive)"}`},
		{"CLIENT_ID", base + "&CLIENT_ID=b", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'CLIENT_ID' must be spelled 'client_id' (parameter names are case-sensitive)"}`},
		{"Object_ID", base + "&Object_ID=oid", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'Object_ID' must be spelled 'object_id' (parameter names are case-sensitive)"}`},
		{"Principal_Id", base + "&Principal_Id=oid", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'Principal_Id' must be spelled 'principal_id' (parameter names are case-sensitive)"}`},
		{"MSI_RES_ID", base + "&MSI_RES_ID=%2Fsubscriptions%2Fs", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'MSI_RES_ID' must be spelled 'msi_res_id' (parameter names are case-sensitive)"}`},
		{"Mi_Res_Id", base + "&Mi_Res_Id=%2Fsubscriptions%2Fs", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'Mi_Res_Id' must be spelled 'mi_res_id' (parameter names are case-sensitive)"}`},
		{"Bypass_Cache", base + "&Bypass_Cache=true", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'Bypass_Cache' must be spelled 'bypass_cache' (parameter names are case-sensitive)"}`},
		{"Resource beside nothing", "api-version=2018-02-01&Resource=r", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'Resource' must be spelled 'resource' (parameter names are case-sensitive)"}`},
		{"miscased name through escaping", base + "&Client%5FID=b", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'Client_ID' must be spelled 'client_id' (parameter names are case-sensitive)"}`},
		{"long s folds to s", "api-version=2018-02-01&re%C5%BFource=r", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'reſource' must be spelled 'resource' (parameter names are case-sensitive)"}`},
		{"long s in a selector", base + "&m%C5%BFi_re%C5%BF_id=x", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'mſi_reſ_id' must be spelled 'msi_res_id' (parameter names are case-sensitive)"}`},
		{"dotless i", base + "&cl%C4%B1ent_id=b", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'clıent_id' must be spelled 'client_id' (parameter names are case-sensitive)"}`},
		{"dotted capital I", base + "&CL%C4%B0ENT_ID=b", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'CLİENT_ID' must be spelled 'client_id' (parameter names are case-sensitive)"}`},
		{"miscased name before api-version", "Client_ID=b&resource=r", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'Client_ID' must be spelled 'client_id' (parameter names are case-sensitive)"}`},
		{"repeated under case folding", base + "&client_id=a&CLIENT_ID=b", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'CLIENT_ID' is repeated"}`},
		{"repeated under case folding, unknown name", base + "&xms_cc=a&XMS_CC=b", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'XMS_CC' is repeated"}`},
		{"repeated resource under case folding", base + "&RESOURCE=https://evil", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'RESOURCE' is repeated"}`},
		{"empty client_id", base + "&client_id=", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'client_id' has no value; omit it to ask for the default identity"}`},
		{"client_id without =", base + "&client_id", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'client_id' has no value; omit it to ask for the default identity"}`},
		{"empty object_id", base + "&object_id=", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'object_id' has no value; omit it to ask for the default identity"}`},
		{"empty principal_id", base + "&principal_id=", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'principal_id' has no value; omit it to ask for the default identity"}`},
		{"empty msi_res_id", base + "&msi_res_id=", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'msi_res_id' has no value; omit it to ask for the default identity"}`},
		{"empty mi_res_id", base + "&mi_res_id=", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'mi_res_id' has no value; omit it to ask for the default identity"}`},
		{"empty selector beside a named one", base + "&client_id=&object_id=b", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'client_id' has no value; omit it to ask for the default identity"}`},
		{"empty selector before missing resource", "api-version=2018-02-01&object_id=", exchange.Request{},
			`{"error":"invalid_request","error_description":"Query parameter 'object_id' has no value; omit it to ask for the default identity"}`},
		{"client_id and object_id", base + "&client_id=a&object_id=b", exchange.Request{},
			`{"error":"invalid_request","error_description":"Specify at most one of client_id, object_id (principal_id) and msi_res_id (mi_res_id)"}`},
		{"object_id and principal_id", base + "&object_id=a&principal_id=a", exchange.Request{},
			`{"error":"invalid_request","error_description":"Specify at most one of client_id, object_id (principal_id) and msi_res_id (mi_res_id)"}`},
		{"msi_res_id and mi_res_id", base + "&msi_res_id=a&mi_res_id=a", exchange.Request{},
			`{"error":"invalid_request","error_description":"Specify at most one of client_id, object_id (principal_id) and msi_res_id (mi_res_id)"}`},
		{"all three", base + "&client_id=a&object_id=b&msi_res_id=c", exchange.Request{},
			`{"error":"invalid_request","error_description":"Specify at most one of client_id, object_id (principal_id) and msi_res_id (mi_res_id)"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, rep := parseTokenQuery(tt.raw, protocolIMDS)
			if tt.wantBody == "" {
				if rep != nil {
					t.Fatalf("refused with %d %s", rep.status, rep.body)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("request = %+v; want %+v", got, tt.want)
				}
				return
			}
			if rep == nil {
				t.Fatalf("accepted as %+v; want refusal %s", got, tt.wantBody)
			}
			if rep.status != 400 || string(rep.body) != tt.wantBody {
				t.Fatalf("reply = %d %s; want 400 %s", rep.status, rep.body, tt.wantBody)
			}
		})
	}
}

func TestFoldsTo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, known string
		want        bool
	}{
		{"client_id", "client_id", true},
		{"CLIENT_ID", "client_id", true},
		{"cLiEnT_Id", "client_id", true},
		{"reſource", "resource", true},
		{"RESOURCE", "resource", true},
		{"clıent_id", "client_id", true},
		{"CLİENT_ID", "client_id", true},
		{"client_id ", "client_id", false},
		{" client_id", "client_id", false},
		{"client_i", "client_id", false},
		{"client_idd", "client_id", false},
		{"client-id", "client_id", false},
		{"client\x00id", "client_id", false},
		{"client_id\xff", "client_id", false},
		{"\xffclient_id", "client_id", false},
		{"ｃｌｉｅｎｔ_ｉｄ", "client_id", false},
		{"", "client_id", false},
		{"", "", true},
		{"x", "", false},
	}
	for _, tt := range tests {
		if got := foldsTo(tt.name, tt.known); got != tt.want {
			t.Errorf("foldsTo(%q, %q) = %v; want %v", tt.name, tt.known, got, tt.want)
		}
	}
}

func manyParams(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString("p")
		b.WriteString(strings.Repeat("x", i))
		b.WriteString("=1")
	}
	return b.String()
}

// FuzzParseTokenQuery checks parseTokenQuery, for both protocols, against
// a reference parse written independently of it. A refusal is a 400 with a
// JSON error body. An accepted query names no parameter twice, not even
// under case folding, and no known parameter in the wrong case; its
// api-version is one of the protocol's and its resource is exactly the
// decoded value given. Above all, it asks for no identity it did not name:
// the default identity only when no parameter name folds to a selector,
// and otherwise exactly the one selector given, with exactly its decoded
// value. The two protocols differ in the api-version only: a query whose
// api-version both accept gets the same answer from both.
func FuzzParseTokenQuery(f *testing.F) {
	for _, s := range []string{
		"api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net&client_id=x",
		"api-version=2018-02-01&resource=r&resource=s", "resource=r", "%zz", "a=1&&b=2&a", "api-version=2018-02-01&resource=%2B+",
		"api-version=2018-02-01&resource=r&object_id=a&mi_res_id=b", "api-version=2018-02-01;resource=r",
		"api-version=2018-02-01&resource=r&Client_ID=b", "api-version=2018-02-01&resource=r&client_id=",
		"api-version=2018-02-01&resource=r&cl%C4%B1ent_id=b", "api-version=2018-02-01&resource=r&m%C5%BFi_res_id=b",
		"api-version=2018-02-01&resource=r&principal_id=p&bypass_cache=TRUE&token_sha256_to_refresh=h",
		"api-version=2018-02-01&resource=r&client_id=a&CLIENT_ID=b",
		"api-version=2019-08-01&resource=https://vault.azure.net&principal_id=p",
		"resource=r&api-version=2019-08-01&mi_res_id=%2Fsubscriptions%2Fs&Mi_Res_Id=x",
		"api-version=2019-08-01&resource=r&object_id=o&token_sha256_to_refresh=h&xms_cc=cp1",
		"api-version=2017-09-01&resource=r&clientid=c",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		imdsReq, imdsRep := parseTokenQuery(raw, protocolIMDS)
		asReq, asRep := parseTokenQuery(raw, protocolAppService)
		checkParsedQuery(t, raw, protocolIMDS, imdsReq, imdsRep)
		checkParsedQuery(t, raw, protocolAppService, asReq, asRep)
		// Both accept the api-version 2019-08-01; the first parameter
		// spelled exactly api-version is the one read.
		if pairs, ok := referenceQuery(raw); ok {
			i := slices.IndexFunc(pairs, func(p queryParam) bool { return p.name == "api-version" })
			same := imdsReq == asReq && (imdsRep == nil) == (asRep == nil) && (imdsRep == nil || imdsRep.description == asRep.description)
			if i >= 0 && pairs[i].value == appServiceAPIVersion && !same {
				t.Fatalf("the protocols disagree about %q: IMDS %+v %+v, App Service %+v %+v", raw, imdsReq, imdsRep, asReq, asRep)
			}
		}
	})
}

// checkParsedQuery checks the verdict of parseTokenQuery(raw, p) against
// the reference parse (see FuzzParseTokenQuery).
func checkParsedQuery(t *testing.T, raw string, proto protocol, req exchange.Request, rep *reply) {
	t.Helper()
	pairs, decodable := referenceQuery(raw)
	if rep != nil {
		if rep.status != 400 {
			t.Fatalf("parseTokenQuery(%q, %d) refused with %d", raw, proto, rep.status)
		}
		checkErrorBody(t, rep.body)
		return
	}
	if !decodable {
		t.Fatalf("accepted %q, which does not decode", raw)
	}
	values := map[string]string{}
	for i, p := range pairs {
		for _, q := range pairs[:i] {
			if strings.EqualFold(p.name, q.name) {
				t.Fatalf("accepted %q with %q and %q", raw, q.name, p.name)
			}
		}
		for _, k := range knownParams {
			if p.name != k && referenceFolds(p.name, k) {
				t.Fatalf("accepted %q with %q, which folds to %q", raw, p.name, k)
			}
		}
		values[p.name] = p.value
	}
	if v := values["api-version"]; proto == protocolAppService && v != "2019-08-01" || !validAPIVersion(v) {
		t.Fatalf("accepted %q for protocol %d with api-version %q", raw, proto, v)
	}
	if r, ok := values["resource"]; !ok || r == "" || req.Resource != r {
		t.Fatalf("accepted %q as resource %q; the query says %q", raw, req.Resource, r)
	}
	var named []queryParam
	for _, s := range selectorParams {
		for _, p := range pairs {
			if referenceFolds(p.name, s.name) {
				named = append(named, p)
			}
		}
	}
	switch len(named) {
	case 0:
		if req.Identity != (exchange.Selector{}) {
			t.Fatalf("accepted %q, which names no identity, as %+v", raw, req.Identity)
		}
	case 1:
		want := exchange.Selector{Kind: referenceKind(named[0].name), Value: named[0].value}
		if want.Value == "" || req.Identity != want {
			t.Fatalf("accepted %q, which names %s=%q, as %+v", raw, named[0].name, named[0].value, req.Identity)
		}
	default:
		t.Fatalf("accepted %q, which names %d identities, as %+v", raw, len(named), req.Identity)
	}
	if req.ForceRefresh != strings.EqualFold(values["bypass_cache"], "true") {
		t.Fatalf("accepted %q with ForceRefresh %v", raw, req.ForceRefresh)
	}
	if req.RefreshTokenSHA256 != values["token_sha256_to_refresh"] {
		t.Fatalf("accepted %q with RefreshTokenSHA256 %q", raw, req.RefreshTokenSHA256)
	}
}

// referenceQuery splits a query the obvious way: "&"-separated pairs,
// empty ones skipped, each decoded by url.QueryUnescape. decodable is
// false when a name or value does not decode.
func referenceQuery(raw string) (pairs []queryParam, decodable bool) {
	for _, pair := range strings.Split(raw, "&") {
		if pair == "" {
			continue
		}
		name, value, _ := strings.Cut(pair, "=")
		n, err1 := url.QueryUnescape(name)
		v, err2 := url.QueryUnescape(value)
		if err1 != nil || err2 != nil {
			return nil, false
		}
		pairs = append(pairs, queryParam{n, v})
	}
	return pairs, true
}

// referenceFolds reports whether name equals known under some case
// folding: Unicode's (strings.EqualFold), or upper-casing then
// lower-casing every rune.
func referenceFolds(name, known string) bool {
	wide := strings.Map(func(r rune) rune { return unicode.ToLower(unicode.ToUpper(r)) }, name)
	return strings.EqualFold(name, known) || wide == known
}

// referenceKind is the selector kind of a selector name.
func referenceKind(name string) exchange.SelectorKind {
	switch name {
	case "client_id":
		return exchange.SelectClientID
	case "object_id", "principal_id":
		return exchange.SelectObjectID
	default:
		return exchange.SelectResourceID
	}
}

// FuzzValidAPIVersion checks validAPIVersion against a reference built on
// time.Parse.
func FuzzValidAPIVersion(f *testing.F) {
	for _, s := range []string{"2018-02-01", "2018-02-29", "2017-12-31", "9999-99-99", "2018-02-01x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		want := referenceAPIVersion(v)
		if got := validAPIVersion(v); got != want {
			t.Fatalf("validAPIVersion(%q) = %v; reference says %v", v, got, want)
		}
	})
}

// referenceAPIVersion is the obvious but slower definition of a valid
// api-version.
func referenceAPIVersion(v string) bool {
	d, err := time.Parse("2006-01-02", v)
	if err != nil || d.Format("2006-01-02") != v {
		return false
	}
	return !d.Before(time.Date(2018, 2, 1, 0, 0, 0, 0, time.UTC))
}
