package app

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"

	goipt "github.com/coreos/go-iptables/iptables"
	"github.com/go-logr/logr"

	"github.com/imds-proxy/imds-proxy/pkg/iptables"
)

// binaries names the commands of one backend.
type binaries struct {
	iptables string // rule manipulation, e.g. iptables-nft
	save     string // dump, e.g. iptables-nft-save
}

func backendBinaries(b iptables.Backend) binaries {
	return binaries{iptables: "iptables-" + string(b), save: "iptables-" + string(b) + "-save"}
}

// goiptApplier adapts go-iptables to iptables.Applier and logs every command
// at debug level. go-iptables reports failures with the full command line and
// the command's stderr, which the callers log.
type goiptApplier struct {
	ipt *goipt.IPTables
	log logr.Logger
}

var _ iptables.Applier = (*goiptApplier)(nil)

// newApplier returns an Applier running the given iptables binary, which
// waits up to lockWait seconds for the xtables lock.
func newApplier(log logr.Logger, binary string, lockWait int) (*goiptApplier, error) {
	ipt, err := goipt.New(goipt.IPFamily(goipt.ProtocolIPv4), goipt.Path(binary), goipt.Timeout(lockWait))
	if err != nil {
		return nil, fmt.Errorf("setting up %s: %w", binary, err)
	}
	return &goiptApplier{ipt: ipt, log: log.WithValues("binary", binary)}, nil
}

func (a *goiptApplier) trace(args ...string) {
	a.log.V(1).Info("running iptables", "args", strings.Join(args, " "))
}

func (a *goiptApplier) ChainExists(table, chain string) (bool, error) {
	a.trace("-t", table, "-S", chain, "1")
	return a.ipt.ChainExists(table, chain)
}

func (a *goiptApplier) ClearChain(table, chain string) error {
	a.trace("-t", table, "-N", chain, "||", "-F", chain)
	return a.ipt.ClearChain(table, chain)
}

func (a *goiptApplier) DeleteChain(table, chain string) error {
	a.trace("-t", table, "-X", chain)
	return a.ipt.DeleteChain(table, chain)
}

func (a *goiptApplier) Append(table, chain string, spec ...string) error {
	a.trace(append([]string{"-t", table, "-A", chain}, spec...)...)
	return a.ipt.Append(table, chain, spec...)
}

func (a *goiptApplier) Insert(table, chain string, pos int, spec ...string) error {
	a.trace(append([]string{"-t", table, "-I", chain, strconv.Itoa(pos)}, spec...)...)
	return a.ipt.Insert(table, chain, pos, spec...)
}

func (a *goiptApplier) DeleteRule(table, chain string, pos int) error {
	a.trace("-t", table, "-D", chain, strconv.Itoa(pos))
	return a.ipt.DeleteById(table, chain, pos)
}

func (a *goiptApplier) List(table, chain string) ([]string, error) {
	a.trace("-t", table, "-S", chain)
	return a.ipt.List(table, chain)
}

// save runs an iptables-save binary, which dumps every table of its
// backend, and returns its output. The error names the command and carries
// its stderr.
func save(ctx context.Context, binary string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, binary) //nolint:gosec // G204: the iptables-*-save binary of the chosen backend, never input
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		err = fmt.Errorf("running %s: %w", strings.Join(cmd.Args, " "), err)
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
		return stdout.String(), err
	}
	return stdout.String(), nil
}
