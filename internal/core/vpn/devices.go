package vpn

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/store"
)

// Device kinds.
const (
	KindUser    = "user"
	KindNetwork = "network"
)

// Device is a WireGuard peer: a user's machine, or a network device (a
// router or server) bound to one location.
type Device struct {
	ID          string          `json:"id"`
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Kind        string          `json:"kind"`
	UserID      string          `json:"user_id"`
	Username    string          `json:"username"`
	LocationID  string          `json:"location_id,omitempty"`
	PublicKey   string          `json:"public_key"`
	Addresses   []DeviceAddress `json:"addresses"`
	CreatedAt   int64           `json:"created_at"`
	UpdatedAt   int64           `json:"updated_at"`
}

// DeviceAddress is a device's address in one location.
type DeviceAddress struct {
	LocationID string `json:"location_id"`
	Address    string `json:"address"`
}

// NewDevice is the input for creating a device. Either PublicKey is given,
// or GenerateKey asks the server for a key pair whose private half is
// returned once and never stored.
type NewDevice struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	PublicKey   string `json:"public_key"`
	GenerateKey bool   `json:"generate_key"`
	UserID      string `json:"user_id"`
	Kind        string `json:"kind"`
	LocationID  string `json:"location_id"`
}

// DevicePatch changes the fields that are set.
type DevicePatch struct {
	Name        *string `json:"name"`
	Description *string `json:"description"`
	PublicKey   *string `json:"public_key"`
}

// CreatedDevice is a new device plus, when the server generated the key, the
// private key (shown once).
type CreatedDevice struct {
	Device
	PrivateKey string `json:"private_key,omitempty"`
}

func validateDeviceName(n string) (string, error) {
	n = strings.TrimSpace(n)
	if n == "" || len(n) > 64 || strings.ContainsAny(n, "\x00\r\n") {
		return "", core.Invalid("invalid_name", "name", "device name must be 1 to 64 characters on one line")
	}
	return n, nil
}

func deviceConflict(err error) error {
	switch {
	case store.UniqueViolationOn(err, "public_key"):
		return core.Conflict("duplicate_public_key", "public_key", "another device already uses this public key")
	case store.UniqueViolationOn(err, "name") || store.UniqueViolationOn(err, "user_id"):
		return core.Conflict("duplicate_name", "name", "this owner already has a device with this name")
	}
	return fmt.Errorf("write device: %w", err)
}

// mayManageDevices tells whether the actor may change devices of owner.
func (s *Service) mayManageDevices(ctx context.Context, a core.Actor, ownerID string) error {
	if a.IsAdmin {
		return nil
	}
	if a.UserID != ownerID {
		return core.Forbidden("you may only manage your own devices")
	}
	settings, err := core.LoadSettings(ctx, s.db)
	if err != nil {
		return err
	}
	if !settings.UsersCanManageDevices {
		return core.Forbidden("device management by users is disabled in settings; ask an administrator")
	}
	return nil
}

// CreateDevice adds a device and gives it an address in every location its
// owner may use (or, for a network device, in its location).
func (s *Service) CreateDevice(ctx context.Context, a core.Actor, in NewDevice) (CreatedDevice, error) {
	if in.UserID == "" {
		in.UserID = a.UserID
	}
	if in.Kind == "" {
		in.Kind = KindUser
	}
	if err := s.mayManageDevices(ctx, a, in.UserID); err != nil {
		return CreatedDevice{}, err
	}
	name, err := validateDeviceName(in.Name)
	if err != nil {
		return CreatedDevice{}, err
	}
	if len(in.Description) > 256 {
		return CreatedDevice{}, core.Invalid("invalid_value", "description", "at most 256 characters")
	}
	var out CreatedDevice
	switch {
	case in.GenerateKey && in.PublicKey != "":
		return CreatedDevice{}, core.Invalid("invalid_value", "public_key", "give either public_key or generate_key, not both")
	case in.GenerateKey:
		if out.PrivateKey, in.PublicKey, err = GenerateKeyPair(); err != nil {
			return CreatedDevice{}, err
		}
	default:
		if in.PublicKey, err = ParsePublicKey("public_key", in.PublicKey); err != nil {
			return CreatedDevice{}, err
		}
	}
	var locationID any
	switch in.Kind {
	case KindUser:
		if in.LocationID != "" {
			return CreatedDevice{}, core.Invalid("invalid_value", "location_id", "only network devices are bound to a location")
		}
	case KindNetwork:
		if !a.IsAdmin {
			return CreatedDevice{}, core.Forbidden("only admins can add network devices")
		}
		if in.LocationID == "" {
			return CreatedDevice{}, core.Invalid("missing_field", "location_id", "a network device needs a location")
		}
		locationID = in.LocationID
	default:
		return CreatedDevice{}, core.Invalid("invalid_kind", "kind", "must be %q or %q", KindUser, KindNetwork)
	}
	id := core.NewID()
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		var active bool
		err := tx.QueryRowContext(ctx, `SELECT active FROM users WHERE id = $1`, in.UserID).Scan(&active)
		if errors.Is(err, sql.ErrNoRows) {
			return core.Invalid("unknown_user", "user_id", "user does not exist")
		}
		if err != nil {
			return err
		}
		if in.Kind == KindNetwork {
			if _, err := s.getLocation(ctx, tx, in.LocationID); err != nil {
				if errors.Is(err, core.ErrNotFound) {
					return core.Invalid("unknown_location", "location_id", "location does not exist")
				}
				return err
			}
		}
		now := store.Now()
		if _, err := tx.ExecContext(ctx, `INSERT INTO devices (id, user_id, kind, location_id, name, description, public_key, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)`, id, in.UserID, in.Kind, locationID, name, in.Description, in.PublicKey, now); err != nil {
			return deviceConflict(err)
		}
		if err := s.syncDevice(ctx, tx, id, "peer.add"); err != nil {
			return err
		}
		return core.Audit(ctx, tx, a, "device.create", "device", id, map[string]any{"name": name, "owner": in.UserID, "kind": in.Kind,
			"public_key": in.PublicKey, "generated_key": in.GenerateKey})
	})
	if err != nil {
		return CreatedDevice{}, err
	}
	out.Device, err = s.getDevice(ctx, s.db, id)
	return out, err
}

// syncDevice allocates the device's addresses in every location it belongs
// to and bumps those locations' revisions.
func (s *Service) syncDevice(ctx context.Context, tx *sql.Tx, deviceID, change string) error {
	var userID, kind, key string
	var loc sql.NullString
	if err := tx.QueryRowContext(ctx, `SELECT user_id, kind, location_id, public_key FROM devices WHERE id = $1`, deviceID).Scan(&userID, &kind, &loc, &key); err != nil {
		return err
	}
	var targets []string
	if kind == KindNetwork {
		targets = []string{loc.String}
	} else {
		allowed, err := allowedLocationIDs(ctx, tx, userID)
		if err != nil {
			return err
		}
		for id := range allowed {
			targets = append(targets, id)
		}
	}
	slices.Sort(targets)
	revs := s.newRevisions(tx)
	for _, l := range targets {
		if err := revs.bump(ctx, l, change, deviceID, key); err != nil {
			return err
		}
		if err := s.allocate(ctx, tx, l, []string{deviceID}); err != nil {
			return err
		}
	}
	return nil
}

const deviceColumns = `d.id, d.name, d.description, d.kind, d.user_id, u.username, d.location_id, d.public_key, d.created_at, d.updated_at`

func scanDevice(row interface{ Scan(...any) error }) (Device, error) {
	var d Device
	var loc sql.NullString
	err := row.Scan(&d.ID, &d.Name, &d.Description, &d.Kind, &d.UserID, &d.Username, &loc, &d.PublicKey, &d.CreatedAt, &d.UpdatedAt)
	d.LocationID = loc.String
	d.Addresses = []DeviceAddress{}
	return d, err
}

func (s *Service) getDevice(ctx context.Context, q store.Querier, id string) (Device, error) {
	d, err := scanDevice(q.QueryRowContext(ctx, `SELECT `+deviceColumns+` FROM devices d JOIN users u ON u.id = d.user_id WHERE d.id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Device{}, core.NotFound("device")
	}
	if err != nil {
		return Device{}, fmt.Errorf("get device: %w", err)
	}
	ds := []Device{d}
	if err := loadAddresses(ctx, q, ds); err != nil {
		return Device{}, err
	}
	return ds[0], nil
}

func loadAddresses(ctx context.Context, q store.Querier, ds []Device) error {
	if len(ds) == 0 {
		return nil
	}
	idx := map[string]int{}
	args := make([]any, len(ds))
	ph := make([]string, len(ds))
	for i := range ds {
		idx[ds[i].ID] = i
		args[i] = ds[i].ID
		ph[i] = fmt.Sprintf("$%d", i+1)
	}
	rows, err := q.QueryContext(ctx, `SELECT device_id, location_id, address FROM device_addresses WHERE device_id IN (`+strings.Join(ph, ",")+`)
		ORDER BY location_id, family`, args...)
	if err != nil {
		return fmt.Errorf("load addresses: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var dev string
		var a DeviceAddress
		if err := rows.Scan(&dev, &a.LocationID, &a.Address); err != nil {
			return err
		}
		ds[idx[dev]].Addresses = append(ds[idx[dev]].Addresses, a)
	}
	return rows.Err()
}

// GetDevice returns a device its owner or an admin may see.
func (s *Service) GetDevice(ctx context.Context, a core.Actor, id string) (Device, error) {
	d, err := s.getDevice(ctx, s.db, id)
	if err != nil {
		return Device{}, err
	}
	if !a.IsAdmin && d.UserID != a.UserID {
		return Device{}, core.Forbidden("this device belongs to another user")
	}
	return d, nil
}

// DeviceFilter narrows a device list.
type DeviceFilter struct {
	ListParams
	UserID     string
	LocationID string
}

// ListDevices lists devices ordered by creation. Users see only their own.
func (s *Service) ListDevices(ctx context.Context, a core.Actor, f DeviceFilter) ([]Device, int, error) {
	if !a.IsAdmin {
		if f.UserID != "" && f.UserID != a.UserID {
			return nil, 0, core.Forbidden("you may only list your own devices")
		}
		f.UserID = a.UserID
	}
	var where []string
	var args []any
	if f.UserID != "" {
		args = append(args, f.UserID)
		where = append(where, fmt.Sprintf("d.user_id = $%d", len(args)))
	}
	if f.LocationID != "" {
		args = append(args, f.LocationID)
		where = append(where, fmt.Sprintf("d.id IN (SELECT device_id FROM device_addresses WHERE location_id = $%d)", len(args)))
	}
	if f.Search != "" {
		// Names match case-insensitively; keys (base64) as typed.
		args = append(args, "%"+strings.ToLower(f.Search)+"%", "%"+f.Search+"%")
		where = append(where, fmt.Sprintf("(LOWER(d.name) LIKE $%d OR d.public_key LIKE $%d)", len(args)-1, len(args)))
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	var total int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM devices d`+cond, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count devices: %w", err)
	}
	args = append(args, f.Limit, f.Offset)
	// Page on the id index alone, then join only the rows of the page: an
	// OFFSET over the joined rows would read every skipped device and user.
	rows, err := s.db.QueryContext(ctx, fmt.Sprintf(`SELECT %s FROM (SELECT d.id FROM devices d%s ORDER BY d.id LIMIT $%d OFFSET $%d) page
		JOIN devices d ON d.id = page.id JOIN users u ON u.id = d.user_id ORDER BY d.id`,
		deviceColumns, cond, len(args)-1, len(args)), args...)
	if err != nil {
		return nil, 0, fmt.Errorf("list devices: %w", err)
	}
	defer rows.Close()
	out := []Device{}
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	rows.Close()
	return out, total, loadAddresses(ctx, s.db, out)
}

// UpdateDevice renames a device or replaces its key; a new key changes the
// peer on every gateway of its locations.
func (s *Service) UpdateDevice(ctx context.Context, a core.Actor, id string, p DevicePatch) (Device, error) {
	d, err := s.getDevice(ctx, s.db, id)
	if err != nil {
		return Device{}, err
	}
	if err := s.mayManageDevices(ctx, a, d.UserID); err != nil {
		return Device{}, err
	}
	changed := map[string]any{}
	if p.Name != nil {
		if *p.Name, err = validateDeviceName(*p.Name); err != nil {
			return Device{}, err
		}
		changed["name"] = *p.Name
	}
	if p.Description != nil {
		if len(*p.Description) > 256 {
			return Device{}, core.Invalid("invalid_value", "description", "at most 256 characters")
		}
		changed["description"] = *p.Description
	}
	if p.PublicKey != nil {
		if *p.PublicKey, err = ParsePublicKey("public_key", *p.PublicKey); err != nil {
			return Device{}, err
		}
		changed["public_key"] = *p.PublicKey
	}
	if len(changed) == 0 {
		return d, nil
	}
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		for col, v := range changed {
			if _, err := tx.ExecContext(ctx, `UPDATE devices SET `+col+` = $1, updated_at = $2 WHERE id = $3`, v, store.Now(), id); err != nil {
				return deviceConflict(err)
			}
		}
		if p.PublicKey != nil && *p.PublicKey != d.PublicKey {
			revs := s.newRevisions(tx)
			for _, loc := range addressLocations(d) {
				if err := revs.bump(ctx, loc, "peer.update", id, d.PublicKey, *p.PublicKey); err != nil {
					return err
				}
			}
		}
		return core.Audit(ctx, tx, a, "device.update", "device", id, changed)
	})
	if err != nil {
		return Device{}, err
	}
	return s.getDevice(ctx, s.db, id)
}

func addressLocations(d Device) []string {
	seen := map[string]bool{}
	var out []string
	for _, a := range d.Addresses {
		if !seen[a.LocationID] {
			seen[a.LocationID] = true
			out = append(out, a.LocationID)
		}
	}
	slices.Sort(out)
	return out
}

// DeleteDevice removes a device; its peer leaves every gateway.
func (s *Service) DeleteDevice(ctx context.Context, a core.Actor, id string) error {
	d, err := s.getDevice(ctx, s.db, id)
	if err != nil {
		return err
	}
	if err := s.mayManageDevices(ctx, a, d.UserID); err != nil {
		return err
	}
	return s.db.Tx(ctx, func(tx *sql.Tx) error {
		revs := s.newRevisions(tx)
		for _, loc := range addressLocations(d) {
			if err := revs.bump(ctx, loc, "peer.remove", id, d.PublicKey); err != nil {
				return err
			}
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM devices WHERE id = $1`, id)
		if err != nil {
			return fmt.Errorf("delete device: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return core.NotFound("device")
		}
		return core.Audit(ctx, tx, a, "device.delete", "device", id, map[string]any{"name": d.Name, "public_key": d.PublicKey})
	})
}

// DeviceCounts counts the devices of a page of users (one query; admins).
func (s *Service) DeviceCounts(ctx context.Context, a core.Actor, userIDs []string) (map[string]int, error) {
	if !a.IsAdmin {
		return nil, core.Forbidden("only admins can count other users' devices")
	}
	out := map[string]int{}
	if len(userIDs) == 0 {
		return out, nil
	}
	var args []any
	rows, err := s.db.QueryContext(ctx, `SELECT user_id, COUNT(*) FROM devices WHERE user_id IN (`+store.InList(&args, userIDs...)+`) GROUP BY user_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("device counts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			return nil, err
		}
		out[id] = n
	}
	return out, rows.Err()
}
