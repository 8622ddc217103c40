package wgengine

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
)

// Userspace is wireguard-go embedded in the process.
type Userspace struct {
	mu         sync.Mutex
	name       string
	dev        *device.Device
	tun        tun.Device
	gate       *standbyGate
	link       *linkConfig
	cur        Interface
	uapi       net.Listener
	log        *slog.Logger
	configured bool // the first Configure ran
	standby    bool // SetActive(false): the device is kept down
	closed     bool
}

// UserspaceOptions configure a Userspace engine.
type UserspaceOptions struct {
	// UAPI exposes a UAPI socket in /var/run/wireguard so operators can
	// use `wg`.
	UAPI bool
	// Bind replaces wireguard-go's default UDP bind (nil: the default).
	// Active-passive gateways behind a floating IP need a bind that
	// answers from the floating IP (internal/wgbind); the gateway passes
	// it here (see gateway.Config.FloatingIPs).
	Bind conn.Bind
}

// NewUserspace creates the TUN device and the wireguard-go device. With
// exposeUAPI, a UAPI socket in /var/run/wireguard lets operators use `wg`.
func NewUserspace(name string, mtu int, exposeUAPI bool, log *slog.Logger) (*Userspace, error) {
	return NewUserspaceWith(name, mtu, UserspaceOptions{UAPI: exposeUAPI}, log)
}

// NewUserspaceWith is NewUserspace with options (a custom bind).
func NewUserspaceWith(name string, mtu int, opts UserspaceOptions, log *slog.Logger) (*Userspace, error) {
	if mtu == 0 {
		mtu = 1420
	}
	t, err := tun.CreateTUN(name, mtu)
	if err != nil {
		return nil, fmt.Errorf("create TUN %s: %w", name, err)
	}
	if real, err := t.Name(); err == nil {
		name = real
	}
	bind := opts.Bind
	if bind == nil {
		bind = conn.NewDefaultBind()
	}
	u := &Userspace{name: name, tun: t, link: &linkConfig{name: name}, log: log}
	u.gate = newStandbyGate(t, false, u.reassertStandbySoon)
	u.dev = device.NewDevice(u.gate, bind, newDeviceLogger(log))
	if opts.UAPI {
		f, err := ipc.UAPIOpen(name)
		if err != nil {
			u.Close()
			return nil, fmt.Errorf("open UAPI socket: %w", err)
		}
		l, err := ipc.UAPIListen(name, f)
		if err != nil {
			u.Close()
			return nil, fmt.Errorf("listen on UAPI socket: %w", err)
		}
		u.uapi = l
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go u.dev.IpcHandle(c)
			}
		}()
	}
	return u, nil
}

func (u *Userspace) Kind() string { return "userspace" }

func (u *Userspace) Configure(in Interface) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := ipcConfigure(u.dev, u.cur, in, true); err != nil {
		return err
	}
	// The TUN link stays up on a standby: the device being down is what
	// keeps it quiet, and routes through the link stay in place.
	if err := u.link.apply(in.MTU, in.Addresses, true); err != nil {
		return err
	}
	if !u.configured && !u.standby {
		if err := u.dev.Up(); err != nil {
			return fmt.Errorf("device up: %w", err)
		}
	}
	u.configured = true
	u.cur = in
	return nil
}

// SetActive takes the wireguard-go device down (standby) or up. Down stops
// every peer (timers, sessions and handshake state are zeroed) and closes
// the UDP socket; configuration changes keep applying to the down device.
func (u *Userspace) SetActive(active bool) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.standby = !active
	u.gate.standby.Store(!active)
	if !u.configured {
		return nil
	}
	return setDeviceActive(u.dev, active)
}

// reassertStandbySoon takes the device down again if it is a standby, a
// little after wireguard-go had an EventUp in hand that it may act on after
// SetActive(false) (see standbyGate).
func (u *Userspace) reassertStandbySoon() {
	go func() {
		for _, d := range []time.Duration{20 * time.Millisecond, 200 * time.Millisecond} {
			time.Sleep(d)
			u.mu.Lock()
			if u.standby && u.configured && !u.closed {
				if err := setDeviceActive(u.dev, false); err != nil {
					u.log.Debug("re-asserting standby", "err", err)
				}
			}
			u.mu.Unlock()
		}
	}()
}

func (u *Userspace) Initiate(endpoints map[string]string) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.standby || !u.configured {
		return 0, ErrStandby
	}
	return ipcInitiate(u.dev, endpoints)
}

func setDeviceActive(dev *device.Device, active bool) error {
	if active {
		if err := dev.Up(); err != nil {
			return fmt.Errorf("device up: %w", err)
		}
		return nil
	}
	if err := dev.Down(); err != nil {
		return fmt.Errorf("device down: %w", err)
	}
	return nil
}

func (u *Userspace) Apply(set []PeerConfig, remove []string) error {
	return ipcApply(u.dev, set, remove)
}

func (u *Userspace) Peers() ([]PeerState, error) { return ipcPeers(u.dev) }

// newDeviceLogger sends wireguard-go's errors to log.
func newDeviceLogger(log *slog.Logger) *device.Logger {
	return &device.Logger{
		Verbosef: device.DiscardLogf,
		Errorf:   func(format string, args ...any) { log.Warn("wireguard-go: " + fmt.Sprintf(format, args...)) },
	}
}

// ipcConfigure brings an embedded device's key, fwmark and (with port)
// listen port from cur to in through the in-process UAPI.
func ipcConfigure(dev *device.Device, cur, in Interface, port bool) error {
	var b strings.Builder
	if in.PrivateKey != cur.PrivateKey {
		k, err := keyHex(in.PrivateKey)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "private_key=%s\n", k)
	}
	if port && in.ListenPort != cur.ListenPort {
		fmt.Fprintf(&b, "listen_port=%d\n", in.ListenPort)
	}
	if in.FwMark != cur.FwMark {
		fmt.Fprintf(&b, "fwmark=%d\n", in.FwMark)
	}
	if b.Len() > 0 {
		if err := dev.IpcSet(b.String()); err != nil {
			return fmt.Errorf("configure device: %w", err)
		}
	}
	return nil
}

// ipcApply sets and removes peers of an embedded device in one UAPI batch.
func ipcApply(dev *device.Device, set []PeerConfig, remove []string) error {
	if len(set) == 0 && len(remove) == 0 {
		return nil
	}
	var b strings.Builder
	for _, k := range remove {
		h, err := keyHex(k)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "public_key=%s\nremove=true\n", h)
	}
	for _, p := range set {
		h, err := keyHex(p.PublicKey)
		if err != nil {
			return err
		}
		psk := zeroKeyHex
		if p.PresharedKey != "" {
			if psk, err = keyHex(p.PresharedKey); err != nil {
				return err
			}
		}
		fmt.Fprintf(&b, "public_key=%s\npreshared_key=%s\npersistent_keepalive_interval=%d\nreplace_allowed_ips=true\n", h, psk, p.Keepalive)
		if p.Endpoint != "" {
			fmt.Fprintf(&b, "endpoint=%s\n", p.Endpoint)
		}
		for _, ip := range p.AllowedIPs {
			fmt.Fprintf(&b, "allowed_ip=%s\n", ip)
		}
	}
	if err := dev.IpcSet(b.String()); err != nil {
		return fmt.Errorf("apply peers: %w", err)
	}
	return nil
}

// ipcPeers reads an embedded device's peers with their counters.
func ipcPeers(dev *device.Device) ([]PeerState, error) {
	text, err := dev.IpcGet()
	if err != nil {
		return nil, fmt.Errorf("read device: %w", err)
	}
	return parseUAPIPeers(text)
}

// parseUAPIPeers reads the peer sections of a UAPI "get" answer.
func parseUAPIPeers(text string) ([]PeerState, error) {
	var out []PeerState
	var cur *PeerState
	var hsSec, hsNsec int64
	flush := func() {
		if cur != nil {
			if hsSec != 0 || hsNsec != 0 {
				cur.LastHandshake = time.Unix(hsSec, hsNsec)
			}
			out = append(out, *cur)
		}
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		if key == "public_key" {
			flush()
			k, err := keyB64(value)
			if err != nil {
				return nil, err
			}
			cur = &PeerState{PeerConfig: PeerConfig{PublicKey: k}}
			hsSec, hsNsec = 0, 0
			continue
		}
		if cur == nil {
			continue
		}
		switch key {
		case "preshared_key":
			if value != zeroKeyHex {
				k, err := keyB64(value)
				if err != nil {
					return nil, err
				}
				cur.PresharedKey = k
			}
		case "endpoint":
			cur.Endpoint = value
		case "allowed_ip":
			p, err := netip.ParsePrefix(value)
			if err != nil {
				return nil, fmt.Errorf("device allowed ip %q: %w", value, err)
			}
			cur.AllowedIPs = append(cur.AllowedIPs, p)
		case "persistent_keepalive_interval":
			cur.Keepalive, _ = strconv.Atoi(value)
		case "rx_bytes":
			cur.RxBytes, _ = strconv.ParseUint(value, 10, 64)
		case "tx_bytes":
			cur.TxBytes, _ = strconv.ParseUint(value, 10, 64)
		case "last_handshake_time_sec":
			hsSec, _ = strconv.ParseInt(value, 10, 64)
		case "last_handshake_time_nsec":
			hsNsec, _ = strconv.ParseInt(value, 10, 64)
		}
	}
	flush()
	return out, sc.Err()
}

func (u *Userspace) Up() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.configured && u.link.isUp()
}

func (u *Userspace) Close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.closed = true
	if u.uapi != nil {
		u.uapi.Close()
	}
	u.dev.Close() // closes the TUN device, which removes the interface
	return nil
}
