package imds

import (
	"net/http"
	"strings"
)

// checkFraming refuses, on every route and before any other check, the
// requests that would turn the connection into something other than one
// request and one reply:
//
//   - CONNECT asks for a tunnel: 405. The proxy is not an HTTP proxy.
//   - A protocol upgrade (an Upgrade header, or "upgrade" in the Connection
//     header's token list): 400. httputil.ReverseProxy relays upgrade
//     requests (it re-adds Upgrade after dropping the hop-by-hop headers)
//     and splices the two connections when the upstream answers 101. A
//     relayed upgrade would be a raw byte tunnel to the real IMDS, opened
//     as the UID the iptables redirect exempts, in which the caller could
//     ask for the node's identity past the path guard
//     (docs/security.md).
//
// route only picks the Allow header of the 405. The reply closes the
// connection: a client that asked for a tunnel gets no second request on
// it. It returns nil when the request may go on to its route.
func checkFraming(route routeClass, r *http.Request) *reply {
	if r.Method == http.MethodConnect {
		if route == routeQuit {
			return &replyConnectQuit
		}
		return &replyConnect
	}
	if wantsUpgrade(r.Header) {
		return &replyUpgrade
	}
	return nil
}

// wantsUpgrade reports whether a request header asks to switch protocols:
// an Upgrade header with any value, even empty, or a Connection header
// listing the token "upgrade" in any case (RFC 9110 §7.6.1, §7.8).
// Either one is enough: refusing more than httputil.ReverseProxy would
// relay (it needs both) leaves no spelling for it to disagree about. It
// reads the map entries directly and allocates nothing.
func wantsUpgrade(h http.Header) bool {
	if _, ok := h["Upgrade"]; ok {
		return true
	}
	return headerHasToken(h["Connection"], "upgrade")
}

// headerHasToken reports whether any of the values, each a comma-separated
// list (one or several header lines), holds token, compared without regard
// to ASCII case and ignoring the optional whitespace (spaces and tabs)
// around each element. Empty elements (",,") are skipped.
func headerHasToken(values []string, token string) bool {
	for _, v := range values {
		for v != "" {
			var elem string
			elem, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.Trim(elem, " \t"), token) {
				return true
			}
		}
	}
	return false
}
