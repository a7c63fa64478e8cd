package entraemu

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Fault body kinds.
const (
	// FaultBodyJSON answers the real Entra-shaped JSON error body.
	FaultBodyJSON = ""
	// FaultBodyGarbage answers bytes that are not JSON.
	FaultBodyGarbage = "garbage"
	// FaultBodyHTML answers an HTML error page, as gateways do.
	FaultBodyHTML = "html"
)

// Fault describes a failure injected into token POSTs (discovery is never
// faulted). The zero Fault means "no fault".
type Fault struct {
	// Latency delays the answer (before any other effect). With nothing
	// else set, the request is then served normally.
	Latency time.Duration
	// Status answers this HTTP status with an AADSTS-shaped body: 5xx as
	// server_error/temporarily_unavailable (AADSTS50000), 429 as
	// temporarily_unavailable (AADSTS90055), other 4xx as invalid_request
	// (AADSTS90100). With Body set and Status 0, the status is 200.
	Status int
	// RetryAfter sets the Retry-After header (whole seconds, rounded up),
	// meant for 429 and 503.
	RetryAfter time.Duration
	// Body is FaultBodyJSON (""), FaultBodyGarbage or FaultBodyHTML.
	Body string
	// DropConnection closes the connection without answering.
	DropConnection bool
	// Count applies the fault to the next Count token requests only; 0
	// keeps it until cleared with SetFault(Fault{}).
	Count int
	// ClientID, when set, limits the fault to token requests for that
	// client id (case-insensitive); other requests are served normally
	// and do not use up Count.
	ClientID string
	// Scope, when set, limits the fault to token requests for that
	// resource scope (e.g. "https://vault.azure.net/.default").
	Scope string
}

// IsZero reports whether f injects nothing.
func (f Fault) IsZero() bool {
	return f.Latency <= 0 && f.Status == 0 && f.Body == "" && !f.DropConnection
}

// validate rejects faults that cannot be applied.
func (f Fault) validate() error {
	switch {
	case f.Latency < 0:
		return errors.New("fault latency is negative")
	case f.RetryAfter < 0:
		return errors.New("fault retry-after is negative")
	case f.Count < 0:
		return errors.New("fault count is negative")
	case f.Status != 0 && (f.Status < 200 || f.Status > 599):
		return fmt.Errorf("fault status %d is not an HTTP status", f.Status)
	case f.Status != 0 && f.Status < 400 && f.Body == FaultBodyJSON:
		return fmt.Errorf("fault status %d needs a garbage or html body (a JSON error body needs a 4xx or 5xx status)", f.Status)
	case f.Body != FaultBodyJSON && f.Body != FaultBodyGarbage && f.Body != FaultBodyHTML:
		return fmt.Errorf("fault body %q is not one of \"\", %q, %q", f.Body, FaultBodyGarbage, FaultBodyHTML)
	}
	return nil
}

// faultJSON is the wire form of a Fault in the admin API: durations are Go
// duration strings ("250ms", "2s") or integer nanoseconds.
type faultJSON struct {
	Latency        jsonDuration `json:"latency,omitempty"`
	Status         int          `json:"status,omitempty"`
	RetryAfter     jsonDuration `json:"retry_after,omitempty"`
	Body           string       `json:"body,omitempty"`
	DropConnection bool         `json:"drop_connection,omitempty"`
	Count          int          `json:"count,omitempty"`
	ClientID       string       `json:"client_id,omitempty"`
	Scope          string       `json:"scope,omitempty"`
}

// MarshalJSON renders the admin API form of f.
func (f Fault) MarshalJSON() ([]byte, error) {
	return json.Marshal(faultJSON{jsonDuration(f.Latency), f.Status, jsonDuration(f.RetryAfter), f.Body, f.DropConnection, f.Count, f.ClientID, f.Scope})
}

// UnmarshalJSON parses the admin API form of a Fault.
func (f *Fault) UnmarshalJSON(b []byte) error {
	var j faultJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*f = Fault{time.Duration(j.Latency), j.Status, time.Duration(j.RetryAfter), j.Body, j.DropConnection, j.Count, j.ClientID, j.Scope}
	return nil
}

// jsonDuration is a time.Duration that reads "1.5s" or integer nanoseconds
// and writes the string form.
type jsonDuration time.Duration

// MarshalJSON writes the duration as a Go duration string.
func (d jsonDuration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a Go duration string or integer nanoseconds.
func (d *jsonDuration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*d = jsonDuration(v)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("duration must be a string like \"1.5s\" or integer nanoseconds: %w", err)
	}
	*d = jsonDuration(n)
	return nil
}

// SetFault injects f into token POSTs until cleared (or for the next
// f.Count requests); SetFault(Fault{}) clears it. An invalid fault is
// logged and ignored; use SetFaultErr to see the error.
func (e *Emulator) SetFault(f Fault) {
	if err := e.SetFaultErr(f); err != nil {
		e.log.Error(err, "fault not set")
	}
}

// SetFaultErr is SetFault returning the validation error.
func (e *Emulator) SetFaultErr(f Fault) error {
	if err := f.validate(); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if f.IsZero() {
		e.fault, e.faultLeft = Fault{}, 0
		return nil
	}
	e.fault, e.faultLeft = f, f.Count
	return nil
}

// CurrentFault returns the fault in force; its Count is the number of
// requests it still applies to (0: until cleared).
func (e *Emulator) CurrentFault() Fault {
	e.mu.Lock()
	defer e.mu.Unlock()
	f := e.fault
	f.Count = e.faultLeft
	return f
}

// takeFaultLocked returns the fault for a request for clientID and scope
// (the counting key), if one applies, and uses up one of its count. The
// caller holds e.mu.
func (e *Emulator) takeFaultLocked(clientID, scope string) (Fault, bool) {
	if e.fault.IsZero() {
		return Fault{}, false
	}
	if (e.fault.ClientID != "" && !strings.EqualFold(e.fault.ClientID, clientID)) || (e.fault.Scope != "" && e.fault.Scope != scope) {
		return Fault{}, false
	}
	f := e.fault
	if e.fault.Count > 0 {
		e.faultLeft--
		if e.faultLeft <= 0 {
			e.fault, e.faultLeft = Fault{}, 0
		}
	}
	return f, true
}

// applyFault carries out f. It reports whether the request is finished
// (answered, dropped or abandoned) and the status answered (0 when none).
func (e *Emulator) applyFault(w http.ResponseWriter, r *http.Request, f Fault) (bool, int) {
	if !e.sleep(r.Context(), f.Latency) {
		// The client gave up or the emulator is closing: nothing to answer.
		return true, 0
	}
	if f.DropConnection {
		e.dropConnection(w)
		return true, 0
	}
	if f.Status == 0 && f.Body == "" {
		return false, 0
	}
	status := f.Status
	if status == 0 {
		status = http.StatusOK
	}
	if f.RetryAfter > 0 {
		secs := int64((f.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	switch f.Body {
	case FaultBodyGarbage:
		b := []byte("\x00\xffnot json{{{\x1b[31m")
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.WriteHeader(status)
		_, _ = w.Write(b)
	case FaultBodyHTML:
		b := []byte(fmt.Sprintf("<!DOCTYPE html>\n<html><head><title>%d %s</title></head><body><h1>%d %s</h1><p>The service is unavailable.</p></body></html>\n",
			status, http.StatusText(status), status, http.StatusText(status)))
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.WriteHeader(status)
		_, _ = w.Write(b)
	default:
		writeAADError(w, r, e.now(), faultError(status))
	}
	return true, status
}

// faultError builds the AADSTS error for an injected status.
func faultError(status int) *aadError {
	switch {
	case status == http.StatusTooManyRequests:
		return &aadError{status, "temporarily_unavailable", CodeThrottled,
			"There are too many incoming requests. Retry after the interval the Retry-After header gives."}
	case status == http.StatusServiceUnavailable:
		return &aadError{status, "temporarily_unavailable", CodeServerError,
			"There was an error issuing a token: the service is temporarily unavailable."}
	case status >= 500:
		return &aadError{status, "server_error", CodeServerError,
			"There was an error issuing a token or an issue with the sign-in service."}
	default:
		return &aadError{status, "invalid_request", CodeInjectedClientFailure,
			"The request failed (fault injected by the emulator)."}
	}
}

// dropConnection closes the client connection without writing a response.
func (e *Emulator) dropConnection(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
			return
		}
	}
	// Not hijackable: make net/http abort the connection.
	panic(http.ErrAbortHandler)
}
