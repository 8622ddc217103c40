package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Runtime files of a running tunnel live next to the config:
// tunnel-<location id>.pid (the foreground process's PID), .json (its
// status, rewritten every second) and .log (the log of a background
// tunnel).

var fileUnsafe = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

type runFiles struct{ pid, status, log string }

func runtimeFiles(cfgPath, locationID string) runFiles {
	base := filepath.Join(filepath.Dir(cfgPath), "tunnel-"+fileUnsafe.ReplaceAllString(locationID, "_"))
	return runFiles{pid: base + ".pid", status: base + ".json", log: base + ".log"}
}

// TunnelStatus is what a running tunnel reports about itself.
type TunnelStatus struct {
	PID        int      `json:"pid"`
	LocationID string   `json:"location_id"`
	Location   string   `json:"location"`
	Interface  string   `json:"interface"`
	Addresses  []string `json:"addresses"`
	Endpoint   string   `json:"endpoint"`
	Endpoints  []string `json:"endpoints"`
	MFA        bool     `json:"mfa"`
	SessionID  string   `json:"session_id,omitempty"`
	StartedAt  int64    `json:"started_at"` // Unix ms
	UpdatedAt  int64    `json:"updated_at"`
	// LastHandshake is Unix ms, 0 before the first one.
	LastHandshake int64  `json:"last_handshake"`
	RxBytes       uint64 `json:"rx_bytes"`
	TxBytes       uint64 `json:"tx_bytes"`
	Switches      int    `json:"switches"`
}

func writeStatus(path string, st TunnelStatus) error {
	raw, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, raw)
}

func readStatus(path string) (TunnelStatus, error) {
	var st TunnelStatus
	raw, err := os.ReadFile(path)
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(raw, &st)
}

// readPID returns the PID in a pid file, 0 when there is none.
func readPID(path string) (int, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s holds %q", path, bytes.TrimSpace(raw))
	}
	return pid, nil
}

// isTunnelProcess tells whether pid is alive and is a `ward client up
// --foreground` (and not a PID that was reused by something else).
func isTunnelProcess(pid int) bool {
	if pid <= 0 || !alive(pid) {
		return false
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	var client, up, fg bool
	for _, a := range args[1:] {
		switch a {
		case "client":
			client = true
		case "up":
			up = up || client
		case "--foreground", "-foreground", "--foreground=true", "-foreground=true":
			fg = true
		}
	}
	return client && up && fg
}

// alive: the process exists and is not a zombie.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "pid (comm) S ...": the state follows the last ')'.
	s := string(raw)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

// runningTunnel returns the PID of the tunnel process of a location, or 0;
// stale runtime files (dead or foreign PID) are removed.
func runningTunnel(files runFiles) int {
	pid, err := readPID(files.pid)
	if err != nil || pid == 0 {
		if err != nil {
			os.Remove(files.pid)
		}
		return 0
	}
	if isTunnelProcess(pid) {
		return pid
	}
	os.Remove(files.pid)
	os.Remove(files.status)
	return 0
}

// claimPIDFile writes our PID into the pid file, failing if another live
// tunnel process holds it.
func claimPIDFile(path string) error {
	for range 2 {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			chownLikeDir(f, filepath.Dir(path))
			_, werr := fmt.Fprintf(f, "%d\n", os.Getpid())
			cerr := f.Close()
			return errors.Join(werr, cerr)
		}
		if !errors.Is(err, fs.ErrExist) {
			return err
		}
		pid, _ := readPID(path)
		if pid != 0 && pid != os.Getpid() && isTunnelProcess(pid) {
			return fmt.Errorf("another tunnel process (pid %d) runs this location", pid)
		}
		os.Remove(path)
	}
	return fmt.Errorf("cannot claim %s", path)
}

// waitExit waits until pid is gone (or a zombie).
func waitExit(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !alive(pid) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return !alive(pid)
}

// tailFile returns the last n lines of a file, for error reports.
func tailFile(path string, n int) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
