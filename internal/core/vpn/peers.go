package vpn

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/wardvpn/ward/internal/store"
)

// Peer is a device as a gateway of a location installs it.
type Peer struct {
	PublicKey    string
	DeviceID     string
	AllowedIPs   []string
	PresharedKey string
	ExpiresAt    int64
}

// GatewayInterface is the interface part of a location's gateway config.
type GatewayInterface struct {
	LocationID   string
	LocationName string
	PrivateKey   string
	ListenPort   int
	Addresses    []string
	MTU          int
	FwMark       int
	// PeersWithoutCore and DropPeersAfter are the location's policy for life
	// without core: with PeersWithoutCoreDrop the gateway removes the peers
	// of devices that need no MFA once no core replica has been connected to
	// it for DropPeersAfter seconds (MFA peers expire by their session rules).
	PeersWithoutCore string
	DropPeersAfter   int
	// MFADisconnectThreshold (seconds) is the location's disconnect
	// threshold when its peers are MFA sessions, 0 otherwise: without core,
	// the gateway expires those peers by it.
	MFADisconnectThreshold int
}

// GatewayUpdate is what a gateway at some revision needs next: either a full
// snapshot, or the peers changed since its revision in their current state.
type GatewayUpdate struct {
	Snapshot     bool
	FromRevision int64
	Revision     int64
	Interface    GatewayInterface
	Peers        []Peer   // snapshot: all peers; changes: upserts
	Removes      []string // changes only
}

// snapshotThreshold: past this many changed peers a snapshot is cheaper.
const snapshotThreshold = 2000

// GatewayUpdateSince computes what a gateway that applied revision from
// needs. The revision is read before the peers, so the peers are at least as
// new as the revision named; a later update re-sends them (applying is
// idempotent), which is why no long transaction is needed here.
func (s *Service) GatewayUpdateSince(ctx context.Context, locationID string, from int64) (GatewayUpdate, error) {
	l, err := s.getLocation(ctx, s.db, locationID)
	if err != nil {
		return GatewayUpdate{}, err
	}
	u := GatewayUpdate{FromRevision: from, Revision: l.Revision, Interface: gatewayInterface(l)}
	if from == l.Revision {
		return u, nil
	}
	var keys []string
	if from > 0 && from < l.Revision && from >= l.changesPrunedTo {
		rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT public_key FROM location_change_peers WHERE location_id = $1 AND revision > $2 AND revision <= $3`,
			locationID, from, l.Revision)
		if err != nil {
			return GatewayUpdate{}, fmt.Errorf("changed peers: %w", err)
		}
		for rows.Next() {
			var k string
			if err := rows.Scan(&k); err != nil {
				rows.Close()
				return GatewayUpdate{}, err
			}
			keys = append(keys, k)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return GatewayUpdate{}, err
		}
	}
	if from <= 0 || from > l.Revision || from < l.changesPrunedTo || len(keys) > snapshotThreshold {
		u.Snapshot = true
		u.Peers, err = s.locationPeers(ctx, s.db, l, nil)
		return u, err
	}
	u.Peers, err = s.locationPeers(ctx, s.db, l, keys)
	if err != nil {
		return GatewayUpdate{}, err
	}
	present := map[string]bool{}
	for _, p := range u.Peers {
		present[p.PublicKey] = true
	}
	for _, k := range keys {
		if !present[k] {
			u.Removes = append(u.Removes, k)
		}
	}
	slices.Sort(u.Removes)
	return u, nil
}

func gatewayInterface(l Location) GatewayInterface {
	gi := GatewayInterface{LocationID: l.ID, LocationName: l.Name, PrivateKey: l.privateKey, ListenPort: l.ListenPort,
		Addresses: slices.Clone(l.Addresses), MTU: l.MTU, FwMark: l.FwMark, PeersWithoutCore: l.PeersWithoutCore, DropPeersAfter: l.DropPeersAfter}
	if l.MFAMode != MFADisabled {
		gi.MFADisconnectThreshold = l.DisconnectThreshold
	}
	return gi
}

// locationPeers lists the peers of a location: devices of active users with
// an address there (restricted to keys when given). For MFA locations only
// devices with an active (new or connected) VPN session are peers, with the
// session's preshared key and, while the session has not connected yet, the
// deadline by which it must (the table belongs to core/vpnsession; a session
// only counts for the key it was authorized for).
func (s *Service) locationPeers(ctx context.Context, q store.Querier, l Location, keys []string) ([]Peer, error) {
	base := `SELECT d.id, d.public_key, a.address, '', '', 0 FROM device_addresses a JOIN devices d ON d.id = a.device_id JOIN users u ON u.id = d.user_id
		WHERE a.location_id = $1 AND u.active = TRUE`
	if l.MFAMode != MFADisabled {
		base = `SELECT d.id, d.public_key, a.address, vs.preshared_key, vs.state, vs.created_at FROM vpn_sessions vs
		JOIN devices d ON d.id = vs.device_id AND d.public_key = vs.public_key
		JOIN device_addresses a ON a.device_id = d.id AND a.location_id = vs.location_id
		JOIN users u ON u.id = d.user_id
		WHERE vs.location_id = $1 AND vs.state IN ('new', 'connected') AND u.active = TRUE`
	}
	threshold := int64(l.DisconnectThreshold) * 1000
	byDevice := map[string]*Peer{}
	var order []string
	scan := func(query string, args ...any) error {
		rows, err := q.QueryContext(ctx, query, args...)
		if err != nil {
			return fmt.Errorf("location peers: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var id, key, addr, psk, state string
			var created int64
			if err := rows.Scan(&id, &key, &addr, &psk, &state, &created); err != nil {
				return err
			}
			p := byDevice[id]
			if p == nil {
				p = &Peer{PublicKey: key, DeviceID: id, PresharedKey: psk}
				if state == "new" {
					p.ExpiresAt = created + threshold
				}
				byDevice[id] = p
				order = append(order, id)
			}
			ip, err := netip.ParseAddr(addr)
			if err != nil {
				return fmt.Errorf("stored address %q: %w", addr, err)
			}
			p.AllowedIPs = append(p.AllowedIPs, netip.PrefixFrom(ip, ip.BitLen()).String())
		}
		return rows.Err()
	}
	if keys == nil {
		if err := scan(base+` ORDER BY d.id, a.family`, l.ID); err != nil {
			return nil, err
		}
	} else {
		for start := 0; start < len(keys); start += 500 {
			chunk := keys[start:min(start+500, len(keys))]
			args := []any{l.ID}
			ph := make([]string, len(chunk))
			for i, k := range chunk {
				args = append(args, k)
				ph[i] = fmt.Sprintf("$%d", i+2)
			}
			if err := scan(base+` AND d.public_key IN (`+strings.Join(ph, ",")+`) ORDER BY d.id, a.family`, args...); err != nil {
				return nil, err
			}
		}
	}
	out := make([]Peer, 0, len(order))
	for _, id := range order {
		out = append(out, *byDevice[id])
	}
	return out, nil
}
