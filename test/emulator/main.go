// Command emulator runs the local Entra ID and cluster-issuer emulator
// (internal/entraemu) as a process, for the e2e suite, the sandbox and
// manual experiments. It prints one JSON line with its URLs on stdout when
// it is ready, and exits 0 on SIGTERM or SIGINT.
//
// Example:
//
//	emulator --tenant=$TENANT --host=login.emulator.test --addr=169.254.99.1:443 \
//	  --issuer-addr=169.254.99.1:80 --issuer-host=oidc.emulator.test --admin \
//	  --app=$CLIENT_ID,$OBJECT_ID,$RESOURCE_ID --federate-subject=system:serviceaccount:default:workload \
//	  --ca-out=/tmp/emu-ca.pem --sa-token-out=/tmp/sa-token --sa-token-namespace=default --sa-token-name=workload
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// main runs the command until SIGTERM or SIGINT.
func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "emulator:", err)
		os.Exit(1)
	}
}
