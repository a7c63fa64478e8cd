package soak

import (
	"context"
	"os"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/entraemu"
	"github.com/imds-proxy/imds-proxy/internal/podenv"
)

// fault is one failure the soak switches on for an interval and off again.
type fault struct {
	name string
	// on and off apply and remove it.
	on, off func(ctx context.Context, env *podenv.Env) error
	// tokenFile is set when the fault is the token file's: rotation pauses
	// while it is on.
	tokenFile bool
	// imdsRefuses is set when the node's IMDS refuses connections (see
	// errRefused).
	imdsRefuses bool
}

// faults are switched on in this order, one per fault interval; a run too
// short for all of them uses the first ones.
func faults(s schedule) []fault {
	emu := func(f entraemu.Fault) func(context.Context, *podenv.Env) error {
		return func(ctx context.Context, env *podenv.Env) error { return env.SetFault(ctx, f) }
	}
	clearEmu := emu(entraemu.Fault{})
	refuse := func(addr string, port int, on bool) func(context.Context, *podenv.Env) error {
		return func(ctx context.Context, env *podenv.Env) error { return env.RefuseConnections(ctx, addr, port, on) }
	}
	return []fault{
		{name: "Entra 503", on: emu(entraemu.Fault{Status: 503}), off: clearEmu},
		{name: "token file gone", tokenFile: true,
			on: func(_ context.Context, env *podenv.Env) error { return os.Remove(env.TokenFile) },
			// off: the next rotation writes a fresh token.
			off: func(context.Context, *podenv.Env) error { return nil }},
		{name: "Entra slow", on: emu(entraemu.Fault{Latency: 4 * s.exchangeTimeout}), off: clearEmu},
		{name: "Entra 429", on: emu(entraemu.Fault{Status: 429, RetryAfter: s.interval + time.Second}), off: clearEmu},
		{name: "IMDS down", imdsRefuses: true, on: refuse(podenv.MetadataAddr, 80, true), off: refuse(podenv.MetadataAddr, 80, false)},
		{name: "Entra refuses", on: refuse(podenv.NodeAddr, podenv.EntraPort, true), off: refuse(podenv.NodeAddr, podenv.EntraPort, false)},
		{name: "TLS untrusted",
			on: func(ctx context.Context, env *podenv.Env) error {
				return env.SetTLSFault(ctx, entraemu.TLSFaultUntrustedCA)
			},
			off: func(ctx context.Context, env *podenv.Env) error { return env.SetTLSFault(ctx, entraemu.TLSFaultNone) }},
		{name: "Entra drops", on: emu(entraemu.Fault{DropConnection: true}), off: clearEmu},
		{name: "IMDS slow",
			on:  func(_ context.Context, env *podenv.Env) error { return env.SetIMDSLatency(4 * s.passthroughTimeout) },
			off: func(_ context.Context, env *podenv.Env) error { return env.SetIMDSLatency(0) }},
		{name: "Entra HTML 502", on: emu(entraemu.Fault{Status: 502, Body: entraemu.FaultBodyHTML}), off: clearEmu},
		{name: "Entra garbage", on: emu(entraemu.Fault{Body: entraemu.FaultBodyGarbage}), off: clearEmu},
	}
}
