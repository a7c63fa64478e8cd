// Package app is the proxy command: flags with environment fallbacks,
// their validation and translation into pkg/imds and pkg/exchange
// configuration, the wiring of the token source, HTTP server, registry and
// listeners, and the --probe mode of the postStart hook.
package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"

	"github.com/imds-proxy/imds-proxy/internal/cli"
	"github.com/imds-proxy/imds-proxy/internal/logging"
	"github.com/imds-proxy/imds-proxy/pkg/version"
)

// Deps are the process facilities the command uses; main passes the real
// ones, tests their own.
type Deps struct {
	// Args are the command-line arguments without the program name.
	Args []string
	// Logger is the root logger; its handler's level is Level.
	Logger logr.Logger
	// Level is set from --log-level.
	Level *slog.LevelVar
	// LookupEnv reads the environment (os.LookupEnv).
	LookupEnv func(string) (string, bool)
	// Stdout receives --version and --help output.
	Stdout io.Writer
	// Getuid returns the process UID (os.Getuid).
	Getuid func() int
}

// ProcessDeps returns the Deps of the running process.
func ProcessDeps(logger logr.Logger, level *slog.LevelVar) Deps {
	return Deps{
		Args:      os.Args[1:],
		Logger:    logger,
		Level:     level,
		LookupEnv: os.LookupEnv,
		Stdout:    os.Stdout,
		Getuid:    os.Getuid,
	}
}

// RunFunc serves with a validated configuration until ctx ends.
type RunFunc func(ctx context.Context, cfg *Config, deps Deps) error

// ProbeFunc runs the postStart probe.
type ProbeFunc func(ctx context.Context, cfg *ProbeConfig, deps Deps) error

// NewCommand returns the proxy command.
func NewCommand(deps Deps) *cobra.Command {
	return newCommand(deps, Run, Probe)
}

// newCommand builds the command around run and probe, so tests can capture
// the configuration instead of serving.
func newCommand(deps Deps, run RunFunc, probe ProbeFunc) *cobra.Command {
	o := NewOptions()
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Serve the Azure IMDS managed-identity protocol from a workload identity token",
		Long: `proxy is the imds-proxy sidecar. It listens on 127.0.0.1:PROXY_PORT, where
proxy-init redirects the pod's traffic to 169.254.169.254:80, answers IMDS token
requests by exchanging the pod's projected service account token for Microsoft
Entra tokens, and forwards the non-identity IMDS categories to the real IMDS.
Given a secret in IDENTITY_HEADER (the variable apps read too) or in
--identity-header-file, it also serves the App Service managed-identity
endpoint /msi/token, which SDKs use when IDENTITY_ENDPOINT and IDENTITY_HEADER
are set: pods whose apps use such SDKs need no proxy-init and no NET_ADMIN.

Options take one dash or two (-proxy-port=8000, --proxy-port 8000), as Go's
flag package reads them. Every option falls back to the environment variable
named in its description. Unknown flags are ignored with a warning, so that a
newer webhook cannot stop an older sidecar.`,
		Args:          cobra.ArbitraryArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	env := o.addFlags(cmd.Flags())
	// The webhook and the image are versioned separately: an option this
	// version does not know must not stop the sidecar, so the parser never
	// sees one, and each is logged below.
	argv := cli.Prepare(cmd, deps.Args, cli.IgnoreUnknown)
	cmd.SetOut(deps.Stdout)
	cmd.SetErr(deps.Stdout)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		log := deps.Logger
		sources, envErr := env.Apply(deps.LookupEnv)
		level, known := logging.ParseLevel(o.LogLevel)
		if deps.Level != nil {
			deps.Level.Set(level)
		}
		if !known {
			logging.Warn(log, "unknown --log-level, using info", "logLevel", o.LogLevel)
		}
		for _, f := range argv.Unknown() {
			logging.Warn(log, "ignoring unknown flag", "flag", f)
		}
		if len(args) > 0 {
			logging.Warn(log, "ignoring positional arguments", "count", len(args))
		}
		if envErr != nil {
			return envErr
		}
		if o.Version {
			_, err := fmt.Fprintf(deps.Stdout, "imds-proxy %s %s\n", version.Version, runtime.Version())
			return err
		}
		if o.Probe {
			pc, err := o.ProbeConfig()
			if err != nil {
				return err
			}
			return probe(cmd.Context(), pc, deps)
		}
		cfg, err := o.Validate(sources)
		if err != nil {
			return err
		}
		return run(cmd.Context(), cfg, deps)
	}
	return cmd
}
