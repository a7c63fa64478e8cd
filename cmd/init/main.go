// Command proxy-init installs the iptables rules that send a pod's instance
// metadata traffic to the imds-proxy sidecar. See cmd/init/app.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/imds-proxy/imds-proxy/cmd/init/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := app.Main(ctx, os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv)
	stop()
	os.Exit(code)
}
