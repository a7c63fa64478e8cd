package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// IdleCost is what one process did while nothing asked it anything.
type IdleCost struct {
	Window   time.Duration
	CPUTicks uint64 // utime+stime over the window, 10 ms ticks
	// Voluntary context switches (a thread blocked, then was woken) and
	// nonvoluntary ones (preempted), summed over the process's threads.
	Voluntary, Nonvoluntary uint64
	Threads                 int
}

// Wakeups is the voluntary context switches per minute: each is a thread
// that slept and was woken again.
func (c IdleCost) Wakeups() float64 {
	if c.Window <= 0 {
		return 0
	}
	return float64(c.Voluntary) * float64(time.Minute) / float64(c.Window)
}

// procSwitches sums the context switch counters of every thread of pid.
func procSwitches(pid int) (voluntary, nonvoluntary uint64, threads int) {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread exited
		}
		threads++
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			switch k {
			case "voluntary_ctxt_switches":
				voluntary += n
			case "nonvoluntary_ctxt_switches":
				nonvoluntary += n
			}
		}
	}
	return voluntary, nonvoluntary, threads
}

// idleCosts measures each pid over the same window d.
func idleCosts(d time.Duration, pids ...int) []IdleCost {
	type start struct {
		ticks, vol, nonvol uint64
	}
	s := make([]start, len(pids))
	for i, pid := range pids {
		s[i].ticks = procTicks(pid)
		s[i].vol, s[i].nonvol, _ = procSwitches(pid)
	}
	time.Sleep(d)
	out := make([]IdleCost, len(pids))
	for i, pid := range pids {
		vol, nonvol, threads := procSwitches(pid)
		out[i] = IdleCost{Window: d, CPUTicks: procTicks(pid) - s[i].ticks,
			Voluntary: vol - s[i].vol, Nonvoluntary: nonvol - s[i].nonvol, Threads: threads}
	}
	return out
}
