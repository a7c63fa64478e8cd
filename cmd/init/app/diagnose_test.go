package app

import (
	"errors"
	"os/exec"
	"testing"
)

func TestMissingBinaryError(t *testing.T) {
	t.Setenv("PATH", "/nowhere")
	cause := &exec.Error{Name: "iptables-nft", Err: exec.ErrNotFound}
	tests := []struct {
		err  *missingBinaryError
		want string
	}{
		{&missingBinaryError{names: []string{"iptables-nft-save"}, err: cause},
			"iptables-nft-save is not installed or not executable on PATH (/nowhere): " + iptablesPackage},
		{&missingBinaryError{names: []string{"iptables-nft", "iptables-nft-save"}, err: cause},
			"iptables-nft and iptables-nft-save are not installed or not executable on PATH (/nowhere): " + iptablesPackage},
		{&missingBinaryError{names: []string{"iptables-nft-save", "iptables-legacy-save"}, either: true, err: cause},
			"neither iptables-nft-save nor iptables-legacy-save is installed and executable on PATH (/nowhere): " + iptablesPackage},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q\nwant      %q", got, tt.want)
		}
		if !errors.Is(tt.err, exec.ErrNotFound) {
			t.Errorf("%q does not unwrap to exec.ErrNotFound", tt.want)
		}
	}
}

func TestRequireBinaries(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	err := requireBinaries(backendBinaries("nft"))
	var missing *missingBinaryError
	if !errors.As(err, &missing) || len(missing.names) != 2 || missing.either {
		t.Fatalf("requireBinaries() = %v", err)
	}
}

func TestExplainPrivilege(t *testing.T) {
	t.Parallel()
	refused := errors.New("running iptables-nft-save: exit status 4: iptables-nft-save v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)")
	got := explainPrivilege(refused)
	if !errors.Is(got, errNoPermission) || !errors.Is(got, refused) || got.Error() != errNoPermission.Error()+": "+refused.Error() {
		t.Errorf("explainPrivilege(refused) = %v", got)
	}
	// A lock file the process cannot open is no matter of NET_ADMIN.
	other := errors.New("Fatal: can't open lock file /run/xtables.lock: Permission denied")
	if got := explainPrivilege(other); got != other { //nolint:errorlint // the very value, unwrapped
		t.Errorf("explainPrivilege(other) = %v", got)
	}
	if explainPrivilege(nil) != nil || lacksPrivilege(nil) {
		t.Error("nil is no refusal")
	}
}

func TestConflicting(t *testing.T) {
	t.Parallel()
	cause := errors.New("cleanup: deleting chain IMDS_PROXY_REDIRECT: busy")
	if got := conflicting(cause, nil); got != cause { //nolint:errorlint // the very value, unwrapped
		t.Errorf("no rules: %v", got)
	}
	got := conflicting(cause, []string{"-A OTHER -j IMDS_PROXY_REDIRECT", "-A POSTROUTING -j IMDS_PROXY_OUTPUT"})
	const want = "rules that are not ours jump into our chains: [-A OTHER -j IMDS_PROXY_REDIRECT], [-A POSTROUTING -j IMDS_PROXY_OUTPUT]; " +
		"remove them and run proxy-init again: cleanup: deleting chain IMDS_PROXY_REDIRECT: busy"
	if got.Error() != want || !errors.Is(got, cause) {
		t.Errorf("conflicting() = %v", got)
	}
}
