// Command imds-loadgen is the benchmark's client. The driver (imds-bench)
// runs it inside the pod network namespace, as an ordinary pod UID, so every
// request takes the path a real app's request takes: TCP to
// 169.254.169.254:80, the proxy-init redirect, the loopback listener.
// Each subcommand prints one JSON document on stdout.
//
//	imds-loadgen steady   -c 64 -warmup 1s -d 5s [-uri ...]
//	imds-loadgen stampede -n 500 [-uri ...]
//	imds-loadgen get      -uri /metrics [-body-out file]
//	imds-loadgen startup  -runs 7 -port 18200 -uid 1501 -- /path/to/proxy [args]
//	imds-loadgen fill     -n 1000 -c 8 -client-ids id1,id2,...
//	imds-loadgen entra    -runs 9 -client-id ... -scope ...   (AZURE_* from the environment)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/imds-proxy/imds-proxy/test/bench/loadgen"
)

// DefaultURI is the request every IMDS client sends for a Resource Manager token.
const DefaultURI = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: imds-loadgen steady|stampede|get|startup|fill|entra [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var out any
	var err error
	switch os.Args[1] {
	case "steady":
		out, err = steady(ctx, os.Args[2:])
	case "stampede":
		out, err = stampede(ctx, os.Args[2:])
	case "get":
		out, err = get(ctx, os.Args[2:])
	case "startup":
		out, err = startup(ctx, os.Args[2:])
	case "fill":
		out, err = fill(ctx, os.Args[2:])
	case "entra":
		out, err = entra(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "imds-loadgen %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		os.Exit(1)
	}
}

// targetFlags registers the flags that say where and what to request.
func targetFlags(fs *flag.FlagSet) func() loadgen.Target {
	addr := fs.String("addr", "169.254.169.254:80", "address to dial")
	host := fs.String("host", "169.254.169.254", "Host header")
	uri := fs.String("uri", DefaultURI, "request target")
	noMeta := fs.Bool("no-metadata-header", false, "leave out Metadata: true")
	return func() loadgen.Target {
		t := loadgen.Target{Addr: *addr, Host: *host, URI: *uri}
		if !*noMeta {
			t.Header = []string{"Metadata: true"}
		}
		return t
	}
}

func steady(ctx context.Context, args []string) (any, error) {
	fs := flag.NewFlagSet("steady", flag.ExitOnError)
	target := targetFlags(fs)
	c := fs.Int("c", 1, "concurrency (connections, one request in flight each)")
	warmup := fs.Duration("warmup", time.Second, "unmeasured warm-up before the window")
	d := fs.Duration("d", 5*time.Second, "measured window")
	maxReq := fs.Int64("max-requests", 5_000_000, "upper bound on requests sent")
	_ = fs.Parse(args)
	return loadgen.Steady(ctx, loadgen.SteadyConfig{
		Target: target(), Concurrency: *c, Warmup: *warmup, Duration: *d, MaxRequests: *maxReq,
	})
}

func stampede(ctx context.Context, args []string) (any, error) {
	fs := flag.NewFlagSet("stampede", flag.ExitOnError)
	target := targetFlags(fs)
	n := fs.Int("n", 500, "simultaneous requests")
	timeout := fs.Duration("timeout", 30*time.Second, "bound on the whole stampede")
	_ = fs.Parse(args)
	return loadgen.Stampede(ctx, loadgen.StampedeConfig{Target: target(), N: *n, Timeout: *timeout})
}

func fill(ctx context.Context, args []string) (any, error) {
	fs := flag.NewFlagSet("fill", flag.ExitOnError)
	target := targetFlags(fs)
	n := fs.Int("n", 1000, "token requests, one distinct resource each")
	c := fs.Int("c", 8, "requests in flight at once")
	ids := fs.String("client-ids", "", "comma-separated client ids, asked for round-robin (required)")
	_ = fs.Parse(args)
	return loadgen.Fill(ctx, loadgen.FillConfig{
		Target: target(), ClientIDs: strings.Split(*ids, ","), Resources: *n, Concurrency: *c,
	})
}

// entra times Entra's answers to a first exchange, with the pod's
// AZURE_AUTHORITY_HOST, AZURE_TENANT_ID and AZURE_FEDERATED_TOKEN_FILE.
func entra(ctx context.Context, args []string) (any, error) {
	fs := flag.NewFlagSet("entra", flag.ExitOnError)
	runs := fs.Int("runs", 9, "runs, each on a fresh connection")
	clientID := fs.String("client-id", "", "client id to exchange as (required)")
	scope := fs.String("scope", "api://imds-bench-entra-timing/.default", "scope of the tokens requested")
	_ = fs.Parse(args)
	return loadgen.EntraTiming(ctx, loadgen.EntraConfig{
		AuthorityHost: os.Getenv("AZURE_AUTHORITY_HOST"),
		Tenant:        os.Getenv("AZURE_TENANT_ID"),
		TokenFile:     os.Getenv("AZURE_FEDERATED_TOKEN_FILE"),
		ClientID:      *clientID,
		Scope:         *scope,
		Runs:          *runs,
	})
}

// GetResult is the JSON answer of the get subcommand.
type GetResult struct {
	Status int    `json:"status"`
	Header string `json:"header"`
	Body   string `json:"body,omitempty"`
	Bytes  int    `json:"bytes"`
}

func get(ctx context.Context, args []string) (any, error) {
	fs := flag.NewFlagSet("get", flag.ExitOnError)
	target := targetFlags(fs)
	bodyOut := fs.String("body-out", "", "write the body to this file instead of printing it")
	timeout := fs.Duration("timeout", 20*time.Second, "request timeout")
	_ = fs.Parse(args)
	resp, err := loadgen.Get(ctx, target(), *timeout)
	if err != nil {
		return nil, err
	}
	res := GetResult{Status: resp.Status, Header: string(resp.Header), Bytes: len(resp.Body)}
	if *bodyOut != "" {
		if err := os.WriteFile(*bodyOut, resp.Body, 0o644); err != nil {
			return nil, err
		}
	} else {
		res.Body = string(resp.Body)
	}
	return res, nil
}

// startup execs the proxy (as -uid, listening on 127.0.0.1:-port) again and
// again and measures the time from exec to the first successful /readyz,
// polled tightly on loopback, and to the first token it serves.
func startup(ctx context.Context, args []string) (any, error) {
	fs := flag.NewFlagSet("startup", flag.ExitOnError)
	runs := fs.Int("runs", 7, "proxy starts to measure")
	port := fs.Int("port", 18200, "loopback port the proxy is told to use")
	portArg := fs.String("port-arg", "--proxy-port=%d", "argument appended to the command to set its port (a fmt format)")
	uid := fs.Int("uid", 1501, "UID (and GID) to run the proxy as; -1 keeps ours")
	uri := fs.String("uri", DefaultURI, "token request target")
	poll := fs.Duration("poll", 50*time.Microsecond, "pause between /readyz attempts")
	timeout := fs.Duration("timeout", 15*time.Second, "bound on each run")
	_ = fs.Parse(args)
	argv := fs.Args()
	if len(argv) == 0 {
		return nil, errors.New("startup needs the proxy command after --")
	}
	addr := fmt.Sprintf("127.0.0.1:%d", *port)
	res := loadgen.StartupResult{}
	var ready, token []time.Duration
	for i := 0; i < *runs && ctx.Err() == nil; i++ {
		r := startOnce(ctx, append(slices.Clone(argv), fmt.Sprintf(*portArg, *port)), *uid, addr, *uri, *poll, *timeout)
		res.Runs = append(res.Runs, r)
		if r.Error == "" {
			ready = append(ready, r.Ready)
			token = append(token, r.FirstToken)
		}
	}
	res.Ready = loadgen.SummarizeStartup(ready)
	res.FirstToken = loadgen.SummarizeStartup(token)
	if len(ready) == 0 && len(res.Runs) > 0 {
		return res, fmt.Errorf("no successful start: %s", res.Runs[0].Error)
	}
	return res, nil
}

func startOnce(ctx context.Context, argv []string, uid int, addr, uri string, poll, timeout time.Duration) loadgen.StartupRun {
	var run loadgen.StartupRun
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// The port must be free, or we would time a process that is not ours.
	if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
		c.Close()
		run.Error = addr + " is already in use"
		return run
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = os.Environ()
	var stderr strings.Builder
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if uid >= 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}
	}
	readyReq := loadgen.Target{Addr: addr, Host: "127.0.0.1", URI: "/readyz"}
	tokenReq := loadgen.Target{Addr: addr, Host: "169.254.169.254", URI: uri, Header: []string{"Metadata: true"}}

	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		run.Error = err.Error()
		return run
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer func() {
		// Our own child, by PID (and its process group).
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}()

	for {
		run.Polls++
		resp, err := loadgen.Get(ctx, readyReq, time.Second)
		if err == nil && resp.Status == 200 {
			run.Ready = time.Since(t0)
			break
		}
		select {
		case <-exited:
			run.Error = "proxy exited before ready: " + lastLines(stderr.String())
			return run
		case <-ctx.Done():
			run.Error = "not ready in time"
			return run
		default:
		}
		time.Sleep(poll)
	}
	for {
		resp, err := loadgen.Get(ctx, tokenReq, timeout)
		if err == nil && resp.Status == 200 {
			run.FirstToken = time.Since(t0)
			return run
		}
		if ctx.Err() != nil {
			run.Error = fmt.Sprintf("no token in time (last: status %d, err %v, body %q)", resp.Status, err, resp.Body)
			return run
		}
		time.Sleep(time.Millisecond)
	}
}

func lastLines(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, " | ")
}
