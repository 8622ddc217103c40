package vpn

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/wardvpn/ward/internal/store"
)

// userMayUse tells whether a user's groups admit them to the location.
func (s *Service) userMayUse(ctx context.Context, q store.Querier, userID string, l Location) (bool, error) {
	if l.AllGroups {
		return true, nil
	}
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM location_groups lg JOIN group_members gm ON gm.group_id = lg.group_id
		WHERE lg.location_id = $1 AND gm.user_id = $2`, l.ID, userID).Scan(&n)
	return n > 0, err
}

// allowedLocationIDs lists the locations whose groups admit the user.
func allowedLocationIDs(ctx context.Context, q store.Querier, userID string) (map[string]bool, error) {
	rows, err := q.QueryContext(ctx, `SELECT id FROM locations WHERE all_groups = TRUE
		UNION SELECT lg.location_id FROM location_groups lg JOIN group_members gm ON gm.group_id = lg.group_id WHERE gm.user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("allowed locations: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out[id] = true
	}
	return out, rows.Err()
}

// SyncUserAccess reconciles the addresses of a user's devices with the
// locations the user's groups admit, and bumps the revision of every location
// whose peers change. forceBump also bumps every location where the user has
// devices (the active flag changed, or the user is being deleted).
func (s *Service) SyncUserAccess(ctx context.Context, tx *sql.Tx, userID string, forceBump bool) error {
	allowed, err := allowedLocationIDs(ctx, tx, userID)
	if err != nil {
		return err
	}
	rows, err := tx.QueryContext(ctx, `SELECT d.id, d.public_key, a.location_id FROM devices d LEFT JOIN device_addresses a ON a.device_id = d.id
		WHERE d.user_id = $1 AND d.kind = 'user'`, userID)
	if err != nil {
		return fmt.Errorf("user devices: %w", err)
	}
	have := map[string]map[string]bool{} // device -> locations with an address
	var keys []string
	for rows.Next() {
		var dev, key string
		var loc sql.NullString
		if err := rows.Scan(&dev, &key, &loc); err != nil {
			rows.Close()
			return err
		}
		if have[dev] == nil {
			keys = append(keys, key)
		}
		if have[dev] == nil {
			have[dev] = map[string]bool{}
		}
		if loc.Valid {
			have[dev][loc.String] = true
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	revs := s.newRevisions(tx)
	touched := map[string]bool{}
	type addition struct{ device, location string }
	var adds []addition
	var removes []addition
	for dev, locs := range have {
		for loc := range allowed {
			if !locs[loc] {
				adds = append(adds, addition{dev, loc})
				touched[loc] = true
			}
		}
		for loc := range locs {
			if !allowed[loc] {
				removes = append(removes, addition{dev, loc})
				touched[loc] = true
			} else if forceBump {
				touched[loc] = true
			}
		}
	}
	// Lock locations in a fixed order so concurrent transactions touching
	// the same locations cannot deadlock.
	order := make([]string, 0, len(touched))
	for loc := range touched {
		order = append(order, loc)
	}
	slices.Sort(order)
	for _, loc := range order {
		if err := revs.bump(ctx, loc, "peers.user", userID, keys...); err != nil {
			return err
		}
	}
	for _, r := range removes {
		if _, err := tx.ExecContext(ctx, `DELETE FROM device_addresses WHERE device_id = $1 AND location_id = $2`, r.device, r.location); err != nil {
			return err
		}
	}
	slices.SortFunc(adds, func(a, b addition) int {
		if a.location != b.location {
			return compare(a.location, b.location)
		}
		return compare(a.device, b.device)
	})
	byLoc := map[string][]string{}
	for _, a := range adds {
		byLoc[a.location] = append(byLoc[a.location], a.device)
	}
	for _, loc := range order {
		if devs := byLoc[loc]; len(devs) > 0 {
			if err := s.allocate(ctx, tx, loc, devs); err != nil {
				return err
			}
		}
	}
	return nil
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// syncLocation gives every device admitted to the location an address in
// each of its families and removes the addresses of devices no longer
// admitted. It bumps the revision when anything changed.
func (s *Service) syncLocation(ctx context.Context, tx *sql.Tx, revs *revisions, locationID string) error {
	l, err := s.getLocation(ctx, tx, locationID)
	if err != nil {
		return err
	}
	eligibleQuery := `SELECT d.id FROM devices d WHERE (d.kind = 'network' AND d.location_id = $1) OR (d.kind = 'user' AND EXISTS (
		SELECT 1 FROM location_groups lg JOIN group_members gm ON gm.group_id = lg.group_id WHERE lg.location_id = $1 AND gm.user_id = d.user_id))`
	if l.AllGroups {
		eligibleQuery = `SELECT d.id FROM devices d WHERE d.kind = 'user' OR d.location_id = $1`
	}
	eligible := map[string]bool{}
	rows, err := tx.QueryContext(ctx, eligibleQuery, locationID)
	if err != nil {
		return fmt.Errorf("eligible devices: %w", err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		eligible[id] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	// Devices lacking an address in some family of the location.
	missing := []string{}
	for _, n := range l.nets {
		have := map[string]bool{}
		rows, err := tx.QueryContext(ctx, `SELECT device_id FROM device_addresses WHERE location_id = $1 AND family = $2`, locationID, n.family())
		if err != nil {
			return err
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			have[id] = true
			if !eligible[id] {
				missing = append(missing, "-"+id) // marks removal
			}
		}
		rows.Close()
		for id := range eligible {
			if !have[id] {
				missing = append(missing, id)
			}
		}
	}
	if len(missing) == 0 {
		return nil
	}
	changedIDs := make([]string, len(missing))
	for i, id := range missing {
		changedIDs[i] = strings.TrimPrefix(id, "-")
	}
	keys, err := deviceKeys(ctx, tx, changedIDs)
	if err != nil {
		return err
	}
	if err := revs.bump(ctx, locationID, "peers.sync", locationID, keys...); err != nil {
		return err
	}
	var add []string
	for _, id := range missing {
		if id[0] == '-' {
			if _, err := tx.ExecContext(ctx, `DELETE FROM device_addresses WHERE device_id = $1 AND location_id = $2`, id[1:], locationID); err != nil {
				return err
			}
			continue
		}
		add = append(add, id)
	}
	slices.Sort(add)
	return s.allocate(ctx, tx, locationID, slices.Compact(add))
}

// allocate gives each device an address in every family of the location it
// lacks. The caller has bumped the location's revision in this transaction,
// which holds the row lock that keeps concurrent allocations apart; the
// unique index on (location, family, host_index) is the last line of defence.
func (s *Service) allocate(ctx context.Context, tx *sql.Tx, locationID string, deviceIDs []string) error {
	l, err := s.getLocation(ctx, tx, locationID)
	if err != nil {
		return err
	}
	for _, n := range l.nets {
		fam := n.family()
		if len(deviceIDs) == 1 {
			done, err := allocateAfterMax(ctx, tx, l, n, deviceIDs[0])
			if err != nil || done {
				if err != nil {
					return err
				}
				continue
			}
		}
		have := map[string]bool{}
		var used []int64
		rows, err := tx.QueryContext(ctx, `SELECT device_id, host_index FROM device_addresses WHERE location_id = $1 AND family = $2`, locationID, fam)
		if err != nil {
			return err
		}
		for rows.Next() {
			var dev string
			var idx int64
			if err := rows.Scan(&dev, &idx); err != nil {
				rows.Close()
				return err
			}
			have[dev] = true
			used = append(used, idx)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		alloc := newAllocator(n, used)
		for _, dev := range deviceIDs {
			if have[dev] {
				continue
			}
			idx, ok := alloc.take()
			if !ok {
				return exhausted(n, l.Name)
			}
			addr := addrAt(n.Prefix, idx)
			if _, err := tx.ExecContext(ctx, `INSERT INTO device_addresses (device_id, location_id, family, host_index, address) VALUES ($1, $2, $3, $4, $5)`,
				dev, locationID, fam, idx, addr.String()); err != nil {
				if store.IsUniqueViolation(err) {
					return fmt.Errorf("address %s in location %s taken concurrently: %w", addr, l.Name, err)
				}
				return fmt.Errorf("assign address: %w", err)
			}
			have[dev] = true
		}
	}
	return nil
}

// allocateAfterMax is the common case of one new device: the address after
// the highest one in use, found through the index without reading the whole
// network. It reports false when the top of the network is taken and the
// caller must search the gaps.
func allocateAfterMax(ctx context.Context, tx *sql.Tx, l Location, n ifaceNet, deviceID string) (bool, error) {
	fam := n.family()
	var exists int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM device_addresses WHERE device_id = $1 AND location_id = $2 AND family = $3`,
		deviceID, l.ID, fam).Scan(&exists); err != nil {
		return false, err
	}
	if exists > 0 {
		return true, nil
	}
	var top sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT MAX(host_index) FROM device_addresses WHERE location_id = $1 AND family = $2`, l.ID, fam).Scan(&top); err != nil {
		return false, err
	}
	lo, hi := allocRange(n.Prefix)
	idx := max(top.Int64+1, lo)
	if idx == hostIndex(n.Prefix, n.Addr) {
		idx++
	}
	if idx > hi {
		return false, nil
	}
	addr := addrAt(n.Prefix, idx)
	if _, err := tx.ExecContext(ctx, `INSERT INTO device_addresses (device_id, location_id, family, host_index, address) VALUES ($1, $2, $3, $4, $5)`,
		deviceID, l.ID, fam, idx, addr.String()); err != nil {
		return false, fmt.Errorf("assign address %s: %w", addr, err)
	}
	return true, nil
}

// deviceKeys returns the public keys of the given devices.
func deviceKeys(ctx context.Context, q store.Querier, ids []string) ([]string, error) {
	slices.Sort(ids)
	ids = slices.Compact(ids)
	var keys []string
	for start := 0; start < len(ids); start += 500 {
		chunk := ids[start:min(start+500, len(ids))]
		args := make([]any, len(chunk))
		ph := make([]string, len(chunk))
		for i, id := range chunk {
			args[i] = id
			ph[i] = fmt.Sprintf("$%d", i+1)
		}
		rows, err := q.QueryContext(ctx, `SELECT public_key FROM devices WHERE id IN (`+strings.Join(ph, ",")+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("device keys: %w", err)
		}
		for rows.Next() {
			var k string
			if err := rows.Scan(&k); err != nil {
				rows.Close()
				return nil, err
			}
			keys = append(keys, k)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return keys, nil
}
