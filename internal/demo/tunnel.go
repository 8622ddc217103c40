package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/wardvpn/ward/internal/gateway/wgengine"
)

// The demo's VPN client: the data plane of `ward client` (internal/client)
// on a netstack engine instead of a TUN device, so it needs no privileges
// and its traffic never leaves the process; the same watchdog idea moves
// the peer to the next endpoint when the tunnel stalls.

// tunnelConfig is one location's tunnel.
type tunnelConfig struct {
	PrivateKey   string
	Addresses    []netip.Prefix
	MTU          int
	PeerKey      string // the location's public key
	PresharedKey string // the MFA session's key
	AllowedIPs   []netip.Prefix
	Keepalive    int
	// Endpoints in order of preference (IP:port).
	Endpoints []string
	// StallAfter: data sent but nothing received for this long means the
	// path is dead.
	StallAfter time.Duration
}

// switchEvent is one failover of the watchdog.
type switchEvent struct {
	at         time.Time
	to         string // the new endpoint
	toIndex    int
	silentFor  time.Duration
	unanswered uint64 // bytes sent since the last packet came in
	err        error
}

type tunnel struct {
	cfg tunnelConfig
	eng *wgengine.Netstack
	hc  *http.Client

	mu      sync.Mutex
	current int
}

func openTunnel(cfg tunnelConfig, log *slog.Logger) (*tunnel, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("the location has no endpoint")
	}
	if cfg.StallAfter == 0 {
		cfg.StallAfter = time.Second
	}
	eng := wgengine.NewNetstack(wgengine.NetstackOptions{ListenAddr: netip.MustParseAddrPort("127.0.0.1:0"), MTU: cfg.MTU, Log: log})
	if err := eng.Configure(wgengine.Interface{PrivateKey: cfg.PrivateKey, MTU: cfg.MTU, Addresses: cfg.Addresses}); err != nil {
		eng.Close()
		return nil, err
	}
	t := &tunnel{cfg: cfg, eng: eng}
	// No keep-alive: every fetch is a new TCP connection through the
	// tunnel, so it shows the path as it is now.
	t.hc = &http.Client{Transport: &http.Transport{DialContext: eng.Net().DialContext, DisableKeepAlives: true}}
	if err := t.setPeer(0); err != nil {
		eng.Close()
		return nil, err
	}
	return t, nil
}

// setPeer (re)installs the peer towards endpoint i: removing and adding it
// drops the old session, so the next packet starts a handshake at once
// instead of after WireGuard's 15 s rekey timeout.
func (t *tunnel) setPeer(i int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.eng.Apply(nil, []string{t.cfg.PeerKey}); err != nil {
		return err
	}
	peer := wgengine.PeerConfig{PublicKey: t.cfg.PeerKey, PresharedKey: t.cfg.PresharedKey, AllowedIPs: t.cfg.AllowedIPs,
		Keepalive: t.cfg.Keepalive, Endpoint: t.cfg.Endpoints[i]}
	if err := t.eng.Apply([]wgengine.PeerConfig{peer}, nil); err != nil {
		return err
	}
	t.current = i
	return nil
}

func (t *tunnel) currentIndex() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.current
}

func (t *tunnel) stats() (wgengine.PeerState, error) {
	peers, err := t.eng.Peers()
	if err != nil {
		return wgengine.PeerState{}, err
	}
	for _, p := range peers {
		if p.PublicKey == t.cfg.PeerKey {
			return p, nil
		}
	}
	return wgengine.PeerState{}, errors.New("peer missing from the device")
}

// watch runs the watchdog until ctx ends: when data goes out but nothing
// comes back for StallAfter, it moves the peer to the next endpoint and
// reports the switch.
func (t *tunnel) watch(ctx context.Context, onSwitch func(switchEvent)) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lastRx, txAtLastRx uint64
	lastRxAt := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		st, err := t.stats()
		if err != nil {
			continue
		}
		now := time.Now()
		if st.RxBytes != lastRx {
			lastRx, txAtLastRx, lastRxAt = st.RxBytes, st.TxBytes, now
			continue
		}
		// More than a keepalive or a handshake initiation went out since
		// the last packet came in, and the silence lasts: the path is dead.
		if st.TxBytes-txAtLastRx > 160 && now.Sub(lastRxAt) > t.cfg.StallAfter {
			next := (t.currentIndex() + 1) % len(t.cfg.Endpoints)
			ev := switchEvent{at: now, to: t.cfg.Endpoints[next], toIndex: next, silentFor: now.Sub(lastRxAt), unanswered: st.TxBytes - txAtLastRx}
			ev.err = t.setPeer(next)
			onSwitch(ev)
			// Counters restart with the new peer.
			lastRx, txAtLastRx, lastRxAt = 0, 0, now
		}
	}
}

// get fetches url through the tunnel and returns the trimmed body.
func (t *tunnel) get(ctx context.Context, url string, timeout time.Duration) (string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return "", 0, err
	}
	resp, err := t.hc.Do(req)
	if err != nil {
		return "", time.Since(start), err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	elapsed := time.Since(start)
	if err != nil {
		return "", elapsed, err
	}
	if resp.StatusCode != http.StatusOK {
		return "", elapsed, fmt.Errorf("status %d", resp.StatusCode)
	}
	return strings.TrimSpace(string(b)), elapsed, nil
}

func (t *tunnel) close() {
	t.hc.CloseIdleConnections()
	t.eng.Close()
}
