package main

import (
	"bufio"
	"slices"
	"strconv"
	"strings"
)

// GoBench is the median of one Go benchmark's repeated runs.
type GoBench struct {
	Pkg, Name   string
	Runs        int
	NsPerOp     float64
	BytesPerOp  float64
	AllocsPerOp float64
	HasMem      bool
}

// parseGoBench reads `go test -bench -benchmem` output (the format benchstat
// reads) and returns the median of each benchmark's runs, in the order the
// benchmarks first appear. The -N GOMAXPROCS suffix is dropped from names.
func parseGoBench(out string) []GoBench {
	type acc struct {
		pkg, name         string
		ns, bytes, allocs []float64
	}
	var order []string
	all := map[string]*acc{}
	pkg := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		if _, err := strconv.ParseInt(f[1], 10, 64); err != nil {
			continue // not a result line
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		key := pkg + "\x00" + name
		a := all[key]
		if a == nil {
			a = &acc{pkg: pkg, name: name}
			all[key] = a
			order = append(order, key)
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "ns/op":
				a.ns = append(a.ns, v)
			case "B/op":
				a.bytes = append(a.bytes, v)
			case "allocs/op":
				a.allocs = append(a.allocs, v)
			}
		}
	}
	res := make([]GoBench, 0, len(order))
	for _, k := range order {
		a := all[k]
		res = append(res, GoBench{
			Pkg: a.pkg, Name: a.name, Runs: len(a.ns),
			NsPerOp: median(a.ns), BytesPerOp: median(a.bytes), AllocsPerOp: median(a.allocs),
			HasMem: len(a.allocs) > 0,
		})
	}
	return res
}

// median returns the median of v (the mean of the middle two for an even
// count), or 0 for none. v is sorted in place.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}
