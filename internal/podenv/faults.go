package podenv

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/entraemu"
)

// Faults beyond the emulator's token-endpoint faults (SetFault): the
// certificate Entra presents, a host that refuses connections, and a slow
// node IMDS. Each is undone by calling it again with the zero value.

// SetTLSFault makes the emulator's Entra listener present the certificate
// of f from the next handshake on and closes its open connections (see
// entraemu.Emulator.SetTLSFault); entraemu.TLSFaultNone restores the valid
// one.
func (e *Env) SetTLSFault(ctx context.Context, f entraemu.TLSFault) error {
	b, err := json.Marshal(map[string]entraemu.TLSFault{"certificate": f})
	if err != nil {
		return err
	}
	_, err = e.adminDo(ctx, http.MethodPost, "tls", nil, b)
	return err
}

// RefuseConnections makes the node namespace answer every TCP packet to
// addr:port with a reset, as a host answers when nothing listens there:
// new connections are refused and open ones are reset at their next
// packet. It adds (refuse) or removes (!refuse) one REJECT rule in the node
// namespace's filter INPUT chain, tagged with a comment; the namespace is
// ours, so nothing else is touched. Calling it twice the same way is a
// no-op. Use NodeAddr, EntraPort for Entra and MetadataAddr, 80 for the
// node's IMDS.
func (e *Env) RefuseConnections(ctx context.Context, addr string, port int, refuse bool) error {
	rule := []string{"INPUT", "-p", "tcp", "-d", addr + "/32", "--dport", strconv.Itoa(port),
		"-m", "comment", "--comment", "podenv: refuse " + addr + ":" + strconv.Itoa(port),
		"-j", "REJECT", "--reject-with", "tcp-reset"}
	ipt := func(op string) error {
		argv := netnsExec(e.Node, -1, append([]string{"iptables", "-w", "5", op}, rule...)...)
		return run(ctx, argv[0], argv[1:]...)
	}
	present := ipt("-C") == nil
	switch {
	case refuse && !present:
		return ipt("-I")
	case !refuse && present:
		return ipt("-D")
	}
	return nil
}

// SetIMDSLatency delays every answer of the fake node IMDS by d (0: answer
// at once). A client that gives up meanwhile gets no answer.
func (e *Env) SetIMDSLatency(d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("podenv: negative IMDS latency %s", d)
	}
	e.mu.Lock()
	imds := e.imds
	e.mu.Unlock()
	if imds == nil {
		return fmt.Errorf("podenv: the fake IMDS is not running")
	}
	imds.latency.Store(int64(d))
	return nil
}

// IssuedTokens returns the access tokens the emulator issued (the newest
// 10000) and how many older ones it no longer holds. Tests scan logs for
// them; never print them.
func (e *Env) IssuedTokens(ctx context.Context) (entraemu.IssuedTokenList, error) {
	var list entraemu.IssuedTokenList
	b, err := e.adminDo(ctx, http.MethodGet, "issued-tokens", nil, nil)
	if err != nil {
		return list, err
	}
	if err := json.Unmarshal(b, &list); err != nil {
		return list, fmt.Errorf("emulator issued tokens: %w", err)
	}
	return list, nil
}

// ResetCalls sets the emulator's counters to zero (CallStats), empties its
// request log and restarts MaxInFlight.
func (e *Env) ResetCalls(ctx context.Context) error {
	_, err := e.adminDo(ctx, http.MethodPost, "calls/reset", nil, nil)
	return err
}
