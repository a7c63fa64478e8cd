// Command proxy is the imds-proxy sidecar: it answers the Azure IMDS
// managed-identity protocol on 127.0.0.1 from the pod's workload identity.
// See cmd/proxy/app.
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/imds-proxy/imds-proxy/cmd/proxy/app"
	"github.com/imds-proxy/imds-proxy/internal/logging"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	level := new(slog.LevelVar)
	logger := logging.New(os.Stderr, level)
	err := app.NewCommand(app.ProcessDeps(logger, level)).ExecuteContext(ctx)
	stop()
	if err != nil {
		logger.Error(err, "imds-proxy failed")
		os.Exit(1)
	}
}
