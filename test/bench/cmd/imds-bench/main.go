// Command imds-bench measures how close the proxy gets to the physical limit
// of its own path, on this machine, and prints the figures (`make bench`).
//
// It builds the binaries, starts pod-shaped network namespaces with the real
// proxy-init rules, the real proxy (UID 1501) and the Entra emulator
// (internal/podenv), and runs the load generator (imds-loadgen) inside the
// pod namespace as an ordinary UID, against
// http://169.254.169.254/metadata/identity/oauth2/token through the
// redirect. The limit is a minimal Go server (test/bench/limitserver)
// returning the proxy's own reply bytes on another loopback port behind the
// same redirect (proxy-init re-run with its port), measured in the same run
// and interleaved with the proxy, level by level.
//
// It reports; it never fails on a missed target. It needs root and Linux.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/entraemu"
	"github.com/imds-proxy/imds-proxy/internal/gobuild"
	"github.com/imds-proxy/imds-proxy/internal/podenv"
	"github.com/imds-proxy/imds-proxy/test/bench/loadgen"
)

// Ports and identities of the benchmark pod.
const (
	limitPort   = 18001 // limit server, loopback in the pod netns
	startupPort = 18200 // proxies started by the readiness measurement
	clientUID   = 1000  // the app's UID: not exempt from the redirect
	// warmResource is what the warm load asks for; clients such as
	// azidentity send the Resource Manager audience without a trailing slash.
	warmResource      = "https://management.azure.com"
	stampedeResource  = "https://vault.azure.net"
	stampedeResource2 = "https://storage.azure.com"
	// Kinds of stampede.
	stampedeFresh      = "fresh proxy"
	stampedeWarmClient = "new resource, running proxy"
	limitProbePath     = "/__imds_bench_which_server"
)

type config struct {
	levels         []int
	idle           time.Duration
	fillResources  int
	fillIdentities int
	entraRuns      int
	images         bool
	warmup         time.Duration
	duration       time.Duration
	rounds         int
	stampedeN      int
	stampedeRuns   int
	entraLatency   time.Duration
	startupRuns    int
	logLevel       string
	goBench        bool
	goBenchCount   int
	goBenchFilter  string
	outDir         string
	keepBin        bool
	runStripped    bool
}

func main() {
	var cfg config
	levels := flag.String("c", "1,16,64", "comma-separated concurrency levels")
	flag.DurationVar(&cfg.warmup, "warmup", time.Second, "unmeasured warm-up before each measured window")
	flag.DurationVar(&cfg.duration, "d", 5*time.Second, "measured window per concurrency level and server")
	flag.IntVar(&cfg.rounds, "rounds", 3, "rounds of (proxy, limit) per level; the median round is reported")
	flag.IntVar(&cfg.stampedeN, "stampede", 500, "concurrent first requests in the cold stampede")
	flag.IntVar(&cfg.stampedeRuns, "stampede-runs", 3, "cold stampedes, each against a freshly started proxy")
	flag.DurationVar(&cfg.entraLatency, "entra-latency", 50*time.Millisecond, "Entra answer time injected during the stampede")
	flag.IntVar(&cfg.startupRuns, "startup-runs", 9, "proxy starts timed from exec to ready and to first token")
	flag.IntVar(&cfg.entraRuns, "entra-runs", 9, "direct exchanges timing the emulator's own answers (0: skip)")
	flag.DurationVar(&cfg.idle, "idle", time.Minute, "window over which the idle proxy's and limit server's CPU time and wake-ups are counted (0: skip)")
	flag.IntVar(&cfg.fillResources, "fill", 1000, "tokens for distinct resources asked of one proxy before its memory is read (0: skip)")
	flag.IntVar(&cfg.fillIdentities, "fill-identities", 64, "identities the fill spreads its requests over, the pod's default one included")
	flag.BoolVar(&cfg.images, "images", true, "build both images with build/images-local.sh (podman, buildah) and report their sizes")
	flag.StringVar(&cfg.logLevel, "proxy-log-level", "info", "the proxy's --log-level (the webhook's default is info)")
	flag.BoolVar(&cfg.goBench, "gobench", true, "run go test -bench on pkg/imds and pkg/exchange for allocations per request")
	flag.IntVar(&cfg.goBenchCount, "gobench-count", 6, "go test -count for the Go benchmarks")
	flag.StringVar(&cfg.goBenchFilter, "gobench-filter", ".", "go test -bench regexp")
	flag.StringVar(&cfg.outDir, "out", "out", "directory (relative to the module root) for the result files")
	flag.BoolVar(&cfg.keepBin, "keep-bin", false, "keep the build directory (its path is printed)")
	flag.BoolVar(&cfg.runStripped, "run-stripped", true, "run the stripped proxy and proxy-init (as shipped); false keeps symbols for perf")
	flag.Parse()
	for _, s := range strings.Split(*levels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "imds-bench: bad concurrency level %q\n", s)
			os.Exit(2)
		}
		cfg.levels = append(cfg.levels, n)
	}
	if cfg.rounds < 1 || cfg.duration <= 0 || cfg.fillIdentities < 1 {
		fmt.Fprintln(os.Stderr, "imds-bench: -rounds and -fill-identities must be >= 1 and -d positive")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, cfg)
	stop()
	if cerr := podenv.CloseAll(); cerr != nil {
		fmt.Fprintf(os.Stderr, "imds-bench: teardown: %v\n", cerr)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "imds-bench: %v\n", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
}

// bench is one benchmark run: the environment and the binaries.
type bench struct {
	cfg      config
	root     string
	binDir   string
	loadgen  string
	limit    string
	depfloor string
	env      *podenv.Env
	rep      *Report
	// limitPID is the running limit server's, between the warm and idle
	// phases.
	limitPID int
}

func run(ctx context.Context, cfg config) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces, iptables, setuid), as `make bench` is run")
	}
	root, err := gobuild.ModuleRoot()
	if err != nil {
		return err
	}
	b := &bench{cfg: cfg, root: root, rep: &Report{}}
	r := b.rep
	r.Started = time.Now().UTC()
	r.Machine = machine()
	r.LoadStart = loadAvg()
	r.Commit = gitDescribe(root)
	r.Config = cfg

	b.binDir, err = os.MkdirTemp("", "imds-bench-bin-")
	if err != nil {
		return err
	}
	if cfg.keepBin {
		logf("build directory %s (kept)", b.binDir)
	} else {
		defer os.RemoveAll(b.binDir)
	}
	if err := b.build(ctx); err != nil {
		return err
	}
	r.BackgroundBusyStart = backgroundBusy(time.Second)

	stopLimit, err := b.warmPhase(ctx)
	if err != nil {
		return err
	}
	b.idlePhase(ctx)
	stopLimit()
	if err := b.fillPhase(ctx); err != nil {
		r.Notes = append(r.Notes, "fill: "+err.Error())
		logf("fill failed: %v", err)
	}
	if err := b.stampedePhase(ctx); err != nil {
		r.Notes = append(r.Notes, "stampede: "+err.Error())
		logf("stampede failed: %v", err)
	}
	if err := b.startupPhase(ctx); err != nil {
		r.Notes = append(r.Notes, "startup: "+err.Error())
		logf("startup measurement failed: %v", err)
	}
	if b.env != nil {
		if err := b.env.Close(); err != nil {
			logf("teardown: %v", err)
		}
		b.env = nil
	}
	r.BackgroundBusyEnd = backgroundBusy(time.Second)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if cfg.images {
		if err := b.imagesPhase(ctx); err != nil {
			r.Notes = append(r.Notes, "images: "+err.Error())
			logf("image sizes not measured: %v", err)
		}
	}
	if cfg.goBench {
		b.goBenchPhase(ctx)
	}
	r.LoadEnd = loadAvg()
	r.Finished = time.Now().UTC()
	return b.write()
}

// build compiles the harness binaries (podenv.Build), replaces proxy and
// proxy-init with stripped builds as the images ship them (-trimpath
// -ldflags '-s -w'), records their sizes, and builds the load generator
// and the limit server.
func (b *bench) build(ctx context.Context) error {
	logf("building proxy, proxy-init, emulator (podenv.Build) into %s", b.binDir)
	if err := podenv.Build(ctx, b.binDir); err != nil {
		return err
	}
	stripped := filepath.Join(b.binDir, "stripped")
	if err := os.MkdirAll(stripped, 0o755); err != nil {
		return err
	}
	for _, t := range []struct{ name, pkg string }{
		{podenv.ProxyBin, "./cmd/proxy"},
		{podenv.InitBin, "./cmd/init"},
		{"imds-loadgen", "./test/bench/cmd/imds-loadgen"},
		{"limitserver", "./test/bench/limitserver"},
		{"depfloor", "./test/bench/depfloor"},
	} {
		out := filepath.Join(stripped, t.name)
		if err := b.goCmd(ctx, nil, "build", "-trimpath", "-ldflags", "-s -w", "-o", out, t.pkg); err != nil {
			return err
		}
		if err := os.Chmod(out, 0o755); err != nil {
			return err
		}
		if t.name == podenv.ProxyBin || t.name == podenv.InitBin {
			st, err := os.Stat(out)
			if err != nil {
				return err
			}
			b.rep.BinarySize = append(b.rep.BinarySize, BinSize{Name: t.name, Bytes: st.Size()})
			if b.cfg.runStripped { // run what ships
				if err := os.Rename(out, filepath.Join(b.binDir, t.name)); err != nil {
					return err
				}
			}
		}
	}
	b.loadgen = filepath.Join(stripped, "imds-loadgen")
	b.limit = filepath.Join(stripped, "limitserver")
	b.depfloor = filepath.Join(stripped, "depfloor")
	return nil
}

func (b *bench) goCmd(ctx context.Context, stdout *os.File, args ...string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = b.root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if stdout != nil {
		cmd.Stdout = stdout
		cmd.Stderr = stdout
		return cmd.Run()
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

func (b *bench) startEnv(ctx context.Context) error {
	var apps []entraemu.App
	if b.cfg.fillResources > 0 {
		apps = fillApps(b.cfg.fillIdentities)
	}
	env, err := podenv.Start(ctx, podenv.Options{
		BinDir:    b.binDir,
		ClientID:  podenv.DefaultClientID,
		Apps:      apps,
		ProxyArgs: []string{"--log-level=" + b.cfg.logLevel},
		Logf:      logf,
	})
	if err != nil {
		return err
	}
	b.env = env
	return nil
}

// podRun runs the load generator in the pod netns as uid and decodes its
// JSON answer into out.
func (b *bench) podRun(ctx context.Context, uid int, env []string, out any, args ...string) error {
	cmd := b.env.PodCommand(ctx, uid, env, append([]string{b.loadgen}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("imds-loadgen %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(stdout, out); err != nil {
		return fmt.Errorf("imds-loadgen %s: decoding %q: %w", args[0], stdout, err)
	}
	return nil
}

func tokenURI(resource string) string {
	return "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" + resource
}

type getResult struct {
	Status int    `json:"status"`
	Header string `json:"header"`
	Body   string `json:"body"`
	Bytes  int    `json:"bytes"`
}

func (b *bench) proxyPID() (int, error) {
	return findProcess(b.env.Bin(podenv.ProxyBin), "/run/netns/"+b.env.Pod)
}

// redirectTo points the pod's proxy-init redirect at port (re-running the
// real proxy-init, which rewrites its own chains) and checks which server
// now answers.
func (b *bench) redirectTo(ctx context.Context, port int, wantLimit bool) error {
	if err := b.env.RunInit(ctx, "--proxy-port="+strconv.Itoa(port)); err != nil {
		return err
	}
	var g getResult
	if err := b.podRun(ctx, clientUID, nil, &g, "get", "-uri", limitProbePath); err != nil {
		return err
	}
	// The limit server answers every path with 200; the proxy answers an
	// unknown path with 404.
	if isLimit := g.Status == 200; isLimit != wantLimit {
		return fmt.Errorf("after redirecting to port %d the wrong server answers (status %d)", port, g.Status)
	}
	return nil
}

// warmPhase: warm cache, idle memory of the proxy and of the limit server,
// then the interleaved steady runs of both, their memory and the proxy's
// goroutines after the load. The limit server keeps running for the idle
// phase; the caller stops it with the returned function.
func (b *bench) warmPhase(ctx context.Context) (stopLimit func(), err error) {
	r := b.rep
	stopLimit = func() {}
	if err := b.startEnv(ctx); err != nil {
		return stopLimit, err
	}
	uri := tokenURI(warmResource)
	bodyFile := filepath.Join(b.binDir, "reply.json")
	var g getResult
	if err := b.podRun(ctx, clientUID, nil, &g, "get", "-uri", uri); err != nil {
		return stopLimit, err
	}
	if g.Status != 200 {
		return stopLimit, fmt.Errorf("warm-up token request: status %d: %s\n%s", g.Status, g.Body, tailFile(b.env.ProxyLog))
	}
	if !strings.Contains(strings.ToLower(g.Header), "content-length:") {
		r.Notes = append(r.Notes, "the proxy's token reply has no Content-Length (every token reply must carry one: docs/imds.md)")
	}
	if err := os.WriteFile(bodyFile, []byte(g.Body), 0o644); err != nil {
		return stopLimit, err
	}
	r.ReplyBytes = len(g.Body)
	r.ReplyHeader = strings.TrimSpace(g.Header)
	logf("warm: proxy answered %d bytes", r.ReplyBytes)

	pid, err := b.proxyPID()
	if err != nil {
		return stopLimit, err
	}

	// The limit server, as UID 1501 like the proxy, on another loopback port.
	lcmd := b.env.PodCommand(ctx, podenv.DefaultProxyUID, nil, b.limit, "-addr", "127.0.0.1:"+strconv.Itoa(limitPort), "-body", bodyFile)
	var lerr strings.Builder
	lcmd.Stderr = &lerr
	if err := lcmd.Start(); err != nil {
		return stopLimit, err
	}
	limitPID := lcmd.Process.Pid
	stopLimit = func() {
		_ = syscall.Kill(limitPID, syscall.SIGTERM)
		_ = lcmd.Wait()
	}
	defer func() {
		if err != nil {
			stopLimit()
		}
	}()
	var lg getResult
	for i := 0; ; i++ {
		err := b.podRun(ctx, clientUID, nil, &lg, "get", "-addr", "127.0.0.1:"+strconv.Itoa(limitPort), "-uri", uri)
		if err == nil && lg.Status == 200 {
			break
		}
		if i == 50 {
			return stopLimit, fmt.Errorf("limit server not answering: %v %s", err, lerr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if lg.Bytes != r.ReplyBytes {
		return stopLimit, fmt.Errorf("limit server body is %d bytes, proxy's %d", lg.Bytes, r.ReplyBytes)
	}
	b.limitPID = limitPID
	time.Sleep(time.Second)
	r.ProxyIdle, r.LimitIdle = procMem(pid), procMem(limitPID)

	targets := []struct {
		name string
		port int
		pid  int
	}{{"proxy", b.env.ProxyPort, pid}, {"limit", limitPort, limitPID}}
	current := "proxy"
	for _, c := range b.cfg.levels {
		for round := 0; round < b.cfg.rounds; round++ {
			order := []int{0, 1}
			if round%2 == 1 {
				order = []int{1, 0} // alternate who goes first against drift
			}
			for _, i := range order {
				t := targets[i]
				if current != t.name {
					if err := b.redirectTo(ctx, t.port, t.name == "limit"); err != nil {
						return stopLimit, err
					}
					current = t.name
				}
				mallocs0 := -1.0
				if t.name == "proxy" {
					mallocs0 = b.proxyMallocs(ctx)
				}
				ticks0 := procTicks(t.pid)
				var res loadgen.SteadyResult
				if err := b.podRun(ctx, clientUID, nil, &res, "steady", "-uri", uri,
					"-c", strconv.Itoa(c), "-warmup", b.cfg.warmup.String(), "-d", b.cfg.duration.String()); err != nil {
					return stopLimit, err
				}
				ticks := procTicks(t.pid) - ticks0
				allocs := -1.0
				if mallocs0 >= 0 && res.Completed > 0 {
					if m1 := b.proxyMallocs(ctx); m1 >= mallocs0 {
						allocs = (m1 - mallocs0) / float64(res.Completed)
					}
				}
				logf("%-5s c=%-3d round %d: %8.0f req/s  p50 %v  p99 %v  p99.9 %v  errors %d non-200 %d",
					t.name, c, round+1, res.RPS, res.Latency.P50, res.Latency.P99, res.Latency.P999, res.Errors, res.Non200)
				r.Steady = append(r.Steady, SteadyRun{Server: t.name, Round: round + 1, Result: res, CPUTicks: ticks, AllocsPerRequest: allocs})
			}
		}
	}
	// Both servers' memory right after the last (top-level) run, read back
	// to back.
	r.ProxyLoad, r.LimitLoad = procMem(pid), procMem(limitPID)
	if current != "proxy" {
		if err := b.redirectTo(ctx, b.env.ProxyPort, false); err != nil {
			return stopLimit, err
		}
	}
	// Goroutines once the load generator's connections are gone.
	time.Sleep(500 * time.Millisecond)
	var m getResult
	if err := b.podRun(ctx, clientUID, nil, &m, "get", "-uri", "/metrics"); err != nil {
		r.Notes = append(r.Notes, "metrics: "+err.Error())
	} else if v, ok := metricValue(m.Body, "go_goroutines"); ok {
		r.Goroutines = int(v)
	} else {
		r.Notes = append(r.Notes, fmt.Sprintf("metrics: no go_goroutines in /metrics (status %d)", m.Status))
	}
	r.ProxyLoadSettled = procMem(pid)
	return stopLimit, nil
}

// idlePhase counts the CPU time and wake-ups of the proxy, holding one
// cached token (and the warm phase's), and of the limit server over the
// same window, with nothing asking either of them anything; then their
// memory.
func (b *bench) idlePhase(ctx context.Context) {
	if b.env == nil || b.cfg.idle <= 0 || b.limitPID == 0 {
		return
	}
	pid, err := b.proxyPID()
	if err != nil {
		b.rep.Notes = append(b.rep.Notes, "idle: "+err.Error())
		return
	}
	// Let the end of the load settle (the last connections close, the
	// scavenger returns the load's heap) before the window opens.
	const settle = 5 * time.Second
	logf("idle: %v to settle, then %v with no requests", settle, b.cfg.idle)
	select {
	case <-ctx.Done():
		return
	case <-time.After(settle):
	}
	costs := idleCosts(b.cfg.idle, pid, b.limitPID)
	b.rep.IdleProxy, b.rep.IdleLimit = &costs[0], &costs[1]
	b.rep.ProxyIdleEnd, b.rep.LimitIdleEnd = procMem(pid), procMem(b.limitPID)
	logf("idle: proxy %d ticks, %d+%d context switches; limit %d ticks, %d+%d",
		costs[0].CPUTicks, costs[0].Voluntary, costs[0].Nonvoluntary, costs[1].CPUTicks, costs[1].Voluntary, costs[1].Nonvoluntary)
}

// proxyMallocs returns the proxy's go_memstats_mallocs_total (heap
// allocations since start), or -1. One /metrics scrape allocates a few
// thousand times, spread over the tens of thousands of requests of a run.
func (b *bench) proxyMallocs(ctx context.Context) float64 {
	var m getResult
	if err := b.podRun(ctx, clientUID, nil, &m, "get", "-uri", "/metrics"); err != nil || m.Status != 200 {
		return -1
	}
	v, ok := metricValue(m.Body, "go_memstats_mallocs_total")
	if !ok {
		return -1
	}
	return v
}

// metricValue returns the value of an unlabelled metric in Prometheus text.
func metricValue(text, name string) (float64, bool) {
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			return v, err == nil
		}
	}
	return 0, false
}

// stampedePhase restarts the proxy (an empty cache) with the emulator
// answering token POSTs after a known latency, fires N simultaneous first
// requests for one identity and resource, and counts the Entra calls. Then,
// on the same proxy, it fires N first requests for a second resource: the
// same singleflight and fan-out with MSAL's tenant discovery and the TLS
// connection to Entra already warm, which isolates the proxy's own part.
func (b *bench) stampedePhase(ctx context.Context) error {
	if b.env == nil || b.cfg.stampedeRuns < 1 {
		return nil
	}
	if err := b.env.SetFault(ctx, entraemu.Fault{Latency: b.cfg.entraLatency}); err != nil {
		return err
	}
	defer func() { _ = b.env.SetFault(context.WithoutCancel(ctx), entraemu.Fault{}) }()
	for i := 0; i < b.cfg.stampedeRuns; i++ {
		logf("stampede %d: restarting the proxy (fresh cache)", i+1)
		if err := b.env.StopProxy(); err != nil {
			logf("proxy exit: %v", err)
		}
		if err := b.env.StartProxy(ctx); err != nil {
			return err
		}
		for _, k := range []struct {
			kind, resource string
		}{{stampedeFresh, stampedeResource}, {stampedeWarmClient, stampedeResource2}} {
			run, err := b.stampede(ctx, k.resource)
			if err != nil {
				return err
			}
			run.Kind = k.kind
			res := run.Result
			logf("stampede %d (%s): %d requests, statuses %v, errors %d, Entra calls %d, distinct tokens %d, first %v p50 %v p99 %v max %v",
				i+1, k.kind, res.N, res.Status, res.Errors, run.EntraCalls, res.DistinctTokens, res.FirstDone, res.Latency.P50, res.Latency.P99, res.Latency.Max)
			b.rep.Stampede = append(b.rep.Stampede, run)
		}
	}
	return nil
}

func (b *bench) stampede(ctx context.Context, resource string) (StampedeRun, error) {
	scope := resource + "/.default"
	before, err := b.env.Calls(ctx, b.env.ClientID, scope)
	if err != nil {
		return StampedeRun{}, err
	}
	var res loadgen.StampedeResult
	if err := b.podRun(ctx, clientUID, nil, &res, "stampede", "-n", strconv.Itoa(b.cfg.stampedeN), "-uri", tokenURI(resource)); err != nil {
		return StampedeRun{}, err
	}
	after, err := b.env.Calls(ctx, b.env.ClientID, scope)
	if err != nil {
		return StampedeRun{}, err
	}
	return StampedeRun{Resource: resource, Result: res, EntraCalls: after - before}, nil
}

// startupPhase times proxy starts from exec to the first 200 from /readyz
// and to the first token served, from inside the pod netns, interleaved
// with starts of the limit server and of depfloor timed the same way. The
// timing process (as root, to start the proxy as UID 1501) execs the
// server itself, so both timestamps come from one clock with no harness in
// between.
func (b *bench) startupPhase(ctx context.Context) error {
	if b.env == nil || b.cfg.startupRuns < 1 {
		return nil
	}
	// The proxy, the limit server (what exec to ready costs a minimal Go
	// server on this machine right now) and depfloor (every package the
	// proxy links, initialised, then a static server), one start of each
	// per round, the order rotating, so drift in background load reaches
	// all three alike.
	body := filepath.Join(b.binDir, "reply.json")
	servers := []struct {
		name string
		env  []string
		argv []string
		res  *loadgen.StartupResult
	}{
		{"proxy", b.env.ProxyEnv(), []string{"--", b.env.Bin(podenv.ProxyBin), "--log-level=" + b.cfg.logLevel}, &loadgen.StartupResult{}},
		{"limit server", nil, []string{"-port-arg", "-addr=127.0.0.1:%d", "--", b.limit, "-body", body}, &loadgen.StartupResult{}},
		{"dependency floor", nil, []string{"-port-arg", "-addr=127.0.0.1:%d", "--", b.depfloor, "-body", body}, &loadgen.StartupResult{}},
	}
	for i := 0; i < b.cfg.startupRuns; i++ {
		for j := range servers {
			s := servers[(i+j)%len(servers)]
			args := append([]string{"startup", "-runs", "1", "-port", strconv.Itoa(startupPort),
				"-uid", strconv.Itoa(podenv.DefaultProxyUID), "-uri", tokenURI(warmResource)}, s.argv...)
			var one loadgen.StartupResult
			if err := b.podRun(ctx, 0, s.env, &one, args...); err != nil {
				one.Runs = []loadgen.StartupRun{{Error: err.Error()}}
			}
			s.res.Runs = append(s.res.Runs, one.Runs...)
		}
	}
	for _, s := range servers {
		var ready, token []time.Duration
		for _, r := range s.res.Runs {
			if r.Error == "" {
				ready, token = append(ready, r.Ready), append(token, r.FirstToken)
			}
		}
		s.res.Ready, s.res.FirstToken = loadgen.SummarizeStartup(ready), loadgen.SummarizeStartup(token)
		logf("startup (%s): ready median %v (min %v, max %v), first answer median %v",
			s.name, s.res.Ready.Median, s.res.Ready.Min, s.res.Ready.Max, s.res.FirstToken.Median)
	}
	b.rep.Startup, b.rep.StartupLimit, b.rep.StartupFloor = servers[0].res, servers[1].res, servers[2].res
	if b.rep.Startup.Ready.N == 0 {
		return fmt.Errorf("no proxy start succeeded: %s", b.rep.Startup.Runs[0].Error)
	}

	// The emulator's own answer time for a first exchange, asked directly
	// from the pod, so the first token's budget can leave it out.
	if b.cfg.entraRuns > 0 {
		var et loadgen.EntraResult
		if err := b.podRun(ctx, podenv.DefaultProxyUID, b.env.ProxyEnv(), &et, "entra",
			"-runs", strconv.Itoa(b.cfg.entraRuns), "-client-id", b.env.ClientID); err != nil {
			return err
		}
		b.rep.Entra = &et
		logf("Entra (emulator) answers: discovery %v + token %v on a warm connection; TLS handshake %v",
			et.DiscoveryWarm, et.TokenWarm, et.Handshake)
	}

	// Where the time before main goes: package initialisation.
	pt := initTrace(ctx, b.cfg.startupRuns, b.env.Bin(podenv.ProxyBin), "--help")
	lt := initTrace(ctx, b.cfg.startupRuns, b.limit, "-h")
	b.rep.InitProxy, b.rep.InitLimit = &pt, &lt
	return nil
}

// goBenchPhase runs the Go benchmarks of the handler path and the cache and
// saves their raw, benchstat-ready output beside the report.
func (b *bench) goBenchPhase(ctx context.Context) {
	r := b.rep
	outDir := b.outDir()
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		r.Notes = append(r.Notes, "gobench: "+err.Error())
		return
	}
	r.GoBenchFile = filepath.Join(outDir, "bench-"+r.Started.Format("20060102-150405")+"-gotest.txt")
	f, err := os.Create(r.GoBenchFile)
	if err != nil {
		r.Notes = append(r.Notes, "gobench: "+err.Error())
		return
	}
	args := []string{"test", "-run", "^$", "-bench", b.cfg.goBenchFilter, "-benchmem", "-count", strconv.Itoa(b.cfg.goBenchCount), "./pkg/imds", "./pkg/exchange"}
	r.GoBenchCmd = "go " + strings.Join(args, " ")
	logf("running %s", r.GoBenchCmd)
	err = b.goCmd(ctx, f, args...)
	f.Close()
	raw, _ := os.ReadFile(r.GoBenchFile)
	r.GoBench = parseGoBench(string(raw))
	for _, line := range strings.Split(string(raw), "\n") {
		if cpu, ok := strings.CutPrefix(line, "cpu: "); ok {
			r.Machine.CPUBrand = strings.TrimSpace(cpu)
			break
		}
	}
	if err != nil {
		r.Notes = append(r.Notes, fmt.Sprintf("gobench: %s: %v (see %s)", r.GoBenchCmd, err, r.GoBenchFile))
	}
	if bs := benchstatPath(); bs != "" {
		out, err := exec.CommandContext(ctx, bs, r.GoBenchFile).CombinedOutput()
		if err == nil {
			r.Benchstat = string(out)
		}
	}
}

func benchstatPath() string {
	if p, err := exec.LookPath("benchstat"); err == nil {
		return p
	}
	for _, dir := range []string{os.Getenv("GOBIN"), filepath.Join(os.Getenv("HOME"), "go", "bin")} {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, "benchstat")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

func gitDescribe(root string) string {
	out, err := exec.Command("git", "-C", root, "describe", "--always", "--dirty").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func tailFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// outDir is -out, relative to the module root unless absolute.
func (b *bench) outDir() string {
	if filepath.IsAbs(b.cfg.outDir) {
		return b.cfg.outDir
	}
	return filepath.Join(b.root, b.cfg.outDir)
}

// write prints the report and saves it (text and JSON) under outDir.
func (b *bench) write() error {
	r := b.rep
	text := r.Text()
	fmt.Print(text)
	outDir := b.outDir()
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	base := filepath.Join(outDir, "bench-"+r.Started.Format("20060102-150405"))
	if err := os.WriteFile(base+".txt", []byte(text), 0o644); err != nil {
		return err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(base+".json", js, 0o644); err != nil {
		return err
	}
	fmt.Printf("\nwritten: %s.txt, %s.json", base, base)
	if r.GoBenchFile != "" {
		fmt.Printf(", %s", r.GoBenchFile)
	}
	fmt.Println()
	return nil
}
