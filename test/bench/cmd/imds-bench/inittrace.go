package main

import (
	"context"
	"math"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// InitTrace is what GODEBUG=inittrace=1 says about a binary's package
// initialisation, the part of start-up that runs before main.
type InitTrace struct {
	Runs  int
	Total time.Duration // median over runs of the summed init clock time
	End   time.Duration // median over runs of when the last init finished
	Top   []PkgInit     // the packages with the largest median init time
	// Modules is the median over runs of each module's summed init time,
	// largest first: what each dependency costs every start.
	Modules []PkgInit
}

// PkgInit is one package's median init time.
type PkgInit struct {
	Pkg   string
	Clock time.Duration
}

var initLine = regexp.MustCompile(`^init (\S+) @([0-9.]+) ms, ([0-9.]+) ms clock`)

// initTrace runs argv (which must exit at once, e.g. with --help) runs
// times with GODEBUG=inittrace=1 and summarises the init lines.
func initTrace(ctx context.Context, runs int, argv ...string) InitTrace {
	outputs := make([]string, 0, runs)
	for i := 0; i < runs; i++ {
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
		out, _ := cmd.CombinedOutput() // --help may exit non-zero; the trace is there either way
		outputs = append(outputs, string(out))
	}
	return summarizeInitTrace(outputs)
}

// summarizeInitTrace summarises the init lines of each run's output.
func summarizeInitTrace(outputs []string) InitTrace {
	runs := len(outputs)
	per := map[string][]float64{}
	perModule := map[string][]float64{}
	var totals, ends []float64
	for _, out := range outputs {
		var total, end float64
		modules := map[string]float64{}
		for _, line := range splitLines(out) {
			m := initLine.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			at, _ := strconv.ParseFloat(m[2], 64)
			clock, _ := strconv.ParseFloat(m[3], 64)
			per[m[1]] = append(per[m[1]], clock)
			modules[moduleOf(m[1])] += clock
			total += clock
			end = max(end, at+clock)
		}
		for mod, v := range modules {
			perModule[mod] = append(perModule[mod], v)
		}
		totals = append(totals, total)
		ends = append(ends, end)
	}
	ms := func(v float64) time.Duration { return time.Duration(math.Round(v*1000)) * time.Microsecond }
	tr := InitTrace{Runs: runs, Total: ms(median(totals)), End: ms(median(ends))}
	for pkg, v := range per {
		tr.Top = append(tr.Top, PkgInit{pkg, ms(median(v))})
	}
	byClock := func(a, b PkgInit) int {
		if a.Clock != b.Clock {
			return int(b.Clock - a.Clock)
		}
		return strings.Compare(a.Pkg, b.Pkg)
	}
	slices.SortFunc(tr.Top, byClock)
	if len(tr.Top) > 6 {
		tr.Top = tr.Top[:6]
	}
	for mod, v := range perModule {
		// A module missing from some runs' output counts 0 there.
		for len(v) < runs {
			v = append(v, 0)
		}
		tr.Modules = append(tr.Modules, PkgInit{mod, ms(median(v))})
	}
	slices.SortFunc(tr.Modules, byClock)
	return tr
}

// moduleOf names the module a package import path belongs to, well enough
// to group init times: the standard library (no dot in the first element,
// vendored packages included) is "std"; other paths keep three elements
// (github.com/owner/repo, golang.org/x/net), or two for hosts whose
// modules live at the second (google.golang.org/protobuf, go.yaml.in/yaml).
func moduleOf(pkg string) string {
	first, _, _ := strings.Cut(pkg, "/")
	if !strings.Contains(first, ".") {
		return "std"
	}
	parts := strings.Split(pkg, "/")
	n := 3
	switch first {
	case "google.golang.org", "go.yaml.in", "gopkg.in", "k8s.io", "sigs.k8s.io":
		n = 2
	}
	return strings.Join(parts[:min(n, len(parts))], "/")
}

func splitLines(s string) []string {
	var out []string
	for len(s) > 0 {
		i := 0
		for i < len(s) && s[i] != '\n' {
			i++
		}
		out = append(out, s[:i])
		if i < len(s) {
			i++
		}
		s = s[i:]
	}
	return out
}
