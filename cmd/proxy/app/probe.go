package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/logging"
	"github.com/imds-proxy/imds-proxy/pkg/imds"
)

// Probe timing: how long the postStart hook waits for the proxy, then for
// its warm-up token.
const (
	// probeReadyTimeout bounds the wait for /readyz: kubelet runs the
	// postStart hook concurrently with the container's entrypoint, so the
	// proxy may not be listening yet.
	probeReadyTimeout = 30 * time.Second
	// probeWarmupTimeout bounds the warm-up token request.
	probeWarmupTimeout = 10 * time.Second
	probeMaxBackoff    = time.Second
)

// Probe is the postStart hook: it waits until the running proxy answers
// /readyz, retrying connection errors for up to 30 s, then asks it for one
// token for the default identity so the cache is warm before the app
// starts. The warm-up request carries imds.ProbeHeader, so a failure is
// logged with its diagnosis by the proxy itself: kubelet discards the
// output of a hook that exits 0. A failed warm-up is an error only with
// --probe-strict; no default identity skips it. Probe needs no AZURE_*
// variable except AZURE_CLIENT_ID to decide on the warm-up.
func Probe(ctx context.Context, cfg *ProbeConfig, deps Deps) error {
	log := deps.Logger.WithName("probe")
	client := &http.Client{
		// The proxy is on loopback: never through an HTTP proxy.
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
		Timeout:   2 * time.Second,
	}
	if err := waitReady(ctx, client, cfg.BaseURL+"/readyz"); err != nil {
		return err
	}
	log.Info("proxy is ready", "url", cfg.BaseURL)
	if cfg.ClientID == "" {
		log.Info("no default identity (AZURE_CLIENT_ID): skipping the warm-up")
		return nil
	}
	err := warmUp(ctx, cfg)
	if err == nil {
		log.Info("warm-up token obtained", "resource", cfg.Resource)
		return nil
	}
	if cfg.Strict {
		return fmt.Errorf("warm-up failed (--probe-strict): %w", err)
	}
	logging.Warn(log, "warm-up failed; the proxy's log has the diagnosis", "resource", cfg.Resource, "error", err.Error())
	return nil
}

// waitReady polls url until it answers 200, retrying with back-off until
// probeReadyTimeout.
func waitReady(ctx context.Context, client *http.Client, url string) error {
	ctx, cancel := context.WithTimeout(ctx, probeReadyTimeout)
	defer cancel()
	backoff := 50 * time.Millisecond
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s answered %s", url, resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("proxy not ready within %s: %w", probeReadyTimeout, last)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, probeMaxBackoff)
	}
}

// warmUp requests one token for the default identity. An invalid_resource
// answer counts as success: Entra accepted the federation and only the
// resource is unknown (a private cloud, say).
func warmUp(ctx context.Context, cfg *ProbeConfig) error {
	ctx, cancel := context.WithTimeout(ctx, probeWarmupTimeout)
	defer cancel()
	q := url.Values{"api-version": {"2018-02-01"}, "resource": {cfg.Resource}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		cfg.BaseURL+"/metadata/identity/oauth2/token?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Metadata", "true")
	req.Header.Set(imds.ProbeHeader, "warmup")
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	// Only the error fields are read: a success body holds a token.
	var e struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	_ = json.Unmarshal(body, &e)
	if resp.StatusCode == http.StatusBadRequest && e.Error == "invalid_resource" {
		return nil
	}
	if e.Error == "" {
		return errors.New(resp.Status)
	}
	return fmt.Errorf("%s: %s: %s", resp.Status, e.Error, e.Description)
}
