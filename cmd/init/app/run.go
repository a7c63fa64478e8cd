package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"time"

	"github.com/go-logr/logr"

	"github.com/imds-proxy/imds-proxy/pkg/iptables"
)

// Run executes the mode o selects: dry run, check, cleanup, or (by default)
// apply. Errors carry their exit code; a failure whose cause proxy-init
// recognises (iptables missing, no NET_ADMIN, rules of others in the way)
// says so first. A refusal for lack of privilege is recognised here, once,
// whichever iptables call met it.
func Run(ctx context.Context, o *Options, cfg iptables.Config, stdout io.Writer, log logr.Logger) error {
	return explainPrivilege(run(ctx, o, cfg, stdout, log))
}

func run(ctx context.Context, o *Options, cfg iptables.Config, stdout io.Writer, log logr.Logger) error {
	rs := iptables.Plan(cfg)
	if o.DryRun {
		_, err := fmt.Fprintf(stdout, "# proxy-init dry run (--iptables-mode=%s): nothing was changed\n%s", o.IPTablesMode, rs)
		return err
	}
	if err := ctx.Err(); err != nil {
		return withCode(ExitFailed, err)
	}
	backend, err := chooseBackend(ctx, log, o.IPTablesMode, rs)
	if err != nil {
		return withCode(ExitFailed, err)
	}
	bins := backendBinaries(backend)
	if err := requireBinaries(bins); err != nil {
		return withCode(ExitFailed, err)
	}
	log = log.WithValues("backend", backend)
	a, err := newApplier(log, bins.iptables, o.LockWait)
	if err != nil {
		return withCode(ExitFailed, err)
	}

	start := time.Now()
	switch {
	case o.Check:
		err := iptables.Check(a, rs)
		var drift *iptables.DriftError
		if errors.As(err, &drift) {
			return withCode(ExitNotInPlace, err)
		}
		if err != nil {
			return withCode(ExitFailed, err)
		}
		log.Info("rules are in place and our jumps are first in OUTPUT of the filter and nat tables")
		return printOwnRules(ctx, stdout, bins, rs)
	case o.Cleanup:
		if err := iptables.Cleanup(log, a, rs); err != nil {
			return withCode(ExitFailed, explainFailure(ctx, log, bins, rs, fmt.Errorf("cleanup: %w", err)))
		}
		log.Info("removed our rules", "duration", time.Since(start).String())
		return nil
	default:
		if err := iptables.Apply(log, a, rs); err != nil {
			return withCode(ExitFailed, explainFailure(ctx, log, bins, rs, fmt.Errorf("apply: %w", err)))
		}
		log.Info("rules applied", "duration", time.Since(start).String(),
			"proxyPort", cfg.ProxyPort, "proxyUID", cfg.ProxyUID,
			"metadata", fmt.Sprintf("%s:%d", cfg.MetadataIP, cfg.MetadataPort))
		return printOwnRules(ctx, stdout, bins, rs)
	}
}

// explainFailure logs the ruleset (iptables-save) after a failed apply or
// cleanup, for the post-mortem, and puts what it recognises ahead of err: a refusal for lack
// of privilege, or rules of others that jump into our chains.
func explainFailure(ctx context.Context, log logr.Logger, bins binaries, rs iptables.Ruleset, err error) error {
	if lacksPrivilege(err) {
		return err // Run explains it; a dump would be refused too
	}
	dump, dumpErr := save(ctx, bins.save)
	if dumpErr != nil {
		log.Error(dumpErr, "cannot dump the ruleset after the failure")
		return err
	}
	log.Info("the ruleset after the failure", "iptablesSave", dump)
	return conflicting(err, rs.ForeignJumps(dump))
}

// chooseBackend resolves --iptables-mode. In auto mode it reads both
// backends' full rulesets (without -t, which would create an empty legacy
// table) and lets iptables.Detect decide. A backend whose dump cannot be read
// counts as empty (its binaries may be missing, or the kernel may lack it),
// unless iptables was refused for lack of privilege, which fails; if neither
// can be read, it fails. It warns when the backend it does not choose also
// holds rules of ours.
func chooseBackend(ctx context.Context, log logr.Logger, mode string, rs iptables.Ruleset) (iptables.Backend, error) {
	switch mode {
	case ModeNFT:
		return iptables.BackendNFT, nil
	case ModeLegacy:
		return iptables.BackendLegacy, nil
	}
	nftSave, legacySave := backendBinaries(iptables.BackendNFT).save, backendBinaries(iptables.BackendLegacy).save
	nft, nftErr := save(ctx, nftSave)
	legacy, legacyErr := save(ctx, legacySave)
	for _, err := range []error{nftErr, legacyErr} {
		if lacksPrivilege(err) {
			return "", err
		}
	}
	if nftErr != nil && legacyErr != nil {
		if errors.Is(nftErr, exec.ErrNotFound) && errors.Is(legacyErr, exec.ErrNotFound) {
			return "", &missingBinaryError{names: []string{nftSave, legacySave}, either: true, err: errors.Join(nftErr, legacyErr)}
		}
		return "", fmt.Errorf("detecting the iptables backend: %w", errors.Join(nftErr, legacyErr))
	}
	for _, err := range []error{nftErr, legacyErr} {
		if err != nil {
			log.Info("cannot read one backend's rules; counting it as empty", "error", err.Error())
		}
	}
	backend, reason := iptables.Detect(nft, legacy)
	log.Info("chose iptables backend", "backend", backend, "reason", reason)
	other, otherSave := iptables.BackendLegacy, legacy
	if backend == iptables.BackendLegacy {
		other, otherSave = iptables.BackendNFT, nft
	}
	if rs.FoundIn(otherSave) {
		log.Info("WARNING: the other iptables backend also holds imds-proxy rules and the kernel evaluates both; remove them with --cleanup --iptables-mode="+string(other),
			"backend", backend, "otherBackend", other)
	}
	return backend, nil
}

// printOwnRules writes our chains and jumps as iptables-save prints them.
func printOwnRules(ctx context.Context, stdout io.Writer, bins binaries, rs iptables.Ruleset) error {
	out, err := save(ctx, bins.save)
	if err != nil {
		return withCode(ExitFailed, err)
	}
	_, err = io.WriteString(stdout, iptables.OwnRules(out, rs))
	return err
}
