// Package netns handles network namespaces the process creates for itself
// (benchmarks, `ward drill`, end-to-end tests): created with `ip netns add`,
// programs run inside with `ip netns exec` (which execs in place, so the
// command's PID is the program's), and sockets opened from an OS thread
// switched into the namespace (a socket keeps its namespace for life).
// Needs root, iproute2 and Linux.
package netns

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

// Unavailable tells why namespaces (and TUN devices in them) cannot be used
// here, or returns "" when they can.
func Unavailable() string {
	if runtime.GOOS != "linux" {
		return "needs Linux"
	}
	if os.Geteuid() != 0 {
		return "needs root (network namespaces and TUN devices)"
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return "needs /dev/net/tun"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "needs ip (iproute2)"
	}
	return ""
}

// RandomSuffix returns n random hex digits, for names that must not collide
// with other runs on the machine (namespaces, interfaces, UAPI sockets).
func RandomSuffix(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

// NS is a network namespace this process created.
type NS struct {
	Name string
}

// Create adds a namespace called prefix plus a random suffix and brings its
// loopback up. The caller must Delete it.
func Create(ctx context.Context, prefix string) (*NS, error) {
	return CreateNamed(ctx, prefix+RandomSuffix(8))
}

// CreateNamed adds the namespace name (unique per run: the caller's job) and
// brings its loopback up. The caller must Delete it.
func CreateNamed(ctx context.Context, name string) (*NS, error) {
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	n := &NS{Name: name}
	if out, err := exec.CommandContext(ctx, "ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		_ = n.Delete()
		return nil, fmt.Errorf("ip -n %s link set lo up: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return n, nil
}

// Delete removes the namespace. Processes still inside keep it alive until
// they exit, so stop them first.
func (n *NS) Delete() error {
	out, err := exec.Command("ip", "netns", "delete", n.Name).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip netns delete %s: %w: %s", n.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Command returns `ip netns exec NAME prog args...`.
func (n *NS) Command(prog string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, prog}, args...)...)
}

// Do runs fn on an OS thread switched into the namespace, so that sockets fn
// creates live there. The thread returns to its own namespace afterwards; if
// that fails it stays locked and Go ends it with the goroutine, so no thread
// in the wrong namespace ever goes back to the scheduler.
func (n *NS) Do(fn func() error) error {
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

// DialContext opens a connection from inside the namespace.
func (n *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		d := net.Dialer{Timeout: 10 * time.Second}
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen opens a listener inside the namespace.
func (n *NS) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() (err error) { l, err = net.Listen(network, addr); return err })
	return l, err
}

// Transport is an HTTP transport whose connections are dialled inside the
// namespace, for services listening on its loopback; maxConns sizes the
// idle pool (0: no keep-alive, for servers that are killed on purpose).
func (n *NS) Transport(maxConns int) *http.Transport {
	return &http.Transport{
		Proxy:               nil,
		DialContext:         n.DialContext,
		MaxIdleConns:        maxConns * 2,
		MaxIdleConnsPerHost: maxConns * 2,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		DisableKeepAlives:   maxConns == 0,
	}
}
