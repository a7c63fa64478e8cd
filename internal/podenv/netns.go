package podenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Addresses of the pod-shaped topology. Everything is link-local and lives
// only inside the two namespaces Start creates.
const (
	// NodeAddr is the node end of the veth; the emulator listens here.
	NodeAddr = "169.254.99.1"
	// PodAddr is the pod end of the veth (the pod IP the proxy sees as the
	// client address of redirected connections).
	PodAddr = "169.254.99.2"
	// MetadataAddr is the IMDS address, held by the node namespace, where
	// the fake real IMDS answers.
	MetadataAddr = "169.254.169.254"

	// EntraHost is the emulator's Entra host name, resolved through the
	// namespaces' hosts files to NodeAddr.
	EntraHost = "login.emulator.test"
	// IssuerHost is the emulator's cluster-issuer host name.
	IssuerHost = "oidc.emulator.test"
	// APIServerHost is the name of a Kubernetes API server that a harness
	// runs on loopback inside one of our namespaces (internal/kubeenv): it
	// resolves to 127.0.0.1 in every namespace we create, so the emulator
	// in the node namespace reaches an API server started there.
	APIServerHost = "kube-apiserver.test"

	// EntraPort and IssuerPort are the emulator's ports on NodeAddr (the
	// issuer listener also serves the emulator's admin API). They are
	// fixed: nothing else listens in our node namespace.
	EntraPort  = 443
	IssuerPort = 80

	// netnsPrefix starts the name of every namespace we create:
	// imdsp-<pid>-<n>-{pod,node}. Stale ones (their pid is gone) are removed
	// by the next Start.
	netnsPrefix = "imdsp-"
	netnsDir    = "/run/netns"
	netnsEtc    = "/etc/netns"
)

var netnsSeq atomic.Int64

// nsMu serialises creating namespaces and starting processes with
// Shutdown, so that nothing new appears once Shutdown has begun.
var (
	nsMu         sync.Mutex
	shuttingDown bool
)

var errShuttingDown = errors.New("podenv: shutting down")

// netnsPair names a fresh pod/node namespace pair for this process.
func netnsPair() (pod, node string) {
	n := netnsSeq.Add(1)
	base := fmt.Sprintf("%s%d-%d", netnsPrefix, os.Getpid(), n)
	return base + "-pod", base + "-node"
}

// run executes a command to completion and folds its output into the error.
func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// hostsFile is the /etc/hosts every namespace we create sees under `ip
// netns exec`.
func hostsFile() string {
	return "127.0.0.1 localhost " + APIServerHost + "\n" +
		NodeAddr + " " + EntraHost + " " + IssuerHost + "\n"
}

// createTopology creates the node and pod namespaces, their resolv.conf and
// hosts files (before anything runs in them), the veth pair and the routes.
// On error it removes whatever it created.
func createTopology(ctx context.Context, pod, node string) (err error) {
	nsMu.Lock()
	defer nsMu.Unlock()
	if shuttingDown {
		return errShuttingDown
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, deleteNetns(pod), deleteNetns(node))
		}
	}()
	for _, ns := range []string{pod, node} {
		if err := writeNetnsEtc(ns); err != nil {
			return err
		}
		if err := run(ctx, "ip", "netns", "add", ns); err != nil {
			return err
		}
	}
	steps := [][]string{
		// Created directly inside the namespaces: the host never holds them.
		{"link", "add", "eth0", "netns", pod, "type", "veth", "peer", "name", "veth0", "netns", node},
		{"-n", node, "addr", "add", NodeAddr + "/24", "dev", "veth0"},
		{"-n", node, "addr", "add", MetadataAddr + "/32", "dev", "veth0"},
		{"-n", node, "link", "set", "lo", "up"},
		{"-n", node, "link", "set", "veth0", "up"},
		{"-n", pod, "addr", "add", PodAddr + "/24", "dev", "eth0"},
		{"-n", pod, "link", "set", "lo", "up"},
		{"-n", pod, "link", "set", "eth0", "up"},
		{"-n", pod, "route", "add", "default", "via", NodeAddr},
	}
	for _, s := range steps {
		if err := run(ctx, "ip", s...); err != nil {
			return err
		}
	}
	return nil
}

// deleteNetns kills the processes left in a namespace (by pid), deletes it
// and its /etc/netns directory. Missing pieces are not an error.
func deleteNetns(name string) error {
	var errs []error
	if _, err := os.Stat(filepath.Join(netnsDir, name)); err == nil {
		if out, err := exec.Command("ip", "netns", "pids", name).Output(); err == nil {
			for _, f := range strings.Fields(string(out)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if err := run(context.Background(), "ip", "netns", "del", name); err != nil && !gone(filepath.Join(netnsDir, name)) {
			// Gone meanwhile is not a failure: the namespace's own run, or
			// the CleanStale of a test binary running beside this one,
			// removed it between the Stat and here.
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(filepath.Join(netnsEtc, name)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// gone reports whether path no longer exists.
func gone(path string) bool {
	_, err := os.Stat(path)
	return errors.Is(err, os.ErrNotExist)
}

// TempDir makes a directory (mode 0755, so UIDs such as 1501 can reach
// what it holds) named imdsp-<pid>-<kind>-* under the system temporary
// directory, so that CleanStale removes it if this process is killed
// before it can.
func TempDir(kind string) (string, error) {
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-%s-", netnsPrefix, os.Getpid(), kind))
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", errors.Join(err, os.RemoveAll(dir))
	}
	return dir, nil
}

// StaleName reports whether name is imdsp-<pid>-... of a process that is
// gone, for harnesses that clean leftovers of their own kinds (a node's
// cgroups, say) the way CleanStale does namespaces and directories.
func StaleName(name string) bool { return stalePID(name) }

// stalePID reports whether name is imdsp-<pid>-... of a process that is
// gone.
func stalePID(name string) bool {
	if !strings.HasPrefix(name, netnsPrefix) {
		return false
	}
	pidStr, _, _ := strings.Cut(strings.TrimPrefix(name, netnsPrefix), "-")
	pid, err := strconv.Atoi(pidStr)
	return err == nil && pid != os.Getpid() && !processAlive(pid)
}

// CleanStale removes namespaces (and their /etc/netns directories) and
// temporary directories (TempDir) with our prefix whose creating process
// is gone: leftovers of a run that was killed. Those of live processes,
// such as a parallel test run, are left alone.
func CleanStale() error {
	var errs []error
	if entries, err := os.ReadDir(os.TempDir()); err == nil {
		for _, e := range entries {
			if e.IsDir() && stalePID(e.Name()) {
				errs = append(errs, os.RemoveAll(filepath.Join(os.TempDir(), e.Name())))
			}
		}
	}
	seen := map[string]bool{}
	for _, dir := range []string{netnsDir, netnsEtc} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
			continue
		}
		for _, e := range entries {
			name := e.Name()
			if seen[name] || !stalePID(name) {
				continue
			}
			seen[name] = true
			errs = append(errs, deleteNetns(name))
		}
	}
	return errors.Join(errs...)
}

// Shutdown is for signal handlers: it stops new namespaces and processes,
// closes every registered harness and every open Env (CloseAll), and
// removes any namespace of this process that nothing tracks yet (a Start in
// flight).
func Shutdown() error {
	nsMu.Lock()
	shuttingDown = true
	nsMu.Unlock()
	err := CloseAll()
	own := fmt.Sprintf("%s%d-", netnsPrefix, os.Getpid())
	errs := []error{err}
	for _, dir := range []string{netnsDir, netnsEtc} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), own) {
				errs = append(errs, deleteNetns(e.Name()))
			}
		}
	}
	return errors.Join(errs...)
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// inNetns runs fn on an OS thread switched into the named network namespace
// (InNetns without a UID).
func inNetns(name string, fn func() error) error { return InNetns(name, -1, fn) }

// InNetns runs fn on an OS thread switched into the named network namespace
// (a name under /run/netns). Sockets fn creates (net.Listen, net.Dial)
// belong to that namespace for their whole life, whichever thread later
// uses them, so the caller never leaves the host namespace and no process
// is started. When fsuid >= 0 the thread also takes it as its filesystem
// UID while fn runs, which the kernel records as the owner of the sockets
// it creates: that is what iptables' -m owner --uid-owner matches. fn runs
// on a goroutine of its own; the thread is switched back afterwards, and
// one that cannot be is never unlocked, so the Go runtime discards it.
func InNetns(name string, fsuid int, fn func() error) error {
	target, err := os.Open(filepath.Join(netnsDir, name))
	if err != nil {
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer target.Close()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("setns %s: %w", name, err)
			return
		}
		var ferr error
		if fsuid >= 0 {
			prev, _ := unix.SetfsuidRetUid(fsuid)
			if cur, _ := unix.SetfsuidRetUid(-1); cur != fsuid {
				ferr = fmt.Errorf("setfsuid(%d) left fsuid %d", fsuid, cur)
			} else {
				ferr = fn()
			}
			_, _ = unix.SetfsuidRetUid(prev)
			if cur, _ := unix.SetfsuidRetUid(-1); cur != prev {
				// Leave the thread locked: it ends with this goroutine.
				done <- errors.Join(ferr, fmt.Errorf("setfsuid back to %d left %d", prev, cur))
				return
			}
		} else {
			ferr = fn()
		}
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it ends with this goroutine.
			done <- errors.Join(ferr, fmt.Errorf("setns back: %w", err))
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

// netnsDialer returns a DialContext for http.Transport that dials addr (an
// IP literal and port) from inside the named network namespace.
func netnsDialer(name string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNetns(name, func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// listenInNetns opens a TCP listener on addr inside the named namespace.
func listenInNetns(name, addr string) (net.Listener, error) {
	var l net.Listener
	err := inNetns(name, func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	return l, err
}
