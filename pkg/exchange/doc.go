// Package exchange turns an IMDS token request into a Microsoft Entra access
// token by exchanging the pod's projected service-account token (workload
// identity federation, client-credentials grant with a JWT client assertion)
// through MSAL Go, and owns the one token cache of the proxy.
//
// # Layout
//
// Source (source.go) is the serving policy: for each request it asks the
// cache (tokenCache, cache.go) for one answer (hit, stale, forced, negative
// or miss) and calls the exchanger (exchange.go) only when the cache has no
// token to hand out. The exchanger runs each exchange in a flight
// (flightGroup, flight.go) and writes its outcome back to the cache.
// identityMemory (identities.go) remembers what issued tokens taught about
// identities, for resolve.go. Run (refresh.go) does the background work.
// docs/token-cache.md describes the policy as a whole.
//
// # Exchange
//
// The exchange keeps one MSAL Go confidential client per client id (the
// tenant is fixed) in an LRU. Each client's credential is an assertion callback that
// re-reads the token file on every exchange, because kubelet rotates it.
// MSAL's own token cache is disabled with an accessor that loads an empty
// cache and discards exports, so every AcquireTokenByCredential reaches
// Entra and the cache here is the only one; MSAL still keeps its tenant
// discovery per client.
//
// Concurrent misses of one key share one exchange, run on a context
// detached from the callers' and bounded by Config.ExchangeTimeout. At most
// Config.MaxConcurrentExchanges exchanges run at once across all keys,
// background refreshes included; further ones wait in a queue, within the
// same timeout, and leave it without exchanging when every caller waiting
// for them has gone.
//
// # Cache
//
// Tokens are cached per (tenant, client id, scope), where the scope is the
// resource plus "/.default". A cached token is handed out only while at
// least min(Config.MinRemaining, lifetime/2) is left; a token just obtained
// is always handed out. Run refreshes tokens that were handed out since
// their last fetch once half their lifetime has passed, and drops tokens
// that expired or were not handed out for a whole lifetime; between two
// such events it sleeps. While Entra fails, a cached token is served until
// Config.StaleGrace before its expiry. Permanent failures (unknown
// application, no matching federated credential, invalid resource) are
// remembered for Config.NegativeTTL, and forgotten at once when the token
// file changes. A throttling answer is remembered for Entra's whole
// Retry-After: neither requests nor refreshes ask Entra again for that key
// before it has passed.
//
// # Identities
//
// A request names its identity by default (Config.DefaultClientID), by
// client id, or by object id or Azure resource id. The last two resolve
// through Config.Identities, then through the oid and xms_mirid claims of
// tokens already issued, and finally by trial exchanges for every known
// client id.
//
// # Errors
//
// Every failure is an *Error whose Reason pkg/imds maps to one HTTP answer.
// Error.Detail and Error.Code are client-safe; raw upstream text goes only
// to the log, and nothing this package logs or returns contains an access
// token or the assertion. A failure repeated for one identity and scope is
// logged once a minute, with the count of the repeats folded in.
//
// Config.Validate reports every invalid field of a Config as a *FieldError
// naming the field, so a command can name the flag it came from.
package exchange
