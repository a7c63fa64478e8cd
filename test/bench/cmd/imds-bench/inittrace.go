package main

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"time"
)

// InitTrace is what GODEBUG=inittrace=1 says about a binary's package
// initialisation, the part of start-up that runs before main.
type InitTrace struct {
	Runs  int
	Total time.Duration // median over runs of the summed init clock time
	End   time.Duration // median over runs of when the last init finished
	Top   []PkgInit     // the packages with the largest median init time
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
	per := map[string][]float64{}
	var totals, ends []float64
	for i := 0; i < runs; i++ {
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
		out, _ := cmd.CombinedOutput() // --help may exit non-zero; the trace is there either way
		var total, end float64
		for _, line := range splitLines(string(out)) {
			m := initLine.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			at, _ := strconv.ParseFloat(m[2], 64)
			clock, _ := strconv.ParseFloat(m[3], 64)
			per[m[1]] = append(per[m[1]], clock)
			total += clock
			end = max(end, at+clock)
		}
		totals = append(totals, total)
		ends = append(ends, end)
	}
	ms := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
	tr := InitTrace{Runs: runs, Total: ms(median(totals)), End: ms(median(ends))}
	for pkg, v := range per {
		tr.Top = append(tr.Top, PkgInit{pkg, ms(median(v))})
	}
	slices.SortFunc(tr.Top, func(a, b PkgInit) int { return int(b.Clock - a.Clock) })
	if len(tr.Top) > 6 {
		tr.Top = tr.Top[:6]
	}
	return tr
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
