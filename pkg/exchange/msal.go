package exchange

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/cache"
	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/confidential"
	msalerrors "github.com/AzureAD/microsoft-authentication-library-for-go/apps/errors"
)

var (
	_ acquirer            = (*msalAcquirer)(nil)
	_ cache.ExportReplace = noTokenCache{}
)

// msalConfig configures the MSAL-backed acquirer.
type msalConfig struct {
	authority         string
	instanceDiscovery bool
	httpClient        *http.Client
	maxClients        int
	// defaultClientID is the pod's default identity, "" for none.
	defaultClientID string
	// assertion returns the projected service-account token; it re-reads
	// the file on every call.
	assertion func() (string, error)
}

// msalAcquirer exchanges through MSAL Go confidential clients, one
// long-lived client per client id (the tenant is fixed), held in an LRU.
// Keeping the client keeps MSAL's tenant discovery, which lives outside the
// token cache; creating one per request would repeat discovery every time
// (MSAL Go v1.10.1 apps/internal/oauth/resolvers.go: each client's
// authorityEndpoint caches the endpoints it resolved).
type msalAcquirer struct {
	cfg  msalConfig
	cred confidential.Credential

	mu      sync.Mutex
	clients map[string]*list.Element // of *msalClient
	lru     *list.List
}

type msalClient struct {
	clientID string
	client   confidential.Client
}

func newMSALAcquirer(cfg msalConfig) (*msalAcquirer, error) {
	a := &msalAcquirer{
		cfg:     cfg,
		clients: make(map[string]*list.Element),
		lru:     list.New(),
	}
	// The callback runs on every network token request, never on MSAL
	// cache hits (MSAL Go v1.10.1 accesstokens.Credential.JWT); with the
	// no-op cache below that is every exchange, so a rotated file is
	// picked up at once.
	a.cred = confidential.NewCredFromAssertionCallback(func(context.Context, confidential.AssertionRequestOptions) (string, error) {
		return cfg.assertion()
	})
	// Build one client now so a bad authority fails at start, not on the
	// first request: the default identity's, kept for its first exchange
	// (and the prewarm), or a throwaway one without a default identity.
	// confidential.New makes no network call.
	var err error
	if cfg.defaultClientID != "" {
		_, err = a.client(cfg.defaultClientID)
	} else {
		_, err = a.newClient("00000000-0000-0000-0000-000000000000")
	}
	if err != nil {
		return nil, fmt.Errorf("exchange: MSAL rejects authority %q: %w", cfg.authority, err)
	}
	return a, nil
}

func (a *msalAcquirer) newClient(clientID string) (confidential.Client, error) {
	opts := []confidential.Option{
		confidential.WithCache(noTokenCache{}),
		confidential.WithInstanceDiscovery(a.cfg.instanceDiscovery),
	}
	if a.cfg.httpClient != nil {
		opts = append(opts, confidential.WithHTTPClient(a.cfg.httpClient))
	}
	return confidential.New(a.cfg.authority, clientID, a.cred, opts...)
}

func (a *msalAcquirer) client(clientID string) (confidential.Client, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if el, ok := a.clients[clientID]; ok {
		a.lru.MoveToFront(el)
		return el.Value.(*msalClient).client, nil
	}
	c, err := a.newClient(clientID)
	if err != nil {
		return confidential.Client{}, err
	}
	a.clients[clientID] = a.lru.PushFront(&msalClient{clientID: clientID, client: c})
	for len(a.clients) > a.cfg.maxClients {
		back := a.lru.Back()
		a.lru.Remove(back)
		delete(a.clients, back.Value.(*msalClient).clientID)
	}
	return c, nil
}

// prewarm builds the MSAL client of clientID (kept in the LRU, as a token
// request would) and resolves its authority's endpoints: instance and
// tenant discovery, which the client caches for its lifetime, over a
// connection the HTTP client then keeps for the first token POST. It
// requests no token. MSAL Go v1.10.1 has no public "resolve endpoints"
// call; AuthCodeURL is the one public method that runs the client's
// ResolveEndpoints (the same resolver and cache AcquireTokenByCredential
// uses) and otherwise only formats a URL (base.Client.AuthCodeURL). The URL
// is discarded.
func (a *msalAcquirer) prewarm(ctx context.Context, clientID string) error {
	c, err := a.client(clientID)
	if err != nil {
		return fmt.Errorf("building MSAL client: %w", err)
	}
	if _, err := c.AuthCodeURL(ctx, clientID, "http://localhost", []string{"openid"}); err != nil {
		return fromMSALError(err)
	}
	return nil
}

func (a *msalAcquirer) acquire(ctx context.Context, clientID, scope string) (acquired, error) {
	c, err := a.client(clientID)
	if err != nil {
		return acquired{}, fmt.Errorf("building MSAL client: %w", err)
	}
	res, err := c.AcquireTokenByCredential(ctx, []string{scope})
	if err != nil {
		return acquired{}, fromMSALError(err)
	}
	if res.AccessToken == "" {
		return acquired{}, errors.New("entra answered without an access token")
	}
	return acquired{AccessToken: res.AccessToken, ExpiresOn: res.ExpiresOn}, nil
}

// fromMSALError turns MSAL's errors.CallErr (a non-2xx HTTP answer, from
// tenant discovery or the token endpoint) into an *upstreamError carrying
// status, headers and body (MSAL Go v1.10.1 comm.go do). CallErr also holds
// the request, whose form body contains the assertion: it is dropped here
// and must never reach a log.
func fromMSALError(err error) error {
	var ce msalerrors.CallErr
	if errors.As(err, &ce) && ce.Resp != nil {
		up := &upstreamError{Status: ce.Resp.StatusCode, Header: ce.Resp.Header.Clone(), Err: redactErr(ce.Err)}
		if ce.Resp.Body != nil {
			// comm.go replaced the body with an in-memory copy.
			up.Body, _ = io.ReadAll(io.LimitReader(ce.Resp.Body, maxErrorBody))
		}
		return up
	}
	var xe *Error
	if errors.As(err, &xe) {
		return xe // the assertion callback's token file error
	}
	return redactErr(err)
}

// noTokenCache is MSAL's cache accessor that keeps nothing: Replace loads
// an empty cache and Export discards, so every AcquireTokenByCredential
// reaches Entra and our cache stays the only one. MSAL would
// otherwise answer a refresh from its own cache, judged by the real clock.
type noTokenCache struct{}

func (noTokenCache) Replace(_ context.Context, u cache.Unmarshaler, _ cache.ReplaceHints) error {
	return u.Unmarshal([]byte("{}"))
}

func (noTokenCache) Export(context.Context, cache.Marshaler, cache.ExportHints) error { return nil }
