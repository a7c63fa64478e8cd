package imds

import (
	"net/url"
	stdpath "path"
	"strconv"
	"strings"
	"testing"
)

func TestNormalizePath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		raw  string
		want string
		ok   bool
	}{
		{"/metadata/identity/oauth2/token", "/metadata/identity/oauth2/token", true},
		{"/Metadata/Identity/OAuth2/Token", "/metadata/identity/oauth2/token", true},
		{"/metadata/identity/oauth2/token/", "/metadata/identity/oauth2/token/", true},
		{`/metadata/identity\oauth2\token`, "/metadata/identity/oauth2/token", true},
		{`/metadata\identity\oauth2\token\`, "/metadata/identity/oauth2/token/", true},
		{"/metadata/identity%5Coauth2%5ctoken", "/metadata/identity/oauth2/token", true},
		{"/metadata/identity%2Foauth2%2ftoken", "/metadata/identity/oauth2/token", true},
		{"/metadata/identity%252Foauth2%252Ftoken", "/metadata/identity/oauth2/token", true},
		{"/metadata/identity%25255Coauth2/token", "/metadata/identity/oauth2/token", true},
		{"//metadata//identity///oauth2/token", "/metadata/identity/oauth2/token", true},
		{"/metadata/./identity/oauth2/./token", "/metadata/identity/oauth2/token", true},
		{"/metadata/instance/../identity/oauth2/token", "/metadata/identity/oauth2/token", true},
		{"/metadata/instance/%2e%2e/identity/oauth2/token", "/metadata/identity/oauth2/token", true},
		{"/metadata/instance/%2E%2E%5Cidentity/oauth2/token", "/metadata/identity/oauth2/token", true},
		{"/../../../metadata/identity/oauth2/token", "/metadata/identity/oauth2/token", true},
		{"/metadata/identity/oauth2/token/.", "/metadata/identity/oauth2/token/", true},
		{"/metadata/identity/oauth2/token/..", "/metadata/identity/oauth2/", true},
		{"/%6d%65%74%61%64%61%74%61/identity/oauth2/token", "/metadata/identity/oauth2/token", true},
		{"", "/", true},
		{"/", "/", true},
		{"//", "/", true},
		{"..", "/", true},
		{"metadata/identity", "/metadata/identity", true},
		{"/a%zzb", "/a%zzb", true},
		{"/a%", "/a%", true},
		{"/a%2", "/a%2", true},
		{"/a%00b", "/a\x00b", true},
		{"/metadata/identity/oauth2/token;x=1", "/metadata/identity/oauth2/token;x=1", true},
		{"/metadata/instance/compute/azEnvironment", "/metadata/instance/compute/azenvironment", true},
		// Nine levels of %25 never become stable within the round cap.
		{"/metadata/identity" + strings.Repeat("%25", 0) + "%2525252525252525252F", "", false},
	}
	for _, tt := range tests {
		got, ok := NormalizePath(tt.raw)
		if got != tt.want || ok != tt.ok {
			t.Errorf("NormalizePath(%q) = %q, %v; want %q, %v", tt.raw, got, ok, tt.want, tt.ok)
		}
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		target string
		want   routeClass
	}{
		{"/metadata/identity/oauth2/token", routeToken},
		{"/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x", routeToken},
		{"/metadata/identity/oauth2/token/", routeToken},
		{"/METADATA/identity/oauth2/token", routeToken},
		{"/MetaData/identity/oauth2/token/?resource=x", routeToken},
		{"/metadata/identity/oauth2/token//", routeIdentityOther},
		{"/metadata/Identity/oauth2/token", routeIdentityOther},
		{"/metadata/identity/OAuth2/token", routeIdentityOther},
		{"/metadata/identity/oauth2/TOKEN", routeIdentityOther},
		{`/metadata/identity\oauth2\token`, routeIdentityOther},
		{`/metadata/identity\oauth2\token/`, routeIdentityOther},
		{"/metadata/identity%5Coauth2%5Ctoken", routeIdentityOther},
		{"/metadata/identity/oauth2%2Ftoken", routeIdentityOther},
		{"/metadata/identity/oauth2%252Ftoken", routeIdentityOther},
		{"/metadata//identity/oauth2/token", routeIdentityOther},
		{"//metadata/identity/oauth2/token", routeIdentityOther},
		{"/metadata/./identity/oauth2/token", routeIdentityOther},
		{"/metadata/instance/../identity/oauth2/token", routeIdentityOther},
		{"/metadata/instance/%2e%2e/identity/oauth2/token", routeIdentityOther},
		{"/%6detadata/identity/oauth2/token", routeIdentityOther},
		{"/metadata/identity/oauth2/token;.js", routeIdentityOther},
		{"/metadata/identity/oauth2/token%00", routeIdentityOther},
		{"/metadata/identity", routeIdentityOther},
		{"/metadata/identity/", routeIdentityOther},
		{"/metadata/identityx", routeIdentityOther},
		{"/metadata/identity/oauth2", routeIdentityOther},
		{"/metadata/identity/info", routeIdentityInfo},
		{"/Metadata/identity/info?api-version=2018-02-01", routeIdentityInfo},
		{"/metadata/identity/info/", routeIdentityOther},
		{"/metadata/identity/INFO", routeIdentityOther},
		{"/metadata/instance", routePassthrough},
		{"/metadata/instance?api-version=2021-02-01", routePassthrough},
		{"/metadata/instance/compute/azEnvironment?format=text", routePassthrough},
		{"/Metadata/instance/compute", routePassthrough},
		{"/metadata/versions", routePassthrough},
		{"/metadata/attested/document", routePassthrough},
		{"/metadata/scheduledevents", routePassthrough},
		{"/metadata/loadbalancer", routePassthrough},
		{"/metadata/instance//compute", routeBadPath},
		{"/metadata/instance/./compute", routeBadPath},
		{`/metadata/instance\compute`, routeBadPath},
		{"/metadata/instance%2Fcompute", routeBadPath},
		{"/metadata/%69nstance", routeBadPath},
		{"/metadata/instancex", routeNotFound},
		{"/metadata", routeNotFound},
		{"/metadata/", routeNotFound},
		{"/metadata/foo", routeNotFound},
		{"/", routeNotFound},
		{"/readyz", routeReadyz},
		{"/readyz?x=1", routeReadyz},
		{"/healthz", routeHealthz},
		{"/metrics", routeMetrics},
		{"/quitquitquit", routeQuit},
		{"/Readyz", routeNotFound},
		{"/readyz/", routeNotFound},
		{"http://169.254.169.254/metadata/identity/oauth2/token", routeBadTarget},
		{"HTTP://169.254.169.254/metadata/instance", routeBadTarget},
		{"169.254.169.254:80", routeBadTarget},
		{"*", routeBadTarget},
		{"", routeBadTarget},
		{"/msi/token", routeAppServiceToken},
		{"/msi/token/", routeAppServiceToken},
		{"/msi/token?api-version=2019-08-01&resource=x", routeAppServiceToken},
		{"/msi/token/?resource=x", routeAppServiceToken},
		{"/MSI/token/", routeAppServiceOther},
		{"/msi/Token", routeAppServiceOther},
		{"/msi/token//", routeAppServiceOther},
		{"/msi//token", routeAppServiceOther},
		{"//msi/token", routeAppServiceOther},
		{`/msi\token`, routeAppServiceOther},
		{"/msi%2Ftoken", routeAppServiceOther},
		{"/msi/./token", routeAppServiceOther},
		{"/msi/x/../token", routeAppServiceOther},
		{"/metadata/../msi/token", routeAppServiceOther},
		{"/metadata/instance/../../msi/token", routeAppServiceOther},
		{"/%6Dsi/token", routeAppServiceOther},
		{"/msi/token;x", routeAppServiceOther},
		{"/msi", routeAppServiceOther},
		{"/msi/", routeAppServiceOther},
		{"/msi/info", routeAppServiceOther},
		{"/msix/token", routeNotFound},
		{"/msi/../metadata/instance", routeBadPath},
		{"/msi/../metadata/identity/oauth2/token", routeIdentityOther},
		{"http://127.0.0.1:8000/msi/token", routeBadTarget},
		{"/metadata/identity" + strings.Repeat("/x", maxPathLength), routeBadPath},
		{"/metadata/identity%2525252525252525252F", routeBadPath},
	}
	for _, tt := range tests {
		if got := classify(tt.target); got != tt.want {
			t.Errorf("classify(%q) = %v; want %v", tt.target, got, tt.want)
		}
	}
}

// FuzzNormalizePath checks the invariants the router relies on: the result
// is stable (normalising it again changes nothing), lower-case, starts with
// "/", has no backslash, repeated slash or dot segment; and no spelling
// other than the allowed ones reaches the token or passthrough routes.
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{
		"/metadata/identity/oauth2/token", `/metadata/identity\oauth2\token`, "/metadata/identity%2Foauth2%2Ftoken",
		"/metadata/identity%252Foauth2%252Ftoken", "//metadata/./identity/../identity/oauth2/token/", "/metadata/instance/compute",
		"/%2e%2e/%2E%2E/", "/a%zz%", "%25%32%46",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		norm, ok := NormalizePath(raw)
		if !ok {
			return
		}
		again, ok2 := NormalizePath(norm)
		if !ok2 || again != norm {
			t.Fatalf("NormalizePath not idempotent: %q -> %q -> %q", raw, norm, again)
		}
		if norm == "" || norm[0] != '/' {
			t.Fatalf("NormalizePath(%q) = %q does not start with /", raw, norm)
		}
		if strings.Contains(norm, `\`) || strings.Contains(norm, "//") {
			t.Fatalf("NormalizePath(%q) = %q has a backslash or a repeated slash", raw, norm)
		}
		for _, seg := range strings.Split(norm, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("NormalizePath(%q) = %q has a dot segment", raw, norm)
			}
		}
		if norm != strings.ToLower(norm) {
			t.Fatalf("NormalizePath(%q) = %q is not lower-case", raw, norm)
		}
	})
}

// FuzzClassify checks the path guard's promises on arbitrary request
// targets:
//
//   - routeToken only for the exact spellings the token endpoint allows
//     ("/metadata" in any case, then "/identity/oauth2/token", an optional
//     trailing "/"), routeIdentityInfo likewise;
//   - nothing that is forwarded (routePassthrough) reaches a
//     /metadata/identity path under any normalisation a lenient server
//     might apply, to the raw path or to the path net/http would forward
//     (lenientForms);
//   - every target whose normalised form is an identity path is answered
//     by the proxy: token, info, or refused;
//   - routeAppServiceToken only for "/msi/token" and "/msi/token/", and
//     every other target whose normalised form is an App Service path is
//     refused, never forwarded or served.
func FuzzClassify(f *testing.F) {
	for _, s := range []string{
		"/metadata/identity/oauth2/token?resource=x", "/METADATA/identity/oauth2/token/", `/metadata/identity\oauth2\token`,
		"/metadata/instance/compute?api-version=2021-02-01", "/metadata/instance/../identity/oauth2/token",
		"http://x/metadata/identity/oauth2/token", "/metadata/instance%2F..%2Fidentity", "/metadata/identity/info",
		"/metadata/instance/..%2fidentity", "/metadata/instance%252f..%252fidentity", `/metadata/instance\..\identity`,
		"/metadata/instance/.%2e/identity", "/metadata/versions#/../../identity", "/metadata/instance/%2E%2E/IDENTITY",
		"/Metadata/Instance", "/metadata/scheduledevents;/../identity", "/metrics/../metadata/identity/oauth2/token",
		"/msi/token?resource=x", "/msi/token/", "/MSI/token/", "/msi%2ftoken", "/metadata/instance/../../msi/token",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		route := classify(target)
		path, _, _ := strings.Cut(target, "?")
		switch route {
		case routeToken:
			if !allowedSpelling(path, "/identity/oauth2/token") && !allowedSpelling(path, "/identity/oauth2/token/") {
				t.Fatalf("classify(%q) = token for a spelling that is not allowed", target)
			}
		case routeIdentityInfo:
			if !allowedSpelling(path, "/identity/info") {
				t.Fatalf("classify(%q) = identity_info for a spelling that is not allowed", target)
			}
		case routeAppServiceToken:
			if path != "/msi/token" && path != "/msi/token/" {
				t.Fatalf("classify(%q) = app_service_token for a spelling that is not allowed", target)
			}
		case routePassthrough:
			forms := lenientForms(path)
			// What net/http parses from the target is what the reverse
			// proxy forwards.
			if u, err := url.ParseRequestURI(target); err == nil {
				forms = append(forms, lenientForms(u.EscapedPath())...)
				forms = append(forms, lenientForms(u.Path)...)
			}
			for _, form := range forms {
				if strings.HasPrefix(form, identityPrefix) {
					t.Fatalf("classify(%q) = passthrough, but a lenient server reads %q", target, form)
				}
			}
		}
		if norm, ok := NormalizePath(path); ok && strings.HasPrefix(norm, identityPrefix) {
			switch route {
			case routeToken, routeIdentityInfo, routeIdentityOther, routeBadPath, routeBadTarget:
			default:
				t.Fatalf("classify(%q) = %v for identity path %q", target, route, norm)
			}
		}
		if norm, ok := NormalizePath(path); ok && (norm == "/msi" || strings.HasPrefix(norm, "/msi/")) {
			switch route {
			case routeAppServiceToken, routeAppServiceOther, routeBadPath, routeBadTarget:
			default:
				t.Fatalf("classify(%q) = %v for App Service path %q", target, route, norm)
			}
		}
	})
}

// allowedSpelling reports whether path is "/metadata", in any case,
// followed by exactly rest.
func allowedSpelling(path, rest string) bool {
	const n = len("/metadata")
	return len(path) == n+len(rest) && strings.EqualFold(path[:n], "/metadata") && path[n:] == rest
}

// lenientForms returns what servers that are lenient about paths might
// make of raw, each lower-cased: percent-decoded once, or until stable, or
// not at all; with "\" read as "/"; with repeated slashes and dot
// segments resolved before decoding, after it, or both. It is written
// independently of NormalizePath (path.Clean, url.PathUnescape) so that
// the two check each other.
func lenientForms(raw string) []string {
	decodeOnce := func(s string) string {
		if d, err := url.PathUnescape(s); err == nil {
			return d
		}
		return percentDecodeValid(s)
	}
	decodeAll := func(s string) string {
		for range 16 {
			d := decodeOnce(s)
			if d == s {
				break
			}
			s = d
		}
		return s
	}
	slashes := func(s string) string { return strings.ReplaceAll(s, `\`, "/") }
	clean := func(s string) string {
		if s == "" {
			return "/"
		}
		return stdpath.Clean("/" + s)
	}
	var forms []string
	for _, f := range []func(string) string{
		func(s string) string { return clean(slashes(s)) },
		func(s string) string { return clean(slashes(decodeOnce(s))) },
		func(s string) string { return clean(slashes(decodeAll(s))) },
		func(s string) string { return clean(slashes(decodeAll(clean(slashes(s))))) },
		func(s string) string { return slashes(decodeAll(clean(s))) },
		func(s string) string { return clean(decodeAll(slashes(decodeOnce(clean(slashes(s)))))) },
	} {
		forms = append(forms, strings.ToLower(f(raw)))
	}
	return forms
}

// percentDecodeValid decodes the valid %XX escapes of s and keeps the
// rest, for strings url.PathUnescape refuses.
func percentDecodeValid(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
