package imds

import (
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/imds-proxy/imds-proxy/pkg/exchange"
)

// maxQueryParams bounds how many query parameters a token request may carry.
// Real clients send at most six (msal-node: api-version, resource, a
// selector, xms_cc, token_sha256_to_refresh, bypass_cache); the cap keeps the
// duplicate check cheap for hostile input.
const maxQueryParams = 32

// minAPIVersion is the oldest api-version that has the identity category
// (IMDS how-to-use-vm-token; every real client sends exactly this value).
const minAPIVersion = "2018-02-01"

// queryParam is one decoded name=value pair.
type queryParam struct{ name, value string }

// queryParams holds the decoded pairs of a query string without a map, so
// parsing a typical token request allocates only for escaped values.
type queryParams struct {
	n     int
	pairs [maxQueryParams]queryParam
}

// queryProblem says why a query string was refused.
type queryProblem int

const (
	queryOK queryProblem = iota
	queryMalformed
	queryTooMany
	queryRepeated
)

// parse decodes raw (the query string without "?") into q. Pairs are
// separated by "&"; a pair without "=" has an empty value; empty pairs are
// skipped; "+" means a space, as in url.ParseQuery. Repeated names are a
// problem: IMDS rejects them ("Query parameters" in the IMDS documentation),
// and accepting them would let a proxy in front of us and the proxy itself
// disagree about which resource or identity was asked for. Two names that
// differ only in case count as repeated too, for the same reason: a
// server that folds case would read the other one. repeated is the
// offending (second) name when the problem is queryRepeated.
func (q *queryParams) parse(raw string) (problem queryProblem, repeated string) {
	q.n = 0
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" {
			continue
		}
		name, value, _ := strings.Cut(pair, "=")
		name, err := url.QueryUnescape(name)
		if err != nil {
			return queryMalformed, ""
		}
		value, err = url.QueryUnescape(value)
		if err != nil {
			return queryMalformed, ""
		}
		for i := range q.n {
			if strings.EqualFold(q.pairs[i].name, name) {
				return queryRepeated, name
			}
		}
		if q.n == maxQueryParams {
			return queryTooMany, ""
		}
		q.pairs[q.n] = queryParam{name, value}
		q.n++
	}
	return queryOK, ""
}

// get returns the value of the parameter called name, or "" when absent.
func (q *queryParams) get(name string) string {
	v, _ := q.lookup(name)
	return v
}

// lookup returns the value of the parameter called name and whether it is
// present.
func (q *queryParams) lookup(name string) (value string, ok bool) {
	for i := range q.n {
		if q.pairs[i].name == name {
			return q.pairs[i].value, true
		}
	}
	return "", false
}

// knownParams are the parameters the token endpoint reads.
var knownParams = [...]string{
	"api-version", "resource", "client_id", "object_id", "principal_id", "msi_res_id", "mi_res_id", "bypass_cache",
}

// miscased returns the first parameter name that equals a known parameter
// only under case folding ("Client_ID", "RESOURCE", "reſource" with a long
// s), and the known name it folds to, or "" when there is none. Such a
// parameter is refused rather than ignored as unknown: ignoring
// "Client_ID=B" would answer with the default identity's token a request
// meant for identity B.
func (q *queryParams) miscased() (name, known string) {
	for i := range q.n {
		name := q.pairs[i].name
		for _, k := range knownParams {
			if name == k {
				break
			}
			if foldsTo(name, k) {
				return name, k
			}
		}
	}
	return "", ""
}

// foldsTo reports whether name becomes known, a lower-case ASCII string,
// when every rune of it is upper-cased and then lower-cased. For an ASCII
// target this matches everything strings.EqualFold matches (the long s
// "ſ" and the Kelvin sign "K" included) and also the Turkish dotless "ı"
// and dotted "İ", which comparisons that upper-case with invariant rules
// (.NET's OrdinalIgnoreCase) take for "i". The server behind a name is
// unknown, so every folding any of them does counts.
func foldsTo(name, known string) bool {
	i := 0
	for _, r := range name {
		switch {
		case r >= utf8.RuneSelf:
			r = unicode.ToLower(unicode.ToUpper(r))
		case 'A' <= r && r <= 'Z':
			r += 'a' - 'A'
		}
		if i == len(known) || r != rune(known[i]) {
			return false
		}
		i++
	}
	return i == len(known)
}

// validAPIVersion reports whether v is a calendar date written YYYY-MM-DD on
// or after 2018-02-01. IMDS documents versions as dates only; suffixes such
// as "-preview" are refused.
func validAPIVersion(v string) bool {
	if len(v) != len("2006-01-02") || v[4] != '-' || v[7] != '-' {
		return false
	}
	for i, c := range []byte(v) {
		if i == 4 || i == 7 {
			continue
		}
		if c < '0' || c > '9' {
			return false
		}
	}
	year := atoi4(v[0:4])
	month := int(v[5]-'0')*10 + int(v[6]-'0')
	day := int(v[8]-'0')*10 + int(v[9]-'0')
	if month < 1 || month > 12 || day < 1 || day > daysIn(year, month) {
		return false
	}
	// Both strings are valid dates in the same fixed-width layout, so the
	// byte order is the date order.
	return v >= minAPIVersion
}

func atoi4(s string) int {
	return int(s[0]-'0')*1000 + int(s[1]-'0')*100 + int(s[2]-'0')*10 + int(s[3]-'0')
}

func daysIn(year, month int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	default:
		return 31
	}
}

// selectorParams are the identity selectors and the kind each one selects.
var selectorParams = [...]struct {
	name string
	kind exchange.SelectorKind
}{
	{"client_id", exchange.SelectClientID},
	{"object_id", exchange.SelectObjectID},
	// principal_id is App Service's spelling of object_id.
	{"principal_id", exchange.SelectObjectID},
	{"msi_res_id", exchange.SelectResourceID},
	// mi_res_id is App Service's spelling of msi_res_id, and what
	// go-autorest adal sends to IMDS.
	{"mi_res_id", exchange.SelectResourceID},
}

// parseTokenQuery validates the raw query of a token request of protocol p
// and returns the request for the token source, or the reply that refuses
// it, checking in this order: malformed escapes and too many parameters;
// repeated names (also under case folding); names of known parameters in
// the wrong case; api-version (the only rule that differs between the
// protocols); empty selectors; resource; more than one selector.
//
// Unknown parameters are ignored: msal-node sends xms_cc and
// token_sha256_to_refresh, other clients may send more
// (docs/imds.md). But a selector never falls open to the default
// identity: a miscased or empty one is refused, not ignored. Both
// protocols accept every selector spelling of either, so a client that
// mixes them (azure-identity passes its identity_config through verbatim)
// gets the identity it named instead of the default one.
func parseTokenQuery(raw string, p protocol) (exchange.Request, *reply) {
	var q queryParams
	switch problem, name := q.parse(raw); problem {
	case queryMalformed:
		return exchange.Request{}, &replyMalformedQuery
	case queryTooMany:
		return exchange.Request{}, &replyTooManyParams
	case queryRepeated:
		return exchange.Request{}, repeatedParamReply(name)
	}
	if name, known := q.miscased(); name != "" {
		return exchange.Request{}, miscasedParamReply(name, known)
	}
	if !p.acceptsAPIVersion(q.get("api-version")) {
		return exchange.Request{}, p.badAPIVersion()
	}
	var req exchange.Request
	selectors := 0
	for _, s := range selectorParams {
		v, ok := q.lookup(s.name)
		if !ok {
			continue
		}
		if v == "" {
			return exchange.Request{}, emptySelectorReply(s.name)
		}
		selectors++
		req.Identity = exchange.Selector{Kind: s.kind, Value: v}
	}
	req.Resource = q.get("resource")
	if req.Resource == "" {
		return exchange.Request{}, &replyMissingResource
	}
	if selectors > 1 {
		return exchange.Request{}, &replyManySelectors
	}
	// bypass_cache accepts only the value true (IMDS REST specification).
	req.ForceRefresh = strings.EqualFold(q.get("bypass_cache"), "true")
	req.RefreshTokenSHA256 = q.get("token_sha256_to_refresh")
	return req, nil
}
