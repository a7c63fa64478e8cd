package exchange

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// maxJWTLen bounds what the claim decoder looks at. Entra access tokens are a
// few kilobytes and projected service-account tokens about one; anything far
// larger is hostile or broken.
const maxJWTLen = 64 << 10

// claims are the unverified JWT payload fields the exchange uses. The token
// was either just issued to us by Entra over TLS or read from the kubelet's
// projected volume, so the signature is not checked here: the claims only
// drive cache timing, identity matching and diagnostics.
type claims struct {
	Issuer   string
	Subject  string
	Audience []string
	// Expiry and NotBefore are zero when the claim is absent or invalid.
	Expiry    time.Time
	NotBefore time.Time
	// ObjectID is the oid claim (service principal object id).
	ObjectID string
	// ResourceID is the xms_mirid claim (managed identity resource id).
	ResourceID string
}

// rawClaims mirrors the payload with every field left raw, so a claim of
// the wrong JSON type spoils only itself.
type rawClaims struct {
	Iss      json.RawMessage `json:"iss"`
	Sub      json.RawMessage `json:"sub"`
	Aud      json.RawMessage `json:"aud"`
	Exp      json.RawMessage `json:"exp"`
	Nbf      json.RawMessage `json:"nbf"`
	Oid      json.RawMessage `json:"oid"`
	XmsMirid json.RawMessage `json:"xms_mirid"`
}

var errNotJWT = errors.New("not a JWT")

// decodeClaims decodes the payload of a compact JWS without verifying it.
func decodeClaims(token string) (claims, error) {
	if len(token) > maxJWTLen {
		return claims{}, fmt.Errorf("%w: longer than %d bytes", errNotJWT, maxJWTLen)
	}
	first := strings.IndexByte(token, '.')
	if first < 0 {
		return claims{}, fmt.Errorf("%w: no '.'", errNotJWT)
	}
	rest := token[first+1:]
	second := strings.IndexByte(rest, '.')
	if second < 0 {
		return claims{}, fmt.Errorf("%w: fewer than three segments", errNotJWT)
	}
	seg := rest[:second]
	// RFC 7515 §2 forbids padding, but tolerate it.
	seg = strings.TrimRight(seg, "=")
	payload, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return claims{}, fmt.Errorf("%w: payload is not base64url", errNotJWT)
	}
	// One JSON object and nothing else: a null payload would decode into
	// zero claims, and a second value after the first would be ignored.
	payload = bytes.Trim(payload, " \t\r\n") // JSON's whitespace only
	if len(payload) == 0 || payload[0] != '{' {
		return claims{}, fmt.Errorf("%w: payload is not a JSON object", errNotJWT)
	}
	var raw rawClaims
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil || dec.InputOffset() != int64(len(payload)) {
		return claims{}, fmt.Errorf("%w: payload is not a JSON object", errNotJWT)
	}
	c := claims{
		Issuer:     jsonString(raw.Iss),
		Subject:    jsonString(raw.Sub),
		Audience:   jsonAudience(raw.Aud),
		Expiry:     jsonNumericDate(raw.Exp),
		NotBefore:  jsonNumericDate(raw.Nbf),
		ObjectID:   jsonString(raw.Oid),
		ResourceID: jsonString(raw.XmsMirid),
	}
	return c, nil
}

func jsonString(m json.RawMessage) string {
	var s string
	if len(m) == 0 || json.Unmarshal(m, &s) != nil {
		return ""
	}
	return s
}

// jsonAudience accepts both shapes RFC 7519 §4.1.3 allows: a string or an
// array of strings.
func jsonAudience(m json.RawMessage) []string {
	if len(m) == 0 {
		return nil
	}
	if s := jsonString(m); s != "" {
		return []string{s}
	}
	var list []string
	if json.Unmarshal(m, &list) != nil {
		return nil
	}
	out := list[:0]
	for _, a := range list {
		if a != "" {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// maxNumericDate keeps decoded times far from time.Time's limits (year 9999).
const maxNumericDate = 253402300799

// jsonNumericDate decodes an RFC 7519 NumericDate (seconds, possibly
// fractional). Anything else, negative, zero or absurd, is treated as absent.
func jsonNumericDate(m json.RawMessage) time.Time {
	if len(m) == 0 {
		return time.Time{}
	}
	var n json.Number
	if json.Unmarshal(m, &n) != nil {
		return time.Time{}
	}
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f <= 0 || f > maxNumericDate {
		return time.Time{}
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC()
}
