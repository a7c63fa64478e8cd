package imds

import (
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/imds-proxy/imds-proxy/pkg/exchange"
)

// bodyPool recycles the buffers token replies are rendered into. A reply is
// about 300 bytes plus the token (1.5-4 KB for Entra access tokens).
var bodyPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledBody keeps unusually large buffers out of the pool.
const maxPooledBody = 64 << 10

// writeToken sends the success reply of protocol p for tok. Every value
// is a JSON string: real IMDS does so (the IMDS REST specification types
// them as strings), go-autorest adal and old Java clients fail on anything
// else, MSAL Go fails on an empty numeric string, and on the IMDS path
// msal-node reads only expires_on and MSAL Python only expires_in, so both
// are always present (docs/imds.md, "Success reply"). The body is compact JSON without a
// trailing newline and goes out with an explicit Content-Length, never
// chunked: Hadoop's ABFS/ADLS clients reject chunked token replies, which Go
// produces for bodies over 2 KB written without a length
// (Azure/azure-data-lake-store-java#57).
//
// It returns the status code it wrote.
func writeToken(w http.ResponseWriter, tok *exchange.Token, resource string, now time.Time, p protocol) int {
	bp := bodyPool.Get().(*[]byte)
	b := appendTokenBody((*bp)[:0], tok, resource, now, p)
	h := w.Header()
	h["Content-Type"] = []string{contentTypeJSON}
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	if cap(b) <= maxPooledBody {
		*bp = b
		bodyPool.Put(bp)
	}
	return http.StatusOK
}

// appendTokenBody appends the JSON token reply of protocol p to b.
//
// The App Service reply has the fields the real service sends
// (access_token, expires_on, not_before, resource, token_type, client_id)
// plus expires_in, which the real service leaves out. Every SDK that
// speaks the protocol reads expires_on (MSAL Go, msal-node, MSAL Python,
// azure-identity), but a token cache that reads expires_in when it is
// there takes it over expires_on, and MSAL Python's before 1.21 assumed
// an hour without it (AzureAD/microsoft-authentication-library-for-python#519):
// a token the proxy serves from its cache may have much less left. Both
// fields say the same instant, so a client reading either is right. The
// IMDS-only fields refresh_token and ext_expires_in are left out.
func appendTokenBody(b []byte, tok *exchange.Token, resource string, now time.Time, p protocol) []byte {
	expiresIn := int64(tok.ExpiresOn.Sub(now) / time.Second)
	if expiresIn < 0 {
		expiresIn = 0
	}
	notBefore := tok.NotBefore
	if notBefore.IsZero() {
		notBefore = now
	}
	b = append(b, `{"access_token":`...)
	b = appendJSONString(b, tok.AccessToken)
	if p == protocolIMDS {
		b = append(b, `,"refresh_token":""`...)
	}
	b = append(b, `,"expires_in":"`...)
	b = strconv.AppendInt(b, expiresIn, 10)
	b = append(b, `","expires_on":"`...)
	b = strconv.AppendInt(b, tok.ExpiresOn.Unix(), 10)
	b = append(b, '"')
	if tok.ExtExpiresIn > 0 && p == protocolIMDS {
		b = append(b, `,"ext_expires_in":"`...)
		b = strconv.AppendInt(b, int64(tok.ExtExpiresIn/time.Second), 10)
		b = append(b, '"')
	}
	b = append(b, `,"not_before":"`...)
	b = strconv.AppendInt(b, notBefore.Unix(), 10)
	// resource is echoed exactly as requested: msal-node uses it as the
	// cache key of the token (msal-common ResponseHandler).
	b = append(b, `","resource":`...)
	b = appendJSONString(b, resource)
	b = append(b, `,"token_type":"Bearer","client_id":`...)
	b = appendJSONString(b, tok.ClientID)
	return append(b, '}')
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Like encoding/json it escapes
// quotes, backslashes, control characters and U+2028/U+2029, and replaces
// invalid UTF-8 with U+FFFD; it does not escape <, > and &.
//
// Access tokens (JWTs: base64url and dots, 1.5-4 KB) never need escaping, so
// the scan starts after the prefix plainASCIIPrefix vouches for, and such a
// string is copied in one append.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := plainASCIIPrefix(s); i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// plainASCIIPrefix returns the length of a prefix of s, a multiple of 8
// bytes, that holds only bytes appendJSONString copies unchanged: ASCII
// 0x20-0x7f except '"' and '\\'. It tests 8 bytes at a time with the
// "has a byte less than n" and "has a zero byte" word tricks (Bit
// Twiddling Hacks), which are exact for the whole word: a borrow can only
// start at a byte that matches. The caller's byte loop handles the rest.
func plainASCIIPrefix(s string) int {
	const (
		lo     = 0x0101010101010101
		hi     = 0x8080808080808080
		quote  = lo * '"'
		bslash = lo * '\\'
	)
	i := 0
	for ; len(s)-i >= 8; i += 8 {
		t := s[i : i+8]
		// The compiler turns this into one 8-byte load.
		w := uint64(t[0]) | uint64(t[1])<<8 | uint64(t[2])<<16 | uint64(t[3])<<24 |
			uint64(t[4])<<32 | uint64(t[5])<<40 | uint64(t[6])<<48 | uint64(t[7])<<56
		special := w | // a byte >= 0x80
			(w-lo*0x20)&^w | // a byte < 0x20
			((w^quote)-lo)&^(w^quote) | // a '"'
			((w^bslash)-lo)&^(w^bslash) // a '\\'
		if special&hi != 0 {
			break
		}
	}
	return i
}
