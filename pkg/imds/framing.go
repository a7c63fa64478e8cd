package imds

import (
	"net/http"
	"strings"
	"time"
)

// bodyLinger bounds how long the connection of a request refused for its
// body stays open after the refusal went out. net/http reads an unread
// declared body of up to 256 KiB after the handler returns (it wants the
// connection clean for the next request, and it does so even when the
// reply closes the connection), and with no read deadline it would wait
// forever for a body that never comes. Reading what the client did send
// keeps the close from being a reset that could destroy the refusal
// before the client reads it; the deadline ends the wait for the rest.
const bodyLinger = 500 * time.Millisecond

// checkFraming refuses, on every route and before any other check, the
// requests that would turn the connection into something other than one
// request and one reply:
//
//   - A request that declares a body (Content-Length above 0 or any
//     Transfer-Encoding): 400. No route reads a body, the passthrough
//     included (it used to forward one), and a client that declares a
//     body and never sends it must not hold the connection, its goroutine
//     or the shutdown drain (docs/security.md). net/http itself answers
//     501 to any Transfer-Encoding but a single "chunked", before any
//     handler runs.
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
// route only picks the Allow header of the 405. Every refusal closes the
// connection: a client that asked for a tunnel gets no second request on
// it, and a refused body is never read as the next request. It returns
// nil when the request may go on to its route.
func checkFraming(route routeClass, r *http.Request) *reply {
	if declaresBody(r) {
		return &replyBody
	}
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

// declaresBody reports whether r announces a body. net/http sets
// ContentLength from Content-Length and moves a chunked Transfer-Encoding
// out of the header into TransferEncoding; Transfer-Encoding wins over
// Content-Length, and HTTP/1.0 requests have none.
func declaresBody(r *http.Request) bool {
	return r.ContentLength > 0 || len(r.TransferEncoding) > 0
}

// boundBodyLinger prepares the connection for rep, a refusal of
// checkFraming: for a refused body it bounds, with a read deadline on the
// connection, what net/http reads of the body after the reply (see
// bodyLinger). Server.refuseFraming then sends rep.
func boundBodyLinger(w http.ResponseWriter, rep *reply) {
	if rep == &replyBody {
		// Not every ResponseWriter supports deadlines (test recorders do
		// not); the connection's own does.
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(bodyLinger))
	}
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
