package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/imds-proxy/imds-proxy/internal/podenv"
	"github.com/imds-proxy/imds-proxy/internal/podenv/podenvtest"
)

// appUID is the unprivileged UID the pod's app containers run as.
const appUID = 1000

// imdsBase is where every client in the pod sends its requests.
const imdsBase = "http://169.254.169.254"

// wireReply is one HTTP response exactly as curl received it.
type wireReply struct {
	StatusLine string // "HTTP/1.1 200 OK"
	Code       int
	Header     http.Header
	Body       string
}

// tokenPath returns the IMDS token path with api-version=2018-02-01,
// resource and the extra query pairs (name, value, name, value...).
func tokenPath(resource string, extra ...string) string {
	q := "api-version=2018-02-01&resource=" + url.QueryEscape(resource)
	for i := 0; i+1 < len(extra); i += 2 {
		q += "&" + url.QueryEscape(extra[i]) + "=" + url.QueryEscape(extra[i+1])
	}
	return "/metadata/identity/oauth2/token?" + q
}

// curlArgs is the curl command line for GET imdsBase+path: -i to keep the
// status line and headers, --path-as-is so curl sends the path unchanged.
func curlArgs(path string, headers ...string) []string {
	argv := []string{"curl", "-sS", "-i", "--path-as-is", "--max-time", "60"}
	for _, h := range headers {
		argv = append(argv, "-H", h)
	}
	return append(argv, imdsBase+path)
}

// curlAs runs curl in the pod as uid and parses what it received.
func curlAs(t *testing.T, env *podenv.Env, uid int, path string, headers ...string) wireReply {
	t.Helper()
	out := podenvtest.Output(t, env.PodCommand(context.Background(), uid, nil, curlArgs(path, headers...)...))
	return parseWire(t, out)
}

// curlIMDS is curlAs for the app UID with Metadata: true.
func curlIMDS(t *testing.T, env *podenv.Env, path string) wireReply {
	t.Helper()
	return curlAs(t, env, appUID, path, "Metadata: true")
}

// parseWire splits curl -i output into status line, headers and body.
func parseWire(t *testing.T, out string) wireReply {
	t.Helper()
	head, body, ok := strings.Cut(out, "\r\n\r\n")
	if !ok {
		t.Fatalf("curl output has no header/body separator:\n%q", out)
	}
	lines := strings.Split(head, "\r\n")
	r := wireReply{StatusLine: lines[0], Header: http.Header{}, Body: body}
	fields := strings.SplitN(lines[0], " ", 3)
	if len(fields) < 2 {
		t.Fatalf("bad status line %q", lines[0])
	}
	code, err := strconv.Atoi(fields[1])
	if err != nil {
		t.Fatalf("bad status line %q", lines[0])
	}
	r.Code = code
	for _, l := range lines[1:] {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			t.Fatalf("bad header line %q", l)
		}
		r.Header.Add(k, strings.TrimSpace(v))
	}
	return r
}

// checkJSONWire asserts what every proxy answer carries: the JSON content
// type, an explicit Content-Length equal to the body's, no chunking.
func checkJSONWire(t *testing.T, r wireReply) {
	t.Helper()
	if got := r.Header.Values("Content-Type"); len(got) != 1 || got[0] != "application/json; charset=utf-8" {
		t.Errorf("Content-Type = %q, want [application/json; charset=utf-8]", got)
	}
	if got := r.Header.Values("Content-Length"); len(got) != 1 || got[0] != strconv.Itoa(len(r.Body)) {
		t.Errorf("Content-Length = %q, body has %d bytes", got, len(r.Body))
	}
	if got := r.Header.Values("Transfer-Encoding"); len(got) != 0 {
		t.Errorf("Transfer-Encoding = %q, want none", got)
	}
}

// checkError asserts an IMDS error answer: status line, JSON wire shape,
// exactly the keys error and error_description, the error code, and a
// description that starts with descPrefix.
func checkError(t *testing.T, r wireReply, statusLine, code, descPrefix string) {
	t.Helper()
	if r.StatusLine != statusLine {
		t.Errorf("status line = %q, want %q (body %s)", r.StatusLine, statusLine, r.Body)
	}
	checkJSONWire(t, r)
	var body map[string]any
	if err := json.Unmarshal([]byte(r.Body), &body); err != nil {
		t.Fatalf("error body %q is not JSON: %v", r.Body, err)
	}
	if keys := sortedKeys(body); !slices.Equal(keys, []string{"error", "error_description"}) {
		t.Errorf("error body keys = %v, want [error error_description]: %s", keys, r.Body)
	}
	if body["error"] != code {
		t.Errorf("error = %v, want %q", body["error"], code)
	}
	if d, _ := body["error_description"].(string); !strings.HasPrefix(d, descPrefix) {
		t.Errorf("error_description = %q, want prefix %q", d, descPrefix)
	}
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// wantToken is what a token answer must say.
type wantToken struct {
	Resource string // as requested, echoed verbatim
	ClientID string // the identity that must have been used
	Tenant   string
	ObjectID string // when set, the token's oid
}

// tokenKeys are the keys of a success body (docs/imds.md, Success
// reply); ext_expires_in is optional ("when known").
var tokenKeys = []string{"access_token", "client_id", "expires_in", "expires_on", "not_before", "refresh_token", "resource", "token_type"}

// checkToken asserts a 200 token answer on the wire and in the body, and
// that the access token is the emulator's, for the right app, tenant and
// audience, expiring when expires_on says. It returns the access token.
func checkToken(t *testing.T, r wireReply, want wantToken) string {
	t.Helper()
	if r.StatusLine != "HTTP/1.1 200 OK" {
		t.Fatalf("status line = %q, want HTTP/1.1 200 OK; body %s", r.StatusLine, r.Body)
	}
	checkJSONWire(t, r)
	if strings.HasSuffix(r.Body, "\n") {
		t.Errorf("body ends with a newline")
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(r.Body), &body); err != nil {
		t.Fatalf("token body is not JSON: %v", err)
	}
	keys := slices.DeleteFunc(sortedKeys(body), func(k string) bool { return k == "ext_expires_in" })
	if !slices.Equal(keys, tokenKeys) {
		t.Errorf("token body keys = %v (ext_expires_in optional), want %v", sortedKeys(body), tokenKeys)
	}
	str := map[string]string{}
	for k, v := range body {
		s, ok := v.(string)
		if !ok {
			t.Errorf("%s is %T, want a string", k, v)
		}
		str[k] = s
	}
	for _, k := range []string{"expires_in", "expires_on", "not_before", "ext_expires_in"} {
		if _, present := body[k]; !present {
			continue
		}
		if n, err := strconv.ParseInt(str[k], 10, 64); err != nil || n <= 0 {
			t.Errorf("%s = %q, want a positive integer string", k, str[k])
		}
	}
	if str["resource"] != want.Resource {
		t.Errorf("resource = %q, want %q", str["resource"], want.Resource)
	}
	if str["client_id"] != want.ClientID {
		t.Errorf("client_id = %q, want %q", str["client_id"], want.ClientID)
	}
	if str["token_type"] != "Bearer" || str["refresh_token"] != "" {
		t.Errorf("token_type = %q, refresh_token = %q; want Bearer and empty", str["token_type"], str["refresh_token"])
	}
	claims, err := podenv.DecodeClaims(str["access_token"])
	if err != nil {
		t.Fatalf("access_token: %v", err)
	}
	claim := func(name string) string {
		switch v := claims[name].(type) {
		case string:
			return v
		case json.Number:
			return v.String()
		default:
			return ""
		}
	}
	if claim("appid") != want.ClientID || claim("tid") != want.Tenant {
		t.Errorf("token appid = %q, tid = %q; want %q, %q", claim("appid"), claim("tid"), want.ClientID, want.Tenant)
	}
	if aud := claim("aud"); aud != want.Resource {
		t.Errorf("token aud = %q, want %q", aud, want.Resource)
	}
	if claim("exp") != str["expires_on"] {
		t.Errorf("expires_on = %q, token exp = %q", str["expires_on"], claim("exp"))
	}
	if want.ObjectID != "" && claim("oid") != want.ObjectID {
		t.Errorf("token oid = %q, want %q", claim("oid"), want.ObjectID)
	}
	return str["access_token"]
}

// scopeOf is the Entra scope the proxy asks for a resource: "/.default"
// appended verbatim unless it is there (docs/imds.md, Resource to
// scope).
func scopeOf(resource string) string {
	if strings.HasSuffix(resource, "/.default") {
		return resource
	}
	return resource + "/.default"
}

// wantCalls asserts the emulator's token-POST count for clientID and the
// resource's scope.
func wantCalls(t *testing.T, env *podenv.Env, clientID, resource string, want int) {
	t.Helper()
	if got := podenvtest.Calls(t, env, clientID, scopeOf(resource)); got != want {
		t.Errorf("Entra token calls for %s, %s = %d, want %d", clientID, scopeOf(resource), got, want)
	}
}

// wantTotalCalls asserts the emulator's count of all token POSTs.
func wantTotalCalls(t *testing.T, env *podenv.Env, want int) {
	t.Helper()
	stats, err := env.CallStats(context.Background(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	if stats.Total != want {
		t.Errorf("Entra token calls in all = %d, want %d (%+v)", stats.Total, want, stats.ByIdentity)
	}
}
