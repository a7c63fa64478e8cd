package podenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func skipUnlessRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (network namespaces); CI runs as root")
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// TestTopology builds the namespace pair with the fake IMDS and checks what
// the pod reaches without any iptables rule: the fake IMDS across the veth,
// the emulator's names through the pod's own hosts file. Then it tears
// down and checks nothing is left.
func TestTopology(t *testing.T) {
	skipUnlessRoot(t)
	ctx := context.Background()
	pod, node := netnsPair()
	if err := createTopology(ctx, pod, node); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = deleteNetns(pod); _ = deleteNetns(node) })
	imds, err := startFakeIMDS(node)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = imds.close() })

	curl := func(uid int, args ...string) string {
		t.Helper()
		argv := netnsExec(pod, uid, append([]string{"curl", "-sS", "--max-time", "10"}, args...)...)
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", argv, err, out)
		}
		return string(out)
	}
	if got := curl(1000, "-H", "Metadata: true", "http://169.254.169.254/metadata/instance?api-version=2021-02-01"); got != InstanceMetadataBody {
		t.Errorf("instance metadata from the pod = %q, want %q", got, InstanceMetadataBody)
	}
	if got := curl(1000, "http://169.254.169.254/metadata/instance"); got != fakeIMDSMissingMetadata {
		t.Errorf("without Metadata = %q, want %q", got, fakeIMDSMissingMetadata)
	}
	reqs := imds.requests()
	if len(reqs) != 2 || reqs[0].RequestURI != "/metadata/instance?api-version=2021-02-01" || !strings.HasPrefix(reqs[0].RemoteAddr, PodAddr+":") {
		t.Errorf("fake IMDS saw %+v, want 2 requests, the first for /metadata/instance?api-version=2021-02-01 from %s", reqs, PodAddr)
	}
	argv := netnsExec(pod, -1, "getent", "hosts", EntraHost)
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), NodeAddr+" ") {
		t.Errorf("getent hosts %s in the pod = %q, %v; want %s", EntraHost, out, err, NodeAddr)
	}

	if err := imds.close(); err != nil {
		t.Error(err)
	}
	if err := deleteNetns(pod); err != nil {
		t.Error(err)
	}
	if err := deleteNetns(node); err != nil {
		t.Error(err)
	}
	for _, p := range []string{filepath.Join(netnsDir, pod), filepath.Join(netnsEtc, pod), filepath.Join(netnsDir, node), filepath.Join(netnsEtc, node)} {
		if exists(p) {
			t.Errorf("%s left behind", p)
		}
	}
}

// TestCleanStale removes namespaces and directories of dead runs and keeps
// our own.
func TestCleanStale(t *testing.T) {
	skipUnlessRoot(t)
	ctx := context.Background()
	// 4194304 is above the kernel's pid_max limit, so no process has it.
	stale := netnsPrefix + "4194305-1-pod"
	mine, _ := netnsPair()
	for _, ns := range []string{stale, mine} {
		if err := os.MkdirAll(filepath.Join(netnsEtc, ns), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := run(ctx, "ip", "netns", "add", ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = deleteNetns(ns) })
	}
	staleDir := filepath.Join(os.TempDir(), netnsPrefix+"4194305-env-1")
	if err := os.MkdirAll(filepath.Join(staleDir, "token"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(staleDir) })
	mineDir, err := TempDir("env")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(mineDir) })
	if err := CleanStale(); err != nil {
		t.Fatal(err)
	}
	if exists(staleDir) {
		t.Errorf("stale directory %s not removed", staleDir)
	}
	if !exists(mineDir) {
		t.Errorf("directory %s of this process removed", mineDir)
	}
	if exists(filepath.Join(netnsDir, stale)) || exists(filepath.Join(netnsEtc, stale)) {
		t.Errorf("stale namespace %s not removed", stale)
	}
	if !exists(filepath.Join(netnsDir, mine)) || !exists(filepath.Join(netnsEtc, mine)) {
		t.Errorf("namespace %s of this process removed", mine)
	}
}

// TestStaleName: only our prefix with the pid of a process that is gone is
// stale; this process's names, live processes and foreign names are not.
func TestStaleName(t *testing.T) {
	done := exec.Command("true")
	if err := done.Run(); err != nil {
		t.Fatal(err)
	}
	gone := done.Process.Pid
	for _, tc := range []struct {
		name string
		want bool
	}{
		{netnsPrefix + strconv.Itoa(gone) + "-3-node", true},
		{netnsPrefix + strconv.Itoa(gone) + "-node-123456", true},
		{netnsPrefix + strconv.Itoa(os.Getpid()) + "-3-node", false},
		{netnsPrefix + "1-3-node", false}, // init is alive
		{netnsPrefix + "-3-node", false},
		{netnsPrefix + "abc-3-node", false},
		{"kubepods", false},
		{"imdsp", false},
		{"", false},
	} {
		if got := StaleName(tc.name); got != tc.want {
			t.Errorf("StaleName(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestInNetns: a socket made inside InNetns lives in that namespace (the
// host has no such listener), and with a filesystem UID the kernel records
// it as that UID's, the owner iptables' -m owner matches.
func TestInNetns(t *testing.T) {
	skipUnlessRoot(t)
	ns, err := NewNetns(context.Background(), "innetns")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = DeleteNetns(ns) })
	if err := run(context.Background(), "ip", "-n", ns, "link", "set", "lo", "up"); err != nil {
		t.Fatal(err)
	}
	for _, uid := range []int{-1, 1000} {
		var ln net.Listener
		var table string
		err := InNetns(ns, uid, func() error {
			var err error
			if ln, err = net.Listen("tcp4", "127.0.0.1:0"); err != nil {
				return err
			}
			b, err := os.ReadFile("/proc/thread-self/net/tcp")
			table = string(b)
			return err
		})
		if err != nil {
			t.Fatalf("uid %d: %v", uid, err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		wantUID := max(uid, 0)
		if owner, ok := tcpListenerUID(table, port); !ok || owner != wantUID {
			t.Errorf("uid %d: listener on port %d owned by %d (found %v) in the namespace's table:\n%s", uid, port, owner, ok, table)
		}
		host, err := os.ReadFile("/proc/thread-self/net/tcp")
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := tcpListenerUID(string(host), port); ok {
			t.Errorf("uid %d: the host namespace has the listener on port %d", uid, port)
		}
		ln.Close()
	}
}

// tcpListenerUID finds the listening socket on 127.0.0.1:port in a
// /proc/net/tcp table and returns its owner.
func tcpListenerUID(table string, port int) (int, bool) {
	local := fmt.Sprintf("0100007F:%04X", port)
	for _, line := range strings.Split(table, "\n")[1:] {
		f := strings.Fields(line)
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid ...
		if len(f) > 7 && f[1] == local && f[3] == "0A" {
			uid, err := strconv.Atoi(f[7])
			return uid, err == nil
		}
	}
	return 0, false
}
