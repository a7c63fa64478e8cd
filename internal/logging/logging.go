// Package logging builds the JSON logger both binaries use and names its
// levels in the vocabulary of the azure-workload-identity webhook, which
// passes --log-level to the sidecar: "" (warnings and errors), info, debug,
// trace and all. logr's V(n) is slog level -n, so debug shows V(1) lines
// (one per request), trace V(2), and all everything.
//
// logr has no warning level of its own; Warn logs one, so the webhook's
// default level still shows it.
package logging

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"time"

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
// "level" field carries the names above instead of slog's "DEBUG+3", and
// names given with WithName appear as "logger", on warnings too.
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
	return logr.New(&sink{handler: h})
}

// sink is a logr.LogSink over a slog.Handler, like the one
// logr.FromSlogHandler builds, except that the logger's name travels with
// every record, also those written by Warn or arriving through
// logr.ToSlogHandler (logr's own sink hands its bare handler out there, and
// the name is lost).
type sink struct {
	handler   slog.Handler
	name      string
	callDepth int
}

var (
	_ logr.LogSink          = (*sink)(nil)
	_ logr.SlogSink         = (*sink)(nil)
	_ logr.CallDepthLogSink = (*sink)(nil)
)

func (s *sink) Init(info logr.RuntimeInfo) { s.callDepth = info.CallDepth }

func (s *sink) Enabled(level int) bool {
	return s.handler.Enabled(context.Background(), slog.Level(-level))
}

func (s *sink) Info(level int, msg string, kv ...any) {
	s.emit(slog.Level(-level), msg, nil, kv, s.callDepth)
}

func (s *sink) Error(err error, msg string, kv ...any) {
	s.emit(slog.LevelError, msg, err, kv, s.callDepth)
}

// emit writes one record: the logger's name first, then the error, then
// kv, as logr's own sink orders them. skip counts the frames between the
// caller to report and emit's caller.
func (s *sink) emit(level slog.Level, msg string, err error, kv []any, skip int) {
	var pcs [1]uintptr
	runtime.Callers(skip+3, pcs[:]) // runtime.Callers, emit, and emit's caller
	r := slog.NewRecord(time.Now(), level, msg, pcs[0])
	if s.name != "" {
		r.AddAttrs(slog.String("logger", s.name))
	}
	if err != nil {
		r.AddAttrs(slog.Any("err", err))
	}
	r.Add(kv...)
	_ = s.handler.Handle(context.Background(), r)
}

// Handle serves records arriving through logr.ToSlogHandler: it puts the
// logger's name first, as emit does, and passes them on.
func (s *sink) Handle(ctx context.Context, r slog.Record) error {
	if s.name == "" {
		return s.handler.Handle(ctx, r)
	}
	named := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	named.AddAttrs(slog.String("logger", s.name))
	r.Attrs(func(a slog.Attr) bool { named.AddAttrs(a); return true })
	return s.handler.Handle(ctx, named)
}

func (s *sink) WithName(name string) logr.LogSink {
	c := *s
	if c.name != "" {
		c.name += "/"
	}
	c.name += name
	return &c
}

func (s *sink) WithValues(kv ...any) logr.LogSink {
	r := slog.NewRecord(time.Time{}, 0, "", 0)
	r.Add(kv...)
	attrs := make([]slog.Attr, 0, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool { attrs = append(attrs, a); return true })
	return s.WithAttrs(attrs)
}

func (s *sink) WithAttrs(attrs []slog.Attr) logr.SlogSink {
	c := *s
	c.handler = s.handler.WithAttrs(attrs)
	return &c
}

func (s *sink) WithGroup(name string) logr.SlogSink {
	c := *s
	c.handler = s.handler.WithGroup(name)
	return &c
}

func (s *sink) WithCallDepth(depth int) logr.LogSink {
	c := *s
	c.callDepth += depth
	return &c
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

// Warn logs msg at warning level through l. For loggers built by New it
// writes the record itself (logr has no warning level, and its slog bridge
// maps every level between info and error to V(0)); any other logger gets
// it through logr's slog bridge.
func Warn(l logr.Logger, msg string, kv ...any) {
	s, ok := l.GetSink().(*sink)
	if !ok {
		slog.New(logr.ToSlogHandler(l)).Warn(msg, kv...)
		return
	}
	if s.handler.Enabled(context.Background(), slog.LevelWarn) {
		s.emit(slog.LevelWarn, msg, nil, kv, 0)
	}
}

// SlogHandler returns l as a slog.Handler, for the standard library's
// loggers (http.Server.ErrorLog, httputil.ReverseProxy.ErrorLog). For a
// logger built by New it keeps slog's levels: logr.ToSlogHandler judges
// every record between info and error as V(0), so at the webhook's default
// level ("", warnings and errors) it would drop the warnings these loggers
// write. Any other logger gets logr.ToSlogHandler.
func SlogHandler(l logr.Logger) slog.Handler {
	if s, ok := l.GetSink().(*sink); ok {
		return sinkHandler{s: s, bias: slog.Level(l.GetV())}
	}
	return logr.ToSlogHandler(l)
}

// sinkHandler is a sink seen as a slog.Handler; bias is the logger's V
// level, which lowers every record's level as V(n) does.
type sinkHandler struct {
	s    *sink
	bias slog.Level
}

func (h sinkHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.s.handler.Enabled(ctx, level-h.bias)
}

func (h sinkHandler) Handle(ctx context.Context, r slog.Record) error {
	r.Level -= h.bias
	return h.s.Handle(ctx, r)
}

func (h sinkHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return sinkHandler{s: h.s.WithAttrs(attrs).(*sink), bias: h.bias}
}

func (h sinkHandler) WithGroup(name string) slog.Handler {
	return sinkHandler{s: h.s.WithGroup(name).(*sink), bias: h.bias}
}
