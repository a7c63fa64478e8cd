package loadgen

import (
	"slices"
	"time"
)

// StartupRun is one start of the proxy, timed from just before exec. It is
// part of the JSON that imds-loadgen's startup subcommand prints and the
// imds-bench driver reads.
type StartupRun struct {
	Ready      time.Duration `json:"ready_ns"`       // first 200 from /readyz
	FirstToken time.Duration `json:"first_token_ns"` // first 200 from the token endpoint
	Polls      int           `json:"polls"`          // /readyz attempts until ready
	Error      string        `json:"error,omitempty"`
}

// StartupResult is the JSON answer of imds-loadgen's startup subcommand.
type StartupResult struct {
	Runs       []StartupRun `json:"runs"`
	Ready      StartupStats `json:"ready"`
	FirstToken StartupStats `json:"first_token"`
}

// StartupStats summarises the successful runs.
type StartupStats struct {
	N      int           `json:"n"`
	Min    time.Duration `json:"min_ns"`
	Median time.Duration `json:"median_ns"`
	Max    time.Duration `json:"max_ns"`
}

// SummarizeStartup returns the minimum, median and maximum of ds, sorting ds
// in place.
func SummarizeStartup(ds []time.Duration) StartupStats {
	if len(ds) == 0 {
		return StartupStats{}
	}
	slices.Sort(ds)
	return StartupStats{N: len(ds), Min: ds[0], Median: ds[(len(ds)-1)/2], Max: ds[len(ds)-1]}
}
