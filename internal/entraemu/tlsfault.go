package entraemu

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
)

// TLSFault selects the certificate the Entra listener presents, so tests can
// see what a client does when the authority's certificate cannot be trusted
// (a TLS-intercepting middlebox, a misconfigured private cloud).
type TLSFault string

const (
	// TLSFaultNone presents the valid certificate: the emulator's names,
	// signed by the CA that CACertPEM publishes.
	TLSFaultNone TLSFault = ""
	// TLSFaultUntrustedCA presents a certificate for the right names signed
	// by a CA the emulator never publishes: "certificate signed by unknown
	// authority".
	TLSFaultUntrustedCA TLSFault = "untrusted-ca"
	// TLSFaultWrongName presents a certificate from the published CA for
	// another name only: "certificate is valid for ..., not ...".
	TLSFaultWrongName TLSFault = "wrong-name"
)

func (f TLSFault) validate() error {
	switch f {
	case TLSFaultNone, TLSFaultUntrustedCA, TLSFaultWrongName:
		return nil
	}
	return fmt.Errorf("TLS fault %q is not one of \"\", %q, %q", string(f), TLSFaultUntrustedCA, TLSFaultWrongName)
}

// SetTLSFault makes the Entra listener present the certificate of f from
// the next handshake on, and closes every connection it has open, idle
// keep-alive connections included: otherwise a client would go on using a
// connection set up under the old certificate and never see the change.
// Requests in progress on those connections fail. TLSFaultNone restores the
// valid certificate.
func (e *Emulator) SetTLSFault(f TLSFault) error {
	if err := f.validate(); err != nil {
		return err
	}
	e.mu.Lock()
	e.tlsFault = f
	open := make([]net.Conn, 0, len(e.entraConns))
	for c := range e.entraConns {
		open = append(open, c)
	}
	e.mu.Unlock()
	for _, c := range open {
		_ = c.Close()
	}
	return nil
}

// CurrentTLSFault returns the TLS fault in force.
func (e *Emulator) CurrentTLSFault() TLSFault {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.tlsFault
}

// serverCertificate is the Entra listener's tls.Config.GetCertificate: the
// certificate of the TLS fault in force.
func (e *Emulator) serverCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	e.mu.Lock()
	f := e.tlsFault
	e.mu.Unlock()
	switch f {
	case TLSFaultUntrustedCA:
		return &e.pki.untrusted, nil
	case TLSFaultWrongName:
		return &e.pki.wrongName, nil
	default:
		return &e.pki.server, nil
	}
}

// trackEntraConn is the Entra server's ConnState hook: it keeps the set of
// open connections SetTLSFault closes.
func (e *Emulator) trackEntraConn(c net.Conn, state http.ConnState) {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch state {
	case http.StateNew:
		e.entraConns[c] = struct{}{}
	case http.StateHijacked, http.StateClosed:
		delete(e.entraConns, c)
	}
}
