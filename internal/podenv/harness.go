package podenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Building blocks for harnesses that run more processes beside an Env, in
// its namespaces or in namespaces of their own (internal/kubeenv runs etcd
// and kube-apiserver with them). They share the Env's naming, so CleanStale
// removes a killed run's leftovers, and its shutdown: Shutdown (a signal
// handler) closes every registered harness and then every Env.

// Process is a child process started by Spawn; the harness stops it by pid.
type Process struct{ p *process }

// Spawn starts argv with exactly env, its stdout and stderr appended to
// logPath, in a process group of its own (a Ctrl-C at the terminal reaches
// only the test process, which stops its children in order). It fails once
// Shutdown has begun.
func Spawn(argv, env []string, logPath string) (*Process, error) {
	p, err := spawn(argv, env, logPath)
	if err != nil {
		return nil, err
	}
	return &Process{p}, nil
}

// Pid returns the process id.
func (p *Process) Pid() int { return p.p.cmd.Process.Pid }

// Stop sends SIGTERM, waits up to grace, then sends SIGKILL and waits for
// the exit. Stopping an exited process does nothing.
func (p *Process) Stop(grace time.Duration) { p.p.stop(grace) }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool { return p.p.exited() }

// Err returns the exit error once the process has exited (nil for status
// 0, and while it runs).
func (p *Process) Err() error {
	if !p.p.exited() {
		return nil
	}
	return p.p.err
}

// WaitReady calls ready with a growing pause (5 ms to 200 ms) until it
// reports true. It fails when the process exits first or ctx ends, with the
// tail of logPath in the error; what names the process there.
func (p *Process) WaitReady(ctx context.Context, ready func() bool, what, logPath string) error {
	return poll(ctx, p.p, ready, what, logPath)
}

// NetnsExec returns argv run inside the named network namespace with `ip
// netns exec` (which bind-mounts the namespace's /etc/netns files), as uid
// when uid >= 0 (through setpriv), else as root. ip netns exec and setpriv
// exec in place, so the resulting process's pid is argv's own.
func NetnsExec(ns string, uid int, argv ...string) []string { return netnsExec(ns, uid, argv...) }

// NetnsDialer returns a DialContext for http.Transport that dials addr (an
// IP literal and port: names are not resolved inside the namespace) from
// inside the named network namespace, so the harness process, which stays
// in the host namespace, reaches listeners there.
func NetnsDialer(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return netnsDialer(ns)
}

// NewNetns creates a network namespace with only loopback up, named
// imdsp-<pid>-<n>-<kind>, with the same /etc/netns resolv.conf and hosts
// files as an Env's namespaces (see APIServerHost). Delete it with
// DeleteNetns; CleanStale and Shutdown remove it too.
func NewNetns(ctx context.Context, kind string) (name string, err error) {
	nsMu.Lock()
	defer nsMu.Unlock()
	if shuttingDown {
		return "", errShuttingDown
	}
	name = fmt.Sprintf("%s%d-%d-%s", netnsPrefix, os.Getpid(), netnsSeq.Add(1), kind)
	defer func() {
		if err != nil {
			err = errors.Join(err, deleteNetns(name))
		}
	}()
	if err := writeNetnsEtc(name); err != nil {
		return "", err
	}
	if err := run(ctx, "ip", "netns", "add", name); err != nil {
		return "", err
	}
	if err := run(ctx, "ip", "-n", name, "link", "set", "lo", "up"); err != nil {
		return "", err
	}
	return name, nil
}

// DeleteNetns kills the processes left in a namespace (by pid), deletes it
// and its /etc/netns directory. Missing pieces are not an error.
func DeleteNetns(name string) error { return deleteNetns(name) }

// writeNetnsEtc writes /etc/netns/<ns>/{resolv.conf,hosts}, which `ip
// netns exec` bind-mounts; it must run before anything starts in ns.
func writeNetnsEtc(ns string) error {
	dir := filepath.Join(netnsEtc, ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// nameserver 127.0.0.1: lookups fail at once and stay on loopback.
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver 127.0.0.1\n"), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "hosts"), []byte(hostsFile()), 0o644)
}

var (
	harnessMu sync.Mutex
	harnesses = map[io.Closer]bool{}
)

// Register makes CloseAll and Shutdown close c, before any Env (a harness
// may run processes in an Env's namespaces). Call the returned function
// once c is closed.
func Register(c io.Closer) (unregister func()) {
	harnessMu.Lock()
	harnesses[c] = true
	harnessMu.Unlock()
	return func() {
		harnessMu.Lock()
		delete(harnesses, c)
		harnessMu.Unlock()
	}
}

// closeHarnesses closes every registered harness.
func closeHarnesses() error {
	harnessMu.Lock()
	cs := make([]io.Closer, 0, len(harnesses))
	for c := range harnesses {
		cs = append(cs, c)
	}
	harnessMu.Unlock()
	var errs []error
	for _, c := range cs {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}
