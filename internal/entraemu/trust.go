package entraemu

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"
)

// TrustedIssuer is an external https assertion issuer, such as a real
// kube-apiserver publishing its service-account issuer, whose discovery
// document and JWKS the emulator fetches trusting only CACertPEM.
type TrustedIssuer struct {
	// Issuer is the issuer URL exactly as tokens carry it in "iss" (and as
	// federations name it); its scheme must be https.
	Issuer string `json:"issuer"`
	// CACertPEM holds the PEM certificates that verify the issuer's serving
	// certificate, and that of its jwks_uri.
	CACertPEM string `json:"ca_cert_pem"`
}

// TrustIssuer adds (or replaces) a trusted external issuer: from now on
// the token endpoint fetches that issuer's discovery document and JWKS over
// HTTPS verified against t.CACertPEM only, and forgets any keys it cached
// for it. Other issuers keep the system's roots; the emulator's own issuer
// is plain HTTP.
func (e *Emulator) TrustIssuer(t TrustedIssuer) error {
	client, err := trustedIssuerClient(t)
	if err != nil {
		return err
	}
	e.mu.Lock()
	old := e.issuerClients[t.Issuer]
	e.issuerClients[t.Issuer] = client
	delete(e.keyCache, t.Issuer)
	e.mu.Unlock()
	if old != nil {
		old.CloseIdleConnections()
	}
	e.log.Info("trusting external issuer", "issuer", t.Issuer)
	return nil
}

// trustedIssuerClient validates t and returns the client that fetches its
// documents.
func trustedIssuerClient(t TrustedIssuer) (*http.Client, error) {
	u, err := url.Parse(t.Issuer)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("trusted issuer %q is not an https URL without user, query or fragment", t.Issuer)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(t.CACertPEM)) {
		return nil, errors.New("trusted issuer " + t.Issuer + ": no PEM certificate in the CA bundle")
	}
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			DialContext:         (&net.Dialer{Timeout: 3 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     30 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}

// fetchClientFor returns the client that fetches issuer's documents: the
// one TrustIssuer made for it, else the default.
func (e *Emulator) fetchClientFor(issuer string) *http.Client {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c := e.issuerClients[issuer]; c != nil {
		return c
	}
	return e.fetchClient
}
