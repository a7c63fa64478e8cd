package testca

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"
)

// TestIssue: a certificate the CA issues verifies against the CA for its
// names and address, and a TLS handshake with it succeeds; another CA's
// pool and another name are refused.
func TestIssue(t *testing.T) {
	ca, err := New("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := New("other CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue([]string{"login.emulator.test"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Subject.CommonName != "login.emulator.test" || leaf.NotAfter.After(time.Now().Add(time.Hour)) {
		t.Errorf("leaf %s valid until %s", leaf.Subject, leaf.NotAfter)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert())
	pemRoots := x509.NewCertPool()
	if !pemRoots.AppendCertsFromPEM(ca.CertPEM()) {
		t.Fatal("CertPEM holds no certificate")
	}
	otherRoots := x509.NewCertPool()
	otherRoots.AddCert(other.Cert())
	for _, tt := range []struct {
		name  string
		roots *x509.CertPool
		host  string
		ok    bool
	}{
		{"by name", roots, "login.emulator.test", true},
		{"by address", roots, "127.0.0.1", true},
		{"PEM roots", pemRoots, "login.emulator.test", true},
		{"another name", roots, "other.emulator.test", false},
		{"another CA", otherRoots, "login.emulator.test", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := leaf.Verify(x509.VerifyOptions{Roots: tt.roots, DNSName: tt.host})
			if (err == nil) != tt.ok {
				t.Errorf("Verify(%s) = %v, want ok=%v", tt.host, err, tt.ok)
			}
		})
	}

	certPEM, keyPEM, err := PEM(cert)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Errorf("PEM does not make a key pair: %v", err)
	}
	if _, err := ca.Issue(nil, nil); err == nil {
		t.Error("a certificate without a name or address was issued")
	}
}
