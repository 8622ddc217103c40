package drill

// The baseline: plain wireguard-go gateways without ward's takeover —
// Debian's `wireguard-go` configured with `wg setconf` — with the same key,
// listen port, peers and tunnel address as the ward location, the same
// node addressing and the same keepalived setup. Only the gateway program
// differs.

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const wgSocketDir = "/var/run/wireguard"

func (d *Drill) baselineIface(i int) string { return fmt.Sprintf("bg%s%c", d.id, 'a'+i) }

// writeBaselineConf renders the location as a `wg setconf` file.
func (d *Drill) writeBaselineConf(s *savedLocation) error {
	var b strings.Builder
	port := s.Interface.ListenPort
	if port == 0 {
		port = listenPort
	}
	fmt.Fprintf(&b, "[Interface]\nPrivateKey = %s\nListenPort = %d\n", s.Interface.PrivateKey, port)
	for _, p := range s.Peers {
		fmt.Fprintf(&b, "\n[Peer]\nPublicKey = %s\nAllowedIPs = %s\n", p.PublicKey, strings.Join(p.AllowedIPs, ", "))
		if p.PresharedKey != "" {
			fmt.Fprintf(&b, "PresharedKey = %s\n", p.PresharedKey)
		}
		if p.Keepalive > 0 {
			fmt.Fprintf(&b, "PersistentKeepalive = %d\n", p.Keepalive)
		}
	}
	d.baseConf = filepath.Join(d.dir, "baseline-wg.conf")
	return os.WriteFile(d.baseConf, []byte(b.String()), 0o600)
}

// startBaselineGateway runs `wireguard-go -f IFACE` on node i, configures it
// with `wg setconf` and gives it the location's tunnel address.
func (d *Drill) startBaselineGateway(ctx context.Context, i int) error {
	iface := d.baselineIface(i)
	sock := filepath.Join(wgSocketDir, iface+".sock")
	// A SIGKILLed wireguard-go leaves its socket file: ours (the name is
	// unique to this run), and it would pass for the new one's.
	_ = os.Remove(sock)
	p, err := startProc(d.topo.Node[i], fmt.Sprintf("wireguard-go %d", i+1), filepath.Join(d.dir, fmt.Sprintf("baseline-gw%d.log", i+1)),
		[]string{"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1", "LOG_LEVEL=error"}, "wireguard-go", "-f", iface)
	if err != nil {
		return err
	}
	d.gw[i] = p
	err = waitFor(ctx, 10*time.Second, 10*time.Millisecond, "wireguard-go UAPI socket", func() error {
		if p.Exited() {
			return fmt.Errorf("wireguard-go ended: %v", p.exitErr())
		}
		c, err := net.DialTimeout("unix", sock, time.Second)
		if err != nil {
			return err
		}
		c.Close()
		return nil
	})
	if err != nil {
		return p.failure(err)
	}
	n := d.topo.Node[i]
	if _, err := n.exec(ctx, nil, "wg", "setconf", iface, d.baseConf); err != nil {
		return p.failure(err)
	}
	for _, c := range [][]string{
		{"addr", "add", gwTunnelIP + "/24", "dev", iface},
		{"link", "set", iface, "mtu", "1420", "up"},
	} {
		if err := n.ip(ctx, c...); err != nil {
			return p.failure(err)
		}
	}
	return nil
}

// removeSockets deletes UAPI socket files left under this run's interface
// names (never anyone else's).
func (d *Drill) removeSockets() {
	names := []string{d.wgQuickIface()}
	for i := range 2 {
		names = append(names, d.baselineIface(i), d.wardIface(i))
	}
	for _, n := range names {
		_ = os.Remove(filepath.Join(wgSocketDir, n+".sock"))
	}
}
