package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imds-proxy/imds-proxy/test/bench/loadgen"
)

const goTestOut = `goos: linux
goarch: amd64
pkg: github.com/imds-proxy/imds-proxy/pkg/imds
cpu: AMD EPYC
BenchmarkTokenHandlerWarm-2   	  300000	      4000 ns/op	     900 B/op	      12 allocs/op
BenchmarkTokenHandlerWarm-2   	  300000	      3000 ns/op	     900 B/op	      12 allocs/op
BenchmarkTokenHandlerWarm-2   	  300000	      5000 ns/op	     900 B/op	      14 allocs/op
BenchmarkPath/dots-2          	 1000000	       100 ns/op
PASS
ok  	github.com/imds-proxy/imds-proxy/pkg/imds	5.0s
pkg: github.com/imds-proxy/imds-proxy/pkg/exchange
BenchmarkTokenWarm-2   	 5000000	       200 ns/op	       0 B/op	       0 allocs/op
`

func TestParseGoBench(t *testing.T) {
	got := parseGoBench(goTestOut)
	if len(got) != 3 {
		t.Fatalf("got %d benchmarks: %+v", len(got), got)
	}
	h := got[0]
	if h.Name != "BenchmarkTokenHandlerWarm" || h.Runs != 3 || h.NsPerOp != 4000 || h.AllocsPerOp != 12 || !h.HasMem || !strings.HasSuffix(h.Pkg, "pkg/imds") {
		t.Fatalf("handler benchmark %+v", h)
	}
	if got[1].Name != "BenchmarkPath/dots" || got[1].HasMem {
		t.Fatalf("second benchmark %+v", got[1])
	}
	if got[2].Name != "BenchmarkTokenWarm" || !strings.HasSuffix(got[2].Pkg, "pkg/exchange") || got[2].AllocsPerOp != 0 {
		t.Fatalf("cache benchmark %+v", got[2])
	}
}

func TestMetricValue(t *testing.T) {
	text := "# HELP go_goroutines Number of goroutines.\n# TYPE go_goroutines gauge\ngo_goroutines 11\ngo_goroutines_x 3\n"
	if v, ok := metricValue(text, "go_goroutines"); !ok || v != 11 {
		t.Fatalf("got %v %v", v, ok)
	}
	if _, ok := metricValue(text, "missing"); ok {
		t.Fatal("found a missing metric")
	}
}

func steady(server string, c int, rps float64, p99 time.Duration) SteadyRun {
	rounds[server]++
	return SteadyRun{Server: server, Round: rounds[server], Result: loadgen.SteadyResult{Concurrency: c, RPS: rps, Completed: 100,
		Latency: loadgen.Percentiles{P50: p99 / 2, P99: p99, P999: 2 * p99}}}
}

var rounds = map[string]int{}

func startup(ready, first time.Duration) *loadgen.StartupResult {
	return &loadgen.StartupResult{Ready: loadgen.StartupStats{N: 9, Median: ready}, FirstToken: loadgen.StartupStats{N: 9, Median: first}}
}

func TestVerdicts(t *testing.T) {
	r := &Report{
		Config: config{entraLatency: 50 * time.Millisecond},
		Steady: []SteadyRun{
			steady("proxy", 64, 9000, 13*time.Millisecond), steady("limit", 64, 10000, 10*time.Millisecond),
			steady("proxy", 64, 9500, 12*time.Millisecond), steady("limit", 64, 10000, 10*time.Millisecond),
			steady("proxy", 64, 1000, 99*time.Millisecond), steady("limit", 64, 10000, 10*time.Millisecond),
		},
		Stampede: []StampedeRun{{Kind: stampedeFresh, EntraCalls: 1, Result: loadgen.StampedeResult{N: 500, Status: map[int]int{200: 500},
			Latency: loadgen.Percentiles{P99: 101 * time.Millisecond}}}},
		// 2 MiB and 1 KiB over the limit in all, 2 MiB private.
		ProxyLoad: Mem{RSS: 14<<20 + 1<<10, Anon: 8 << 20, File: 6<<20 + 1<<10},
		LimitLoad: Mem{RSS: 12 << 20, Anon: 6 << 20, File: 6 << 20},
		// 1.15x the limit's ready time exactly.
		Startup:      startup(4600*time.Microsecond, 21*time.Millisecond),
		StartupLimit: startup(4*time.Millisecond, 5*time.Millisecond),
		// 5 + 1.5 + 15 = 21.5 ms for the first token.
		Entra:     &loadgen.EntraResult{Answer: 1500 * time.Microsecond},
		IdleProxy: &IdleCost{Window: time.Minute, CPUTicks: 3, Voluntary: 200},
		IdleLimit: &IdleCost{Window: time.Minute, CPUTicks: 1, Voluntary: 100},
		GoBench:   []GoBench{{Name: "BenchmarkTokenHandlerWarm", AllocsPerOp: 12, HasMem: true}},
	}
	want := []string{
		"MISS", // RSS: 1 KiB too many
		"PASS", // private memory: exactly +2 MiB
		"PASS", // ready: exactly 1.15x
		"PASS", // first token: inside the budget
		"PASS", // one Entra call
		"MISS", // p99 51 ms over Entra's 50
		"MISS", // idle: 200 wake-ups against 1.25*100+10
		"PASS", // 90% paired throughput
		"PASS", // 1.3x paired p99
		"PASS", // allocations
	}
	got := r.verdicts()
	if len(got) != len(want) {
		t.Fatalf("got %d verdicts: %+v", len(got), got)
	}
	for i, v := range got {
		if v.Status != want[i] {
			t.Errorf("verdict %d %q = %s (%s), want %s", i, v.Target, v.Status, v.Value, want[i])
		}
	}
	if l, _ := r.level("proxy", 64); l.RPS != 9000 || l.P99 != 13*time.Millisecond {
		t.Errorf("median level %+v", l)
	}
	if rt, ok := r.ratios(64); !ok || rt.Pairs != 3 || rt.RPS != 0.9 || rt.P99 != 1.3 {
		t.Errorf("paired ratios %+v", rt)
	}
	text := r.Text()
	for _, s := range []string{"ratio", "90.0%", "1.30x", "Targets", "[MISS]", "+2.0 MiB", "21.000 ms vs 5.000 ms + 1.500 ms + 15 ms = 21.500 ms: -0.500 ms",
		"1.15x (medians 4.600 ms vs 4.000 ms)", "200 wake-ups (200.0/min)"} {
		if !strings.Contains(text, s) {
			t.Errorf("report lacks %q:\n%s", s, text)
		}
	}
}

func TestIdleWakeupsPerMinute(t *testing.T) {
	c := IdleCost{Window: 30 * time.Second, Voluntary: 45}
	if got := c.Wakeups(); got != 90 {
		t.Fatalf("Wakeups() = %v, want 90 per minute", got)
	}
	if got := (IdleCost{}).Wakeups(); got != 0 {
		t.Fatalf("Wakeups() of an empty window = %v, want 0", got)
	}
}

func TestModuleOf(t *testing.T) {
	for pkg, want := range map[string]string{
		"net/http":                                           "std",
		"vendor/golang.org/x/net/http2/hpack":                "std",
		"github.com/prometheus/client_golang/prometheus":     "github.com/prometheus/client_golang",
		"github.com/prometheus/procfs":                       "github.com/prometheus/procfs",
		"google.golang.org/protobuf/types/known/timestamppb": "google.golang.org/protobuf",
		"golang.org/x/sync/errgroup":                         "golang.org/x/sync",
		"github.com/imds-proxy/imds-proxy/pkg/exchange":      "github.com/imds-proxy/imds-proxy",
		"go.yaml.in/yaml/v2":                                 "go.yaml.in/yaml",
		"github.com/AzureAD/microsoft-authentication-library-for-go/apps/internal/oauth/ops/authority": "github.com/AzureAD/microsoft-authentication-library-for-go",
	} {
		if got := moduleOf(pkg); got != want {
			t.Errorf("moduleOf(%q) = %q, want %q", pkg, got, want)
		}
	}
}

func TestSummarizeInitTrace(t *testing.T) {
	run := func(prom, procfs, ours string) string {
		return "init runtime @0.005 ms, 0.050 ms clock, 0 bytes, 0 allocs\n" +
			"init github.com/prometheus/client_golang/prometheus @3.1 ms, " + prom + " ms clock, 64432 bytes, 248 allocs\n" +
			"init github.com/prometheus/procfs @4.2 ms, " + procfs + " ms clock, 96520 bytes, 892 allocs\n" +
			"usage: proxy [flags]\n" +
			"init github.com/imds-proxy/imds-proxy/pkg/imds @6.0 ms, " + ours + " ms clock, 8504 bytes, 119 allocs\n"
	}
	tr := summarizeInitTrace([]string{run("0.400", "0.200", "0.030"), run("0.500", "0.100", "0.050"), run("0.600", "0.300", "0.040")})
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	if tr.Runs != 3 || tr.Total != ms(0.70) || tr.End != ms(6.04) {
		t.Errorf("runs %d, total %v, end %v; want 3, 0.7ms, 6.04ms", tr.Runs, tr.Total, tr.End)
	}
	wantTop := []PkgInit{{"github.com/prometheus/client_golang/prometheus", ms(0.5)}, {"github.com/prometheus/procfs", ms(0.2)},
		{"runtime", ms(0.05)}, {"github.com/imds-proxy/imds-proxy/pkg/imds", ms(0.04)}}
	if !slices.Equal(tr.Top, wantTop) {
		t.Errorf("top %v, want %v", tr.Top, wantTop)
	}
	wantModules := []PkgInit{{"github.com/prometheus/client_golang", ms(0.5)}, {"github.com/prometheus/procfs", ms(0.2)},
		{"std", ms(0.05)}, {"github.com/imds-proxy/imds-proxy", ms(0.04)}}
	if !slices.Equal(tr.Modules, wantModules) {
		t.Errorf("modules %v, want %v", tr.Modules, wantModules)
	}
}
