package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"

	"github.com/imds-proxy/imds-proxy/internal/cli"
	"github.com/imds-proxy/imds-proxy/internal/logging"
	"github.com/imds-proxy/imds-proxy/pkg/iptables"
	"github.com/imds-proxy/imds-proxy/pkg/version"
)

// Exit codes of proxy-init.
const (
	// ExitOK means the requested mode succeeded.
	ExitOK = 0
	// ExitFailed means an iptables step failed, or the rules could not be
	// read; nothing after the failed step was attempted.
	ExitFailed = 1
	// ExitInvalidConfig means a flag, environment variable or argument was
	// invalid; the kernel was not touched.
	ExitInvalidConfig = 2
	// ExitNotInPlace means --check found the rules missing, different, or
	// a jump of ours not first in OUTPUT of its table.
	ExitNotInPlace = 3
)

// exitError carries the exit code for an error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

// ExitCode maps an error returned by the command to the process exit code.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	return ExitFailed
}

// RunFunc does the work of the command once the options are valid.
type RunFunc func(ctx context.Context, o *Options, cfg iptables.Config, stdout io.Writer, log logr.Logger) error

// NewCommand builds the proxy-init command around run, with args (the
// command line without the program name) as its arguments. lookupEnv
// supplies environment variables (os.LookupEnv in production). The logger
// is built here, writing JSON to the command's error stream.
func NewCommand(args []string, lookupEnv func(string) (string, bool), run RunFunc) (*cobra.Command, *Options) {
	o := NewOptions()
	cmd := &cobra.Command{
		Use:   "proxy-init",
		Short: "Redirect a pod's instance metadata traffic to the imds-proxy sidecar",
		Long: `proxy-init installs iptables rules in the nat table of the current network
namespace so that TCP connections to METADATA_IP:METADATA_PORT reach the proxy
sidecar on 127.0.0.1:PROXY_PORT, except connections made by PROXY_UID, which
reach the real metadata service. A guard in the filter table refuses, with a
TCP reset, every other connection to METADATA_IP:METADATA_PORT that the nat
rules did not redirect. Run without arguments it applies the rules; running
it again leaves the ruleset unchanged. Options take one dash or two
(-proxy-port=8000, --proxy-port 8000), as Go's flag package reads them.

Exit codes: 0 success, 1 an iptables step failed, 2 invalid configuration,
3 --check found the rules not in place.`,
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return withCode(ExitInvalidConfig, fmt.Errorf("unexpected argument %q: proxy-init takes flags only", args[0]))
			}
			return nil
		},
	}
	env := o.AddFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := o.ApplyEnv(env, lookupEnv); err != nil {
			return withCode(ExitInvalidConfig, err)
		}
		cfg, err := o.Validate()
		if err != nil {
			return withCode(ExitInvalidConfig, err)
		}
		return run(cmd.Context(), o, cfg, cmd.OutOrStdout(), newLogger(cmd.ErrOrStderr(), o.LogLevel))
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return withCode(ExitInvalidConfig, err)
	})
	// Unknown options reach the parser, which refuses them (exit 2) before
	// anything else happens, --help included.
	cli.Prepare(cmd, args, cli.RefuseUnknown)
	return cmd, o
}

// newLogger returns the JSON logger at a level named as internal/logging
// names them (Validate has refused unknown names; they would mean info).
func newLogger(w io.Writer, level string) logr.Logger {
	lvl, _ := logging.ParseLevel(level)
	return logging.New(w, lvl).WithName("proxy-init")
}

// Main runs proxy-init with args and returns the exit code. On failure it logs
// the error and writes a one-line reason to the termination log.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) int {
	cmd, o := NewCommand(args, lookupEnv, Run)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	err := cmd.ExecuteContext(ctx)
	code := ExitCode(err)
	if err != nil {
		newLogger(stderr, "info").Error(err, "proxy-init failed", "exitCode", code)
		writeTerminationLog(o.TerminationLog, err)
	}
	return code
}

// writeTerminationLog replaces the content of path with one line naming err,
// if path exists and is writable. It never creates the file: outside
// Kubernetes /dev/termination-log does not exist and must not be made.
func writeTerminationLog(path string, err error) {
	if path == "" {
		return
	}
	f, ferr := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0) //nolint:gosec // G304: --termination-log, the operator's path
	if ferr != nil {
		return
	}
	defer f.Close()
	line := "proxy-init: " + strings.Join(strings.Fields(err.Error()), " ")
	const maxLine = 4000 // kubelet keeps at most 4096 bytes
	if len(line) > maxLine {
		line = strings.ToValidUTF8(line[:maxLine], "")
	}
	_, _ = io.WriteString(f, line+"\n")
}
