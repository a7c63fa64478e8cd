package kubenode

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// LogLine is one line a container wrote, as `kubectl logs` shows it.
type LogLine struct {
	// Time is when the runtime read the line (of its first part, for a line
	// written in parts).
	Time time.Time
	// Stream is "stdout" or "stderr".
	Stream string
	// Text is the line without its newline.
	Text string
}

// ParseCRILog parses a container log file in the format the CRI runtime
// writes and the kubelet serves to `kubectl logs`
// (https://github.com/kubernetes/design-proposals-archive/blob/main/node/kubelet-cri-logging.md):
//
//	2026-11-30T05:01:38.294773123Z stdout F a whole line
//	2026-11-30T05:01:38.294801000Z stderr P the first part of a long line
//	2026-11-30T05:01:38.294802000Z stderr F and its end
//
// Tags are ":"-separated, "P" marks a partial line that the next line of
// the same stream continues, "F" a full one. A final partial line (the
// container is still writing it) is returned as it is. Any other shape is an
// error naming the line.
func ParseCRILog(data []byte) ([]LogLine, error) {
	var (
		out     []LogLine
		pending = map[string]int{} // stream -> index in out of its open partial line
	)
	for n, raw := range bytes.Split(data, []byte("\n")) {
		if len(raw) == 0 {
			continue
		}
		l, partial, err := parseCRILine(string(raw))
		if err != nil {
			return nil, fmt.Errorf("container log line %d: %w", n+1, err)
		}
		if i, ok := pending[l.Stream]; ok {
			out[i].Text += l.Text
			if !partial {
				delete(pending, l.Stream)
			}
			continue
		}
		out = append(out, l)
		if partial {
			pending[l.Stream] = len(out) - 1
		}
	}
	return out, nil
}

// parseCRILine parses one line: time, stream, tags, then the text (which
// may be empty and may hold spaces).
func parseCRILine(s string) (_ LogLine, partial bool, _ error) {
	ts, rest, ok := strings.Cut(s, " ")
	if !ok {
		return LogLine{}, false, errors.New("no stream after the time")
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return LogLine{}, false, fmt.Errorf("time %q: %w", ts, err)
	}
	stream, rest, ok := strings.Cut(rest, " ")
	if !ok {
		return LogLine{}, false, errors.New("no tags after the stream")
	}
	if stream != "stdout" && stream != "stderr" {
		return LogLine{}, false, fmt.Errorf("stream %q is neither stdout nor stderr", stream)
	}
	tags, text, _ := strings.Cut(rest, " ")
	full := false
	for tag := range strings.SplitSeq(tags, ":") {
		switch tag {
		case "P":
			partial = true
		case "F":
			full = true
		default:
			return LogLine{}, false, fmt.Errorf("unknown tag %q", tag)
		}
	}
	if partial == full {
		return LogLine{}, false, fmt.Errorf("tags %q: want exactly one of P and F", tags)
	}
	return LogLine{Time: t, Stream: stream, Text: text}, partial, nil
}

// Texts returns the lines' texts.
func Texts(lines []LogLine) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l.Text
	}
	return out
}

// ContainerLog returns what one container of a pod wrote, across its
// restarts (oldest first), from the kubelet's podLogsDir: exactly what
// `kubectl logs` (with --previous for older runs) would show. uid may be
// empty when only one pod of that name has logs on the node.
func (n *Node) ContainerLog(namespace, pod, uid, container string) ([]LogLine, error) {
	dir, err := n.podLogDir(namespace, pod, uid)
	if err != nil {
		return nil, err
	}
	files, err := filepath.Glob(filepath.Join(dir, container, "*.log"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no log of container %s in %s", container, dir)
	}
	// <restart count>.log, in restart order.
	restart := func(f string) int {
		i, err := strconv.Atoi(strings.TrimSuffix(filepath.Base(f), ".log"))
		if err != nil {
			return -1
		}
		return i
	}
	slices.SortFunc(files, func(a, b string) int { return restart(a) - restart(b) })
	var out []LogLine
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		lines, err := ParseCRILog(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out = append(out, lines...)
	}
	return out, nil
}

// podLogDir finds <podLogsDir>/<namespace>_<pod>_<uid>. Names and uids
// hold no "_", so the match is unambiguous.
func (n *Node) podLogDir(namespace, pod, uid string) (string, error) {
	if uid != "" {
		return filepath.Join(n.l.PodLogsDir, namespace+"_"+pod+"_"+uid), nil
	}
	dirs, err := filepath.Glob(filepath.Join(n.l.PodLogsDir, namespace+"_"+pod+"_*"))
	if err != nil {
		return "", err
	}
	if len(dirs) != 1 {
		return "", fmt.Errorf("want the logs of one pod %s/%s on node %s, found %d", namespace, pod, n.Name, len(dirs))
	}
	return dirs[0], nil
}
