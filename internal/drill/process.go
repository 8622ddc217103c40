package drill

// Long-running processes started by the drill inside a namespace with
// `ip netns exec`, which execs in place: the PID is the program's own, so
// the drill signals exactly the processes it started, by PID.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Proc is a program the drill started in a namespace; its stdout and stderr
// go to a log file in the drill's directory.
type Proc struct {
	Label   string
	LogPath string
	cmd     *exec.Cmd
	log     *os.File
	done    chan struct{}
	waitErr error
}

// keepChildren (--keep) lets children outlive the drill.
var keepChildren bool

// childAttrs: the child gets its own process group (a Ctrl-C on the
// terminal reaches only the drill, which then stops everything in order)
// and SIGKILL when the drill dies, unless --keep.
func childAttrs() *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true}
	if !keepChildren {
		a.Pdeathsig = syscall.SIGKILL
	}
	return a
}

// startProc starts prog in ns.
func startProc(ns *NS, label, logPath string, env []string, prog string, args ...string) (*Proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(f, "=== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), prog, strings.Join(args, " "))
	p := &Proc{Label: label, LogPath: logPath, log: f, done: make(chan struct{})}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", ns.Name, prog}, args...)...)
	p.cmd.Env = cleanEnv(env...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.SysProcAttr = childAttrs()
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", label, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// PID is the process's own PID.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Exited tells whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitErr describes how the process ended.
func (p *Proc) exitErr() error {
	if !p.Exited() {
		return nil
	}
	if p.waitErr == nil {
		return errors.New("exited with status 0")
	}
	return p.waitErr
}

// Signal sends sig to the process (no-op once it ended).
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return nil
	}
	return p.cmd.Process.Signal(sig)
}

// wait waits for the exit, at most timeout.
func (p *Proc) wait(timeout time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Kill sends SIGKILL and waits for the exit.
func (p *Proc) Kill() error {
	if p.Exited() {
		return nil
	}
	if err := p.cmd.Process.Kill(); err != nil && !p.Exited() {
		return fmt.Errorf("SIGKILL %s (pid %d): %w", p.Label, p.PID(), err)
	}
	if !p.wait(10 * time.Second) {
		return fmt.Errorf("%s (pid %d) still runs 10 s after SIGKILL", p.Label, p.PID())
	}
	return nil
}

// Stop sends SIGTERM, then SIGKILL after grace.
func (p *Proc) Stop(grace time.Duration) {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if p.wait(grace) {
		return
	}
	_ = p.Kill()
}

// Tail returns the last n lines of the log.
func (p *Proc) Tail(n int) string {
	raw, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(log %s: %v)", p.LogPath, err)
	}
	return tailLines(string(raw), n)
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// failure wraps err with the end of the process's log.
func (p *Proc) failure(err error) error {
	return fmt.Errorf("%w\n--- last lines of %s (%s) ---\n%s", err, p.Label, p.LogPath, p.Tail(25))
}

// waitHTTP200 polls url from inside ns until it answers 200, the process
// exits or timeout passes.
func waitHTTP200(ctx context.Context, ns *NS, p *Proc, url string, timeout time.Duration) error {
	hc := ns.httpClient(2 * time.Second)
	err := waitFor(ctx, timeout, 50*time.Millisecond, p.Label+" ready", func() error {
		if p.Exited() {
			return fmt.Errorf("%s ended: %v", p.Label, p.exitErr())
		}
		resp, err := hc.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s answered %d", url, resp.StatusCode)
		}
		return nil
	})
	if err != nil {
		return p.failure(err)
	}
	return nil
}

// procAlive tells whether pid exists and its command line contains want (so
// a reused PID is never signalled).
func procAlive(pid int, want string) bool {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(raw) == 0 {
		return false // gone, or a zombie
	}
	return strings.Contains(string(raw), want)
}
