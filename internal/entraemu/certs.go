package entraemu

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/testca"
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

// newPKI builds a fresh CA and a server certificate for the given DNS
// names and IP addresses, plus the certificates of the TLS faults.
func newPKI(dnsNames []string, ips []net.IP) (*pki, error) {
	ca, err := testca.New("imds-proxy entraemu test CA", certValidity)
	if err != nil {
		return nil, err
	}
	rogue, err := testca.New("imds-proxy entraemu untrusted CA", certValidity)
	if err != nil {
		return nil, err
	}
	server, err := ca.Issue(dnsNames, ips)
	if err != nil {
		return nil, err
	}
	untrusted, err := rogue.Issue(dnsNames, ips)
	if err != nil {
		return nil, err
	}
	wrongName, err := ca.Issue([]string{wrongServerName}, nil)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert())
	return &pki{
		caPEM:     ca.CertPEM(),
		pool:      pool,
		server:    server,
		untrusted: untrusted,
		wrongName: wrongName,
	}, nil
}
