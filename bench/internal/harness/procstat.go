package harness

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// MachineCPU is the machine's CPU time from the first line of /proc/stat,
// summed over all CPUs, in USER_HZ ticks.
type MachineCPU struct {
	Busy, Total uint64
}

// ReadMachineCPU reads /proc/stat.
func ReadMachineCPU() (MachineCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return MachineCPU{}, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 5 || f[0] != "cpu" {
		return MachineCPU{}, fmt.Errorf("unexpected /proc/stat")
	}
	var m MachineCPU
	for i, s := range f[1:] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return MachineCPU{}, fmt.Errorf("parse /proc/stat: %w", err)
		}
		// user nice system idle iowait irq softirq steal guest guest_nice;
		// guest time is already part of user and nice.
		if i >= 8 {
			break
		}
		m.Total += v
		if i != 3 && i != 4 { // idle, iowait
			m.Busy += v
		}
	}
	return m, nil
}

// BusySince is the share of CPU time that was busy between prev and m,
// from 0 to 1 (all CPUs together).
func (m MachineCPU) BusySince(prev MachineCPU) float64 {
	if m.Total <= prev.Total {
		return 0
	}
	return float64(m.Busy-prev.Busy) / float64(m.Total-prev.Total)
}

// ProcessTreeCPU is the CPU time (user + system) of a process and of all its
// descendants, living or exited, e.g. a PostgreSQL server and its backends
// (which come and go with the client's connection pool): the living ones
// from their /proc/PID/stat, the exited ones from the cutime and cstime
// their parents collected when they reaped them.
func ProcessTreeCPU(pid int) (time.Duration, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	var ticks int64
	for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
		}
		ticks += v
	}
	total := time.Duration(ticks) * (time.Second / 100)
	for _, child := range children(pid) {
		if d, err := ProcessTreeCPU(child); err == nil {
			total += d
		}
	}
	return total, nil
}

// statFields are the fields of /proc/PID/stat after the command name, so
// that f[0] is field 3 (state) and f[11] field 14 (utime).
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	s := string(b)
	end := strings.LastIndexByte(s, ')')
	if end < 0 {
		return nil, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(s[end+1:])
	if len(f) < 15 {
		return nil, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	return f, nil
}

// children lists a process's child processes from
// /proc/PID/task/*/children.
func children(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// PostmasterPID finds the PostgreSQL server listening on port by its command
// line (storetest.StartPG passes "-p PORT" to it); 0 when there is none.
func PostmasterPID(port int) int {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	want := strconv.Itoa(port)
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if filepath.Base(args[0]) != "postgres" {
			continue
		}
		for i := 1; i+1 < len(args); i++ {
			if args[i] == "-p" && args[i+1] == want {
				pid, _ := strconv.Atoi(filepath.Base(d))
				return pid
			}
		}
	}
	return 0
}
