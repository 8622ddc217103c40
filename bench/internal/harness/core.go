package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/store"
)

// CoreOptions describe a `ward core` process.
type CoreOptions struct {
	Binary   string
	DataDir  string
	Database string // empty: SQLite in DataDir
	// AdminPassword is passed as WARD_ADMIN_PASSWORD (it only matters on
	// the first start).
	AdminPassword string
	// LogPath receives the process's stdout and stderr (appended).
	LogPath string
}

// Core is a running `ward core` on a loopback port.
type Core struct {
	// URL is the base URL, http://127.0.0.1:PORT.
	URL     string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	logPath string
	logFile *os.File
}

// StartCore starts ward core on a free loopback port and waits until
// /readyz answers. The caller must Stop it.
func StartCore(ctx context.Context, opts CoreOptions) (*Core, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		c, err := startCore(ctx, opts, port)
		if err == nil {
			return c, nil
		}
		lastErr = err
		// Another process may have taken the port between freePort and
		// the listen; anything else is not worth retrying.
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, lastErr
}

func startCore(ctx context.Context, opts CoreOptions, port int) (*Core, error) {
	logFile, err := os.OpenFile(opts.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	args := []string{"core", "--data-dir", opts.DataDir, "--http-addr", addr, "--public-url", "http://" + addr}
	if opts.Database != "" {
		args = append(args, "--database", opts.Database)
	}
	cmd := exec.Command(opts.Binary, args...)
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WARD_") {
			env = append(env, kv)
		}
	}
	if opts.AdminPassword != "" {
		env = append(env, "WARD_ADMIN_PASSWORD="+opts.AdminPassword)
	}
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start ward core: %w", err)
	}
	c := &Core{URL: "http://" + addr, cmd: cmd, done: make(chan struct{}), logPath: opts.LogPath, logFile: logFile}
	go func() {
		c.waitErr = cmd.Wait()
		logFile.Close()
		close(c.done)
	}()
	if err := c.waitReady(ctx, 90*time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *Core) waitReady(ctx context.Context, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-c.done:
			return fmt.Errorf("ward core exited before it was ready (%v); log:\n%s", c.waitErr, c.LogTail(40))
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		resp, err := client.Get(c.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ward core not ready after %s; log:\n%s", timeout, c.LogTail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// PID is the process id.
func (c *Core) PID() int { return c.cmd.Process.Pid }

// Stop sends SIGTERM (ward drains requests and exits), waits up to 20 s,
// then kills. It is safe to call more than once.
func (c *Core) Stop() error {
	if c == nil {
		return nil
	}
	select {
	case <-c.done:
		return nil
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
		return errors.New("ward core did not stop within 20 s of SIGTERM; killed")
	}
	var exit *exec.ExitError
	if c.waitErr != nil && !errors.As(c.waitErr, &exit) {
		return c.waitErr
	}
	if exit != nil {
		return fmt.Errorf("ward core exited with %v; log:\n%s", c.waitErr, c.LogTail(20))
	}
	return nil
}

// LogTail returns the last n lines of the process log.
func (c *Core) LogTail(n int) string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// Memory is a process's resident set from /proc/PID/status.
type Memory struct {
	RSS  int64 // VmRSS, bytes
	Peak int64 // VmHWM (peak RSS), bytes
}

// Memory reads the core process's current and peak resident set size.
func (c *Core) Memory() (Memory, error) {
	return ReadMemory(c.PID())
}

// ReadMemory reads VmRSS and VmHWM of a process.
func ReadMemory(pid int) (Memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	var m Memory
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		switch name {
		case "VmRSS":
			m.RSS = kb << 10
		case "VmHWM":
			m.Peak = kb << 10
		}
	}
	if m.RSS == 0 {
		return m, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return m, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// CPU is the core process's CPU time so far (user + system, all threads).
func (c *Core) CPU() (time.Duration, error) { return ReadCPU(c.PID()) }

// ReadCPU reads a process's user + system CPU time from /proc/PID/stat
// (fields 14 and 15, in USER_HZ = 100 ticks per second on Linux).
func ReadCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	end := strings.LastIndexByte(s, ')')
	if end < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(s[end+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return time.Duration(utime+stime) * (time.Second / 100), nil
}

// LoadAverage returns the 1, 5 and 15 minute load averages from
// /proc/loadavg, for judging how busy a shared machine was.
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// OpenMigrated opens the benchmark's database (a postgres:// URL or a
// SQLite file in dataDir) and migrates it. The returned close func may be
// called early (e.g. before core takes over the file); cl calls it at the
// end otherwise, and a second call does nothing.
func OpenMigrated(ctx context.Context, cl *Cleanups, dsn, dataDir string) (*store.DB, func(), error) {
	db, err := store.Open(ctx, dsn, dataDir)
	if err != nil {
		return nil, nil, err
	}
	var once sync.Once
	closeDB := func() { once.Do(func() { db.Close() }) }
	cl.Defer(closeDB)
	if err := db.Migrate(ctx, nil); err != nil {
		return nil, nil, err
	}
	return db, closeDB, nil
}

// BootstrapCore is a benchmark's first start of core on a new database:
// core creates the admin with a generated password, and a client with
// conns connections logs in as admin. cl stops core at the end (the
// caller may stop it earlier, e.g. to seed the database with SQL).
func BootstrapCore(ctx context.Context, cl *Cleanups, opts CoreOptions, conns int) (*Core, *Client, string, error) {
	opts.AdminPassword = "Bench-" + core.RandomToken(18)
	first, err := StartCore(ctx, opts)
	if err != nil {
		return nil, nil, "", err
	}
	cl.Defer(func() { _ = first.Stop() })
	client := NewClient(first.URL, conns)
	if err := client.Login(ctx, "admin", opts.AdminPassword); err != nil {
		client.Close()
		return nil, nil, "", fmt.Errorf("log in as admin: %w", err)
	}
	return first, client, opts.AdminPassword, nil
}
