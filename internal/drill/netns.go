package drill

// Network namespaces and short commands: the drill shells out to iproute2
// for topology (as an operator would) and opens its own sockets inside a
// namespace from a thread switched into it (for HTTP to the processes'
// loopback listeners).

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/wardvpn/ward/internal/netns"
)

// cmdTimeout bounds every short command (ip, wg, wg-quick).
const cmdTimeout = 30 * time.Second

// randomHex returns n random hex digits, for names unique to one run
// (namespaces, links, WireGuard interfaces: /var/run/wireguard is global).
func randomHex(n int) string { return netns.RandomSuffix(n) }

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
	*netns.NS
}

func createNS(ctx context.Context, name string) (*NS, error) {
	n, err := netns.CreateNamed(ctx, name)
	if err != nil {
		return nil, err
	}
	return &NS{n}, nil
}

// delete removes the namespace (processes still inside keep it alive until
// they exit: stop them first).
func (n *NS) delete() error { return n.Delete() }

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

// httpClient talks HTTP from inside the namespace. Keep-alive is off: the
// servers are killed and restarted on purpose.
func (n *NS) httpClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: n.Transport(0)}
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
