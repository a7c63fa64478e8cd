package imds

import (
	"net/url"
	"strings"

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
// disagree about which resource or identity was asked for. repeated is the
// offending name when the problem is queryRepeated.
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
			if q.pairs[i].name == name {
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
	for i := range q.n {
		if q.pairs[i].name == name {
			return q.pairs[i].value
		}
	}
	return ""
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

// parseTokenQuery applies steps 5 to 7 of SPEC §3.2 to the raw query of a
// token request and returns the request for the token source, or the reply
// that refuses it. Unknown parameters are ignored: msal-node sends xms_cc and
// token_sha256_to_refresh, other clients may send more (imds-protocol.md
// §2.3).
func parseTokenQuery(raw string) (exchange.Request, *reply) {
	var q queryParams
	switch problem, name := q.parse(raw); problem {
	case queryMalformed:
		return exchange.Request{}, &replyMalformedQuery
	case queryTooMany:
		return exchange.Request{}, &replyTooManyParams
	case queryRepeated:
		return exchange.Request{}, repeatedParamReply(name)
	}
	if !validAPIVersion(q.get("api-version")) {
		return exchange.Request{}, &replyBadAPIVersion
	}
	resource := q.get("resource")
	if resource == "" {
		return exchange.Request{}, &replyMissingResource
	}
	req := exchange.Request{Resource: resource}
	selectors := 0
	for _, s := range [...]struct {
		name string
		kind exchange.SelectorKind
	}{
		{"client_id", exchange.SelectClientID},
		{"object_id", exchange.SelectObjectID},
		// principal_id is App Service's spelling of object_id.
		{"principal_id", exchange.SelectObjectID},
		{"msi_res_id", exchange.SelectResourceID},
		// mi_res_id is what go-autorest adal sends to IMDS.
		{"mi_res_id", exchange.SelectResourceID},
	} {
		// An empty selector is treated as absent, like an omitted one.
		if v := q.get(s.name); v != "" {
			selectors++
			req.Identity = exchange.Selector{Kind: s.kind, Value: v}
		}
	}
	if selectors > 1 {
		return exchange.Request{}, &replyManySelectors
	}
	// bypass_cache accepts only the value true (IMDS REST specification).
	req.ForceRefresh = strings.EqualFold(q.get("bypass_cache"), "true")
	req.RefreshTokenSHA256 = q.get("token_sha256_to_refresh")
	return req, nil
}
