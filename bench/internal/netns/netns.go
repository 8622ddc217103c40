// Package netns gives a benchmark a network namespace of its own: created
// with `ip netns add` under a unique name, processes started inside it with
// `ip netns exec`, and TCP connections from the benchmark process into it
// (so a client in the host namespace can reach services listening on the
// namespace's loopback). Needs root, iproute2 and Linux.
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
	fd   *os.File // /var/run/netns/NAME
	host *os.File // the namespace this process started in
}

// Create adds a namespace called prefix plus a random suffix and brings its
// loopback up. The caller must Delete it.
func Create(ctx context.Context, prefix string) (*NS, error) {
	name := prefix + RandomSuffix(8)
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	n := &NS{Name: name}
	if out, err := exec.CommandContext(ctx, "ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		n.Delete()
		return nil, fmt.Errorf("ip -n %s link set lo up: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	var err error
	if n.fd, err = os.Open("/var/run/netns/" + name); err != nil {
		n.Delete()
		return nil, err
	}
	if n.host, err = os.Open("/proc/self/ns/net"); err != nil {
		n.Delete()
		return nil, err
	}
	return n, nil
}

// Delete removes the namespace. Processes still inside keep it alive until
// they exit, so stop them first.
func (n *NS) Delete() error {
	if n.fd != nil {
		n.fd.Close()
		n.fd = nil
	}
	if n.host != nil {
		n.host.Close()
		n.host = nil
	}
	out, err := exec.Command("ip", "netns", "delete", n.Name).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip netns delete %s: %w: %s", n.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Command returns `ip netns exec NAME prog args...`. ip execs prog in place,
// so the command's PID is prog's.
func (n *NS) Command(prog string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, prog}, args...)...)
}

func setns(f *os.File) error { return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET) }

// DialContext opens a connection from inside the namespace: the socket is
// created on an OS thread that has entered the namespace, and a socket stays
// in the namespace it was created in. The thread returns to the host
// namespace afterwards (or is discarded if it cannot).
func (n *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if err := setns(n.fd); err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("enter namespace %s: %w", n.Name, err)}
			return
		}
		d := net.Dialer{Timeout: 10 * time.Second}
		c, err := d.DialContext(ctx, network, addr)
		if rerr := setns(n.host); rerr == nil {
			runtime.UnlockOSThread()
		} else if err == nil {
			// Leave the thread locked: Go ends it with this goroutine.
			err = fmt.Errorf("return to the host namespace: %w", rerr)
			c.Close()
			c = nil
		}
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// Transport is an HTTP transport whose connections are dialled inside the
// namespace, for services listening on its loopback.
func (n *NS) Transport(maxConns int) *http.Transport {
	return &http.Transport{
		Proxy:               nil,
		DialContext:         n.DialContext,
		MaxIdleConns:        maxConns * 2,
		MaxIdleConnsPerHost: maxConns * 2,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
}
