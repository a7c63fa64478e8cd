// Package logging builds the JSON logger both binaries use and names its
// levels in the vocabulary of the azure-workload-identity webhook, which
// passes --log-level to the sidecar: "" (warnings and errors), info, debug,
// trace and all. logr's V(n) is slog level -n, so debug shows V(1) lines
// (one per request), trace V(2), and all everything.
//
// logr has no warning level of its own; Warn logs one through logr's slog
// bridge, so the webhook's default level still shows it.
package logging

import (
	"io"
	"log/slog"
	"strings"

	"github.com/go-logr/logr"
)

// Levels below info, as logr's V(n) maps onto slog.
const (
	LevelDebug = slog.Level(-1)
	LevelTrace = slog.Level(-2)
	LevelAll   = slog.Level(-127)
)

// ParseLevel maps a --log-level value to a handler level: "" shows
// warnings and errors only, then info, debug (V(1)), trace (V(2)) and all.
// Case and surrounding blanks are ignored. Any other value yields info and
// known=false, and the caller warns: the webhook and the images are
// upgraded separately, so an unknown level must never stop a container.
func ParseLevel(s string) (level slog.Level, known bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "":
		return slog.LevelWarn, true
	case "info":
		return slog.LevelInfo, true
	case "debug":
		return LevelDebug, true
	case "trace":
		return LevelTrace, true
	case "all":
		return LevelAll, true
	default:
		return slog.LevelInfo, false
	}
}

// New returns a logger writing JSON lines to w at the level level holds
// (a *slog.LevelVar lets the caller set it after parsing its flags). The
// "level" field carries the names above instead of slog's "DEBUG+3".
func New(w io.Writer, level slog.Leveler) logr.Logger {
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.LevelKey {
				if l, ok := a.Value.Any().(slog.Level); ok {
					a.Value = slog.StringValue(levelName(l))
				}
			}
			return a
		},
	})
	return logr.FromSlogHandler(h)
}

// levelName names a level in the webhook's vocabulary.
func levelName(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "error"
	case l >= slog.LevelWarn:
		return "warning"
	case l >= slog.LevelInfo:
		return "info"
	case l >= LevelDebug:
		return "debug"
	default:
		return "trace"
	}
}

// Warn logs msg at warning level through l.
func Warn(l logr.Logger, msg string, kv ...any) {
	slog.New(logr.ToSlogHandler(l)).Warn(msg, kv...)
}
