package entraemu

import (
	"errors"
	"fmt"
	"time"
)

// Claims are the claims of an access token the emulator issued, as
// VerifyAccessToken returns them.
type Claims struct {
	// KeyID is the "kid" header.
	KeyID string
	// Audience is "aud": the resource, e.g. "https://vault.azure.net".
	Audience string
	// Issuer is "iss": "https://sts.windows.net/<tenant>/".
	Issuer string
	// AppID is "appid", the client id.
	AppID string
	// AuthorizedParty is "azp", the client id.
	AuthorizedParty string
	// TenantID is "tid".
	TenantID string
	// ObjectID is "oid".
	ObjectID string
	// Subject is "sub" (the object id for app tokens).
	Subject string
	// ResourceID is "xms_mirid", empty when the app has none.
	ResourceID string
	// UniqueTokenID is "uti"; it differs between any two tokens.
	UniqueTokenID string
	// JWTID is "jti".
	JWTID string
	// IssuedAt, NotBefore and ExpiresAt are "iat", "nbf" and "exp".
	IssuedAt, NotBefore, ExpiresAt time.Time
	// Raw holds every claim as decoded JSON (numbers as json.Number).
	Raw map[string]any
}

// VerifyAccessToken checks that tok is an access token this emulator
// issued: RS256 signature with the emulator's token key, "iss" and "tid" of
// this tenant, and the emulator clock between "nbf" and "exp". It returns
// the claims, also when the only problem is the time window (with an error).
func (e *Emulator) VerifyAccessToken(tok string) (Claims, error) {
	p, err := parseJWT(tok)
	if err != nil {
		return Claims{}, err
	}
	if p.header.Alg != "RS256" || p.header.Kid != e.tokenKID {
		return Claims{}, fmt.Errorf("token header alg=%q kid=%q is not the emulator's", p.header.Alg, p.header.Kid)
	}
	if err := p.verifyRS256(&e.tokenKey.PublicKey); err != nil {
		return Claims{}, fmt.Errorf("token signature: %w", err)
	}
	c := Claims{KeyID: p.header.Kid, Raw: p.claims}
	for name, dst := range map[string]*string{
		"aud": &c.Audience, "iss": &c.Issuer, "appid": &c.AppID, "azp": &c.AuthorizedParty,
		"tid": &c.TenantID, "oid": &c.ObjectID, "sub": &c.Subject, "xms_mirid": &c.ResourceID,
		"uti": &c.UniqueTokenID, "jti": &c.JWTID,
	} {
		if *dst, _, err = p.stringClaim(name); err != nil {
			return Claims{}, err
		}
	}
	for name, dst := range map[string]*time.Time{"iat": &c.IssuedAt, "nbf": &c.NotBefore, "exp": &c.ExpiresAt} {
		var ok bool
		if *dst, ok, err = p.timeClaim(name); err != nil {
			return Claims{}, err
		} else if !ok {
			return Claims{}, fmt.Errorf("token has no %q claim", name)
		}
	}
	if c.Issuer != e.AccessTokenIssuer() || c.TenantID != e.tenant {
		return c, fmt.Errorf("token iss=%q tid=%q is not this tenant's", c.Issuer, c.TenantID)
	}
	now := e.now()
	if now.Before(c.NotBefore) || !now.Before(c.ExpiresAt) {
		return c, errors.New("token is outside its validity window")
	}
	return c, nil
}
