package kubenode

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func ts(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestParseCRILog(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []LogLine
		err      string
	}{
		{name: "empty", in: "", want: nil},
		{
			name: "full lines, both streams, spaces and an empty line kept",
			in: "2026-11-30T05:01:38.294773123Z stdout F hello  world \n" +
				"2026-11-30T05:01:38.3Z stderr F {\"level\":\"ERROR\",\"msg\":\"x y\"}\n" +
				"2026-11-30T05:01:39Z stdout F \n",
			want: []LogLine{
				{ts("2026-11-30T05:01:38.294773123Z"), "stdout", "hello  world "},
				{ts("2026-11-30T05:01:38.3Z"), "stderr", `{"level":"ERROR","msg":"x y"}`},
				{ts("2026-11-30T05:01:39Z"), "stdout", ""},
			},
		},
		{
			name: "partial lines joined per stream, time of the first part",
			in: "2026-11-30T05:00:00Z stdout P abc\n" +
				"2026-11-30T05:00:01Z stderr F interleaved\n" +
				"2026-11-30T05:00:02Z stdout P def\n" +
				"2026-11-30T05:00:03Z stdout F ghi\n" +
				"2026-11-30T05:00:04Z stdout F next",
			want: []LogLine{
				{ts("2026-11-30T05:00:00Z"), "stdout", "abcdefghi"},
				{ts("2026-11-30T05:00:01Z"), "stderr", "interleaved"},
				{ts("2026-11-30T05:00:04Z"), "stdout", "next"},
			},
		},
		{
			name: "trailing partial line returned as written so far",
			in:   "2026-11-30T05:00:00Z stdout P still writ",
			want: []LogLine{{ts("2026-11-30T05:00:00Z"), "stdout", "still writ"}},
		},
		{name: "no stream", in: "2026-11-30T05:00:00Z\n", err: "line 1: no stream after the time"},
		{name: "no tags", in: "2026-11-30T05:00:00Z stdout\n", err: "line 1: no tags after the stream"},
		{name: "bad time", in: "yesterday stdout F x\n", err: `line 1: time "yesterday"`},
		{name: "bad stream", in: "2026-11-30T05:00:00Z stdin F x\n", err: `stream "stdin" is neither stdout nor stderr`},
		{name: "unknown tag", in: "2026-11-30T05:00:00Z stdout X x\n", err: `unknown tag "X"`},
		{name: "both tags", in: "2026-11-30T05:00:00Z stdout P:F x\n", err: `want exactly one of P and F`},
		{name: "empty tags", in: "2026-11-30T05:00:00Z stdout  x\n", err: `unknown tag ""`},
		{name: "error names the line", in: "2026-11-30T05:00:00Z stdout F ok\nbroken\n", err: "container log line 2:"},
		{name: "NUL and invalid UTF-8 pass through", in: "2026-11-30T05:00:00Z stdout F a\x00\xff\n", want: []LogLine{{ts("2026-11-30T05:00:00Z"), "stdout", "a\x00\xff"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCRILog([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

// FuzzParseCRILog: any input parses or fails cleanly; what parses holds
// only known streams and never more lines than the input.
func FuzzParseCRILog(f *testing.F) {
	f.Add([]byte("2026-11-30T05:01:38.294773123Z stdout F hello\n"))
	f.Add([]byte("2026-11-30T05:00:00Z stdout P a\n2026-11-30T05:00:01Z stdout F b\n"))
	f.Add([]byte("2026-11-30T05:00:00Z stderr P:P x"))
	f.Add([]byte("\n\n \n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		lines, err := ParseCRILog(in)
		if err != nil {
			return
		}
		if len(lines) > strings.Count(string(in), "\n")+1 {
			t.Fatalf("%d lines from %d input lines", len(lines), strings.Count(string(in), "\n")+1)
		}
		for _, l := range lines {
			if l.Stream != "stdout" && l.Stream != "stderr" {
				t.Fatalf("stream %q", l.Stream)
			}
		}
	})
}

// TestContainerLog reads a pod's log directory as the kubelet lays it out:
// restarts in numeric order (10 after 9), other pods ignored.
func TestContainerLog(t *testing.T) {
	dir := t.TempDir()
	n := &Node{Name: "n", l: newLayout(dir)}
	podDir := filepath.Join(n.l.PodLogsDir, "default_web_0c8f5a4e-1111-2222-3333-444455556666", "app")
	other := filepath.Join(n.l.PodLogsDir, "default_webx_0c8f5a4e-aaaa-2222-3333-444455556666", "app")
	for _, d := range []string{podDir, other} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(path, data string) {
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, run := range []string{"0", "9", "10"} {
		write(filepath.Join(podDir, run+".log"), "2026-11-30T05:00:0"+string(rune('0'+i))+"Z stdout F run "+run+"\n")
	}
	write(filepath.Join(other, "0.log"), "2026-11-30T05:00:00Z stdout F other pod\n")

	lines, err := n.ContainerLog("default", "web", "", "app")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := Texts(lines), []string{"run 0", "run 9", "run 10"}; !reflect.DeepEqual(got, want) {
		t.Errorf("lines %q, want %q", got, want)
	}
	if _, err := n.ContainerLog("default", "web", "", "sidecar"); err == nil || !strings.Contains(err.Error(), "no log of container sidecar") {
		t.Errorf("missing container: err = %v", err)
	}
	if _, err := n.ContainerLog("default", "nope", "", "app"); err == nil || !strings.Contains(err.Error(), "found 0") {
		t.Errorf("missing pod: err = %v", err)
	}
	write(filepath.Join(podDir, "0.log"), "garbage\n")
	if _, err := n.ContainerLog("default", "web", "0c8f5a4e-1111-2222-3333-444455556666", "app"); err == nil || !strings.Contains(err.Error(), "0.log: container log line 1") {
		t.Errorf("bad file: err = %v", err)
	}
}
