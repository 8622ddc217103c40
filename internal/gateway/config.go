// Package gateway is `ward gateway`: it runs a WireGuard interface for one
// location, accepts control streams from core replicas (core dials in),
// applies configuration by revision as a diff, keeps the last good config on
// disk for life without core, and reports per-peer statistics.
package gateway

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/wardvpn/ward/internal/gateway/wgengine"
	"github.com/wardvpn/ward/internal/logging"
)

// Config is the gateway's configuration; flags win over WARD_* variables.
type Config struct {
	DataDir       string        `env:"WARD_DATA_DIR" envDefault:"./ward-gateway"`
	ControlAddr   string        `env:"WARD_CONTROL_ADDR" envDefault:":50066"`
	Interface     string        `env:"WARD_INTERFACE" envDefault:"wg0"`
	Backend       string        `env:"WARD_BACKEND" envDefault:"auto"`
	HealthAddr    string        `env:"WARD_HEALTH_ADDR" envDefault:":50067"`
	StatsInterval time.Duration `env:"WARD_STATS_INTERVAL" envDefault:"10s"`
	PreUp         string        `env:"WARD_PRE_UP"`
	PostUp        string        `env:"WARD_POST_UP"`
	PreDown       string        `env:"WARD_PRE_DOWN"`
	PostDown      string        `env:"WARD_POST_DOWN"`
	JoinToken     string        `env:"WARD_JOIN_TOKEN"`
	UAPI          bool          `env:"WARD_UAPI"`
	Masquerade    bool          `env:"WARD_MASQUERADE"`
	LogLevel      string        `env:"WARD_LOG_LEVEL" envDefault:"info"`
	LogFormat     string        `env:"WARD_LOG_FORMAT" envDefault:"text"`
	// FloatingIPs switch on active-passive mode: the gateway is active
	// while one of them is on a local interface (keepalived/VRRP moves
	// it), standby otherwise. Empty: always active. With them the
	// userspace engine answers from the address each packet came to
	// (internal/wgbind, see newEngine).
	// WARD_FLOATING_IP (comma-separated) is read in ParseConfig.
	FloatingIPs []netip.Addr `env:"-"`
	// HandshakeOnStart: a gateway that starts with a saved configuration
	// initiates handshakes to the peers' last known endpoints, so clients
	// of a restarted gateway are back within a round trip instead of
	// WireGuard's 15 s. Behind a UDP load balancer whose nodes clients can
	// reach directly, turn it off: a client answering a node's own
	// address would roam to it and leave the balancer.
	HandshakeOnStart bool `env:"WARD_HANDSHAKE_ON_START" envDefault:"true"`
	// NewEngine, when set, creates the WireGuard engine in place of
	// Backend (embedders, e.g. `ward demo` with wgengine.Netstack).
	NewEngine func(mtu int) (wgengine.Engine, error) `env:"-"`
}

// ParseConfig reads WARD_* variables, then flags.
func ParseConfig(args []string, stderr io.Writer) (Config, error) {
	var c Config
	if err := env.Parse(&c); err != nil {
		return c, fmt.Errorf("environment: %w", err)
	}
	fs := flag.NewFlagSet("ward gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "adoption identity and last known good config (WARD_DATA_DIR)")
	fs.StringVar(&c.ControlAddr, "control-addr", c.ControlAddr, "address core dials for the control link (WARD_CONTROL_ADDR)")
	fs.StringVar(&c.Interface, "interface", c.Interface, "WireGuard interface name (WARD_INTERFACE)")
	fs.StringVar(&c.Backend, "backend", c.Backend, "auto, kernel or userspace (WARD_BACKEND)")
	fs.StringVar(&c.HealthAddr, "health-addr", c.HealthAddr, "address of /livez, /readyz, /status, /metrics; empty disables (WARD_HEALTH_ADDR)")
	fs.DurationVar(&c.StatsInterval, "stats-interval", c.StatsInterval, "how often peer statistics go to core (WARD_STATS_INTERVAL)")
	fs.StringVar(&c.PreUp, "pre-up", c.PreUp, "shell command before the interface is created; %i is the interface (WARD_PRE_UP)")
	fs.StringVar(&c.PostUp, "post-up", c.PostUp, "shell command after the interface is configured (WARD_POST_UP)")
	fs.StringVar(&c.PreDown, "pre-down", c.PreDown, "shell command before the interface is removed (WARD_PRE_DOWN)")
	fs.StringVar(&c.PostDown, "post-down", c.PostDown, "shell command after the interface is removed (WARD_POST_DOWN)")
	fs.StringVar(&c.JoinToken, "join-token", c.JoinToken, "one-time token from core's gateway registration; prefer WARD_JOIN_TOKEN")
	fs.BoolVar(&c.Masquerade, "masquerade", c.Masquerade, "NAT VPN traffic leaving by other interfaces (nftables) and enable forwarding (WARD_MASQUERADE)")
	fs.BoolVar(&c.UAPI, "uapi", c.UAPI, "userspace backend: expose a UAPI socket so `wg show` works (WARD_UAPI)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error (WARD_LOG_LEVEL)")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "text or json (WARD_LOG_FORMAT)")
	if v := os.Getenv("WARD_FLOATING_IP"); v != "" {
		ips, err := parseAddrList(v)
		if err != nil {
			return c, fmt.Errorf("environment: WARD_FLOATING_IP: %w", err)
		}
		c.FloatingIPs = ips
	}
	fromFlags := false
	fs.BoolVar(&c.HandshakeOnStart, "handshake-on-start", c.HandshakeOnStart,
		"after a restart, initiate handshakes to the peers' last known endpoints; off behind a UDP load balancer (WARD_HANDSHAKE_ON_START)")
	fs.Func("floating-ip", "active-passive: active only while this address is on a local interface; repeatable or comma-separated (WARD_FLOATING_IP)",
		func(v string) error {
			if !fromFlags { // flags replace the variable's list
				c.FloatingIPs, fromFlags = nil, true
			}
			ips, err := parseAddrList(v)
			c.FloatingIPs = append(c.FloatingIPs, ips...)
			return err
		})
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	switch c.Backend {
	case "auto", "kernel", "userspace":
	default:
		return c, fmt.Errorf("--backend must be auto, kernel or userspace")
	}
	if len(c.Interface) == 0 || len(c.Interface) > 15 {
		return c, fmt.Errorf("--interface must be 1 to 15 characters")
	}
	for i, a := range c.FloatingIPs {
		if !a.IsValid() || a.IsUnspecified() {
			return c, fmt.Errorf("--floating-ip %q is not a usable address", a)
		}
		c.FloatingIPs[i] = a.Unmap()
	}
	if c.StatsInterval < 100*time.Millisecond {
		return c, fmt.Errorf("--stats-interval must be at least 100ms")
	}
	return c, logging.Validate(c.LogLevel, c.LogFormat)
}

func parseAddrList(v string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, part := range strings.Split(v, ",") {
		a, err := netip.ParseAddr(strings.TrimSpace(part))
		if err != nil {
			return nil, fmt.Errorf("not an IP address: %q", part)
		}
		out = append(out, a.Unmap())
	}
	return out, nil
}

// Logger builds the process logger.
func (c Config) Logger(w io.Writer) *slog.Logger { return logging.New(w, c.LogLevel, c.LogFormat) }
