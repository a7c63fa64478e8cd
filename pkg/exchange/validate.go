package exchange

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// FieldError is one invalid field of a Config. Field is the name of the
// Config field, with the index for an element of a slice
// ("Identities[2].ClientID"), so a command can name the flag or variable the
// value came from; Value is the offending value as text.
type FieldError struct {
	Field string
	Value string
	Err   error
}

// Error reads `TenantID "a/b": contains '/', ...`.
func (e *FieldError) Error() string {
	return e.Field + " " + strconv.Quote(e.Value) + ": " + e.Err.Error()
}

func (e *FieldError) Unwrap() error { return e.Err }

var errRequired = errors.New("is required")

// Validate reports every invalid field of cfg, as one *FieldError per
// problem joined with errors.Join (visit them through the joined error's
// Unwrap() []error), or nil. Zero durations and counts and an empty
// AuthorityHost are valid: they mean the defaults. It does no I/O: a token
// file that does not exist yet is not an error here.
func (cfg Config) Validate() error {
	var errs []error
	add := func(field, value string, err error) {
		errs = append(errs, &FieldError{Field: field, Value: value, Err: err})
	}
	if err := CheckTenantID(cfg.TenantID); err != nil {
		add("TenantID", cfg.TenantID, err)
	}
	if cfg.AuthorityHost != "" {
		if err := checkAuthorityHost(cfg.AuthorityHost); err != nil {
			add("AuthorityHost", cfg.AuthorityHost, err)
		}
	}
	if strings.TrimSpace(cfg.TokenFile) == "" {
		add("TokenFile", cfg.TokenFile, errRequired)
	}
	for i, id := range cfg.Identities {
		if strings.TrimSpace(id.ClientID) == "" {
			add(fmt.Sprintf("Identities[%d].ClientID", i), id.ClientID, errRequired)
		}
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{
		{"ExchangeTimeout", cfg.ExchangeTimeout},
		{"MinRemaining", cfg.MinRemaining},
		{"StaleGrace", cfg.StaleGrace},
		{"NegativeTTL", cfg.NegativeTTL},
		{"ForceRefreshInterval", cfg.ForceRefreshInterval},
	} {
		if d.v < 0 {
			add(d.field, d.v.String(), errors.New("must not be negative"))
		}
	}
	for _, n := range []struct {
		field string
		v     int
	}{
		{"MaxIdentities", cfg.MaxIdentities},
		{"MaxEntries", cfg.MaxEntries},
		{"MaxConcurrentExchanges", cfg.MaxConcurrentExchanges},
	} {
		if n.v < 0 {
			add(n.field, strconv.Itoa(n.v), errors.New("must not be negative"))
		}
	}
	return errors.Join(errs...)
}

// maxTenantIDLength bounds a tenant ID: a GUID has 36 characters, a domain
// name at most 253.
const maxTenantIDLength = 253

// CheckTenantID accepts what Entra accepts as the tenant segment of an
// authority URL: a tenant ID (a GUID) or a domain name, that is letters,
// digits, '-' and '.', at most 253 bytes; not "adfs" or "dstsv2", which
// MSAL reads as other authority types. It is the one tenant rule of the
// proxy: pkg/imds echoes the same tenant on /metadata/identity/info.
func CheckTenantID(tenant string) error {
	if strings.TrimSpace(tenant) == "" {
		return errRequired
	}
	if len(tenant) > maxTenantIDLength {
		return fmt.Errorf("is longer than %d bytes", maxTenantIDLength)
	}
	const want = "a tenant is a tenant ID (a GUID) or a domain name, made of letters, digits, '-' and '.'"
	for i := 0; i < len(tenant); i++ {
		switch c := tenant[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '.':
		case c >= utf8.RuneSelf:
			return errors.New("contains non-ASCII text: " + want)
		default:
			return fmt.Errorf("contains %q: %s", c, want)
		}
	}
	switch strings.ToLower(tenant) {
	case "adfs", "dstsv2":
		return errors.New("names an MSAL authority type, not an Entra tenant")
	}
	return nil
}

// checkAuthorityHost accepts an https URL made of a host, an optional port
// and an optional "/": the tenant is appended to it, and MSAL takes the
// first path segment as the tenant.
func checkAuthorityHost(host string) error {
	u, err := url.Parse(host)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the whole value
		}
		return fmt.Errorf("is not a URL: %w", err)
	}
	switch {
	case u.Scheme != "https":
		return errors.New("must be an https URL")
	case u.Opaque != "" || u.Hostname() == "":
		return errors.New("has no host")
	case u.User != nil:
		return errors.New("must not carry user information")
	case u.RawQuery != "" || u.ForceQuery:
		return errors.New("must not carry a query")
	case u.Fragment != "" || strings.Contains(host, "#"):
		return errors.New("must not carry a fragment")
	case u.Path != "" && u.Path != "/":
		return errors.New(`must have no path beyond "/"`)
	}
	return nil
}
