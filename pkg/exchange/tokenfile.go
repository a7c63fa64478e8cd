package exchange

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// maxTokenFileSize bounds a read of the projected token file. Kubernetes
// service-account tokens are about 1 KiB.
const maxTokenFileSize = 64 << 10

// ProjectedToken is what diagnostics may show of the projected
// service-account token: its unverified claims, never the token itself.
type ProjectedToken struct {
	Issuer   string
	Subject  string
	Audience []string
	// Expiry is the exp claim, zero when absent.
	Expiry time.Time
}

// String renders the claims the way federated credentials are matched
// (issuer, subject, audience), for logs and error details.
func (p ProjectedToken) String() string {
	return fmt.Sprintf("issuer=%s, subject=%s, audience=%s", orNone(p.Issuer), orNone(p.Subject), orNone(strings.Join(p.Audience, ",")))
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// ReadProjectedToken reads the projected service-account token at path and
// returns its unverified claims for diagnostics. A read failure is an *Error
// with ReasonTokenFile.
func ReadProjectedToken(path string) (ProjectedToken, error) {
	raw, err := readTokenFile(path)
	if err != nil {
		return ProjectedToken{}, err
	}
	c, err := decodeClaims(raw)
	if err != nil {
		return ProjectedToken{}, fmt.Errorf("projected service account token %s: %w", path, err)
	}
	return projectedFromClaims(c), nil
}

func projectedFromClaims(c claims) ProjectedToken {
	return ProjectedToken{Issuer: c.Issuer, Subject: c.Subject, Audience: c.Audience, Expiry: c.Expiry}
}

// readTokenFile returns the trimmed contents of the token file or an *Error
// with ReasonTokenFile naming the path.
func readTokenFile(path string) (string, error) {
	f, err := os.Open(path) //nolint:gosec // G304: the operator's AZURE_FEDERATED_TOKEN_FILE, never a request's
	if err != nil {
		return "", tokenFileError(path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFileSize+1))
	if err != nil {
		return "", tokenFileError(path, err)
	}
	if len(b) > maxTokenFileSize {
		return "", tokenFileError(path, fmt.Errorf("larger than %d bytes", maxTokenFileSize))
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", tokenFileError(path, fmt.Errorf("file is empty"))
	}
	return s, nil
}

func tokenFileError(path string, err error) *Error {
	return &Error{
		Reason: ReasonTokenFile,
		Detail: "cannot read the projected service account token file " + path,
		Err:    err,
	}
}

// tokenFile re-reads the projected token on every exchange and notices when
// its content changes, so the remembered failures can be cleared (a new
// projected token may match a federated credential the old one did not).
type tokenFile struct {
	path string

	mu        sync.Mutex
	sum       [sha256.Size]byte
	seen      bool
	projected ProjectedToken
	// onChange runs (without mu held) when the content differs from the
	// previous read.
	onChange func()
}

// read returns the current assertion. It is safe for concurrent use: MSAL
// calls it from any goroutine exchanging a token.
func (t *tokenFile) read() (string, error) {
	s, err := readTokenFile(t.path)
	if err != nil {
		return "", err
	}
	t.observe(s)
	return s, nil
}

// changed re-reads the file and reports whether its content differs from
// the last read (and, if so, records the new content).
func (t *tokenFile) changed() bool {
	s, err := readTokenFile(t.path)
	if err != nil {
		return false
	}
	return t.observe(s)
}

func (t *tokenFile) observe(s string) bool {
	sum := sha256.Sum256([]byte(s))
	t.mu.Lock()
	if t.seen && sum == t.sum {
		t.mu.Unlock()
		return false
	}
	first := !t.seen
	t.seen = true
	t.sum = sum
	if c, err := decodeClaims(s); err == nil {
		t.projected = projectedFromClaims(c)
	} else {
		t.projected = ProjectedToken{}
	}
	onChange := t.onChange
	t.mu.Unlock()
	if !first && onChange != nil {
		onChange()
	}
	return !first
}

// claims returns the claims of the last token read.
func (t *tokenFile) claims() ProjectedToken {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.projected
}
