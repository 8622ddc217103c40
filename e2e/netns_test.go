package e2e

// Network-namespace harness: namespaces joined by veth, processes run inside
// them with `ip netns exec` (one process per namespace, see
// research/harness.md), and sockets the test itself opens inside a
// namespace (setns on a locked thread), so probes and servers are plain Go.

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	wnetns "github.com/wardvpn/ward/internal/netns"
)

// requireNetns skips the test unless it can build namespaces and TUN
// devices: root, /dev/net/tun and iproute2. It never passes silently.
func requireNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIP: network-namespace e2e tests need root (ip netns, TUN devices); run them as root, e.g. in the CI container")
	}
	if st, err := os.Stat("/dev/net/tun"); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		t.Skipf("SKIP: /dev/net/tun is not available (%v); the gateway needs a TUN device", err)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("SKIP: `ip` (iproute2) not found; install it, e.g. with scripts/install-deps.sh")
	}
}

// requireProgram finds a program the netns tests need. They already run as
// root, where scripts/install-deps.sh can install it, so missing is a
// failure, not a skip.
func requireProgram(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found (%v): install the Debian package %s, e.g. with scripts/install-deps.sh", name, err, pkg)
	}
	return p
}

// runSuffix returns n random hex characters for names unique to this run
// (interface names are global in /var/run/wireguard and limited to 15
// characters).
func runSuffix(n int) string { return wnetns.RandomSuffix(n) }

// netns is a network namespace created by the test and deleted when it ends.
type netns struct {
	name string
}

func newNetns(t *testing.T, name string) *netns {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	n := &netns{name: name}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
	})
	n.ip(t, "link", "set", "lo", "up")
	return n
}

// ip runs `ip -n NS args...` and fails the test on error.
func (n *netns) ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", n.name}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s %s: %v\n%s", n.name, strings.Join(args, " "), err, out)
	}
}

// exec runs a short command inside the namespace and returns its combined
// output.
func (n *netns) exec(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.name, name}, args...)...)
	cmd.Env = cleanEnv(env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// veth joins two namespaces: aName/aAddr in a, bName/bAddr in b (CIDR
// addresses), both up. Deleting either namespace removes the pair.
func veth(t *testing.T, a *netns, aName, aAddr string, b *netns, bName, bAddr string) {
	t.Helper()
	if len(aName) > 15 || len(bName) > 15 {
		t.Fatalf("link names %q/%q exceed 15 characters", aName, bName)
	}
	out, err := exec.Command("ip", "link", "add", aName, "netns", a.name, "type", "veth", "peer", "name", bName, "netns", b.name).CombinedOutput()
	if err != nil {
		t.Fatalf("ip link add %s/%s: %v\n%s", aName, bName, err, out)
	}
	a.ip(t, "addr", "add", aAddr, "dev", aName)
	b.ip(t, "addr", "add", bAddr, "dev", bName)
	a.ip(t, "link", "set", aName, "up")
	b.ip(t, "link", "set", bName, "up")
}

// do runs fn on an OS thread switched into the namespace, so sockets fn
// creates live there (internal/netns).
func (n *netns) do(fn func() error) error { return (&wnetns.NS{Name: n.name}).Do(fn) }

// dial opens a connection from inside the namespace.
func (n *netns) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// listen opens a listener inside the namespace; it is closed when the test
// ends.
func (n *netns) listen(t *testing.T, network, addr string) net.Listener {
	t.Helper()
	var l net.Listener
	if err := n.do(func() (err error) { l, err = net.Listen(network, addr); return err }); err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, n.name, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// httpClient talks HTTP to servers inside the namespace. Keep-alive is off:
// the servers are restarted and killed on purpose.
func (n *netns) httpClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: n.dial, DisableKeepAlives: true}}
}

// nsProcess is a long-running program started by the test inside a
// namespace with `ip netns exec`, which execs in place: the PID is the
// program's own.
type nsProcess struct {
	name    string
	cmd     *exec.Cmd
	out     *syncBuffer // stdout and stderr
	done    chan struct{}
	waitErr error
}

// startInNetns starts prog in n. It fails t on error; the process is
// stopped (SIGTERM, then SIGKILL) when owner ends, and its output is logged
// if owner failed. owner is t or a parent test that outlives it.
func startInNetns(t, owner *testing.T, n *netns, label string, env []string, prog string, args ...string) *nsProcess {
	t.Helper()
	p := &nsProcess{name: label, out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", n.name, prog}, args...)...)
	p.cmd.Env = cleanEnv(env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", label, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	pid := p.cmd.Process.Pid
	owner.Cleanup(func() {
		p.terminate(5 * time.Second)
		if owner.Failed() {
			owner.Logf("%s (pid %d) output (last lines):\n%s", label, pid, tailLines(p.out.String(), 150))
		}
	})
	return p
}

func (p *nsProcess) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// terminate sends SIGTERM to our own child, then SIGKILL after grace.
func (p *nsProcess) terminate(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// kill sends SIGKILL and waits for the exit.
func (p *nsProcess) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("SIGKILL %s: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not die within 10 s of SIGKILL", p.name)
	}
}

// stop sends SIGTERM and requires a clean exit with the given log line.
func (p *nsProcess) stop(t *testing.T, wantLog string) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not exit within 20 s of SIGTERM", p.name)
	}
	if p.waitErr != nil {
		t.Fatalf("%s exited with %v after SIGTERM, want status 0", p.name, p.waitErr)
	}
	if wantLog != "" && !strings.Contains(p.out.String(), wantLog) {
		t.Fatalf("%s log has no %q after SIGTERM", p.name, wantLog)
	}
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d lines ...]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// wgQuick is a client tunnel brought up with Debian's wg-quick and
// wireguard-go inside a namespace.
type wgQuick struct {
	ns    *netns
	iface string
	conf  string
}

var wgQuickEnv = []string{"WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go", "WG_HIDE_KEYS=never"}

// wgQuickUp writes the config to <dir>/<iface>.conf and runs wg-quick up in
// the namespace; wg-quick down runs when owner ends.
func wgQuickUp(t, owner *testing.T, n *netns, dir, iface, config string) *wgQuick {
	t.Helper()
	if len(iface) > 15 {
		t.Fatalf("interface name %q exceeds 15 characters", iface)
	}
	q := &wgQuick{ns: n, iface: iface, conf: filepath.Join(dir, iface+".conf")}
	if err := os.WriteFile(q.conf, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := n.exec(ctx, wgQuickEnv, "wg-quick", "up", q.conf)
	if err != nil {
		// A half-done up may have left the interface.
		q.down()
		t.Fatalf("wg-quick up %s in %s: %v\n%s", iface, n.name, err, out)
	}
	owner.Cleanup(func() {
		if out, err := q.down(); err != nil {
			owner.Logf("wg-quick down %s: %v\n%s", iface, err, out)
		}
	})
	return q
}

func (q *wgQuick) down() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return q.ns.exec(ctx, wgQuickEnv, "wg-quick", "down", q.conf)
}

// transfer returns the bytes the client received and sent, as `wg show
// IFACE transfer` reports them (one peer).
func (q *wgQuick) transfer(t *testing.T) (rx, tx uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := q.ns.exec(ctx, nil, "wg", "show", q.iface, "transfer")
	if err != nil {
		t.Fatalf("wg show %s transfer: %v\n%s", q.iface, err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	f := strings.Fields(lines[0])
	if len(lines) != 1 || len(f) != 3 {
		t.Fatalf("wg show %s transfer: want one peer line \"KEY RX TX\", got %q", q.iface, out)
	}
	var err1, err2 error
	rx, err1 = strconv.ParseUint(f[1], 10, 64)
	tx, err2 = strconv.ParseUint(f[2], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("wg show %s transfer: parse %q: %v %v", q.iface, out, err1, err2)
	}
	return rx, tx
}

// Servers inside a namespace, run by the test process itself.

// serveEcho echoes every connection back.
func serveEcho(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			_, _ = io.Copy(c, c)
		}()
	}
}

// serveSink reads each connection to EOF and answers with the number of
// bytes it read (8 bytes, big endian).
func serveSink(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
			n, _ := io.Copy(io.Discard, c)
			var b [8]byte
			binary.BigEndian.PutUint64(b[:], uint64(n))
			_, _ = c.Write(b[:])
		}()
	}
}

// sendBytes pushes n bytes to a sink and returns once the sink confirmed it
// read all of them.
func sendBytes(ctx context.Context, n *netns, addr string, size int64) error {
	c, err := n.dial(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	buf := make([]byte, 64<<10)
	_, _ = rand.Read(buf)
	for left := size; left > 0; {
		chunk := buf[:min(int64(len(buf)), left)]
		if _, err := c.Write(chunk); err != nil {
			return err
		}
		left -= int64(len(chunk))
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	var b [8]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return fmt.Errorf("read sink answer: %w", err)
	}
	if got := int64(binary.BigEndian.Uint64(b[:])); got != size {
		return fmt.Errorf("sink read %d bytes, sent %d", got, size)
	}
	return nil
}

// echoOnce is one probe: a new TCP connection, 16 bytes there and back.
func echoOnce(n *netns, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := n.dial(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	msg := []byte(runSuffix(16))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != string(msg) {
		return fmt.Errorf("echo answered %q, sent %q", got, msg)
	}
	return nil
}

// probeResult is one probe of a prober.
type probeResult struct {
	start, end time.Time
	err        error
}

// prober runs echoOnce from a namespace every interval until stopped.
type prober struct {
	ns       *netns
	addr     string
	interval time.Duration
	timeout  time.Duration

	mu      sync.Mutex
	results []probeResult
	stopc   chan struct{}
	done    chan struct{}
}

func startProber(t *testing.T, n *netns, addr string, interval, timeout time.Duration) *prober {
	p := &prober{ns: n, addr: addr, interval: interval, timeout: timeout, stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			start := time.Now()
			err := echoOnce(n, addr, timeout)
			p.mu.Lock()
			p.results = append(p.results, probeResult{start: start, end: time.Now(), err: err})
			p.mu.Unlock()
			select {
			case <-p.stopc:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { p.stop() })
	return p
}

// stop ends the prober (idempotent) and returns every result.
func (p *prober) stop() []probeResult {
	select {
	case <-p.stopc:
	default:
		close(p.stopc)
	}
	<-p.done
	return p.snapshot()
}

func (p *prober) snapshot() []probeResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]probeResult(nil), p.results...)
}

// failures lists the failed probes among rs.
func failures(rs []probeResult) []probeResult {
	var out []probeResult
	for _, r := range rs {
		if r.err != nil {
			out = append(out, r)
		}
	}
	return out
}

// waitFor polls cond every interval until it holds or the timeout passes;
// it returns the last error from cond.
func waitFor(timeout, interval time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(interval)
	}
}

var errNotYet = errors.New("not yet")
