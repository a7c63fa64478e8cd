// Command depfloor is the start-up floor the proxy's dependencies set. It
// links every package the proxy binary links (the blank imports below;
// main_test.go keeps the list complete), so the Go runtime and every
// package initialiser run exactly as they do in the proxy, and then it does
// only what the limit server does: listen on loopback and answer every
// request with one static body. Its exec-to-ready time, next to the limit
// server's and the proxy's, splits the proxy's start-up into what its
// dependencies cost before main and what its own code costs after.
//
//	depfloor -addr 127.0.0.1:18200 -body reply.json
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	// Every package cmd/proxy imports that this file does not already.
	_ "os/signal"

	_ "github.com/go-logr/logr"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/collectors"
	_ "github.com/spf13/cobra"
	_ "github.com/spf13/pflag"
	_ "golang.org/x/sync/errgroup"

	_ "github.com/imds-proxy/imds-proxy/internal/cli"
	_ "github.com/imds-proxy/imds-proxy/internal/logging"
	_ "github.com/imds-proxy/imds-proxy/pkg/exchange"
	_ "github.com/imds-proxy/imds-proxy/pkg/imds"
	_ "github.com/imds-proxy/imds-proxy/pkg/version"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18200", "loopback address to listen on")
	bodyFile := flag.String("body", "", "file holding the reply body (required)")
	flag.Parse()
	body, err := os.ReadFile(*bodyFile)
	if err != nil {
		log.Fatalf("depfloor: %v", err)
	}
	host, _, err := net.SplitHostPort(*addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		log.Fatalf("depfloor: refusing to listen on %q: loopback only", *addr)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("depfloor: %v", err)
	}
	ct := []string{"application/json; charset=utf-8"}
	cl := []string{strconv.Itoa(len(body))}
	fmt.Fprintf(os.Stderr, "depfloor: serving %d bytes on %s\n", len(body), ln.Addr())
	// The limit server's settings, so the two differ only in what is linked.
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			h := w.Header()
			h["Content-Type"] = ct
			h["Content-Length"] = cl
			_, _ = w.Write(body)
		}),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	log.Fatal(srv.Serve(ln))
}
