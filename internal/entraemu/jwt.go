package entraemu

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"
	"time"
)

// maxJWTLength bounds the size of a JWT the emulator is willing to parse. Real
// projected service-account tokens are around one kilobyte; the bound keeps a
// hostile assertion from costing more than a little memory.
const maxJWTLength = 64 << 10

// errMalformed marks a JWT that cannot be parsed at all (wrong number of
// segments, bad base64url, bad JSON, claims of the wrong type).
var errMalformed = errors.New("malformed JWT")

// jwtHeader holds the JOSE header fields the emulator looks at.
type jwtHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

// parsedJWT is a JWT split into its parts, not yet verified.
type parsedJWT struct {
	header       jwtHeader
	claims       map[string]any
	signingInput string
	signature    []byte
}

// parseJWT splits a compact JWS into header, claims and signature without
// verifying anything. It rejects every input that is not three base64url
// segments holding JSON objects, and never panics.
func parseJWT(tok string) (*parsedJWT, error) {
	if len(tok) == 0 {
		return nil, fmt.Errorf("%w: empty", errMalformed)
	}
	if len(tok) > maxJWTLength {
		return nil, fmt.Errorf("%w: %d bytes is longer than %d", errMalformed, len(tok), maxJWTLength)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%w: %d segments, want 3", errMalformed, len(parts))
	}
	hb, err := decodeSegment(parts[0])
	if err != nil {
		return nil, fmt.Errorf("%w: header: %v", errMalformed, err)
	}
	cb, err := decodeSegment(parts[1])
	if err != nil {
		return nil, fmt.Errorf("%w: claims: %v", errMalformed, err)
	}
	sig, err := decodeSegment(parts[2])
	if err != nil {
		return nil, fmt.Errorf("%w: signature: %v", errMalformed, err)
	}
	var hdr map[string]any
	if err := decodeObject(hb, &hdr); err != nil {
		return nil, fmt.Errorf("%w: header: %v", errMalformed, err)
	}
	p := &parsedJWT{signingInput: parts[0] + "." + parts[1], signature: sig}
	for name, dst := range map[string]*string{"alg": &p.header.Alg, "kid": &p.header.Kid, "typ": &p.header.Typ} {
		v, ok := hdr[name]
		if !ok {
			continue
		}
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%w: header %q is not a string", errMalformed, name)
		}
		*dst = s
	}
	if err := decodeObject(cb, &p.claims); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", errMalformed, err)
	}
	return p, nil
}

// decodeSegment decodes one base64url segment, with or without padding.
func decodeSegment(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

// decodeObject decodes a JSON object, keeping numbers as json.Number, and
// rejects trailing data and non-object values.
func decodeObject(b []byte, dst *map[string]any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(dst); err != nil {
		return err
	}
	if *dst == nil {
		return errors.New("not a JSON object")
	}
	if dec.More() {
		return errors.New("trailing data after JSON object")
	}
	return nil
}

// stringClaim returns a string claim; a missing claim yields "" and false, a
// claim of another type an error.
func (p *parsedJWT) stringClaim(name string) (string, bool, error) {
	v, ok := p.claims[name]
	if !ok || v == nil {
		return "", false, nil
	}
	s, ok := v.(string)
	if !ok {
		return "", false, fmt.Errorf("%w: claim %q is not a string", errMalformed, name)
	}
	return s, true, nil
}

// audienceClaim returns the "aud" claim, which may be a string or an array of
// strings.
func (p *parsedJWT) audienceClaim() ([]string, error) {
	v, ok := p.claims["aud"]
	if !ok || v == nil {
		return nil, nil
	}
	switch a := v.(type) {
	case string:
		return []string{a}, nil
	case []any:
		out := make([]string, 0, len(a))
		for _, e := range a {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("%w: claim \"aud\" holds a non-string", errMalformed)
			}
			out = append(out, s)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("%w: claim \"aud\" is neither a string nor an array", errMalformed)
	}
}

// timeClaim returns a NumericDate claim (seconds since the epoch, possibly
// fractional). Missing yields the zero time and false.
func (p *parsedJWT) timeClaim(name string) (time.Time, bool, error) {
	v, ok := p.claims[name]
	if !ok || v == nil {
		return time.Time{}, false, nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}, false, fmt.Errorf("%w: claim %q is not a number", errMalformed, name)
	}
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1e11 {
		return time.Time{}, false, fmt.Errorf("%w: claim %q is not a usable NumericDate", errMalformed, name)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), true, nil
}

// verifyRS256 checks an RS256 signature over the signing input.
func (p *parsedJWT) verifyRS256(pub *rsa.PublicKey) error {
	sum := sha256.Sum256([]byte(p.signingInput))
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], p.signature)
}

// signRS256 renders and signs a compact JWS with the given header fields
// (alg and kid are set here) and claims.
func signRS256(key *rsa.PrivateKey, kid string, extraHeader map[string]string, claims any) (string, error) {
	hdr := map[string]string{"alg": "RS256", "kid": kid, "typ": "JWT"}
	for k, v := range extraHeader {
		hdr[k] = v
	}
	hb, err := json.Marshal(hdr)
	if err != nil {
		return "", err
	}
	cb, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	input := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(cb)
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		return "", err
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// keyID derives a key id the way Kubernetes does for service-account keys:
// the base64url SHA-256 of the DER-encoded public key.
func keyID(pub *rsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// jwk is one RSA JSON Web Key as published in a JWKS document.
type jwk struct {
	Kty string `json:"kty"`
	Use string `json:"use,omitempty"`
	Alg string `json:"alg,omitempty"`
	Kid string `json:"kid"`
	N   string `json:"n"`
	E   string `json:"e"`
}

// jwks is a JSON Web Key Set document.
type jwks struct {
	Keys []jwk `json:"keys"`
}

// publicJWK renders an RSA public key as a JWK.
func publicJWK(pub *rsa.PublicKey, kid string) jwk {
	return jwk{
		Kty: "RSA",
		Use: "sig",
		Alg: "RS256",
		Kid: kid,
		N:   base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		E:   base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}
}

// rsaKey turns a JWK into an RSA public key, rejecting keys that are not RSA,
// are too small or too large, or carry a silly exponent.
func (k jwk) rsaKey() (*rsa.PublicKey, error) {
	if k.Kty != "RSA" {
		return nil, fmt.Errorf("key %q: kty %q is not RSA", k.Kid, k.Kty)
	}
	nb, err := decodeSegment(k.N)
	if err != nil {
		return nil, fmt.Errorf("key %q: modulus: %v", k.Kid, err)
	}
	eb, err := decodeSegment(k.E)
	if err != nil {
		return nil, fmt.Errorf("key %q: exponent: %v", k.Kid, err)
	}
	n := new(big.Int).SetBytes(nb)
	if n.BitLen() < 1024 || n.BitLen() > 8192 {
		return nil, fmt.Errorf("key %q: %d-bit modulus is out of range", k.Kid, n.BitLen())
	}
	if len(eb) == 0 || len(eb) > 4 {
		return nil, fmt.Errorf("key %q: exponent of %d bytes is out of range", k.Kid, len(eb))
	}
	e := int(new(big.Int).SetBytes(eb).Int64())
	if e < 3 || e%2 == 0 {
		return nil, fmt.Errorf("key %q: exponent %d is not usable", k.Kid, e)
	}
	return &rsa.PublicKey{N: n, E: e}, nil
}
