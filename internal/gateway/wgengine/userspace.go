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
	mu      sync.Mutex
	name    string
	dev     *device.Device
	tun     tun.Device
	link    *linkConfig
	cur     Interface
	uapi    net.Listener
	log     *slog.Logger
	started bool
}

// NewUserspace creates the TUN device and the wireguard-go device. With
// exposeUAPI, a UAPI socket in /var/run/wireguard lets operators use `wg`.
func NewUserspace(name string, mtu int, exposeUAPI bool, log *slog.Logger) (*Userspace, error) {
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
	u := &Userspace{name: name, tun: t, dev: device.NewDevice(t, conn.NewDefaultBind(), newDeviceLogger(log)), link: &linkConfig{name: name}, log: log}
	if exposeUAPI {
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
	if err := u.link.apply(in.MTU, in.Addresses); err != nil {
		return err
	}
	if !u.started {
		if err := u.dev.Up(); err != nil {
			return fmt.Errorf("device up: %w", err)
		}
		u.started = true
	}
	u.cur = in
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
	return u.started && u.link.isUp()
}

func (u *Userspace) Close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.uapi != nil {
		u.uapi.Close()
	}
	u.dev.Close() // closes the TUN device, which removes the interface
	return nil
}
