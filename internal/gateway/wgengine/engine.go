// Package wgengine drives a WireGuard interface: the kernel module through
// wgctrl when it exists, otherwise an embedded wireguard-go device on a TUN
// interface configured in-process (not through the shared UAPI directory).
// Peers are applied as a diff: an unchanged peer is never touched, so its
// session and handshake survive every reconfiguration.
package wgengine

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"
)

// Interface is the desired interface configuration.
type Interface struct {
	Name       string
	PrivateKey string // base64
	ListenPort int
	FwMark     int
	MTU        int
	Addresses  []netip.Prefix
}

// PeerConfig is a desired peer.
type PeerConfig struct {
	PublicKey    string // base64
	PresharedKey string // base64, empty for none
	AllowedIPs   []netip.Prefix
	Keepalive    int
	// Endpoint is where to reach the peer ("host:port"); empty leaves it to
	// roaming (gateways learn client endpoints from their packets). Read
	// back, it is the endpoint the device currently uses.
	Endpoint string
}

// PeerState is a peer as the device reports it.
type PeerState struct {
	PeerConfig
	LastHandshake time.Time
	RxBytes       uint64
	TxBytes       uint64
}

// Engine is a WireGuard backend.
type Engine interface {
	// Kind is "kernel", "userspace" or "netstack".
	Kind() string
	// Configure creates the interface if needed and brings key, port,
	// fwmark, MTU and addresses to the given state without recreating it.
	Configure(Interface) error
	// Peers reads every peer with its counters.
	Peers() ([]PeerState, error)
	// Apply sets (adds or updates) and removes peers in one batch.
	Apply(set []PeerConfig, remove []string) error
	// Up reports whether the interface exists and can carry traffic once
	// active: a standby engine (SetActive(false)) that is otherwise
	// healthy is Up, so a standby gateway is not reported broken.
	Up() bool
	// SetActive(false) makes the engine a silent standby for active-passive
	// high availability: its configuration stays and keeps accepting
	// changes, but sessions are dropped and it sends nothing (no handshakes,
	// no keepalives) that could keep clients' timers on a gateway that no
	// longer holds the floating IP. SetActive(true) puts it back in service.
	// A new engine is active; SetActive before Configure sets how the first
	// Configure brings it up.
	SetActive(active bool) error
	// Initiate points each listed peer (public key -> "ip:port") at the
	// endpoint and starts a handshake from this side, so a gateway taking
	// over reaches its clients without waiting for their 15 s retry. Keys
	// the device does not have and malformed endpoints are skipped. It
	// returns how many handshakes were started; a standby engine refuses.
	Initiate(endpoints map[string]string) (int, error)
	// Close tears the interface down.
	Close() error
}

// ErrStandby is returned by Initiate on a standby engine.
var ErrStandby = errors.New("wgengine: engine is standby")

// Diff compares desired peers with the device's and returns what must be
// set and removed. Peers whose key, preshared key and allowed IPs are equal
// are left alone.
func Diff(current []PeerState, desired []PeerConfig) (set []PeerConfig, remove []string) {
	have := make(map[string]PeerConfig, len(current))
	for _, p := range current {
		have[p.PublicKey] = p.PeerConfig
	}
	want := make(map[string]bool, len(desired))
	for _, d := range desired {
		want[d.PublicKey] = true
		if h, ok := have[d.PublicKey]; ok && samePeer(h, d) {
			continue
		}
		set = append(set, d)
	}
	for _, p := range current {
		if !want[p.PublicKey] {
			remove = append(remove, p.PublicKey)
		}
	}
	return set, remove
}

func samePeer(a, b PeerConfig) bool {
	if a.PresharedKey != b.PresharedKey || a.Keepalive != b.Keepalive || len(a.AllowedIPs) != len(b.AllowedIPs) {
		return false
	}
	x, y := slices.Clone(a.AllowedIPs), slices.Clone(b.AllowedIPs)
	cmp := func(p, q netip.Prefix) int {
		if c := p.Addr().Compare(q.Addr()); c != 0 {
			return c
		}
		return p.Bits() - q.Bits()
	}
	slices.SortFunc(x, cmp)
	slices.SortFunc(y, cmp)
	return slices.Equal(x, y)
}

// keyHex converts a base64 WireGuard key to the hex form of the UAPI.
func keyHex(b64 string) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != 32 {
		return "", fmt.Errorf("wgengine: bad key")
	}
	return hex.EncodeToString(raw), nil
}

func keyB64(hexKey string) (string, error) {
	raw, err := hex.DecodeString(hexKey)
	if err != nil || len(raw) != 32 {
		return "", errors.New("wgengine: bad key in device state")
	}
	return base64.StdEncoding.EncodeToString(raw), nil
}

const zeroKeyHex = "0000000000000000000000000000000000000000000000000000000000000000"

func prefixOf(n net.IPNet) (netip.Prefix, bool) {
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones), true
}
