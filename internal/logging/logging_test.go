package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"testing"

	"github.com/go-logr/logr"
)

func TestParseLevel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in    string
		level slog.Level
		known bool
	}{
		{"", slog.LevelWarn, true},
		{"info", slog.LevelInfo, true},
		{"debug", -1, true},
		{"trace", -2, true},
		{"all", -127, true},
		{"INFO", slog.LevelInfo, true},
		{" debug\n", -1, true},
		{"warn", slog.LevelInfo, false},
		{"verbose", slog.LevelInfo, false},
		{"5", slog.LevelInfo, false},
		{"info,debug", slog.LevelInfo, false},
		{"\x00", slog.LevelInfo, false},
		{strings.Repeat("a", 10000), slog.LevelInfo, false},
	}
	for _, tt := range tests {
		level, known := ParseLevel(tt.in)
		if level != tt.level || known != tt.known {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v, %v", tt.in, level, known, tt.level, tt.known)
		}
	}
}

func FuzzParseLevel(f *testing.F) {
	for _, s := range []string{"", "info", "debug", "trace", "all", "bogus"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		level, known := ParseLevel(s)
		if !known && level != slog.LevelInfo {
			t.Fatalf("unknown level %q maps to %v, not info", s, level)
		}
		switch level {
		case slog.LevelWarn, slog.LevelInfo, LevelDebug, LevelTrace, LevelAll:
		default:
			t.Fatalf("ParseLevel(%q) = %v", s, level)
		}
	})
}

// TestNewLevels checks which lines each webhook level lets through.
func TestNewLevels(t *testing.T) {
	t.Parallel()
	tests := []struct {
		level string
		want  []string
	}{
		{"", []string{"warning:w", "error:e"}},
		{"info", []string{"info:i", "warning:w", "error:e"}},
		{"debug", []string{"info:i", "debug:v1", "warning:w", "error:e"}},
		{"trace", []string{"info:i", "debug:v1", "trace:v2", "warning:w", "error:e"}},
		{"all", []string{"info:i", "debug:v1", "trace:v2", "trace:v9", "warning:w", "error:e"}},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		lv := new(slog.LevelVar)
		l, _ := ParseLevel(tt.level)
		lv.Set(l)
		log := New(&buf, lv)
		log.Info("i")
		log.V(1).Info("v1")
		log.V(2).Info("v2")
		log.V(9).Info("v9")
		Warn(log, "w")
		log.Error(errors.New("boom"), "e")
		var got []string
		for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("not JSON: %q", line)
			}
			got = append(got, m["level"].(string)+":"+m["msg"].(string))
		}
		if strings.Join(got, " ") != strings.Join(tt.want, " ") {
			t.Errorf("level %q: lines %v; want %v", tt.level, got, tt.want)
		}
	}
}

// TestNameAndValuesOnEveryLevel checks that a logger's name and values
// appear on info, warning (through logr's slog bridge) and error lines
// alike, and that the source position is the caller's.
func TestNameAndValuesOnEveryLevel(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := New(&buf, LevelDebug).WithName("proxy-init").WithName("apply").WithValues("backend", "nft")
	log.Info("i")
	log.V(1).Info("d", "n", 1)
	Warn(log, "w", "n", 2)
	log.Error(errors.New("boom"), "e")
	want := []string{
		`{"level":"info","msg":"i","backend":"nft","logger":"proxy-init/apply"}`,
		`{"level":"debug","msg":"d","backend":"nft","n":1,"logger":"proxy-init/apply"}`,
		`{"level":"warning","msg":"w","backend":"nft","n":2,"logger":"proxy-init/apply"}`,
		`{"level":"error","msg":"e","backend":"nft","err":"boom","logger":"proxy-init/apply"}`,
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i, line := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %d not JSON: %q", i, line)
		}
		delete(m, "time")
		got, _ := json.Marshal(m)
		var wm map[string]any
		_ = json.Unmarshal([]byte(want[i]), &wm)
		w, _ := json.Marshal(wm)
		if string(got) != string(w) {
			t.Errorf("line %d = %s; want %s", i, got, w)
		}
	}
}

// TestSourceIsTheCaller checks the program counter each record carries:
// the line that called Info, Error or Warn, not a line of this package.
func TestSourceIsTheCaller(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	h := slog.NewJSONHandler(&buf, &slog.HandlerOptions{AddSource: true, Level: LevelDebug})
	log := logr.New(&sink{handler: h}).WithName("n")
	_, _, line, _ := runtime.Caller(0)
	log.Info("i")                      // line+1
	log.Error(errors.New("boom"), "e") // line+2
	Warn(log, "w")                     // line+3
	for i, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m struct {
			Source struct {
				File string `json:"file"`
				Line int    `json:"line"`
			} `json:"source"`
		}
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(m.Source.File, "logging_test.go") || m.Source.Line != line+1+i {
			t.Errorf("record %d: source %s:%d; want logging_test.go:%d", i, m.Source.File, m.Source.Line, line+1+i)
		}
	}
}

// TestSlogHandlerKeepsWarnings: the standard library's loggers, bridged
// with SlogHandler at warning level, still write at the webhook's default
// level (""), with the logger's name; info records through the bridge are
// dropped there, and a V(1) logger lowers every record by one level.
func TestSlogHandlerKeepsWarnings(t *testing.T) {
	t.Parallel()
	level, _ := ParseLevel("")
	var buf bytes.Buffer
	log := New(&buf, level).WithName("imds")
	slog.NewLogLogger(SlogHandler(log), slog.LevelWarn).Print("http: panic serving 127.0.0.1:1: boom")
	slog.New(SlogHandler(log)).Info("not at this level")
	slog.New(SlogHandler(log.V(1))).Warn("a V(1) warning is info, not shown at this level")
	slog.New(SlogHandler(log.WithValues("k", "v"))).With("a", 1).Error("e", "b", 2)
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		delete(m, "time")
		b, _ := json.Marshal(m)
		got = append(got, string(b))
	}
	want := []string{
		`{"level":"warning","logger":"imds","msg":"http: panic serving 127.0.0.1:1: boom"}`,
		`{"a":1,"b":2,"k":"v","level":"error","logger":"imds","msg":"e"}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
