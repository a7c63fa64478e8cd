package app

import (
	"io"
	"log/slog"
	"strings"

	"github.com/go-logr/logr"
)

// Log levels of the JSON handler. logr's V(n) becomes slog level -n, so
// debug shows V(1) (per-request lines) and trace V(2).
const (
	levelDebug = slog.Level(-1)
	levelTrace = slog.Level(-2)
	levelAll   = slog.Level(-127)
)

// ParseLogLevel maps a --log-level value of the workload-identity webhook
// to a handler level: "" shows warnings and errors only, "info", "debug"
// (V(1): one line per request), "trace" (V(2)) and "all". Case and
// surrounding blanks are ignored. Any other value yields info and
// known=false: the webhook and the image are upgraded separately, so an
// unknown level must warn, never stop the sidecar (SPEC §2).
func ParseLogLevel(s string) (level slog.Level, known bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "":
		return slog.LevelWarn, true
	case "info":
		return slog.LevelInfo, true
	case "debug":
		return levelDebug, true
	case "trace":
		return levelTrace, true
	case "all":
		return levelAll, true
	default:
		return slog.LevelInfo, false
	}
}

// NewLogger returns the process logger: JSON lines on w at the level held
// by level, which the command sets from --log-level.
func NewLogger(w io.Writer, level *slog.LevelVar) logr.Logger {
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

// levelName names a level in the webhook's vocabulary instead of slog's
// "DEBUG+3".
func levelName(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "error"
	case l >= slog.LevelWarn:
		return "warning"
	case l >= slog.LevelInfo:
		return "info"
	case l >= levelDebug:
		return "debug"
	default:
		return "trace"
	}
}

// warn logs at warning level, which the webhook's default level ("") still
// shows; logr has no warning level of its own, its slog bridge carries it.
func warn(l logr.Logger, msg string, kv ...any) {
	slog.New(logr.ToSlogHandler(l)).Warn(msg, kv...)
}
