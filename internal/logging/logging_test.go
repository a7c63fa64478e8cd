package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
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
