// Command imds-soak runs the proxy under mixed load with faults toggled and
// the projected token rotated, prints a table of requests served, errors by
// kind, memory, goroutines and open file descriptors, and checks that the
// proxy ends flat and that no log holds a token, an assertion or an
// Authorization header (`make soak`; see package test/soak). It needs root
// and Linux, and exits 1 when the proxy did not hold.
//
//	imds-soak [-duration 10m] [-keep-logs dir]
//
// The duration defaults to SOAK_DURATION, else 10 minutes.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/podenv"
	"github.com/imds-proxy/imds-proxy/test/soak"
)

func main() {
	def := soak.DefaultDuration
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			fmt.Fprintf(os.Stderr, "imds-soak: SOAK_DURATION=%q: %v\n", v, err)
			os.Exit(2)
		}
		def = d
	}
	duration := flag.Duration("duration", def, "length of the run, warm-up included (env SOAK_DURATION)")
	keep := flag.String("keep-logs", "", "copy the run's logs into this directory")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
	}
	rep, err := soak.Run(ctx, soak.Config{Duration: *duration, Out: os.Stdout, Logf: logf, KeepLogs: *keep})
	stop()
	if cerr := podenv.CloseAll(); cerr != nil {
		fmt.Fprintf(os.Stderr, "imds-soak: teardown: %v\n", cerr)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "imds-soak: %v\n", err)
		os.Exit(1)
	}
	if len(rep.Failures) > 0 {
		os.Exit(1)
	}
}
