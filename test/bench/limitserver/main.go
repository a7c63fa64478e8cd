// Command limitserver is the benchmark's yardstick: the least a Go HTTP
// server can do on the proxy's path. It answers every request with one
// static body (the proxy's own token reply, captured by the driver) and the
// same Content-Type and explicit Content-Length, on a loopback port behind
// the same proxy-init redirect. Whatever the proxy costs beyond this is the
// proxy's own work.
//
//	limitserver -addr 127.0.0.1:18001 -body reply.json
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18001", "loopback address to listen on")
	bodyFile := flag.String("body", "", "file holding the reply body (required)")
	contentType := flag.String("content-type", "application/json; charset=utf-8", "Content-Type of the reply")
	flag.Parse()
	if err := run(*addr, *bodyFile, *contentType); err != nil {
		log.Fatalf("limitserver: %v", err)
	}
}

func run(addr, bodyFile, contentType string) error {
	body, err := os.ReadFile(bodyFile)
	if err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("refusing to listen on %q: loopback only", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           staticHandler(body, contentType),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		_ = srv.Close()
	}()
	fmt.Fprintf(os.Stderr, "limitserver: serving %d bytes on %s\n", len(body), ln.Addr())
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// staticHandler writes the same headers and body for every request. Header
// values are built once, so a request costs only what net/http itself costs.
func staticHandler(body []byte, contentType string) http.Handler {
	ct := []string{contentType}
	cl := []string{strconv.Itoa(len(body))}
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h["Content-Type"] = ct
		h["Content-Length"] = cl
		_, _ = w.Write(body)
	})
}
