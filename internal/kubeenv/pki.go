package kubeenv

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/testca"
)

// certValidity bounds the generated certificates; no test run outlives it.
const certValidity = 30 * 24 * time.Hour

// credentials are a cluster's generated keys and certificates, PEM-encoded.
type credentials struct {
	caPEM         []byte // the CA that signed the serving certificate
	servingPEM    []byte // serving certificate
	servingKeyPEM []byte // its private key (PKCS#8)
	saKeyPEM      []byte // service-account signing key (RSA, PKCS#8)
}

// servingNames are the DNS names of the serving certificate: the name the
// issuer URL uses, and the names clients inside a cluster use.
var servingNames = []string{
	Host, "localhost",
	"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
}

// newCredentials generates a CA, a serving certificate for servingNames
// and 127.0.0.1, and an RSA 2048 service-account signing key (RSA, because
// issuers federated with Entra sign with RS256).
func newCredentials() (*credentials, error) {
	ca, err := testca.New("imds-proxy kubeenv CA", certValidity)
	if err != nil {
		return nil, err
	}
	serving, err := ca.Issue(servingNames, []net.IP{net.ParseIP(BindAddress)})
	if err != nil {
		return nil, err
	}
	servingPEM, servingKeyPEM, err := testca.PEM(serving)
	if err != nil {
		return nil, err
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate service-account key: %w", err)
	}
	saDER, err := x509.MarshalPKCS8PrivateKey(saKey)
	if err != nil {
		return nil, err
	}
	return &credentials{
		caPEM:         ca.CertPEM(),
		servingPEM:    servingPEM,
		servingKeyPEM: servingKeyPEM,
		saKeyPEM:      pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: saDER}),
	}, nil
}
