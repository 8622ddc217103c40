package enroll

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/store"
)

// LocationConfig is everything a client needs to reach one location.
type LocationConfig struct {
	LocationID string `json:"location_id"`
	Name       string `json:"name"`
	// Addresses are the device's tunnel addresses here, with host prefix.
	Addresses []string `json:"addresses"`
	// Endpoints are host:port, the primary endpoint first, then the extra
	// endpoints to fail over to.
	Endpoints  []string `json:"endpoints"`
	AllowedIPs []string `json:"allowed_ips"`
	DNS        []string `json:"dns"`
	MTU        int      `json:"mtu"`
	Keepalive  int      `json:"keepalive"`
	MFAMode    string   `json:"mfa_mode"`
	// PublicKey is the location's (the gateways') WireGuard public key.
	PublicKey string `json:"public_key"`
	// Revision changes whenever the location or its peers change.
	Revision int64 `json:"revision"`
	// Config is the wg-quick configuration; the private key is the
	// placeholder vpn.PrivateKeyPlaceholder, which the client fills in.
	Config string `json:"config"`
}

// SyncResult is what a client learns on sync: its device and the current
// configuration of every location it may use. A location that is no longer
// listed was removed (or the user lost access to it).
type SyncResult struct {
	Device    vpn.Device       `json:"device"`
	Locations []LocationConfig `json:"locations"`
}

// Sync resolves a client sync token and returns the device's locations.
// Unknown tokens (including those of deleted devices) are refused, as are
// the tokens of inactive users.
func (s *Service) Sync(ctx context.Context, clientToken string) (SyncResult, error) {
	if !strings.HasPrefix(clientToken, clientTokenPrefix) || len(clientToken) > 128 {
		return SyncResult{}, ErrClientToken
	}
	var tokenID, deviceID, userID, username string
	var lastUsed int64
	var active bool
	err := s.db.QueryRowContext(ctx, `SELECT ct.id, ct.device_id, ct.last_used_at, u.id, u.username, u.active
		FROM client_tokens ct JOIN devices d ON d.id = ct.device_id JOIN users u ON u.id = d.user_id WHERE ct.token_hash = $1`,
		s.hash("client", clientToken)).Scan(&tokenID, &deviceID, &lastUsed, &userID, &username, &active)
	if err != nil {
		if isNoRows(err) {
			return SyncResult{}, ErrClientToken
		}
		return SyncResult{}, fmt.Errorf("look up client token: %w", err)
	}
	if !active {
		return SyncResult{}, &core.Error{Kind: core.KindForbidden, Code: "account_disabled", Message: "this account is disabled or not yet enrolled"}
	}
	now := s.now()
	// Touch at most once a minute: clients poll.
	if now.UnixMilli()-lastUsed > time.Minute.Milliseconds() {
		if err := s.touches.Do(ctx, "", tokenTouch{id: tokenID, at: now.UnixMilli()}); err != nil {
			s.log.Warn("cannot record client token use", "err", err) // the sync itself goes on
		}
	}
	actor := core.Actor{UserID: userID, Username: username}
	d, err := s.vpn.GetDevice(ctx, actor, deviceID)
	if errors.Is(err, core.ErrNotFound) {
		return SyncResult{}, ErrClientToken
	}
	if err != nil {
		return SyncResult{}, err
	}
	locs, err := s.locationConfigs(ctx, actor, d)
	if err != nil {
		return SyncResult{}, err
	}
	return SyncResult{Device: d, Locations: locs}, nil
}

// locationConfigs builds the configuration of every location where the
// device has an address, by location name.
func (s *Service) locationConfigs(ctx context.Context, actor core.Actor, d vpn.Device) ([]LocationConfig, error) {
	addrs := map[string][]string{}
	var order []string
	for _, a := range d.Addresses {
		if _, ok := addrs[a.LocationID]; !ok {
			order = append(order, a.LocationID)
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil {
			return nil, fmt.Errorf("device address %q: %w", a.Address, err)
		}
		addrs[a.LocationID] = append(addrs[a.LocationID], netip.PrefixFrom(ip, ip.BitLen()).String())
	}
	out := []LocationConfig{}
	for _, id := range order {
		l, err := s.vpn.GetLocation(ctx, actor, id)
		if errors.Is(err, core.ErrNotFound) {
			continue // removed, or access lost, since the addresses were read
		}
		if err != nil {
			return nil, err
		}
		cfg, err := vpn.RenderConfig(d, l, "")
		if errors.Is(err, core.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		eps := []string{vpn.EndpointWithPort(l.Endpoint, l.ListenPort)}
		for _, e := range l.ExtraEndpoints {
			eps = append(eps, vpn.EndpointWithPort(e, l.ListenPort))
		}
		out = append(out, LocationConfig{LocationID: l.ID, Name: l.Name, Addresses: addrs[id], Endpoints: eps,
			AllowedIPs: nonNil(l.AllowedIPs), DNS: nonNil(l.DNS), MTU: l.MTU, Keepalive: l.Keepalive, MFAMode: l.MFAMode,
			PublicKey: l.PublicKey, Revision: l.Revision, Config: cfg})
	}
	slices.SortFunc(out, func(a, b LocationConfig) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func nonNil(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}

type tokenTouch struct {
	id string
	at int64
}

// touchTokens records the last use of a batch of client tokens in one
// statement (at the batch's newest time: they were used within moments).
func (s *Service) touchTokens(ctx context.Context, _ string, batch []tokenTouch) []error {
	args := []any{int64(0)}
	ids := make([]string, len(batch))
	for i, t := range batch {
		args[0] = max(args[0].(int64), t.at)
		ids[i] = t.id
	}
	_, err := s.db.ExecContext(ctx, `UPDATE client_tokens SET last_used_at = $1 WHERE id IN (`+store.InList(&args, ids...)+`)`, args...)
	if err != nil {
		err = fmt.Errorf("touch client tokens: %w", err)
	}
	out := make([]error, len(batch))
	for i := range out {
		out[i] = err
	}
	return out
}
