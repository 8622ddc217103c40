package drill

// The two clients, each in its own namespace, both pointed at VIP:51820:
// Debian's wg-quick with wireguard-go (a stock WireGuard client), and
// `ward client up --foreground` (whose watchdog re-handshakes by itself when
// the tunnel stalls).

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const (
	clientWard    = "ward"
	clientWGQuick = "wg-quick"
)

var wgQuickEnv = []string{"WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go", "WG_HIDE_KEYS=never",
	"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1"} // no LOG_LEVEL: the daemon would keep our output pipe open

func (d *Drill) wgQuickIface() string    { return "wq" + d.id }
func (d *Drill) wardClientIface() string { return "wc" + d.id }

// clientTunnel is one client's tunnel and its prober.
type clientTunnel struct {
	kind   string
	ns     *NS
	proc   *Proc // ward client
	conf   string
	up     time.Time
	prober *Prober
}

// clientUp brings the client's tunnel up and starts probing through it.
func (d *Drill) clientUp(ctx context.Context, kind string, label string) (*clientTunnel, error) {
	c := &clientTunnel{kind: kind, ns: d.topo.Client[kind], up: time.Now()}
	switch kind {
	case clientWGQuick:
		// wg-quick names the interface after the file.
		c.conf = filepath.Join(d.dir, d.wgQuickIface()+".conf")
		if err := os.WriteFile(c.conf, []byte(d.wqConfig), 0o600); err != nil {
			return nil, err
		}
		if err := c.wgQuickUp(ctx); err != nil {
			return nil, err
		}
	case clientWard:
		p, err := d.startWardClient(ctx, label)
		if err != nil {
			return nil, err
		}
		c.proc = p
	default:
		return nil, fmt.Errorf("unknown client %q", kind)
	}
	p, err := startProber(c.ns, label+" "+kind, gwTunnelIP, filepath.Join(d.dir, "ping-"+label+"-"+kind+".log"))
	if err != nil {
		c.down()
		return nil, err
	}
	c.prober = p
	return c, nil
}

// startWardClient runs `ward client up --foreground` and waits until the
// tunnel is up.
func (d *Drill) startWardClient(ctx context.Context, label string) (*Proc, error) {
	p, err := startProc(d.topo.Client[clientWard], "ward client", filepath.Join(d.dir, "ward-client-"+label+".log"), d.wardClientEnv(),
		d.self, "client", "up", d.loc.Name, "--foreground", "--interface", d.wardClientIface())
	if err != nil {
		return nil, err
	}
	// The log is appended to: count this start's lines only.
	err = waitFor(ctx, 45*time.Second, 50*time.Millisecond, "ward client up", func() error {
		if p.Exited() {
			return fmt.Errorf("ward client ended: %v", p.exitErr())
		}
		if !strings.Contains(lastStart(p), "is up: interface "+d.wardClientIface()) {
			return fmt.Errorf("not up yet")
		}
		return nil
	})
	if err != nil {
		p.Stop(5 * time.Second)
		return nil, p.failure(err)
	}
	return p, nil
}

// lastStart is the process's log since its own start line.
func lastStart(p *Proc) string {
	raw, _ := os.ReadFile(p.LogPath)
	s := string(raw)
	if i := strings.LastIndex(s, "=== "); i >= 0 {
		s = s[i:]
	}
	return s
}

func (c *clientTunnel) wgQuickUp(ctx context.Context) error {
	if _, err := c.ns.exec(ctx, wgQuickEnv, "wg-quick", "up", c.conf); err != nil {
		c.wgQuickDown() // a half-done up may have left the interface
		return err
	}
	return nil
}

func (c *clientTunnel) wgQuickDown() error {
	_, err := c.ns.exec(context.Background(), wgQuickEnv, "wg-quick", "down", c.conf)
	return err
}

// restart takes the wg-quick tunnel down and up again (a fresh handshake
// with whoever holds the VIP).
func (c *clientTunnel) restart(ctx context.Context) error {
	_ = c.wgQuickDown()
	return c.wgQuickUp(ctx)
}

// endpoint returns the wg-quick client's current peer endpoint (where
// WireGuard roaming has pointed it), as `wg show IFACE endpoints` says.
func (c *clientTunnel) endpoint(ctx context.Context) (string, error) {
	iface := strings.TrimSuffix(filepath.Base(c.conf), ".conf")
	out, err := c.ns.exec(ctx, nil, "wg", "show", iface, "endpoints")
	if err != nil {
		return "", err
	}
	f := strings.Fields(out)
	if len(f) != 2 {
		return "", fmt.Errorf("wg show %s endpoints: want one peer, got %q", iface, out)
	}
	return f[1], nil
}

// down stops probing and brings the tunnel down.
func (c *clientTunnel) down() {
	if c.prober != nil {
		c.prober.Stop()
	}
	switch {
	case c.proc != nil:
		c.proc.Stop(10 * time.Second)
	case c.conf != "":
		_ = c.wgQuickDown()
	}
}
