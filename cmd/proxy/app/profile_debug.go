//go:build imdsproxy_debug

package app

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"syscall"

	"github.com/go-logr/logr"
)

// profileDirVar names the directory debug builds write profiles to.
const profileDirVar = "IMDS_PROXY_PROFILE_DIR"

// startDebugProfiler, in builds with the imdsproxy_debug tag only, writes a
// heap profile (after a GC), a goroutine profile and the runtime/metrics
// values to $IMDS_PROXY_PROFILE_DIR (default: the temporary directory) each
// time the process gets SIGUSR1, until ctx ends. The shipped binary has no
// such handler: linking runtime/pprof turns on the runtime's memory
// profiling, which costs memory and time on every sampled allocation
// (test/bench/README.md, "Profiles").
func startDebugProfiler(ctx context.Context, log logr.Logger) {
	dir := os.Getenv(profileDirVar)
	if dir == "" {
		dir = os.TempDir()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	log.Info("debug build: SIGUSR1 writes heap and goroutine profiles", "dir", dir)
	go func() {
		defer signal.Stop(sig)
		for n := 1; ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-sig:
			}
			prefix := filepath.Join(dir, fmt.Sprintf("imds-proxy-%d-%d-", os.Getpid(), n))
			if err := writeProfiles(prefix); err != nil {
				log.Error(err, "writing profiles failed", "prefix", prefix)
				continue
			}
			log.Info("profiles written", "prefix", prefix)
		}
	}()
}

func writeProfiles(prefix string) error {
	runtime.GC()
	for _, name := range []string{"heap", "goroutine"} {
		f, err := os.Create(prefix + name + ".pb.gz")
		if err != nil {
			return err
		}
		err = pprof.Lookup(name).WriteTo(f, 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return writeRuntimeMetrics(prefix + "metrics.txt")
}

// writeRuntimeMetrics writes every scalar runtime/metrics value, one
// "name value" line each.
func writeRuntimeMetrics(path string) error {
	descs := metrics.All()
	samples := make([]metrics.Sample, len(descs))
	for i, d := range descs {
		samples[i].Name = d.Name
	}
	metrics.Read(samples)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	for _, s := range samples {
		switch s.Value.Kind() {
		case metrics.KindUint64:
			fmt.Fprintf(f, "%s %d\n", s.Name, s.Value.Uint64())
		case metrics.KindFloat64:
			fmt.Fprintf(f, "%s %g\n", s.Name, s.Value.Float64())
		}
	}
	return f.Close()
}
