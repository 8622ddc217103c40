package vpn

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/store"
)

// MFA modes of a location.
const (
	MFADisabled = "disabled"
	MFAInternal = "internal"
)

// What the gateways of a location do with the peers of devices that need no
// MFA once no core replica has been connected to them for the location's
// DropPeersAfter seconds. Peers of MFA sessions are not covered: they always
// expire by their session rules.
const (
	// PeersWithoutCoreKeep keeps the last known good peers, so an outage of
	// core never cuts tunnels that need no fresh authorization.
	PeersWithoutCoreKeep = "keep"
	// PeersWithoutCoreDrop removes them, for sites where a device revoked
	// during an outage of core must lose access within a bounded time.
	PeersWithoutCoreDrop = "drop"
)

// Defaults and limits of location settings.
const (
	DefaultListenPort          = 51820
	DefaultKeepalive           = 25
	DefaultMTU                 = 1420
	DefaultDisconnectThreshold = 300
	MinMFADisconnectThreshold  = 120
	DefaultDropPeersAfter      = 3600
	// A minute keeps a core restart or a short network blip from dropping
	// peers; a month is far beyond any outage worth riding out with "drop".
	MinDropPeersAfter = 60
	MaxDropPeersAfter = 30 * 86400
)

// SetTestMinMFADisconnectThreshold lowers the minimum disconnect threshold
// of this service's MFA locations to seconds (1..MinMFADisconnectThreshold;
// 0 restores the real minimum), so end-to-end tests can watch an idle MFA
// session close within seconds (ward core reads WARD_TEST_MIN_MFA_THRESHOLD
// at start). FOR TESTS ONLY: a real deployment must never call it.
func (s *Service) SetTestMinMFADisconnectThreshold(seconds int) error {
	if seconds < 0 || seconds > MinMFADisconnectThreshold {
		return fmt.Errorf("test minimum MFA disconnect threshold %d is outside 0..%d", seconds, MinMFADisconnectThreshold)
	}
	s.testMinMFAThreshold.Store(int32(seconds))
	return nil
}

// minMFAThreshold is the minimum disconnect threshold of MFA locations.
func (s *Service) minMFAThreshold() int {
	if m := int(s.testMinMFAThreshold.Load()); m > 0 {
		return m
	}
	return MinMFADisconnectThreshold
}

// Location is a VPN site served by one or more gateways sharing one key.
type Location struct {
	ID                  string   `json:"id"`
	Name                string   `json:"name"`
	Addresses           []string `json:"addresses"`
	ListenPort          int      `json:"listen_port"`
	Endpoint            string   `json:"endpoint"`
	ExtraEndpoints      []string `json:"extra_endpoints"`
	AllowedIPs          []string `json:"allowed_ips"`
	DNS                 []string `json:"dns"`
	Keepalive           int      `json:"keepalive"`
	MTU                 int      `json:"mtu"`
	FwMark              int      `json:"fwmark"`
	MFAMode             string   `json:"mfa_mode"`
	DisconnectThreshold int      `json:"disconnect_threshold"`
	PeersWithoutCore    string   `json:"peers_without_core"`
	DropPeersAfter      int      `json:"drop_peers_after"`
	AllGroups           bool     `json:"all_groups"`
	AllowedGroups       []string `json:"allowed_groups"`
	PublicKey           string   `json:"public_key"`
	Revision            int64    `json:"revision"`
	CreatedAt           int64    `json:"created_at"`
	UpdatedAt           int64    `json:"updated_at"`

	privateKey string
	// changesPrunedTo: change records up to here are gone (see PurgeChanges).
	changesPrunedTo int64
	nets            []ifaceNet
}

// LocationInput creates a location (all fields) or patches one (set fields).
type LocationInput struct {
	Name                *string   `json:"name"`
	Addresses           *[]string `json:"addresses"`
	ListenPort          *int      `json:"listen_port"`
	Endpoint            *string   `json:"endpoint"`
	ExtraEndpoints      *[]string `json:"extra_endpoints"`
	AllowedIPs          *[]string `json:"allowed_ips"`
	DNS                 *[]string `json:"dns"`
	Keepalive           *int      `json:"keepalive"`
	MTU                 *int      `json:"mtu"`
	FwMark              *int      `json:"fwmark"`
	MFAMode             *string   `json:"mfa_mode"`
	DisconnectThreshold *int      `json:"disconnect_threshold"`
	PeersWithoutCore    *string   `json:"peers_without_core"`
	DropPeersAfter      *int      `json:"drop_peers_after"`
	AllGroups           *bool     `json:"all_groups"`
	AllowedGroups       *[]string `json:"allowed_groups"`
}

// apply merges the input into l and validates the result; minMFA is the
// smallest disconnect threshold allowed when MFA is on.
func (in LocationInput) apply(l *Location, minMFA int) error {
	if in.Name != nil {
		l.Name = strings.TrimSpace(*in.Name)
	}
	if l.Name == "" || len(l.Name) > 64 || strings.ContainsAny(l.Name, "\x00\r\n/") {
		return core.Invalid("invalid_name", "name", "location name must be 1 to 64 characters, no '/' or line breaks")
	}
	if in.Addresses != nil {
		l.Addresses = *in.Addresses
	}
	if len(l.Addresses) == 0 || len(l.Addresses) > 2 {
		return core.Invalid("invalid_cidr", "addresses", "give one IPv4 and/or one IPv6 network")
	}
	l.nets = l.nets[:0]
	seen := map[int]bool{}
	for i, s := range l.Addresses {
		n, err := parseIfaceNet("addresses", s)
		if err != nil {
			return err
		}
		if seen[n.family()] {
			return core.Invalid("invalid_cidr", "addresses", "at most one network per address family")
		}
		seen[n.family()] = true
		l.nets = append(l.nets, n)
		l.Addresses[i] = n.String()
	}
	if in.ListenPort != nil {
		l.ListenPort = *in.ListenPort
	}
	if l.ListenPort < 1 || l.ListenPort > 65535 {
		return core.Invalid("invalid_port", "listen_port", "must be between 1 and 65535")
	}
	if in.Endpoint != nil {
		l.Endpoint = *in.Endpoint
	}
	ep, err := validEndpoint("endpoint", l.Endpoint)
	if err != nil {
		return err
	}
	l.Endpoint = ep
	if in.ExtraEndpoints != nil {
		l.ExtraEndpoints = *in.ExtraEndpoints
	}
	if len(l.ExtraEndpoints) > 16 {
		return core.Invalid("invalid_endpoint", "extra_endpoints", "at most 16 extra endpoints")
	}
	for i, e := range l.ExtraEndpoints {
		if l.ExtraEndpoints[i], err = validEndpoint("extra_endpoints", e); err != nil {
			return err
		}
	}
	if in.AllowedIPs != nil {
		l.AllowedIPs = *in.AllowedIPs
	}
	if len(l.AllowedIPs) == 0 {
		for _, n := range l.nets {
			l.AllowedIPs = append(l.AllowedIPs, n.Prefix.String())
		}
	}
	if l.AllowedIPs, err = parsePrefixList("allowed_ips", l.AllowedIPs); err != nil {
		return err
	}
	if in.DNS != nil {
		l.DNS = *in.DNS
	}
	for i, d := range l.DNS {
		d = strings.TrimSpace(d)
		if _, err := netip.ParseAddr(d); err != nil && !validHostname(d) {
			return core.Invalid("invalid_dns", "dns", "%q is neither an IP address nor a search domain", d)
		}
		l.DNS[i] = d
	}
	if in.Keepalive != nil {
		l.Keepalive = *in.Keepalive
	}
	if l.Keepalive < 0 || l.Keepalive > 3600 {
		return core.Invalid("invalid_value", "keepalive", "must be between 0 (off) and 3600 seconds")
	}
	if in.MTU != nil {
		l.MTU = *in.MTU
	}
	if l.MTU < 1280 || l.MTU > 9000 {
		return core.Invalid("invalid_value", "mtu", "must be between 1280 and 9000")
	}
	if in.FwMark != nil {
		l.FwMark = *in.FwMark
	}
	if l.FwMark < 0 || int64(l.FwMark) > 0xffffffff {
		return core.Invalid("invalid_value", "fwmark", "must be between 0 (off) and 4294967295")
	}
	if in.MFAMode != nil {
		l.MFAMode = *in.MFAMode
	}
	if l.MFAMode != MFADisabled && l.MFAMode != MFAInternal {
		return core.Invalid("invalid_mfa_mode", "mfa_mode", "must be %q or %q", MFADisabled, MFAInternal)
	}
	if in.DisconnectThreshold != nil {
		l.DisconnectThreshold = *in.DisconnectThreshold
	}
	minThreshold := 30
	if l.MFAMode != MFADisabled {
		minThreshold = minMFA
	}
	if l.DisconnectThreshold < minThreshold || l.DisconnectThreshold > 7*86400 {
		return core.Invalid("invalid_value", "disconnect_threshold", "must be between %d and %d seconds for this MFA mode", minThreshold, 7*86400)
	}
	if in.PeersWithoutCore != nil {
		l.PeersWithoutCore = *in.PeersWithoutCore
	}
	if l.PeersWithoutCore != PeersWithoutCoreKeep && l.PeersWithoutCore != PeersWithoutCoreDrop {
		return core.Invalid("invalid_value", "peers_without_core", "must be %q or %q", PeersWithoutCoreKeep, PeersWithoutCoreDrop)
	}
	if in.DropPeersAfter != nil {
		l.DropPeersAfter = *in.DropPeersAfter
	}
	// Validated with "keep" too, so switching to "drop" later can never
	// activate a value that was never checked.
	if l.DropPeersAfter < MinDropPeersAfter || l.DropPeersAfter > MaxDropPeersAfter {
		return core.Invalid("invalid_value", "drop_peers_after", "must be between %d and %d seconds", MinDropPeersAfter, MaxDropPeersAfter)
	}
	if in.AllGroups != nil {
		l.AllGroups = *in.AllGroups
	}
	if in.AllowedGroups != nil {
		l.AllowedGroups = *in.AllowedGroups
		if in.AllGroups == nil && len(l.AllowedGroups) > 0 {
			l.AllGroups = false
		}
	}
	if l.AllGroups {
		l.AllowedGroups = []string{}
	}
	return nil
}

// CreateLocation adds a location with a fresh key pair and gives every
// device allowed in it an address.
func (s *Service) CreateLocation(ctx context.Context, a core.Actor, in LocationInput) (Location, error) {
	if err := requireAdmin(a, "create locations"); err != nil {
		return Location{}, err
	}
	l := Location{ListenPort: DefaultListenPort, Keepalive: DefaultKeepalive, MTU: DefaultMTU, MFAMode: MFADisabled,
		DisconnectThreshold: DefaultDisconnectThreshold, AllGroups: in.AllowedGroups == nil || len(*in.AllowedGroups) == 0,
		PeersWithoutCore: PeersWithoutCoreKeep, DropPeersAfter: DefaultDropPeersAfter,
		ExtraEndpoints: []string{}, DNS: []string{}, AllowedGroups: []string{}}
	if err := in.apply(&l, s.minMFAThreshold()); err != nil {
		return Location{}, err
	}
	priv, pub, err := GenerateKeyPair()
	if err != nil {
		return Location{}, fmt.Errorf("generate location key: %w", err)
	}
	l.ID, l.privateKey, l.PublicKey = core.NewID(), priv, pub
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		if err := lockLocationSet(ctx, tx); err != nil {
			return err
		}
		if err := checkOverlap(ctx, tx, l); err != nil {
			return err
		}
		now := store.Now()
		v4, v6 := l.familyCIDR(4), l.familyCIDR(6)
		_, err := tx.ExecContext(ctx, `INSERT INTO locations (id, name, ipv4_cidr, ipv6_cidr, listen_port, endpoint, extra_endpoints, allowed_ips, dns,
			keepalive, mtu, fwmark, mfa_mode, disconnect_threshold, peers_without_core, drop_peers_after, all_groups, private_key, public_key, revision, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, 1, $20, $20)`,
			l.ID, l.Name, v4, v6, l.ListenPort, l.Endpoint, joinList(l.ExtraEndpoints), joinList(l.AllowedIPs), joinList(l.DNS),
			l.Keepalive, l.MTU, l.FwMark, l.MFAMode, l.DisconnectThreshold, l.PeersWithoutCore, l.DropPeersAfter, l.AllGroups, l.privateKey, l.PublicKey, now)
		if store.UniqueViolationOn(err, "name") {
			return core.Conflict("duplicate_name", "name", "a location with this name already exists")
		}
		if err != nil {
			return fmt.Errorf("insert location: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO location_changes (location_id, revision, kind, subject_id, created_at) VALUES ($1, 1, 'location.create', $1, $2)`, l.ID, now); err != nil {
			return err
		}
		if err := setLocationGroups(ctx, tx, l.ID, l.AllowedGroups); err != nil {
			return err
		}
		if err := s.syncLocation(ctx, tx, s.newRevisions(tx), l.ID); err != nil {
			return err
		}
		return core.Audit(ctx, tx, a, "location.create", "location", l.ID, map[string]any{"name": l.Name, "addresses": l.Addresses, "mfa_mode": l.MFAMode})
	})
	if err != nil {
		return Location{}, err
	}
	return s.getLocation(ctx, s.db, l.ID)
}

func (l Location) familyCIDR(f int) string {
	for _, n := range l.nets {
		if n.family() == f {
			return n.String()
		}
	}
	return ""
}

func (l Location) net(f int) (ifaceNet, bool) {
	for _, n := range l.nets {
		if n.family() == f {
			return n, true
		}
	}
	return ifaceNet{}, false
}

// lockLocationSet serialises changes to the set of location networks, so two
// concurrent creations cannot both pass the overlap check on PostgreSQL.
func lockLocationSet(ctx context.Context, tx *sql.Tx) error {
	now := store.Now()
	_, err := tx.ExecContext(ctx, `INSERT INTO instance (key, value, created_at) VALUES ('location_set_lock', '', $1)
		ON CONFLICT (key) DO UPDATE SET created_at = excluded.created_at`, now)
	return err
}

func checkOverlap(ctx context.Context, tx *sql.Tx, l Location) error {
	rows, err := tx.QueryContext(ctx, `SELECT id, name, ipv4_cidr, ipv6_cidr FROM locations WHERE id <> $1`, l.ID)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id, name, v4, v6 string
		if err := rows.Scan(&id, &name, &v4, &v6); err != nil {
			return err
		}
		for _, other := range []string{v4, v6} {
			if other == "" {
				continue
			}
			op, err := netip.ParsePrefix(other)
			if err != nil {
				continue
			}
			for _, n := range l.nets {
				if n.Prefix.Overlaps(op.Masked()) {
					return core.Conflict("overlapping_network", "addresses", "%s overlaps %s of location %q", n.Prefix, op.Masked(), name)
				}
			}
		}
	}
	return rows.Err()
}

func setLocationGroups(ctx context.Context, tx *sql.Tx, locationID string, names []string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM location_groups WHERE location_id = $1`, locationID); err != nil {
		return err
	}
	for _, n := range names {
		var gid string
		err := tx.QueryRowContext(ctx, `SELECT id FROM groups WHERE name = $1`, strings.TrimSpace(n)).Scan(&gid)
		if errors.Is(err, sql.ErrNoRows) {
			return core.Invalid("unknown_group", "allowed_groups", "group %q does not exist", n)
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO location_groups (location_id, group_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, locationID, gid); err != nil {
			return err
		}
	}
	return nil
}

const locationColumns = `id, name, ipv4_cidr, ipv6_cidr, listen_port, endpoint, extra_endpoints, allowed_ips, dns, keepalive, mtu, fwmark,
	mfa_mode, disconnect_threshold, peers_without_core, drop_peers_after, all_groups, private_key, public_key, revision, created_at, updated_at, changes_pruned_to`

func scanLocation(row interface{ Scan(...any) error }) (Location, error) {
	var l Location
	var v4, v6, extra, allowed, dns string
	err := row.Scan(&l.ID, &l.Name, &v4, &v6, &l.ListenPort, &l.Endpoint, &extra, &allowed, &dns, &l.Keepalive, &l.MTU, &l.FwMark,
		&l.MFAMode, &l.DisconnectThreshold, &l.PeersWithoutCore, &l.DropPeersAfter, &l.AllGroups, &l.privateKey, &l.PublicKey, &l.Revision, &l.CreatedAt, &l.UpdatedAt, &l.changesPrunedTo)
	if err != nil {
		return l, err
	}
	l.Addresses = []string{}
	for _, c := range []string{v4, v6} {
		if c == "" {
			continue
		}
		n, err := parseIfaceNet("addresses", c)
		if err != nil {
			return l, fmt.Errorf("stored network %q of location %s: %w", c, l.ID, err)
		}
		l.nets = append(l.nets, n)
		l.Addresses = append(l.Addresses, n.String())
	}
	l.ExtraEndpoints, l.AllowedIPs, l.DNS = splitList(extra), splitList(allowed), splitList(dns)
	l.AllowedGroups = []string{}
	return l, nil
}

func (s *Service) getLocation(ctx context.Context, q store.Querier, id string) (Location, error) {
	l, err := scanLocation(q.QueryRowContext(ctx, `SELECT `+locationColumns+` FROM locations WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Location{}, core.NotFound("location")
	}
	if err != nil {
		return Location{}, fmt.Errorf("get location: %w", err)
	}
	rows, err := q.QueryContext(ctx, `SELECT g.name FROM location_groups lg JOIN groups g ON g.id = lg.group_id WHERE lg.location_id = $1 ORDER BY g.name`, id)
	if err != nil {
		return Location{}, err
	}
	defer rows.Close()
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return Location{}, err
		}
		l.AllowedGroups = append(l.AllowedGroups, n)
	}
	return l, rows.Err()
}

// GetLocation returns a location. Users see the locations they may use.
func (s *Service) GetLocation(ctx context.Context, a core.Actor, id string) (Location, error) {
	l, err := s.getLocation(ctx, s.db, id)
	if err != nil {
		return Location{}, err
	}
	if !a.IsAdmin {
		ok, err := s.userMayUse(ctx, s.db, a.UserID, l)
		if err != nil {
			return Location{}, err
		}
		if !ok {
			return Location{}, core.NotFound("location")
		}
	}
	return l, nil
}

// ListLocations lists locations by name; users see those they may use.
func (s *Service) ListLocations(ctx context.Context, a core.Actor, p ListParams) ([]Location, int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+locationColumns+` FROM locations ORDER BY name`)
	if err != nil {
		return nil, 0, fmt.Errorf("list locations: %w", err)
	}
	var all []Location
	for rows.Next() {
		l, err := scanLocation(rows)
		if err != nil {
			rows.Close()
			return nil, 0, err
		}
		all = append(all, l)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	visible := []Location{}
	for _, l := range all {
		if !a.IsAdmin {
			ok, err := s.userMayUse(ctx, s.db, a.UserID, l)
			if err != nil {
				return nil, 0, err
			}
			if !ok {
				continue
			}
		}
		full, err := s.getLocation(ctx, s.db, l.ID)
		if err != nil {
			return nil, 0, err
		}
		visible = append(visible, full)
	}
	total := len(visible)
	lo := min(p.Offset, total)
	hi := min(lo+p.Limit, total)
	return visible[lo:hi], total, nil
}

// UpdateLocation applies a patch. A network that already has device
// addresses cannot move (that would renumber clients behind their backs); a
// new address family is filled for every allowed device.
func (s *Service) UpdateLocation(ctx context.Context, a core.Actor, id string, in LocationInput) (Location, error) {
	if err := requireAdmin(a, "change locations"); err != nil {
		return Location{}, err
	}
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		if err := lockLocationSet(ctx, tx); err != nil {
			return err
		}
		before, err := s.getLocation(ctx, tx, id)
		if err != nil {
			return err
		}
		l := before
		l.nets = slices.Clone(before.nets)
		l.Addresses = slices.Clone(before.Addresses)
		if err := in.apply(&l, s.minMFAThreshold()); err != nil {
			return err
		}
		if err := checkOverlap(ctx, tx, l); err != nil {
			return err
		}
		for _, fam := range []int{4, 6} {
			old, hadOld := before.net(fam)
			nw, hasNew := l.net(fam)
			if !hadOld || (hasNew && old.Prefix == nw.Prefix && old.Addr == nw.Addr) {
				continue
			}
			var inUse int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM device_addresses WHERE location_id = $1 AND family = $2`, id, fam).Scan(&inUse); err != nil {
				return err
			}
			if inUse == 0 {
				continue
			}
			if !hasNew || old.Prefix != nw.Prefix {
				return core.Conflict("network_in_use", "addresses", "%d devices hold addresses in %s; remove them before changing this network", inUse, old.Prefix)
			}
			var clash int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM device_addresses WHERE location_id = $1 AND family = $2 AND host_index = $3`,
				id, fam, hostIndex(nw.Prefix, nw.Addr)).Scan(&clash); err != nil {
				return err
			}
			if clash > 0 {
				return core.Conflict("address_in_use", "addresses", "%s is already a device's address", nw.Addr)
			}
		}
		_, err = tx.ExecContext(ctx, `UPDATE locations SET name = $2, ipv4_cidr = $3, ipv6_cidr = $4, listen_port = $5, endpoint = $6, extra_endpoints = $7,
			allowed_ips = $8, dns = $9, keepalive = $10, mtu = $11, fwmark = $12, mfa_mode = $13, disconnect_threshold = $14, peers_without_core = $15,
			drop_peers_after = $16, all_groups = $17, updated_at = $18
			WHERE id = $1`, id, l.Name, l.familyCIDR(4), l.familyCIDR(6), l.ListenPort, l.Endpoint, joinList(l.ExtraEndpoints), joinList(l.AllowedIPs),
			joinList(l.DNS), l.Keepalive, l.MTU, l.FwMark, l.MFAMode, l.DisconnectThreshold, l.PeersWithoutCore, l.DropPeersAfter, l.AllGroups, store.Now())
		if store.UniqueViolationOn(err, "name") {
			return core.Conflict("duplicate_name", "name", "a location with this name already exists")
		}
		if err != nil {
			return fmt.Errorf("update location: %w", err)
		}
		for _, fam := range []int{4, 6} {
			if _, has := l.net(fam); !has {
				if _, err := tx.ExecContext(ctx, `DELETE FROM device_addresses WHERE location_id = $1 AND family = $2`, id, fam); err != nil {
					return err
				}
			}
		}
		if in.AllowedGroups != nil || (in.AllGroups != nil && *in.AllGroups) {
			if err := setLocationGroups(ctx, tx, id, l.AllowedGroups); err != nil {
				return err
			}
		}
		revs := s.newRevisions(tx)
		if err := revs.bump(ctx, id, "location.update", id); err != nil {
			return err
		}
		if before.MFAMode != l.MFAMode {
			// MFA on or off changes which devices are peers: every device
			// with an address here is touched, so gateways drop (or add) it.
			keys, err := locationDeviceKeys(ctx, tx, id)
			if err != nil {
				return err
			}
			if err := revs.bump(ctx, id, "location.update", id, keys...); err != nil {
				return err
			}
		}
		if err := s.syncLocation(ctx, tx, revs, id); err != nil {
			return err
		}
		return core.Audit(ctx, tx, a, "location.update", "location", id, in.auditDetails())
	})
	if err != nil {
		return Location{}, err
	}
	return s.getLocation(ctx, s.db, id)
}

func (in LocationInput) auditDetails() map[string]any {
	d := map[string]any{}
	add := func(k string, set bool, v any) {
		if set {
			d[k] = v
		}
	}
	add("name", in.Name != nil, in.Name)
	add("addresses", in.Addresses != nil, in.Addresses)
	add("listen_port", in.ListenPort != nil, in.ListenPort)
	add("endpoint", in.Endpoint != nil, in.Endpoint)
	add("extra_endpoints", in.ExtraEndpoints != nil, in.ExtraEndpoints)
	add("allowed_ips", in.AllowedIPs != nil, in.AllowedIPs)
	add("dns", in.DNS != nil, in.DNS)
	add("keepalive", in.Keepalive != nil, in.Keepalive)
	add("mtu", in.MTU != nil, in.MTU)
	add("fwmark", in.FwMark != nil, in.FwMark)
	add("mfa_mode", in.MFAMode != nil, in.MFAMode)
	add("disconnect_threshold", in.DisconnectThreshold != nil, in.DisconnectThreshold)
	add("peers_without_core", in.PeersWithoutCore != nil, in.PeersWithoutCore)
	add("drop_peers_after", in.DropPeersAfter != nil, in.DropPeersAfter)
	add("all_groups", in.AllGroups != nil, in.AllGroups)
	add("allowed_groups", in.AllowedGroups != nil, in.AllowedGroups)
	return d
}

// DeleteLocation removes a location with its addresses, gateways and
// network devices.
func (s *Service) DeleteLocation(ctx context.Context, a core.Actor, id string) error {
	if err := requireAdmin(a, "delete locations"); err != nil {
		return err
	}
	return s.db.Tx(ctx, func(tx *sql.Tx) error {
		l, err := s.getLocation(ctx, tx, id)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM locations WHERE id = $1`, id); err != nil {
			return fmt.Errorf("delete location: %w", err)
		}
		return core.Audit(ctx, tx, a, "location.delete", "location", id, map[string]any{"name": l.Name})
	})
}

// locationDeviceKeys lists the public keys of the devices with an address in
// the location.
func locationDeviceKeys(ctx context.Context, q store.Querier, locationID string) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT DISTINCT d.public_key FROM device_addresses a JOIN devices d ON d.id = a.device_id WHERE a.location_id = $1`, locationID)
	if err != nil {
		return nil, fmt.Errorf("location device keys: %w", err)
	}
	defer rows.Close()
	var keys []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, rows.Err()
}

func joinList(v []string) string { return strings.Join(v, ",") }

func splitList(s string) []string {
	if s == "" {
		return []string{}
	}
	return strings.Split(s, ",")
}
