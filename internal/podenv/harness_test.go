package podenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestNewNetnsAndSpawn: a harness namespace has loopback up and the shared
// hosts file (APIServerHost on 127.0.0.1); a process spawned in it is
// reached through NetnsDialer; DeleteNetns kills it and leaves nothing.
func TestNewNetnsAndSpawn(t *testing.T) {
	skipUnlessRoot(t)
	ctx := context.Background()
	ns, err := NewNetns(ctx, "harness")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = DeleteNetns(ns) })
	if want := netnsPrefix + strconv.Itoa(os.Getpid()) + "-"; !strings.HasPrefix(ns, want) || !strings.HasSuffix(ns, "-harness") {
		t.Errorf("name %q, want %s<n>-harness", ns, want)
	}
	out, err := exec.Command("ip", NetnsExec(ns, -1, "getent", "hosts", APIServerHost)[1:]...).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "127.0.0.1 ") {
		t.Errorf("getent hosts %s = %q, %v; want 127.0.0.1", APIServerHost, out, err)
	}

	log := filepath.Join(t.TempDir(), "listener.log")
	// A listener inside the namespace only: the host's loopback never sees it.
	p, err := Spawn(NetnsExec(ns, -1, "python3", "-c", `
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 2379)); s.listen(1)
c, _ = s.accept(); c.sendall(b"hello from the namespace"); c.close()
import time; time.sleep(60)`), []string{"PATH=" + safePath}, log)
	if err != nil {
		t.Fatal(err)
	}
	dial := NetnsDialer(ns)
	var got string
	err = p.WaitReady(ctx, func() bool {
		c, err := dial(ctx, "tcp", "127.0.0.1:2379")
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 64)
		n, _ := c.Read(b)
		got = string(b[:n])
		return true
	}, "listener", log)
	if err != nil {
		t.Fatal(err)
	}
	if got != "hello from the namespace" {
		t.Errorf("read %q from inside the namespace", got)
	}
	if p.Exited() {
		t.Fatalf("listener exited early: %v", p.Err())
	}

	if err := DeleteNetns(ns); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !p.Exited() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !p.Exited() {
		t.Error("DeleteNetns left the spawned process running")
	}
	for _, path := range []string{filepath.Join(netnsDir, ns), filepath.Join(netnsEtc, ns)} {
		if exists(path) {
			t.Errorf("%s left behind", path)
		}
	}
}

// closerFunc adapts a function to io.Closer.
type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// TestRegister: CloseAll closes a registered harness once per call while
// it is registered, and not after it unregisters. (No test of this package
// runs in parallel, so CloseAll closes nothing else.)
func TestRegister(t *testing.T) {
	var closed int
	c := closerFunc(func() error { closed++; return nil })
	unregister := Register(&c)
	if err := CloseAll(); err != nil {
		t.Fatal(err)
	}
	unregister()
	if err := CloseAll(); err != nil {
		t.Fatal(err)
	}
	if closed != 1 {
		t.Errorf("registered harness closed %d times, want 1", closed)
	}
}
