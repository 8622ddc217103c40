package wgengine

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"golang.zx2c4.com/wireguard/device"
)

// validEndpoints keeps the entries with a well-formed key and "ip:port"
// endpoint, sorted by key (stable order for batches and logs).
func validEndpoints(endpoints map[string]string) (keys []string, eps map[string]netip.AddrPort) {
	eps = make(map[string]netip.AddrPort, len(endpoints))
	for k, e := range endpoints {
		ap, err := netip.ParseAddrPort(e)
		if err != nil || ap.Port() == 0 || !ap.Addr().IsValid() || ap.Addr().IsUnspecified() {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(k)
		if err != nil || len(raw) != 32 {
			continue
		}
		eps[k] = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys, eps
}

// ipcInitiate sets endpoints of existing peers in one UAPI batch
// (update_only: a key the device does not have is skipped, not created)
// and sends each of them a handshake initiation right away. wireguard-go
// then retries on its own timers until the client answers or 90 s pass.
func ipcInitiate(dev *device.Device, endpoints map[string]string) (int, error) {
	keys, eps := validEndpoints(endpoints)
	if len(keys) == 0 {
		return 0, nil
	}
	var b strings.Builder
	for _, k := range keys {
		h, _ := keyHex(k) // validated above
		fmt.Fprintf(&b, "public_key=%s\nupdate_only=true\nendpoint=%s\n", h, eps[k])
	}
	if err := dev.IpcSet(b.String()); err != nil {
		return 0, fmt.Errorf("set peer endpoints: %w", err)
	}
	sent := 0
	var firstErr error
	for _, k := range keys {
		raw, _ := base64.StdEncoding.DecodeString(k)
		var pk device.NoisePublicKey
		copy(pk[:], raw)
		peer := dev.LookupPeer(pk)
		if peer == nil {
			continue
		}
		// wireguard-go sends at most one initiation per peer every 5 s. On
		// activation, a peer with a persistent keepalive has just tried
		// one (towards no endpoint, or its old one), which would hold this
		// one back for 5 s: expiring the handshake state lifts the limit.
		// Any session is being replaced by this handshake anyway.
		peer.ExpireCurrentKeypairs()
		// isRetry=false resets the attempt counter: the full retry budget.
		if err := peer.SendHandshakeInitiation(false); err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("handshake to %s: %w", eps[k], err)
			}
			continue
		}
		sent++
	}
	return sent, firstErr
}
