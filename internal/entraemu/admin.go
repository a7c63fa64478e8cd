package entraemu

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// maxAdminBody bounds an admin request body.
const maxAdminBody = 1 << 20

// AdminHandler returns the admin API, for controlling an emulator that runs
// in another process (the e2e suite and the sandbox). Routes, all under
// /admin/ and answering JSON unless noted:
//
//	GET    /admin/fault                       the fault in force
//	POST   /admin/fault                       set a fault (JSON Fault: latency, status, retry_after, body, drop_connection, count, client_id, scope); {} clears
//	DELETE /admin/fault                       clear the fault
//	GET    /admin/tls                         the TLS fault in force: {"certificate": ""|"untrusted-ca"|"wrong-name"}
//	POST   /admin/tls                         set it (same JSON); open connections of the Entra listener are closed
//	GET    /admin/calls?client_id=&scope=     {"client_id","scope","calls","total","discovery","issuer_fetches","max_in_flight","by_identity":[...]}
//	GET    /admin/issued-tokens               {"tokens": the newest 10000 access tokens issued, oldest first, "dropped": older ones not kept}
//	GET    /admin/requests                    the newest token requests (TokenRequest list, oldest first)
//	POST   /admin/calls/reset                 set every counter to zero and empty the request log
//	POST   /admin/token?namespace=&sa=&lifetime=1h   mint a service-account token; the body is the JWT (text/plain)
//	GET    /admin/apps                        the registered apps
//	POST   /admin/apps                        add or replace an app (JSON App)
//	DELETE /admin/apps/{clientID}             remove an app
//	DELETE /admin/apps/{clientID}/federations remove an app's federated credentials
//	POST   /admin/invalid-resources?resource=&invalid=true|false   mark a resource unknown (AADSTS500011) or known
//	POST   /admin/issuer/rotate-key           rotate the issuer signing key ({"kid": new kid}); the old key stays published
//	POST   /admin/trusted-issuers             trust an external https issuer (JSON TrustedIssuer: issuer, ca_cert_pem)
//	GET    /admin/info                        URLs, tenant and CA of this emulator
//
// The admin API has no authentication: serve it only where tests reach it.
func (e *Emulator) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/fault", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, e.CurrentFault())
	})
	mux.HandleFunc("POST /admin/fault", e.adminSetFault)
	mux.HandleFunc("DELETE /admin/fault", func(w http.ResponseWriter, r *http.Request) {
		e.SetFault(Fault{})
		writeJSON(w, http.StatusOK, e.CurrentFault())
	})
	mux.HandleFunc("GET /admin/tls", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, tlsFaultJSON{e.CurrentTLSFault()})
	})
	mux.HandleFunc("POST /admin/tls", func(w http.ResponseWriter, r *http.Request) {
		var f tlsFaultJSON
		if !decodeAdminBody(w, r, &f) {
			return
		}
		if err := e.SetTLSFault(f.Certificate); err != nil {
			adminError(w, http.StatusBadRequest, err.Error())
			return
		}
		e.log.Info("TLS fault set", "certificate", string(f.Certificate))
		writeJSON(w, http.StatusOK, tlsFaultJSON{e.CurrentTLSFault()})
	})
	mux.HandleFunc("GET /admin/calls", e.adminCalls)
	mux.HandleFunc("GET /admin/issued-tokens", func(w http.ResponseWriter, r *http.Request) {
		tokens, dropped := e.IssuedTokens()
		writeJSON(w, http.StatusOK, IssuedTokenList{Tokens: tokens, Dropped: dropped})
	})
	mux.HandleFunc("GET /admin/requests", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, e.Requests())
	})
	mux.HandleFunc("POST /admin/calls/reset", func(w http.ResponseWriter, r *http.Request) {
		e.ResetCounts()
		writeJSON(w, http.StatusOK, map[string]int{"total": 0})
	})
	mux.HandleFunc("POST /admin/token", e.adminMintToken)
	mux.HandleFunc("GET /admin/apps", e.adminListApps)
	mux.HandleFunc("POST /admin/apps", e.adminAddApp)
	mux.HandleFunc("DELETE /admin/apps/{clientID}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("clientID")
		if _, ok := e.App(id); !ok {
			adminError(w, http.StatusNotFound, fmt.Sprintf("no app with client id %q", id))
			return
		}
		e.RemoveApp(id)
		writeJSON(w, http.StatusOK, map[string]string{"removed": id})
	})
	mux.HandleFunc("DELETE /admin/apps/{clientID}/federations", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("clientID")
		if _, ok := e.App(id); !ok {
			adminError(w, http.StatusNotFound, fmt.Sprintf("no app with client id %q", id))
			return
		}
		e.RemoveFederations(id)
		a, _ := e.App(id)
		writeJSON(w, http.StatusOK, a)
	})
	mux.HandleFunc("POST /admin/invalid-resources", func(w http.ResponseWriter, r *http.Request) {
		res := r.URL.Query().Get("resource")
		invalid, err := strconv.ParseBool(r.URL.Query().Get("invalid"))
		if res == "" || err != nil {
			adminError(w, http.StatusBadRequest, "want ?resource=<uri>&invalid=true|false")
			return
		}
		e.SetInvalidResource(res, invalid)
		writeJSON(w, http.StatusOK, map[string]any{"resource": res, "invalid": invalid})
	})
	mux.HandleFunc("POST /admin/issuer/rotate-key", func(w http.ResponseWriter, r *http.Request) {
		kid, err := e.RotateIssuerKey()
		if err != nil {
			adminError(w, http.StatusInternalServerError, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"kid": kid})
	})
	mux.HandleFunc("POST /admin/trusted-issuers", func(w http.ResponseWriter, r *http.Request) {
		var t TrustedIssuer
		if !decodeAdminBody(w, r, &t) {
			return
		}
		if err := e.TrustIssuer(t); err != nil {
			adminError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"issuer": t.Issuer})
	})
	mux.HandleFunc("GET /admin/info", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, e.Info())
	})
	mux.HandleFunc("/admin/", func(w http.ResponseWriter, r *http.Request) {
		adminError(w, http.StatusNotFound, fmt.Sprintf("no admin route %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// tlsFaultJSON is the admin API form of a TLS fault.
type tlsFaultJSON struct {
	Certificate TLSFault `json:"certificate"`
}

// IssuedTokenList is the admin API answer of GET /admin/issued-tokens.
type IssuedTokenList struct {
	// Tokens are the access tokens issued, oldest first.
	Tokens []string `json:"tokens"`
	// Dropped counts older tokens no longer kept.
	Dropped int `json:"dropped"`
}

// Info describes a running emulator; the command prints it as its ready
// line.
type Info struct {
	AuthorityHost string `json:"authority_host"`
	Authority     string `json:"authority"`
	TokenEndpoint string `json:"token_endpoint"`
	Tenant        string `json:"tenant"`
	IssuerURL     string `json:"issuer_url"`
	CACertPEM     string `json:"ca_cert_pem,omitempty"`
}

// Info returns the emulator's URLs, tenant and CA certificate.
func (e *Emulator) Info() Info {
	return Info{
		AuthorityHost: e.AuthorityHost(),
		Authority:     e.Authority(),
		TokenEndpoint: e.TokenEndpoint(),
		Tenant:        e.tenant,
		IssuerURL:     e.issuerURL,
		CACertPEM:     string(e.pki.caPEM),
	}
}

// adminError answers {"error": msg}.
func adminError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// decodeAdminBody decodes a bounded JSON body, rejecting unknown fields.
func decodeAdminBody(w http.ResponseWriter, r *http.Request, dst any) bool {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBody))
	if err != nil {
		adminError(w, http.StatusBadRequest, "reading body: "+err.Error())
		return false
	}
	if err := json.Unmarshal(b, dst); err != nil {
		adminError(w, http.StatusBadRequest, "decoding body: "+err.Error())
		return false
	}
	return true
}

// adminSetFault sets the fault from a JSON body and answers the fault in force.
func (e *Emulator) adminSetFault(w http.ResponseWriter, r *http.Request) {
	var f Fault
	if !decodeAdminBody(w, r, &f) {
		return
	}
	if err := e.SetFaultErr(f); err != nil {
		adminError(w, http.StatusBadRequest, err.Error())
		return
	}
	e.log.Info("fault set", "fault", f)
	writeJSON(w, http.StatusOK, e.CurrentFault())
}

// adminCalls answers the call counters, and the one counter asked for with
// client_id and scope.
func (e *Emulator) adminCalls(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	e.mu.Lock()
	total, discovery, fetches, maxInFlight := e.totalCalls, e.discoveryCalls, e.issuerFetches, e.maxInFlight
	e.mu.Unlock()
	out := map[string]any{
		"total":          total,
		"discovery":      discovery,
		"issuer_fetches": fetches,
		"max_in_flight":  maxInFlight,
		"by_identity":    e.Calls(),
	}
	if id := q.Get("client_id"); id != "" || q.Has("scope") {
		out["client_id"] = id
		out["scope"] = q.Get("scope")
		out["calls"] = e.TokenCalls(id, q.Get("scope"))
	}
	writeJSON(w, http.StatusOK, out)
}

// adminMintToken mints a service-account token and answers it as plain text.
func (e *Emulator) adminMintToken(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	lifetime := time.Hour
	if s := q.Get("lifetime"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			adminError(w, http.StatusBadRequest, "lifetime: "+err.Error())
			return
		}
		lifetime = d
	}
	spec := TokenSpec{Namespace: q.Get("namespace"), ServiceAccount: q.Get("sa"), Subject: q.Get("subject"), Lifetime: lifetime}
	if aud := q["audience"]; len(aud) > 0 {
		spec.Audiences = aud
	}
	tok, err := e.MintToken(spec)
	if err != nil {
		adminError(w, http.StatusBadRequest, err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(tok)))
	_, _ = io.WriteString(w, tok)
}

// adminListApps answers the registered apps.
func (e *Emulator) adminListApps(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	apps := make([]App, 0, len(e.apps))
	for _, a := range e.apps {
		a.Federations = cloneFederations(a.Federations)
		apps = append(apps, a)
	}
	e.mu.Unlock()
	writeJSON(w, http.StatusOK, apps)
}

// adminAddApp adds or replaces an app from a JSON body and answers it with
// defaults applied.
func (e *Emulator) adminAddApp(w http.ResponseWriter, r *http.Request) {
	var a App
	if !decodeAdminBody(w, r, &a) {
		return
	}
	if err := e.AddAppErr(a); err != nil {
		adminError(w, http.StatusBadRequest, err.Error())
		return
	}
	got, _ := e.App(a.ClientID)
	writeJSON(w, http.StatusOK, got)
}
