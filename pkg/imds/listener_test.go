package imds

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestServeCapsConnections holds every connection slot and checks that a
// further client is served only once a slot is free.
func TestServeCapsConnections(t *testing.T) {
	t.Parallel()
	cfg := testConfig("")
	cfg.MaxConnections = 2
	s, _ := newTestServer(t, cfg, &fakeSource{})
	addr := serveLoopback(t, s)
	readyz := []string{"GET /readyz HTTP/1.1", "Host: 169.254.169.254"}

	// Two keep-alive connections, each answered once and then idle.
	held := []*rawConn{dialRaw(t, addr), dialRaw(t, addr)}
	for _, c := range held {
		c.send(readyz, "")
		if got := c.reply("GET", replyWait); got.status != 200 {
			t.Fatalf("readyz = %d", got.status)
		}
	}
	third := dialRaw(t, addr)
	third.send(readyz, "")
	// Nothing may answer while both slots are taken. A slow machine can
	// only make this pass, never fail wrongly.
	_ = third.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if b, err := third.br.Peek(1); err == nil {
		t.Fatalf("a third connection was served beyond the cap of 2: %q", b)
	}
	held[0].Close()
	if got := third.reply("GET", 5*time.Second); got.status != 200 || got.body != "ok\n" {
		t.Fatalf("third connection after a slot was freed = %d %q", got.status, got.body)
	}
}

func TestLimitListener(t *testing.T) {
	t.Parallel()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := newLimitListener(inner, 1)
	defer ln.Close()

	client, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	// CloseWrite reaches TCP: the client reads EOF while the connection
	// stays open for reading.
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		t.Fatal("accepted connection has no CloseWrite")
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := client.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("client read after CloseWrite = %d, %v; want EOF", n, err)
	}
	if _, err := io.WriteString(client, "still open"); err != nil {
		t.Fatalf("client write after CloseWrite: %v", err)
	}

	// With the one slot taken, Accept waits; closing the connection twice
	// frees the slot once.
	type result struct {
		c   net.Conn
		err error
	}
	accept := func() <-chan result {
		r := make(chan result, 1)
		go func() { c, err := ln.Accept(); r <- result{c, err} }()
		return r
	}
	second, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	pending := accept()
	select {
	case r := <-pending:
		t.Fatalf("Accept returned (%v) while the slot was taken", r.err)
	case <-time.After(200 * time.Millisecond):
	}
	c.Close()
	c.Close()
	r := wait(t, pending)
	if r.err != nil {
		t.Fatalf("Accept after the slot was freed: %v", r.err)
	}
	r.c.Close()
	r.c.Close()
	if got := len(ln.slots); got != 0 {
		t.Fatalf("%d slots taken after every connection closed; want 0", got)
	}

	// Close ends an Accept that waits for a slot.
	ln.slots <- struct{}{} // take the only slot
	pending = accept()
	ln.Close()
	if r := wait(t, pending); !errors.Is(r.err, net.ErrClosed) {
		t.Fatalf("Accept after Close = %v; want net.ErrClosed", r.err)
	}
}

func wait[T any](t *testing.T, c <-chan T) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not return")
		var zero T
		return zero
	}
}

// TestHeaderCap checks the header cap on the wire: a request head within
// it is served, a larger one is refused by net/http with 431.
func TestHeaderCap(t *testing.T) {
	t.Parallel()
	s, _ := newTestServer(t, testConfig(""), &fakeSource{})
	addr := serveLoopback(t, s)
	for _, tt := range []struct {
		size   int
		status int
	}{{12 << 10, 200}, {24 << 10, 431}} {
		c := dialRaw(t, addr)
		c.send([]string{"GET /readyz HTTP/1.1", "Host: 169.254.169.254", "X-Big: " + strings.Repeat("a", tt.size)}, "")
		if got := c.reply("GET", replyWait); got.status != tt.status {
			t.Errorf("%d-byte header: status %d; want %d", tt.size, got.status, tt.status)
		}
	}
}
