package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// FillConfig configures Fill: Resources token requests, each for a
// resource of its own, spread round-robin over ClientIDs.
type FillConfig struct {
	// Target gives the address, Host and headers; its URI is replaced.
	Target Target
	// ClientIDs are the identities asked for, as client_id= selectors.
	ClientIDs []string
	// Resources is the number of requests, one distinct resource each.
	Resources int
	// Concurrency is the number of requests in flight at once.
	Concurrency int
	// Timeout bounds each request (default 20 s).
	Timeout time.Duration
}

// FillResult is the JSON answer of imds-loadgen's fill subcommand.
type FillResult struct {
	Requests   int           `json:"requests"`
	Identities int           `json:"identities"`
	Status     map[int]int   `json:"status"`
	Errors     int           `json:"errors"`
	FirstError string        `json:"first_error,omitempty"`
	Wall       time.Duration `json:"wall_ns"`
}

// FillResource is the resource of fill request i: distinct per request,
// shaped like an application ID URI.
func FillResource(i int) string {
	return fmt.Sprintf("api://imds-bench-fill-%04d", i)
}

// FillURI is the token request target of fill request i, naming
// clientIDs[i % len(clientIDs)].
func FillURI(i int, clientIDs []string) string {
	q := url.Values{
		"api-version": {"2018-02-01"},
		"resource":    {FillResource(i)},
		"client_id":   {clientIDs[i%len(clientIDs)]},
	}
	return "/metadata/identity/oauth2/token?" + q.Encode()
}

// Fill asks for a token for every (identity, resource) pair of cfg, each
// on a connection of its own: every request is a cache miss, so together
// they leave the proxy with Resources cached tokens and one MSAL client per
// identity, the most its default caps hold.
func Fill(ctx context.Context, cfg FillConfig) (FillResult, error) {
	if len(cfg.ClientIDs) == 0 || cfg.Resources < 1 || cfg.Concurrency < 1 {
		return FillResult{}, errors.New("fill needs client ids, resources >= 1 and concurrency >= 1")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 20 * time.Second
	}
	res := FillResult{Requests: cfg.Resources, Identities: min(len(cfg.ClientIDs), cfg.Resources), Status: map[int]int{}}
	var (
		mu   sync.Mutex
		next atomic.Int64
		wg   sync.WaitGroup
	)
	start := time.Now()
	for range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= cfg.Resources {
					return
				}
				t := cfg.Target
				t.URI = FillURI(i, cfg.ClientIDs)
				resp, err := Get(ctx, t, cfg.Timeout)
				mu.Lock()
				if err != nil {
					res.Errors++
					if res.FirstError == "" {
						res.FirstError = err.Error()
					}
				} else {
					res.Status[resp.Status]++
					if resp.Status != 200 && res.FirstError == "" {
						res.FirstError = fmt.Sprintf("%s: status %d: %s", t.URI, resp.Status, resp.Body)
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.Wall = time.Since(start)
	return res, ctx.Err()
}
