package imds

import (
	"net"
	"sync"
)

// limitListener accepts a connection only while fewer than its capacity of
// the connections it accepted are open. At capacity Accept waits for one
// of them to close, and new connections wait in the kernel's accept queue,
// which costs the process nothing. Each served connection costs a
// goroutine, a file descriptor and, while its request head is read, up to
// the header cap in memory; the capacity bounds all three however many
// connections clients open (docs/security.md).
//
// It is golang.org/x/net/netutil.LimitListener plus CloseWrite on its
// connections, which net/http uses to end a connection cleanly after a
// reply when unread request bytes remain.
type limitListener struct {
	net.Listener
	slots     chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
}

// newLimitListener returns ln limited to n open connections.
func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, n), closed: make(chan struct{})}
}

// Accept waits for a free slot, then for a connection.
func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitConn{Conn: c, release: l.release}, nil
}

func (l *limitListener) release() { <-l.slots }

// Close closes the listener and ends an Accept waiting for a slot.
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// limitConn gives its slot back when it is closed the first time.
type limitConn struct {
	net.Conn
	releaseOnce sync.Once
	release     func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.releaseOnce.Do(c.release)
	return err
}

// CloseWrite shuts down the writing side when the connection supports it
// (TCP does).
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
