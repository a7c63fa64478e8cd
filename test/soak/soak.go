package soak

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/entraemu"
	"github.com/imds-proxy/imds-proxy/internal/gobuild"
	"github.com/imds-proxy/imds-proxy/internal/podenv"
)

// DefaultDuration is the length of `make soak` unless SOAK_DURATION says
// otherwise.
const DefaultDuration = 10 * time.Minute

// MinDuration is the shortest run that still has a warm-up, faults and a
// clean end.
const MinDuration = 30 * time.Second

// Config is one soak run.
type Config struct {
	// Duration is the length of the run, warm-up included; default
	// DefaultDuration, at least MinDuration.
	Duration time.Duration
	// BinDir holds the binaries (podenv.Build's, goclient and
	// imds-loadgen); empty builds them into a temporary directory.
	BinDir string
	// Out receives the table and the verdict; default os.Stdout.
	Out io.Writer
	// Logf receives progress lines; default none.
	Logf func(format string, args ...any)
	// KeepLogs, when set, is a directory the run's logs are copied to.
	KeepLogs string
}

// schedule is what a Config's duration turns into.
type schedule struct {
	duration time.Duration
	// interval is how long a fault stays on or off, and the warm-up.
	interval time.Duration
	// report is the time between table rows.
	report time.Duration
	// tokenLifetime is the emulator's access token lifetime: short enough
	// for refreshes ahead of expiry (at half of it) to happen during the
	// run; staleGrace is the proxy's --stale-grace for it.
	tokenLifetime, staleGrace time.Duration
	// exchangeTimeout and passthroughTimeout are the proxy's options.
	exchangeTimeout, passthroughTimeout time.Duration
}

func clamp(d, lo, hi time.Duration) time.Duration { return max(lo, min(d, hi)) }

func newSchedule(d time.Duration) schedule {
	lifetime := clamp(d*2/5, 30*time.Second, 4*time.Minute)
	return schedule{
		duration:           d,
		interval:           clamp(d/20, 3*time.Second, 30*time.Second),
		report:             clamp(d/10, 5*time.Second, time.Minute),
		tokenLifetime:      lifetime,
		staleGrace:         lifetime / 6,
		exchangeTimeout:    3 * time.Second,
		passthroughTimeout: 2 * time.Second,
	}
}

// slots is the number of whole intervals in the run.
func (s schedule) slots() int { return int(s.duration / s.interval) }

// faultAt returns the index of the fault that is on during slot, or -1:
// slot 0 is the warm-up, then odd slots have a fault and even ones none,
// and the last slot is always clean.
func (s schedule) faultAt(slot int) int {
	if slot <= 0 || slot%2 == 0 || slot >= s.slots()-1 {
		return -1
	}
	return (slot - 1) / 2
}

// Identities and resources of the soak's pod.
const (
	otherClientID = "5e0a4c2b-3d1f-4b6a-8c9e-7f1a2b3c4d5e"
	hotResource   = "https://management.azure.com/"
	curlResource  = "api://soak/curl"
	goResource    = "api://soak/go"
	metricsAddr   = "127.0.0.1:9464"
	clientUID     = 1000
)

// Run runs one soak and returns its report; an error means the soak could
// not run at all. It needs root. Report.Failures says whether the proxy
// held.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the soak needs root (network namespaces, iptables, setuid)")
	}
	if cfg.Duration == 0 {
		cfg.Duration = DefaultDuration
	}
	if cfg.Duration < MinDuration {
		return nil, fmt.Errorf("duration %s is shorter than %s", cfg.Duration, MinDuration)
	}
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	sch := newSchedule(cfg.Duration)
	if cfg.BinDir == "" {
		dir, err := podenv.TempDir("soak-bin")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		cfg.Logf("building the binaries")
		if err := Build(ctx, dir); err != nil {
			return nil, err
		}
		cfg.BinDir = dir
	}
	env, err := podenv.Start(ctx, podenv.Options{
		BinDir:        cfg.BinDir,
		ClientID:      podenv.DefaultClientID,
		Apps:          []entraemu.App{podenv.FederatedApp(otherClientID, "", "")},
		TokenLifetime: sch.tokenLifetime,
		ProxyArgs: []string{
			"--exchange-timeout=" + sch.exchangeTimeout.String(),
			"--passthrough-timeout=" + sch.passthroughTimeout.String(),
			"--stale-grace=" + sch.staleGrace.String(),
			"--metrics-addr=" + metricsAddr,
		},
		Logf: cfg.Logf,
	})
	if err != nil {
		return nil, err
	}
	defer env.Close()
	s := &soak{cfg: cfg, sch: sch, env: env, rep: &Report{Schedule: sch.String()}, secrets: newSecretScanner(),
		clientsLog: filepath.Join(env.Dir, "clients.log")}
	if err := os.WriteFile(s.clientsLog, nil, 0o644); err != nil {
		return nil, err
	}
	err = s.run(ctx)
	if cfg.KeepLogs != "" {
		if cerr := s.keepLogs(cfg.KeepLogs); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}
	return s.rep, err
}

func (s schedule) String() string {
	return fmt.Sprintf("%s: warm-up and faults in %s intervals, a row every %s; tokens live %s (stale grace %s), exchange timeout %s, passthrough timeout %s",
		s.duration, s.interval, s.report, s.tokenLifetime, s.staleGrace, s.exchangeTimeout, s.passthroughTimeout)
}

// soak is one run in progress.
type soak struct {
	cfg     Config
	sch     schedule
	env     *podenv.Env
	rep     *Report
	stats   stats
	secrets *secretScanner

	// gate pauses the load: every operation holds it for reading; pausing
	// takes it for writing, so the proxy is sampled with no request of
	// ours in flight.
	gate sync.RWMutex

	mu           sync.Mutex // guards the fields below
	clientsLog   string
	fault        string // the fault on now, "" for none
	tokenFileOff bool   // the token file's fault is on: no rotation
	saTokens     int
	authzValues  int
	lastMetrics  podenv.Metrics // the newest scrape, for the notes
	// imdsRefusing is set while the node's IMDS refuses connections;
	// imdsRefusedUntil is when it last stopped.
	imdsRefusing     bool
	imdsRefusedUntil time.Time
}

// imdsRefusedRecently reports whether the node's IMDS refuses connections
// now or did within refusalWindow.
func (s *soak) imdsRefusedRecently() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.imdsRefusing || time.Since(s.imdsRefusedUntil) < refusalWindow
}

func (s *soak) run(ctx context.Context) error {
	env := s.env
	pid, err := env.ProxyPID()
	if err != nil {
		return err
	}
	sa, err := os.ReadFile(env.TokenFile)
	if err != nil {
		return err
	}
	s.addSATokenSecret(string(sa))
	if err := s.watchEscapes(ctx); err != nil {
		return err
	}
	if err := s.checkHotToken(ctx); err != nil {
		return fmt.Errorf("first token: %w", err)
	}
	fmt.Fprintf(s.cfg.Out, "soak %s\n", s.sch)
	s.printHeader()
	start := time.Now()
	if err := s.row(ctx, "start", start); err != nil {
		return err
	}

	loadCtx, stopLoad := context.WithCancel(ctx)
	var load sync.WaitGroup
	s.startLoad(loadCtx, &load)
	reportCtx, stopReport := context.WithCancel(ctx)
	reportDone := make(chan struct{})
	go func() {
		defer close(reportDone)
		s.reportEvery(reportCtx, start)
	}()

	fs := faults(s.sch)
	active := -1
	var runErr error
	for slot := 0; slot < s.sch.slots(); slot++ {
		if slot == 1 {
			// The end of the warm-up: the reference for flatness.
			if err := s.pausedRow(ctx, "warm", start); err != nil {
				runErr = err
				break
			}
		}
		want := s.sch.faultAt(slot)
		if want >= len(fs) {
			want = -1
		}
		if active >= 0 && active != want {
			if err := s.switchFault(ctx, fs[active], false); err != nil {
				runErr = err
				break
			}
			active = -1
		}
		if want >= 0 && active != want {
			if err := s.switchFault(ctx, fs[want], true); err != nil {
				runErr = err
				break
			}
			active = want
		}
		if err := s.rotateToken(ctx); err != nil {
			runErr = err
			break
		}
		select {
		case <-ctx.Done():
			runErr = ctx.Err()
		case <-time.After(time.Until(start.Add(time.Duration(slot+1) * s.sch.interval))):
		}
		if runErr != nil {
			break
		}
	}
	if active >= 0 {
		runErr = errors.Join(runErr, s.switchFault(context.WithoutCancel(ctx), fs[active], false))
		runErr = errors.Join(runErr, s.rotateToken(context.WithoutCancel(ctx)))
	}
	stopLoad()
	load.Wait()
	stopReport()
	<-reportDone
	if runErr != nil {
		return runErr
	}
	if err := s.pausedRow(ctx, "end", start); err != nil {
		return err
	}
	if now, err := env.ProxyPID(); err != nil || now != pid {
		s.rep.fail("the proxy did not survive: pid %d at the start, now %d (%v)", pid, now, err)
	}
	s.judge()
	if err := s.judgeEscapes(ctx); err != nil {
		return err
	}
	if err := s.scanLogs(ctx); err != nil {
		return err
	}
	s.rep.print(s.cfg.Out)
	return nil
}

// switchFault turns f on or off and logs it.
func (s *soak) switchFault(ctx context.Context, f fault, on bool) error {
	fn, what := f.off, "off"
	if on {
		fn, what = f.on, "on"
	}
	if err := fn(ctx, s.env); err != nil {
		return fmt.Errorf("fault %s %s: %w", f.name, what, err)
	}
	s.mu.Lock()
	if on {
		s.fault = f.name
		s.rep.Faults = append(s.rep.Faults, f.name)
	} else {
		s.fault = ""
	}
	s.tokenFileOff = on && f.tokenFile
	if f.imdsRefuses {
		s.imdsRefusing = on
		if !on {
			s.imdsRefusedUntil = time.Now()
		}
	}
	s.mu.Unlock()
	s.cfg.Logf("fault %s: %s", what, f.name)
	return nil
}

// currentFault names the fault on now ("" for none).
func (s *soak) currentFault() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fault
}

// rotateToken writes a fresh projected token, as kubelet does, unless the
// token file's own fault is on.
func (s *soak) rotateToken(ctx context.Context) error {
	s.mu.Lock()
	off := s.tokenFileOff
	s.mu.Unlock()
	if off {
		return nil
	}
	tok, err := s.env.MintToken(ctx, podenv.Namespace, podenv.ServiceAccount, time.Hour)
	if err != nil {
		return err
	}
	s.addSATokenSecret(tok)
	return s.env.WriteToken(tok)
}

func (s *soak) addSATokenSecret(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.saTokens++
	s.secrets.add(fmt.Sprintf("projected service account token #%d", s.saTokens), tok)
}

func (s *soak) addAuthzSecret(v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.authzValues++
	s.secrets.add(fmt.Sprintf("Authorization header value #%d", s.authzValues), v)
}

// scanLogs looks for every issued access token, every projected token
// written and every Authorization value sent in every log of the run.
func (s *soak) scanLogs(ctx context.Context) error {
	list, err := s.env.IssuedTokens(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	for i, tok := range list.Tokens {
		s.secrets.add(fmt.Sprintf("access token #%d issued by the emulator", i+1), tok)
	}
	sc := s.rep.Scan
	sc.AccessTokens, sc.DroppedTokens, sc.SATokens, sc.AuthzValues = len(list.Tokens), list.Dropped, s.saTokens, s.authzValues
	s.mu.Unlock()
	if list.Dropped > 0 {
		s.rep.fail("the emulator kept only the newest %d access tokens (%d older ones were not scanned for)", len(list.Tokens), list.Dropped)
	}
	for _, f := range []string{s.env.ProxyLog, s.env.EmulatorLog, s.env.InitLog, s.clientsLog} {
		hits, n, err := s.secrets.scanFile(f)
		if err != nil {
			return err
		}
		sc.Files = append(sc.Files, fmt.Sprintf("%s (%d bytes)", filepath.Base(f), n))
		sc.Bytes += n
		for _, h := range hits {
			sc.Hits = append(sc.Hits, h)
			s.rep.fail("%s found in %s at byte %d", h.Secret, filepath.Base(h.File), h.Offset)
		}
	}
	s.rep.Scan = sc
	return nil
}

// keepLogs copies the run's logs into dir.
func (s *soak) keepLogs(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var errs []error
	for _, f := range []string{s.env.ProxyLog, s.env.EmulatorLog, s.env.InitLog, s.clientsLog} {
		b, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644))
	}
	return errors.Join(errs...)
}

// Build compiles what the soak runs into dir: podenv.Build's proxy,
// proxy-init and emulator, and the clients (BuildClients).
func Build(ctx context.Context, dir string) error {
	if err := podenv.Build(ctx, dir); err != nil {
		return err
	}
	return BuildClients(ctx, dir)
}

// BuildClients compiles the e2e suite's Go client (goclient) and the
// benchmark's load generator (imds-loadgen) into dir.
func BuildClients(ctx context.Context, dir string) error {
	return gobuild.Build(ctx, dir, "./test/e2e/clients/goclient", "./test/bench/cmd/imds-loadgen")
}
