package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Machine names the machine the figures were taken on.
type Machine struct {
	Kernel   string
	CPU      string // model name from /proc/cpuinfo
	CPUBrand string // the CPUID brand string, as go test prints it
	NProc    int
	MemTotal string
	Go       string
}

func machine() Machine {
	m := Machine{NProc: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.CPU = procField("/proc/cpuinfo", "model name")
	if kb := procField("/proc/meminfo", "MemTotal"); kb != "" {
		if n, err := strconv.ParseInt(strings.Fields(kb)[0], 10, 64); err == nil {
			m.MemTotal = fmt.Sprintf("%.1f GiB", float64(n)/(1<<20))
		}
	}
	return m
}

// procField returns the value of the first "name: value" line of a /proc file.
func procField(path, name string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// loadAvg returns the 1-minute load average, or -1.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// cpuTimes returns total and idle jiffies of all CPUs from /proc/stat.
func cpuTimes() (total, idle uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, s := range f[1:] {
		v, _ := strconv.ParseUint(s, 10, 64)
		total += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	return total, idle
}

// procTicks returns the user+system jiffies one process has used.
func procTicks(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return u + st
}

// procStatusKB returns a "Vm...: N kB" field of /proc/<pid>/status in bytes.
func procStatusKB(pid int, field string) (int64, error) {
	v := procField(fmt.Sprintf("/proc/%d/status", pid), field)
	if v == "" {
		return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
	}
	n, err := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
	return n << 10, err
}

// findProcess returns the pid of the one process running exe inside the
// network namespace netnsPath (e.g. /run/netns/<pod>).
func findProcess(exe, netnsPath string) (int, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(netnsPath, &st); err != nil {
		return 0, err
	}
	want := fmt.Sprintf("net:[%d]", st.Ino)
	exe, _ = filepath.EvalSymlinks(exe)
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	var found []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		p, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || strings.TrimSuffix(p, " (deleted)") != exe {
			continue
		}
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil || ns != want {
			continue
		}
		found = append(found, pid)
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return 0, fmt.Errorf("no process runs %s in %s", exe, netnsPath)
	default:
		return 0, fmt.Errorf("%d processes run %s in %s: %v", len(found), exe, netnsPath, found)
	}
}

// backgroundBusy returns the share of all CPUs busy over d while this
// benchmark itself is idle: the load other work puts on the machine.
func backgroundBusy(d time.Duration) float64 {
	t0, i0 := cpuTimes()
	time.Sleep(d)
	t1, i1 := cpuTimes()
	if t1 <= t0 {
		return -1
	}
	return 1 - float64(i1-i0)/float64(t1-t0)
}
