// Command goclient asks the instance metadata service for a managed-identity
// token with one of the real Go client libraries, unchanged, and prints one
// JSON line describing what it got. The e2e suite runs it inside the pod
// network namespace, so its requests to 169.254.169.254 cross the real
// proxy-init redirect and reach the real proxy.
//
// Each run gets a token twice in one process: the second must come from the
// library's own cache. The raw token is never printed (test logs must not
// carry tokens): the output holds its SHA-256, its length and its decoded
// claims.
//
// Which service the libraries ask depends on the environment, as in an
// app: IMDS at 169.254.169.254 by default, the App Service endpoint when
// IDENTITY_ENDPOINT and IDENTITY_HEADER are set (except adal, which knows
// only IMDS and App Service 2017).
//
// Usage:
//
//	goclient azidentity [-client-id ID | -object-id ID | -resource-id ID] -scope SCOPE
//	goclient dac        -scope SCOPE
//	goclient msal       [-client-id ID | -object-id ID | -resource-id ID] -resource RESOURCE
//	goclient adal       [-client-id ID | -resource-id ID] -resource RESOURCE
//
// dac is azidentity.DefaultAzureCredential, whose managed identity is
// selected by AZURE_CLIENT_ID in the environment only.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/go-autorest/autorest/adal"
	mi "github.com/AzureAD/microsoft-authentication-library-for-go/apps/managedidentity"

	"github.com/imds-proxy/imds-proxy/test/e2e/clients"
)

// selector is the identity chosen on the command line; at most one field is set.
type selector struct {
	clientID, objectID, resourceID string
}

func (s selector) count() int {
	n := 0
	for _, v := range []string{s.clientID, s.objectID, s.resourceID} {
		if v != "" {
			n++
		}
	}
	return n
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "goclient:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: goclient azidentity|dac|msal|adal [flags]")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	var sel selector
	fs.StringVar(&sel.clientID, "client-id", "", "user-assigned identity by client id")
	fs.StringVar(&sel.objectID, "object-id", "", "user-assigned identity by object id")
	fs.StringVar(&sel.resourceID, "resource-id", "", "user-assigned identity by Azure resource id")
	scope := fs.String("scope", "", "scope (azidentity)")
	resource := fs.String("resource", "", "resource (msal, adal)")
	timeout := fs.Duration("timeout", 90*time.Second, "overall deadline")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if sel.count() > 1 {
		return errors.New("at most one of -client-id, -object-id, -resource-id")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	var (
		res *clients.Result
		err error
	)
	switch args[0] {
	case "azidentity":
		if *scope == "" {
			return errors.New("azidentity needs -scope")
		}
		res, err = viaAzidentity(ctx, sel, *scope)
	case "dac":
		if *scope == "" {
			return errors.New("dac needs -scope")
		}
		if sel.count() != 0 {
			return errors.New("dac takes no selector: set AZURE_CLIENT_ID")
		}
		res, err = viaDefaultAzureCredential(ctx, *scope)
	case "msal":
		if *resource == "" {
			return errors.New("msal needs -resource")
		}
		res, err = viaMSAL(ctx, sel, *resource)
	case "adal":
		if *resource == "" {
			return errors.New("adal needs -resource")
		}
		if sel.objectID != "" {
			return errors.New("adal has no object id selector")
		}
		res, err = viaADAL(ctx, sel, *resource)
	default:
		return fmt.Errorf("unknown client %q", args[0])
	}
	if err != nil {
		return err
	}
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "%s\n", b)
	return err
}

// viaAzidentity uses azidentity.ManagedIdentityCredential, as an app built
// on the Azure SDK for Go does.
func viaAzidentity(ctx context.Context, sel selector, scope string) (*clients.Result, error) {
	opts := &azidentity.ManagedIdentityCredentialOptions{}
	switch {
	case sel.clientID != "":
		opts.ID = azidentity.ClientID(sel.clientID)
	case sel.objectID != "":
		opts.ID = azidentity.ObjectID(sel.objectID)
	case sel.resourceID != "":
		opts.ID = azidentity.ResourceID(sel.resourceID)
	}
	cred, err := azidentity.NewManagedIdentityCredential(opts)
	if err != nil {
		return nil, err
	}
	return getTokenTwice(ctx, "go-azidentity", cred, scope)
}

// viaDefaultAzureCredential uses azidentity.DefaultAzureCredential, the
// credential most Azure SDK for Go apps are built with. Without the AZURE_*
// variables of its environment and workload identity credentials, its
// managed identity credential is the one that answers, for the identity
// AZURE_CLIENT_ID names if it is set.
func viaDefaultAzureCredential(ctx context.Context, scope string) (*clients.Result, error) {
	cred, err := azidentity.NewDefaultAzureCredential(nil)
	if err != nil {
		return nil, err
	}
	return getTokenTwice(ctx, "go-dac", cred, scope)
}

// getTokenTwice asks an azidentity credential for a token for scope twice,
// as an app does, and describes the outcome as client.
func getTokenTwice(ctx context.Context, client string, cred azcore.TokenCredential, scope string) (*clients.Result, error) {
	req := policy.TokenRequestOptions{Scopes: []string{scope}}
	first, err := cred.GetToken(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("first GetToken: %w", err)
	}
	second, err := cred.GetToken(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("second GetToken: %w", err)
	}
	return describe(client, first.Token, second.Token, nil, first.ExpiresOn)
}

// viaMSAL uses MSAL Go's apps/managedidentity client directly.
func viaMSAL(ctx context.Context, sel selector, resource string) (*clients.Result, error) {
	id := mi.SystemAssigned()
	switch {
	case sel.clientID != "":
		id = mi.UserAssignedClientID(sel.clientID)
	case sel.objectID != "":
		id = mi.UserAssignedObjectID(sel.objectID)
	case sel.resourceID != "":
		id = mi.UserAssignedResourceID(sel.resourceID)
	}
	client, err := mi.New(id)
	if err != nil {
		return nil, err
	}
	first, err := client.AcquireToken(ctx, resource)
	if err != nil {
		return nil, fmt.Errorf("first AcquireToken: %w", err)
	}
	second, err := client.AcquireToken(ctx, resource)
	if err != nil {
		return nil, fmt.Errorf("second AcquireToken: %w", err)
	}
	if first.Metadata.TokenSource != mi.TokenSourceIdentityProvider {
		return nil, fmt.Errorf("first token came from source %d, want the identity provider", first.Metadata.TokenSource)
	}
	cached := second.Metadata.TokenSource == mi.TokenSourceCache
	return describe("go-msal", first.AccessToken, second.AccessToken, &cached, first.ExpiresOn)
}

// viaADAL uses the deprecated go-autorest adal package, which selects an
// identity by resource id with the mi_res_id query parameter.
func viaADAL(ctx context.Context, sel selector, resource string) (*clients.Result, error) {
	spt, err := adal.NewServicePrincipalTokenFromManagedIdentity(resource, &adal.ManagedIdentityOptions{
		ClientID:           sel.clientID,
		IdentityResourceID: sel.resourceID,
	})
	if err != nil {
		return nil, err
	}
	// EnsureFresh fetches only when the held token is missing or within
	// five minutes of expiry, which is how adal's autorest authorizer uses it.
	if err := spt.EnsureFreshWithContext(ctx); err != nil {
		return nil, fmt.Errorf("first EnsureFresh: %w", err)
	}
	first := spt.Token()
	if err := spt.EnsureFreshWithContext(ctx); err != nil {
		return nil, fmt.Errorf("second EnsureFresh: %w", err)
	}
	second := spt.Token()
	exp, err := first.ExpiresOn.Int64()
	if err != nil {
		return nil, fmt.Errorf("expires_on %q: %w", first.ExpiresOn, err)
	}
	return describe("go-adal", first.AccessToken, second.AccessToken, nil, time.Unix(exp, 0))
}

// describe builds the printed result from two tokens without exposing them.
func describe(client, first, second string, fromCache *bool, expiresOn time.Time) (*clients.Result, error) {
	claims, err := jwtClaims(first)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(first))
	return &clients.Result{
		Client:      client,
		Calls:       2,
		TokenSHA256: hex.EncodeToString(sum[:]),
		TokenLen:    len(first),
		SameToken:   first == second,
		FromCache:   fromCache,
		ExpiresOn:   expiresOn.Unix(),
		Claims:      claims,
	}, nil
}

// jwtClaims decodes the payload of a compact JWS without verifying it: the
// test verifies the claims against what the emulator was configured to issue.
func jwtClaims(tok string) (map[string]any, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("access token is not a JWT (%d segments)", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("access token payload: %w", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		return nil, fmt.Errorf("access token payload: %w", err)
	}
	return claims, nil
}
