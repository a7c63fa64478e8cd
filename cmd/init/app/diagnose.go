package app

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// The failures proxy-init recognises get a first sentence that says what is
// wrong and what to do, ahead of the failing command and its output; the
// whole is the one-line termination message kubectl shows.

// iptablesPackage says where the binaries come from.
const iptablesPackage = "the image needs the iptables package, which provides iptables-nft, iptables-legacy and their -save commands"

// errNoPermission marks an iptables failure for lack of privilege.
var errNoPermission = errors.New("no permission to read or change the iptables rules of this network namespace: " +
	"proxy-init must run as root with the NET_ADMIN capability in the pod's network namespace " +
	"(securityContext: runAsUser: 0, capabilities: add: [NET_ADMIN])")

// permissionDenied is how iptables, nft and legacy, reports a netlink or
// setsockopt call refused for lack of CAP_NET_ADMIN in the network
// namespace's owning user namespace (not being root, capabilities dropped,
// or a user namespace of our own).
const permissionDenied = "Permission denied (you must be root)"

// lacksPrivilege reports whether err is iptables refusing for lack of
// privilege.
func lacksPrivilege(err error) bool {
	return err != nil && strings.Contains(err.Error(), permissionDenied)
}

// explainPrivilege puts errNoPermission ahead of err when iptables refused
// for lack of privilege, and returns err unchanged otherwise.
func explainPrivilege(err error) error {
	if !lacksPrivilege(err) {
		return err
	}
	return fmt.Errorf("%w: %w", errNoPermission, err)
}

// missingBinaryError reports iptables binaries that exec cannot find.
type missingBinaryError struct {
	// names are the binaries looked up, e.g. iptables-nft.
	names []string
	// either is true when any one of names would have done.
	either bool
	err    error
}

func (e *missingBinaryError) Error() string {
	var what string
	switch {
	case e.either:
		what = "neither " + strings.Join(e.names, " nor ") + " is installed and executable"
	case len(e.names) == 1:
		what = e.names[0] + " is not installed or not executable"
	default:
		what = strings.Join(e.names, " and ") + " are not installed or not executable"
	}
	return fmt.Sprintf("%s on PATH (%s): %s", what, os.Getenv("PATH"), iptablesPackage)
}

func (e *missingBinaryError) Unwrap() error { return e.err }

// requireBinaries checks that exec finds every binary of a backend.
func requireBinaries(bins binaries) error {
	var missing []string
	var errs []error
	for _, name := range []string{bins.iptables, bins.save} {
		if _, err := exec.LookPath(name); err != nil {
			missing = append(missing, name)
			errs = append(errs, err)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return &missingBinaryError{names: missing, err: errors.Join(errs...)}
}

// conflicting names the rules of others that jump into our chains, found
// in our tables after a failed step, ahead of err.
func conflicting(err error, rules []string) error {
	if len(rules) == 0 {
		return err
	}
	return fmt.Errorf("rules that are not ours jump into our chains: [%s]; remove them and run proxy-init again: %w",
		strings.Join(rules, "], ["), err)
}
