package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The notify socket lets keepalived's notify hooks (`ward gateway notify`)
// tell the running gateway its VRRP state at once, without waiting for the
// floating IP's netlink event. It lives in the data dir (0700), is 0600 and
// only accepts peers running as root or as the gateway's own user.
const notifySocketName = "notify.sock"

// maxUnixPath is the longest path a unix socket can bind to on Linux
// (sun_path is 108 bytes with the terminating NUL).
const maxUnixPath = 107

// NotifySocketPath is the notify socket of a gateway with this data dir.
func NotifySocketPath(dataDir string) (string, error) {
	p := filepath.Join(dataDir, notifySocketName)
	if len(p) > maxUnixPath {
		return "", fmt.Errorf("notify socket path %s is %d bytes, longer than the %d a unix socket allows: use a shorter --data-dir", p, len(p), maxUnixPath)
	}
	return p, nil
}

// listenNotify creates the notify socket. A socket left over by a previous
// run is replaced; one that still answers belongs to a running gateway.
func listenNotify(dataDir string) (*net.UnixListener, error) {
	p, err := NotifySocketPath(dataDir)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(p); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("notify socket %s exists and is not a socket", p)
		}
		if c, err := net.DialTimeout("unix", p, 200*time.Millisecond); err == nil {
			c.Close()
			return nil, fmt.Errorf("notify socket %s answers: another gateway runs with this data dir", p)
		}
		if err := os.Remove(p); err != nil {
			return nil, fmt.Errorf("remove stale notify socket: %w", err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	// The data dir is 0700, so nobody else can reach the socket in the
	// moment before the chmod.
	if err := os.Chmod(p, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("notify socket mode: %w", err)
	}
	return ln, nil
}

// serveNotify answers notify requests until the listener is closed. One
// request at a time: each is a line and an answer within 2 s.
func (g *Gateway) serveNotify(ln *net.UnixListener) {
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		g.handleNotify(c)
	}
}

func (g *Gateway) handleNotify(c *net.UnixConn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	uid, err := peerUID(c)
	if err == nil && uid != 0 && uid != uint32(os.Getuid()) {
		err = fmt.Errorf("peer uid %d is neither root nor the gateway's uid %d", uid, os.Getuid())
	}
	if err != nil {
		g.log.Warn("notify refused", "err", err)
		fmt.Fprintf(c, "error %v\n", err)
		return
	}
	line, err := bufio.NewReader(io.LimitReader(c, 64)).ReadString('\n')
	if err != nil {
		fmt.Fprintf(c, "error read request: %v\n", err)
		return
	}
	state := strings.TrimSpace(line)
	info, changed, err := g.roles.notify(state)
	if err != nil {
		fmt.Fprintf(c, "error %v\n", err)
		return
	}
	g.log.Info("keepalived notify", "state", state)
	g.roleUpdated(info, changed)
	fmt.Fprintf(c, "ok %s\n", info.Role)
}

func peerUID(c *net.UnixConn) (uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, fmt.Errorf("peer credentials: %w", credErr)
	}
	return cred.Uid, nil
}

// Notify tells the gateway running with dataDir a keepalived state (master,
// backup, fault or stop) and returns the role it took. It refuses a socket
// that is not a socket, is open to group or others, or belongs to a user
// other than root or the caller.
func Notify(ctx context.Context, dataDir, state string) (Role, error) {
	switch state {
	case NotifyMaster, NotifyBackup, NotifyFault, NotifyStop:
	default:
		return "", fmt.Errorf("unknown state %q: want master, backup, fault or stop", state)
	}
	p, err := NotifySocketPath(dataDir)
	if err != nil {
		return "", err
	}
	fi, err := os.Lstat(p)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("no gateway runs with data dir %s (%s does not exist)", dataDir, p)
	}
	if err != nil {
		return "", err
	}
	if err := checkNotifySocket(fi); err != nil {
		return "", fmt.Errorf("refusing %s: %w", p, err)
	}
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(dctx, "unix", p)
	if err != nil {
		return "", fmt.Errorf("reach the gateway: %w", err)
	}
	defer c.Close()
	deadline, _ := dctx.Deadline()
	_ = c.SetDeadline(deadline)
	if _, err := fmt.Fprintf(c, "%s\n", state); err != nil {
		return "", fmt.Errorf("send: %w", err)
	}
	answer, err := bufio.NewReader(io.LimitReader(c, 512)).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("no answer from the gateway: %w", err)
	}
	answer = strings.TrimSpace(answer)
	if role, ok := strings.CutPrefix(answer, "ok "); ok {
		return Role(role), nil
	}
	return "", fmt.Errorf("gateway refused: %s", strings.TrimPrefix(answer, "error "))
}

func checkNotifySocket(fi os.FileInfo) error {
	if fi.Mode()&os.ModeSocket == 0 {
		return errors.New("not a unix socket")
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("mode %#o gives access to group or others (want 0600)", perm)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return errors.New("cannot read the owner")
	}
	if st.Uid != 0 && st.Uid != uint32(os.Getuid()) {
		return fmt.Errorf("owned by uid %d, neither root nor uid %d", st.Uid, os.Getuid())
	}
	return nil
}
