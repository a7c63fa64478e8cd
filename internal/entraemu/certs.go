package entraemu

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
)

// certValidity is how long the generated CA and server certificate stay
// valid; test runs and long-lived sandboxes never outlive it.
const certValidity = 10 * 365 * 24 * time.Hour

// wrongServerName is the only name on the certificate of TLSFaultWrongName:
// a name no client asks for (.invalid is reserved by RFC 2606).
const wrongServerName = "not-the-authority.invalid"

// pki is the emulator's in-memory certificate authority and the server
// certificates the Entra listener can present: the valid one, and the two
// of the TLS faults.
type pki struct {
	caPEM  []byte
	pool   *x509.CertPool
	server tls.Certificate
	// untrusted covers the same names as server but is signed by a second
	// CA that is never published.
	untrusted tls.Certificate
	// wrongName is signed by the published CA for wrongServerName only.
	wrongName tls.Certificate
}

// authority is a CA that can issue server certificates.
type authority struct {
	cert *x509.Certificate
	der  []byte
	key  *ecdsa.PrivateKey
}

// newPKI builds a fresh ECDSA P-256 CA and a server certificate for the given
// DNS names and IP addresses, plus the certificates of the TLS faults.
// Validity uses the real clock, because TLS peers check it against theirs.
func newPKI(dnsNames []string, ips []net.IP) (*pki, error) {
	now := time.Now()
	ca, err := newAuthority("imds-proxy entraemu test CA", now)
	if err != nil {
		return nil, err
	}
	rogue, err := newAuthority("imds-proxy entraemu untrusted CA", now)
	if err != nil {
		return nil, err
	}
	server, err := ca.issue(dnsNames, ips, now)
	if err != nil {
		return nil, err
	}
	untrusted, err := rogue.issue(dnsNames, ips, now)
	if err != nil {
		return nil, err
	}
	wrongName, err := ca.issue([]string{wrongServerName}, nil, now)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return &pki{
		caPEM:     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.der}),
		pool:      pool,
		server:    server,
		untrusted: untrusted,
		wrongName: wrongName,
	}, nil
}

// newAuthority generates a self-signed CA named cn.
func newAuthority(cn string, now time.Time) (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"imds-proxy tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return &authority{cert: cert, der: der, key: key}, nil
}

// issue makes a server certificate for dnsNames and ips, with the CA
// certificate appended to the chain.
func (a *authority) issue(dnsNames []string, ips []net.IP, now time.Time) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generate server key: %w", err)
	}
	cn := "localhost"
	if len(dnsNames) > 0 {
		cn = dnsNames[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("create server certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der, a.der}, PrivateKey: key}, nil
}

// randomSerial returns a random positive 127-bit certificate serial number.
func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil || n.Sign() == 0 {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}
