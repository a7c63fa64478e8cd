package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/entraemu"
	"github.com/imds-proxy/imds-proxy/internal/podenv"
	"github.com/imds-proxy/imds-proxy/test/bench/loadgen"
)

// Mem is one process's resident memory, from /proc/<pid>/status. Anon is
// memory only this process holds (heap, stacks, runtime metadata): what
// each pod pays for its proxy. File is the binary's pages: the proxies of
// every pod on a node that run the same image map the same page-cache
// pages (the image layer is one file), so the node holds them once.
type Mem struct {
	RSS, Anon, File, HWM int64
}

// procMem reads VmRSS, RssAnon, RssFile and VmHWM of pid; fields it cannot
// read stay 0.
func procMem(pid int) Mem {
	var m Mem
	m.RSS, _ = procStatusKB(pid, "VmRSS")
	m.Anon, _ = procStatusKB(pid, "RssAnon")
	m.File, _ = procStatusKB(pid, "RssFile")
	m.HWM, _ = procStatusKB(pid, "VmHWM")
	return m
}

func (m Mem) String() string {
	return fmt.Sprintf("%s (private %s + binary %s)", mib(m.RSS), mib(m.Anon), mib(m.File))
}

// fillClientIDs returns the identities of the fill phase: the pod's default
// identity and n-1 more, each registered in the emulator as federated with
// the pod's service account (fillApps).
func fillClientIDs(n int) []string {
	ids := []string{podenv.DefaultClientID}
	for i := 1; i < n; i++ {
		ids = append(ids, fmt.Sprintf("00000000-0000-4000-8000-%012d", i))
	}
	return ids
}

func fillApps(n int) []entraemu.App {
	var apps []entraemu.App
	for _, id := range fillClientIDs(n) {
		apps = append(apps, podenv.FederatedApp(id, "", ""))
	}
	return apps
}

// FillRun is the proxy after tokens for many distinct resources and
// identities: the cache and the MSAL clients as full as their default caps
// let them grow.
type FillRun struct {
	Result loadgen.FillResult
	// Entries is imds_proxy_token_cache_entries afterwards.
	Entries int
	// EntraCalls is the emulator's token POST count for the fill.
	EntraCalls int
	Mem        Mem
	// MemSettled is Mem after settle seconds of idling.
	MemSettled Mem
	Settle     time.Duration
}

// fillPhase asks the running proxy for fillResources tokens, each for a
// resource of its own, over fillIdentities identities, then reads its
// memory, at once and after a pause.
func (b *bench) fillPhase(ctx context.Context) error {
	if b.env == nil || b.cfg.fillResources < 1 {
		return nil
	}
	pid, err := b.proxyPID()
	if err != nil {
		return err
	}
	before, err := b.env.CallStats(ctx, "", "")
	if err != nil {
		return err
	}
	ids := fillClientIDs(b.cfg.fillIdentities)
	logf("fill: %d tokens for distinct resources over %d identities", b.cfg.fillResources, len(ids))
	var run FillRun
	if err := b.podRun(ctx, clientUID, nil, &run.Result, "fill", "-n", strconv.Itoa(b.cfg.fillResources),
		"-c", "8", "-client-ids", strings.Join(ids, ",")); err != nil {
		return err
	}
	run.Mem = procMem(pid)
	after, err := b.env.CallStats(ctx, "", "")
	if err != nil {
		return err
	}
	run.EntraCalls = after.Total - before.Total
	var m getResult
	if err := b.podRun(ctx, clientUID, nil, &m, "get", "-uri", "/metrics"); err == nil {
		if v, ok := metricValue(m.Body, "imds_proxy_token_cache_entries"); ok {
			run.Entries = int(v)
		}
	}
	run.Settle = 5 * time.Second
	time.Sleep(run.Settle)
	run.MemSettled = procMem(pid)
	r := run.Result
	logf("fill: %d requests in %v, statuses %v, errors %d, Entra calls %d, cache entries %d, RSS %s",
		r.Requests, r.Wall.Round(time.Millisecond), r.Status, r.Errors, run.EntraCalls, run.Entries, run.Mem)
	b.rep.Fill = &run
	return nil
}
