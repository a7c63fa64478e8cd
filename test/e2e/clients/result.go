// Package clients holds what the e2e suite's client programs have in
// common: the one JSON line each prints (the Go client in goclient, the
// Node.js and Python ones in node/ and python/ print the same keys). The
// programs themselves are described in README.md.
package clients

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Result is the JSON line a client program prints once it got a token
// twice in one process: a digest of the token, never the token.
type Result struct {
	// Client names the library, "go-msal" or "node-identity" say.
	Client string `json:"client"`
	// Calls is how many times the program asked the library for a token.
	Calls       int    `json:"calls"`
	TokenSHA256 string `json:"token_sha256"`
	TokenLen    int    `json:"token_len"`
	// SameToken is true when the second call returned the first token:
	// the library's own cache answered it.
	SameToken bool `json:"same_token"`
	// FromCache is the library's own word on the second call, where it
	// reports it (MSAL Go, msal-node).
	FromCache *bool `json:"from_cache,omitempty"`
	// ExpiresOn is the token's expiry as the library understood it, Unix
	// seconds.
	ExpiresOn int64 `json:"expires_on"`
	// Claims are the access token's decoded (unverified) claims.
	Claims map[string]any `json:"claims"`
}

// ParseResult decodes the one line a client program printed; surrounding
// white space is ignored, anything else is an error naming what was read.
func ParseResult(out string) (Result, error) {
	var r Result
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &r); err != nil {
		return Result{}, fmt.Errorf("client output is not one JSON line: %w\n%s", err, out)
	}
	return r, nil
}
