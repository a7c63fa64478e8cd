package imds

import (
	"strings"
)

// Paths the proxy recognises, in normalised (lower-case) form.
const (
	tokenPath        = "/metadata/identity/oauth2/token"
	identityInfoPath = "/metadata/identity/info"
	identityPrefix   = "/metadata/identity"
	metadataPrefix   = "/metadata/"
	// appServicePath is the token endpoint of the App Service protocol
	// (docs/app-service.md), the IDENTITY_ENDPOINT apps are given.
	appServicePath = "/msi/token"
	// appServicePrefix is the normalised prefix of every path that reads
	// as an App Service path.
	appServicePrefix = "/msi"
)

// maxDecodeRounds bounds how often NormalizePath percent-decodes. Every
// round that changes the path shortens it, so the loop ends anyway; the cap
// keeps a hostile "%25252525..." path from costing quadratic time. A path
// that is still changing after this many rounds is reported as not
// normalisable.
const maxDecodeRounds = 8

// maxPathLength bounds the raw request path the router looks at. Real IMDS
// paths are well under 200 bytes.
const maxPathLength = 2048

// passthroughCategories are the IMDS categories that are forwarded to the
// real IMDS. Everything else under /metadata/ is answered 404,
// and /metadata/identity never leaves the proxy.
var passthroughCategories = [...]string{"instance", "versions", "attested", "scheduledevents", "loadbalancer"}

// NormalizePath returns the normalised form of a raw (still escaped) request
// path: percent-decoded until stable, backslashes
// turned into slashes, repeated slashes collapsed, dot segments resolved,
// and lower-cased. A trailing slash survives normalisation. ok is false when
// the path did not become stable within a few decoding rounds; such a path
// must be refused.
//
// The normalised form is only used to decide how to route and whether to
// refuse a request. Real IMDS is lenient about separators: it accepts
// "\" and encoded slashes in the token path, which is how CVE-2022-23551
// (GHSA-p82q-rxpm-hjpc) leaked node identities through aad-pod-identity's
// NMI, whose router matched the raw path only. Normalising before matching
// makes every spelling of an identity path look like one.
func NormalizePath(raw string) (normalized string, ok bool) {
	p := raw
	stable := false
	for range maxDecodeRounds {
		d := percentDecode(p)
		if d == p {
			stable = true
			break
		}
		p = d
	}
	if !stable {
		return "", false
	}
	p = strings.ReplaceAll(p, `\`, "/")
	p = resolveDotSegments(p)
	return strings.ToLower(p), true
}

// percentDecode decodes every valid %XX escape in s once. Invalid escapes
// ("%zz", a trailing "%") are kept literally, so decoding never fails; the
// raw-form checks of the router reject such paths anyway.
func percentDecode(s string) string {
	i := strings.IndexByte(s, '%')
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	b.WriteString(s[:i])
	for ; i < len(s); i++ {
		c := s[i]
		if c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// resolveDotSegments collapses repeated slashes and resolves "." and ".."
// segments (RFC 3986 §5.2.4); ".." never climbs above the root. The result
// always starts with "/" and keeps a trailing slash when the input had one
// or ended in a dot segment.
func resolveDotSegments(p string) string {
	segs := strings.Split(p, "/")
	out := make([]string, 0, len(segs))
	trailing := false
	for _, s := range segs {
		switch s {
		case "":
			trailing = true
			continue
		case ".":
			trailing = true
			continue
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			trailing = true
			continue
		}
		out = append(out, s)
		trailing = false
	}
	if len(out) == 0 {
		return "/"
	}
	r := "/" + strings.Join(out, "/")
	if trailing {
		r += "/"
	}
	return r
}

// routeClass names what the router decided to do with a request. Its String
// form is the "route" label of the request metrics and logs.
type routeClass int

const (
	routeBadTarget       routeClass = iota // absolute-form or otherwise unusable request target
	routeBadPath                           // a path that cannot be normalised, or a non-canonical metadata path
	routeToken                             // the managed-identity token endpoint
	routeIdentityInfo                      // /metadata/identity/info, answered locally
	routeIdentityOther                     // any other (or disguised) /metadata/identity path
	routePassthrough                       // an IMDS category forwarded to the real IMDS
	routeAppServiceToken                   // the App Service protocol's token endpoint, /msi/token
	routeAppServiceOther                   // any other (or disguised) /msi path
	routeReadyz
	routeHealthz
	routeMetrics
	routeQuit
	routeNotFound
	numRoutes
)

// String returns the metric label of the route class.
func (r routeClass) String() string {
	switch r {
	case routeBadTarget:
		return "bad_target"
	case routeBadPath:
		return "bad_path"
	case routeToken:
		return "token"
	case routeIdentityInfo:
		return "identity_info"
	case routeIdentityOther:
		return "identity_other"
	case routePassthrough:
		return "passthrough"
	case routeAppServiceToken:
		return "app_service_token"
	case routeAppServiceOther:
		return "app_service_other"
	case routeReadyz:
		return "readyz"
	case routeHealthz:
		return "healthz"
	case routeMetrics:
		return "metrics"
	case routeQuit:
		return "quit"
	case routeNotFound:
		return "not_found"
	default:
		return "unknown"
	}
}

// appService reports whether the route belongs to the App Service protocol,
// whose refusals have that protocol's error shape.
func (r routeClass) appService() bool {
	return r == routeAppServiceToken || r == routeAppServiceOther
}

// classify routes a request by its raw request target (http.Request's
// RequestURI, exactly as the client sent it). The Host header plays no
// part: every request reaching the proxy was addressed to 169.254.169.254
// and redirected by iptables.
func classify(requestURI string) routeClass {
	// Only origin-form targets ("/path?query") are IMDS requests. An
	// absolute-form target ("http://host/path") is what a client sends to an
	// HTTP proxy; authority-form (CONNECT) and "*" are not IMDS either.
	if requestURI == "" || requestURI[0] != '/' {
		return routeBadTarget
	}
	rawPath := requestURI
	if i := strings.IndexByte(rawPath, '?'); i >= 0 {
		rawPath = rawPath[:i]
	}
	switch rawPath {
	case "/readyz":
		return routeReadyz
	case "/healthz":
		return routeHealthz
	case "/metrics":
		return routeMetrics
	case "/quitquitquit":
		return routeQuit
	}
	// Fast path for the exact spellings real clients send; it also is the
	// only way to reach either token endpoint, see isTokenRaw.
	if isTokenRaw(rawPath) {
		return routeToken
	}
	if rawPath == appServicePath || rawPath == appServicePath+"/" {
		return routeAppServiceToken
	}
	if len(rawPath) > maxPathLength {
		return routeBadPath
	}
	norm, ok := NormalizePath(rawPath)
	if !ok {
		return routeBadPath
	}
	if strings.HasPrefix(norm, identityPrefix) {
		if norm == identityInfoPath && rawEqualsModuloMetadataCase(rawPath, identityInfoPath) {
			return routeIdentityInfo
		}
		// Disguised token paths ("/metadata/identity\oauth2\token",
		// "/metadata/identity/oauth2%2Ftoken", "/metadata//identity/...",
		// "/Metadata/Identity/...") and unknown identity paths end here:
		// answered 400, never forwarded (CVE-2022-23551).
		return routeIdentityOther
	}
	if norm == appServicePrefix || strings.HasPrefix(norm, appServicePrefix+"/") {
		// Every other spelling of an App Service path ("/MSI/token",
		// "/msi//token", "/msi/token%2F", "/metadata/../msi/token") is
		// refused, so that only the one spelling the proxy documents
		// reaches the secret check.
		return routeAppServiceOther
	}
	if !strings.HasPrefix(norm, metadataPrefix) {
		return routeNotFound
	}
	cat := norm[len(metadataPrefix):]
	if i := strings.IndexByte(cat, '/'); i >= 0 {
		cat = cat[:i]
	}
	for _, c := range passthroughCategories {
		if cat != c {
			continue
		}
		// The real IMDS is lenient about separators, so only a canonical
		// raw path (no escapes, backslashes, repeated slashes or dot
		// segments) is forwarded, exactly as the client spelled it. The
		// case is left alone: leaf names such as compute/azEnvironment are
		// camel-cased.
		if !strings.EqualFold(rawPath, norm) {
			return routeBadPath
		}
		return routePassthrough
	}
	return routeNotFound
}

// isTokenRaw reports whether a raw path is the token endpoint spelled as
// the proxy accepts it: "/metadata/identity/oauth2/token" with an
// optional trailing slash, where only the "metadata" segment may differ in
// case. Real IMDS treats "/metadata" case-insensitively but rejects other
// casings of "/identity" (aad-pod-identity pkg/nmi/server/server.go and
// azure-workload-identity pkg/proxy/proxy.go comments), and both NMI and
// azure-workload-identity route the trailing-slash form as a token request
// (azure-workload-identity TestRouterPathPrefix).
func isTokenRaw(raw string) bool {
	if strings.HasSuffix(raw, "/") && len(raw) > 1 {
		raw = raw[:len(raw)-1]
	}
	return rawEqualsModuloMetadataCase(raw, tokenPath)
}

// rawEqualsModuloMetadataCase reports whether raw equals want (a normalised
// path starting with "/metadata/") except for the case of the "metadata"
// segment.
func rawEqualsModuloMetadataCase(raw, want string) bool {
	const n = len("/metadata")
	return len(raw) == len(want) &&
		strings.EqualFold(raw[:n], want[:n]) &&
		raw[n:] == want[n:]
}
