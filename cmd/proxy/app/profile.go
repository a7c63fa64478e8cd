//go:build !imdsproxy_debug

package app

import (
	"context"

	"github.com/go-logr/logr"
)

// startDebugProfiler does nothing in the shipped build; see
// profile_debug.go (build tag imdsproxy_debug).
func startDebugProfiler(context.Context, logr.Logger) {}
