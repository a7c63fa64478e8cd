package kubenode

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/podenv"
)

// Each node gets a cgroup of its own, /imdsp-<pid>-<n>-node, in every
// hierarchy (this machine kind mounts cgroup v1 controllers under
// /sys/fs/cgroup and the v2 hierarchy at /sys/fs/cgroup/unified). It is the
// kubelet's cgroupRoot, so every pod and container of the node lives below
// it, and the node ends them by pid from its cgroup.procs files: containers
// are not children of any process we started (runc's shims reparent them),
// so a cgroup is the one place that lists them all, also after a run was
// killed. The name carries our pid, so CleanStale knows a leftover.

// cgroupMounts returns the mount points of every cgroup hierarchy (v1
// controllers, named v1 hierarchies and v2) in a /proc/self/mountinfo
// text. Lines it cannot parse are skipped.
func cgroupMounts(mountinfo string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(mountinfo))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		// "36 35 0:30 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu":
		// the mount point is the fifth field; the file system type follows
		// the " - " separator (optional fields come before it).
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(tail) < 1 || (tail[0] != "cgroup" && tail[0] != "cgroup2") {
			continue
		}
		mnt := unescapeMountinfo(fields[4])
		if !filepath.IsAbs(mnt) || slices.Contains(out, mnt) {
			continue
		}
		out = append(out, filepath.Clean(mnt))
	}
	return out
}

// unescapeMountinfo undoes the octal escapes (\040 for a space, \011, \012,
// \134) the kernel writes in mountinfo paths; a malformed escape is kept
// as it is.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// hostCgroupMounts reads this process's cgroup mounts.
func hostCgroupMounts() ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	mounts := cgroupMounts(string(b))
	if len(mounts) == 0 {
		return nil, errors.New("no cgroup file system is mounted")
	}
	return mounts, nil
}

// createCgroup creates root (an absolute cgroup path such as
// /imdsp-1234-5-node) in every hierarchy.
func createCgroup(mounts []string, root string) error {
	for _, m := range mounts {
		if err := os.MkdirAll(filepath.Join(m, root), 0o755); err != nil {
			return fmt.Errorf("cgroup %s: %w", root, err)
		}
	}
	return nil
}

// cgroupPids returns the pids listed in the cgroup.procs files of root's
// subtree, in every hierarchy, without duplicates.
func cgroupPids(mounts []string, root string) []int {
	seen := map[int]bool{}
	var pids []int
	for _, m := range mounts {
		_ = filepath.WalkDir(filepath.Join(m, root), func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
			if err != nil {
				return nil
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 && !seen[pid] {
					seen[pid] = true
					pids = append(pids, pid)
				}
			}
			return nil
		})
	}
	return pids
}

// killCgroup sends SIGKILL to every process of root's subtree by pid, again
// and again (a dying runc may still add one), until none is listed or
// timeout passes.
func killCgroup(mounts []string, root string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pids := cgroupPids(mounts, root)
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s: processes %v still running after %s", root, pids, timeout)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// removeCgroup removes root's subtree, deepest first, in every hierarchy.
// A cgroup whose last process is still exiting is busy for a moment, so
// each is retried until timeout passes.
func removeCgroup(mounts []string, root string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var errs []error
	for _, m := range mounts {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(m, root), func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			for {
				err := os.Remove(dirs[i])
				if err == nil || errors.Is(err, fs.ErrNotExist) {
					break
				}
				if time.Now().After(deadline) {
					errs = append(errs, err)
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	return errors.Join(errs...)
}

// cleanStaleCgroups ends the processes of, and removes, the cgroups of
// nodes whose test process is gone (named imdsp-<pid>-...). The node's
// daemons go first: a kubelet still running would restart the containers
// as fast as they are killed. They are not in the cgroup, but each names
// the node's directory (os.TempDir()/<cgroup name>) on its command line:
// containerd and the kubelet their configuration, each runc shim
// containerd's socket.
func cleanStaleCgroups() error {
	mounts, err := hostCgroupMounts()
	if err != nil {
		return err
	}
	stale := map[string]bool{}
	for _, m := range mounts {
		entries, err := os.ReadDir(m)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if e.IsDir() && podenv.StaleName(e.Name()) {
				stale["/"+e.Name()] = true
			}
		}
	}
	var errs []error
	for root := range stale {
		dir := filepath.Join(os.TempDir(), strings.TrimPrefix(root, "/"))
		errs = append(errs,
			killReferencing(dir+"/", 10*time.Second),
			killCgroup(mounts, root, 10*time.Second),
			removeCgroup(mounts, root, 10*time.Second))
	}
	return errors.Join(errs...)
}

// killReferencing sends SIGKILL, by pid, to every process whose command
// line contains s, until none is left or timeout passes.
func killReferencing(s string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var pids []int
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid <= 1 || pid == os.Getpid() {
				continue
			}
			if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && strings.Contains(string(b), s) {
				pids = append(pids, pid)
			}
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v naming %s still running after %s", pids, s, timeout)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
