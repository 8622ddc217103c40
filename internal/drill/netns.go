package drill

// Network namespaces and short commands: the drill shells out to iproute2
// for topology (as an operator would) and opens its own sockets inside a
// namespace from a thread switched into it (for HTTP to the processes'
// loopback listeners).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// cmdTimeout bounds every short command (ip, wg, wg-quick).
const cmdTimeout = 30 * time.Second

// randomHex returns n random hex digits, for names unique to one run
// (namespaces, links, WireGuard interfaces: /var/run/wireguard is global).
func randomHex(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

// cleanEnv is this process's environment without WARD_* variables (they
// would configure the children), plus extra.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WARD_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// runCmd runs a short command to completion (bounded by cmdTimeout) and
// returns its combined output; the error carries the output.
func runCmd(ctx context.Context, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = cleanEnv(env...)
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// NS is a network namespace the drill created.
type NS struct {
	Name string
}

func createNS(ctx context.Context, name string) (*NS, error) {
	if _, err := runCmd(ctx, nil, "ip", "netns", "add", name); err != nil {
		return nil, err
	}
	n := &NS{Name: name}
	if err := n.ip(ctx, "link", "set", "lo", "up"); err != nil {
		_ = n.delete()
		return nil, err
	}
	return n, nil
}

// delete removes the namespace (processes still inside keep it alive until
// they exit: stop them first).
func (n *NS) delete() error {
	_, err := runCmd(context.Background(), nil, "ip", "netns", "delete", n.Name)
	return err
}

// ip runs `ip -n NS args...`.
func (n *NS) ip(ctx context.Context, args ...string) error {
	_, err := runCmd(ctx, nil, "ip", append([]string{"-n", n.Name}, args...)...)
	return err
}

// exec runs a short command inside the namespace.
func (n *NS) exec(ctx context.Context, env []string, prog string, args ...string) (string, error) {
	return runCmd(ctx, env, "ip", append([]string{"netns", "exec", n.Name, prog}, args...)...)
}

// hasAddr tells whether dev in the namespace carries the IPv4 address.
func (n *NS) hasAddr(ctx context.Context, dev, addr string) (bool, error) {
	out, err := runCmd(ctx, nil, "ip", "-n", n.Name, "-4", "-o", "addr", "show", "dev", dev)
	if err != nil {
		return false, err
	}
	for _, f := range strings.Fields(out) {
		if strings.HasPrefix(f, addr+"/") {
			return true, nil
		}
	}
	return false, nil
}

// do runs fn on an OS thread switched into the namespace, so that sockets fn
// creates live there (a socket keeps its namespace for life). The thread
// returns to its namespace afterwards; if that fails it stays locked and Go
// ends it with the goroutine.
func (n *NS) do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer self.Close()
		target, err := os.Open(filepath.Join("/var/run/netns", n.Name))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace %s: %w", n.Name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("leave namespace %s: %w (thread discarded)", n.Name, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// dial opens a connection from inside the namespace.
func (n *NS) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.do(func() error {
		d := net.Dialer{Timeout: 5 * time.Second}
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// httpClient talks HTTP from inside the namespace. Keep-alive is off: the
// servers are killed and restarted on purpose.
func (n *NS) httpClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{Proxy: nil, DialContext: n.dial, DisableKeepAlives: true}}
}

// waitFor polls cond every interval until it returns nil, ctx ends or the
// timeout passes; it then returns the last error of cond.
func waitFor(ctx context.Context, timeout, interval time.Duration, what string, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %v: %w", what, timeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last: %v)", what, ctx.Err(), err)
		case <-time.After(interval):
		}
	}
}
