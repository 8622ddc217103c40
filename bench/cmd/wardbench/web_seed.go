package main

// Seeding of the web benchmark: the API for what needs it (groups, locations,
// gateways, proxies), SQL for the bulk (users, devices, audit, statistics).

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wardvpn/ward/bench/internal/harness"
	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/store"
)

// webBootstrap creates the groups, locations, gateways and proxies through
// the API and returns the group ids by name.
func webBootstrap(ctx context.Context, api *harness.Client, locs []*webLocation) (map[string]string, error) {
	groups := []string{"staff", "engineering", "emea", "sales"}
	for t := 1; t <= 20; t++ {
		groups = append(groups, fmt.Sprintf("team-%02d", t))
	}
	ids := map[string]string{}
	for _, g := range groups {
		var out struct {
			ID string `json:"id"`
		}
		if err := api.JSON(ctx, http.MethodPost, "/api/v1/groups", map[string]any{"name": g, "description": "seeded by wardbench"}, &out, http.StatusCreated); err != nil {
			return nil, err
		}
		ids[g] = out.ID
	}
	// Components that never join: their control addresses are on the
	// discard port, which nothing listens on here.
	for _, l := range locs {
		in := map[string]any{"name": l.name, "addresses": []string{l.network}, "endpoint": l.name + ".vpn.bench.example",
			"dns": []string{"10.0.0.53", "corp.example"}}
		if len(l.groups) > 0 {
			in["allowed_groups"] = l.groups
		}
		if l.mfa {
			in["mfa_mode"] = "internal"
			in["disconnect_threshold"] = 600
		}
		var out struct {
			ID string `json:"id"`
		}
		if err := api.JSON(ctx, http.MethodPost, "/api/v1/locations", in, &out, http.StatusCreated); err != nil {
			return nil, err
		}
		l.id = out.ID
		for g := 1; g <= l.gateways; g++ {
			var gw struct {
				ID string `json:"id"`
			}
			if err := api.JSON(ctx, http.MethodPost, "/api/v1/locations/"+url.PathEscape(l.id)+"/gateways",
				map[string]any{"name": fmt.Sprintf("%s-gw-%d", l.name, g), "control_address": fmt.Sprintf("127.0.0.%d:9", len(l.gatewayIDs)+10)},
				&gw, http.StatusCreated); err != nil {
				return nil, err
			}
			l.gatewayIDs = append(l.gatewayIDs, gw.ID)
		}
	}
	for p := 1; p <= 2; p++ {
		if err := api.JSON(ctx, http.MethodPost, "/api/v1/proxies",
			map[string]any{"name": fmt.Sprintf("edge-%d", p), "control_address": fmt.Sprintf("127.0.1.%d:9", p)}, nil, http.StatusCreated); err != nil {
			return nil, err
		}
	}
	return ids, nil
}

// webSeed fills the database while core is stopped, in SQL that runs on
// both engines: users in groups, devices with an address in every location
// their groups admit, the audit log, and statistics (see bench/README.md).
func webSeed(ctx context.Context, db *store.DB, cfg webConfig, locs []*webLocation, groupIDs map[string]string) (webSeeded, error) {
	start := time.Now()
	now := store.Now()
	res := webSeeded{locations: locs, groupIDs: groupIDs, rows: map[string]int{}}
	last := start
	lap := func(step string) {
		res.steps = append(res.steps, fmt.Sprintf("%s %s", step, time.Since(last).Round(10*time.Millisecond)))
		last = time.Now()
	}
	userIDs := make([]string, cfg.users)
	for i := range userIDs {
		userIDs[i] = core.NewID()
	}
	deviceIDs := make([]string, cfg.devices)
	keys := make([]string, cfg.devices)
	buf := make([]byte, 32)
	for i := range deviceIDs {
		deviceIDs[i] = core.NewID()
		// Device lists only show keys; a random 32-byte value has the
		// format of a public key without the cost of generating pairs.
		if _, err := rand.Read(buf); err != nil {
			return res, err
		}
		keys[i] = base64.StdEncoding.EncodeToString(buf)
	}

	type member struct{ group, user string }
	var members []member
	for i := range cfg.users {
		for _, g := range webUserGroups(i) {
			members = append(members, member{groupIDs[g], userIDs[i]})
		}
	}
	err := db.Tx(ctx, func(tx *sql.Tx) error {
		err := webInsert(ctx, tx, "users", []string{"id", "username", "email", "first_name", "last_name", "active", "password_hash", "created_at", "updated_at"},
			cfg.users, func(i int) []any {
				u := webUsername(i)
				created := now - int64(cfg.users-i)*60_000
				return []any{userIDs[i], u, u + "@corp.example", webFirstNames[i%len(webFirstNames)],
					webLastNames[(i/len(webFirstNames))%len(webLastNames)], i%50 != 49, "", created, created}
			})
		if err != nil {
			return fmt.Errorf("users: %w", err)
		}
		return webInsert(ctx, tx, "group_members", []string{"group_id", "user_id"}, len(members), func(i int) []any {
			return []any{members[i].group, members[i].user}
		})
	})
	if err != nil {
		return res, err
	}
	res.rows["users"] = cfg.users
	lap("users+groups")

	// Addresses: every device in every location its user's groups admit,
	// host_index 2, 3, ... per location in device order (what ward's
	// allocator hands out).
	type addr struct {
		device, location string
		host             int64
		address          string
	}
	var addrs []addr
	next := make([]int64, len(locs))
	prefixes := make([]netip.Prefix, len(locs))
	for j, l := range locs {
		next[j] = 2
		prefixes[j] = netip.MustParsePrefix(l.network)
	}
	admits := func(l *webLocation, groups []string) bool {
		if len(l.groups) == 0 {
			return true
		}
		for _, g := range l.groups {
			if slices.Contains(groups, g) {
				return true
			}
		}
		return false
	}
	for i := range cfg.devices {
		groups := webUserGroups(i % cfg.users)
		for j, l := range locs {
			if admits(l, groups) {
				addrs = append(addrs, addr{deviceIDs[i], l.id, next[j], hostAddr(prefixes[j], next[j]).String()})
				next[j]++
			}
		}
	}
	err = db.Tx(ctx, func(tx *sql.Tx) error {
		if err := webInsert(ctx, tx, "devices", []string{"id", "user_id", "kind", "name", "description", "public_key", "created_at", "updated_at"},
			cfg.devices, func(i int) []any {
				n := i / cfg.users
				dn := webDeviceNames[n%len(webDeviceNames)]
				if n >= len(webDeviceNames) {
					dn += strconv.Itoa(n/len(webDeviceNames) + 1)
				}
				desc := ""
				if i%7 == 0 {
					desc = "issued by IT"
				}
				created := now - int64(cfg.devices-i)*10_000
				return []any{deviceIDs[i], userIDs[i%cfg.users], "user", dn, desc, keys[i], created, created}
			}); err != nil {
			return fmt.Errorf("devices: %w", err)
		}
		if err := webInsert(ctx, tx, "device_addresses", []string{"device_id", "location_id", "family", "host_index", "address"},
			len(addrs), func(i int) []any {
				a := addrs[i]
				return []any{a.device, a.location, 4, a.host, a.address}
			}); err != nil {
			return fmt.Errorf("device addresses: %w", err)
		}
		// One revision for the bulk change, with its change records marked
		// pruned: a gateway at an older revision gets a snapshot, as after
		// ward's own change purge, so no per-peer change rows are needed.
		for _, l := range locs {
			if _, err := tx.ExecContext(ctx, `UPDATE locations SET revision = revision + 1, changes_pruned_to = revision + 1, updated_at = $2 WHERE id = $1`,
				l.id, now); err != nil {
				return fmt.Errorf("bump location revision: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	res.rows["devices"] = cfg.devices
	res.rows["device_addresses"] = len(addrs)
	lap("devices+addresses")

	// The detail pages show the first device connected in hq (with
	// traffic) whose user is in engineering (so in hq and lab), and that
	// user.
	res.userID, res.deviceID = userIDs[0], deviceIDs[0]
	if cfg.activeEvery > 0 {
		for i := range cfg.devices {
			if (i+2)%cfg.activeEvery == 0 && slices.Contains(webUserGroups(i%cfg.users), "engineering") { // hq host_index = i+2
				res.userID, res.deviceID = userIDs[i%cfg.users], deviceIDs[i]
				break
			}
		}
	}

	if err := db.Tx(ctx, func(tx *sql.Tx) error {
		return webSeedAudit(ctx, tx, cfg.audit, now, userIDs, deviceIDs, func(i int) string { return webUsername(i) })
	}); err != nil {
		return res, fmt.Errorf("audit log: %w", err)
	}
	res.rows["audit_log"] = cfg.audit
	lap("audit")

	hs, usage, err := webSeedStats(ctx, db, cfg, locs, now)
	if err != nil {
		return res, fmt.Errorf("statistics: %w", err)
	}
	res.rows["peer_handshakes"] = hs
	res.rows["usage_minutes"] = usage
	lap("statistics")
	res.elapsed = time.Since(start)
	return res, nil
}

// webInsert inserts n rows with store.BulkExec: statements of 50 rows, which
// SQLite (modernc) runs about three times as fast as statements of 500 (see
// store/bulk.go); PostgreSQL does not mind.
func webInsert(ctx context.Context, tx *sql.Tx, table string, cols []string, n int, row func(i int) []any) error {
	rows := make([][]any, n)
	for i := range rows {
		rows[i] = row(i)
	}
	if n == 0 {
		return nil
	}
	return store.BulkExec(ctx, tx, "INSERT INTO "+table+" ("+strings.Join(cols, ", ")+") VALUES ", "", rows)
}

// webAuditMix is the share (per 100 entries) of each action in the seeded
// audit log: mostly logins and VPN sessions, some administration.
var webAuditMix = []struct {
	action, targetType string
	share              int
	admin              bool
}{
	{"auth.login", "user", 28, false}, {"auth.logout", "user", 6, false}, {"auth.login_failed", "user", 4, false},
	{"vpn_mfa.start", "device", 8, false}, {"vpn_mfa.success", "device", 7, false},
	{"vpn_session.created", "device", 8, false}, {"vpn_session.connected", "device", 8, false}, {"vpn_session.closed", "device", 9, false},
	{"device.create", "device", 6, false}, {"device.update", "device", 2, false}, {"device.delete", "device", 1, true},
	{"user.create", "user", 3, true}, {"user.update", "user", 3, true}, {"enrollment.start", "user", 2, true},
	{"mfa.totp_enable", "user", 1, false}, {"group.update", "group", 1, true}, {"location.update", "location", 1, true},
	{"token.create", "token", 1, false}, {"settings.update", "settings", 1, true},
}

func webSeedAudit(ctx context.Context, tx *sql.Tx, n int, now int64, userIDs, deviceIDs []string, username func(int) string) error {
	var actions []int
	for j, a := range webAuditMix {
		for range a.share {
			actions = append(actions, j)
		}
	}
	const span = 30 * 24 * 3600 * 1000
	return webInsert(ctx, tx, "audit_log", []string{"id", "at", "actor_id", "actor", "action", "target_type", "target_id", "ip", "details"},
		n, func(i int) []any {
			a := webAuditMix[actions[(i*37)%len(actions)]]
			u := (i * 7919) % len(userIDs)
			at := now - int64(i)*int64(span/max(n, 1)) - int64(i%997)
			actorID, actor := userIDs[u], username(u)
			if a.admin {
				actorID, actor = "", "admin"
			}
			target, details := userIDs[u], fmt.Sprintf(`{"username":%q}`, username(u))
			switch a.targetType {
			case "device":
				d := (i * 104729) % len(deviceIDs)
				target, details = deviceIDs[d], fmt.Sprintf(`{"name":%q,"user":%q}`, webDeviceNames[(d/len(userIDs))%len(webDeviceNames)], username(d%len(userIDs)))
			case "group", "location", "settings", "token":
				target, details = "", `{}`
			}
			return []any{core.NewID(), at, actorID, actor, a.action, a.targetType, target, fmt.Sprintf("198.51.100.%d", i%250+1), details}
		})
}

// webSeedStats writes handshakes and traffic with INSERT ... SELECT over the
// seeded addresses (the same SQL on both engines):
//   - peer_handshakes: every device with host_index % 12 < 6 has one on one
//     gateway of each of its locations; those with host_index % activeEvery
//     = 0 within the last 100 s (connected), the others up to 30 days ago;
//   - usage_minutes: each active (connected) device has a row per minute
//     for the last usageHours hours and a row per hour (what ward's rollup
//     leaves) for the usageDays days before.
func webSeedStats(ctx context.Context, db *store.DB, cfg webConfig, locs []*webLocation, now int64) (handshakes, usage int, err error) {
	count := func(tx *sql.Tx, q string, args ...any) (int, error) {
		res, err := tx.ExecContext(ctx, q, args...)
		if err != nil {
			return 0, err
		}
		n, err := res.RowsAffected()
		return int(n), err
	}
	every := int64(cfg.activeEvery)
	if every == 0 {
		every = 1 << 40 // no device is active
	}
	minute := now / 60_000 * 60_000
	hour := minute / 3_600_000 * 3_600_000
	for _, l := range locs {
		// Devices alternate between the first two gateways.
		gwCase := "CASE WHEN a.host_index % 2 = 0 THEN CAST($2 AS TEXT) ELSE CAST($3 AS TEXT) END"
		args := []any{l.id, l.gatewayIDs[0], l.gatewayIDs[min(1, len(l.gatewayIDs)-1)]}
		err := db.Tx(ctx, func(tx *sql.Tx) error {
			n, err := count(tx, `INSERT INTO peer_handshakes (location_id, public_key, gateway_id, last_handshake, endpoint)
				SELECT a.location_id, d.public_key, `+gwCase+`,
					CASE WHEN a.host_index % CAST($5 AS BIGINT) = 0 THEN CAST($4 AS BIGINT) - (a.host_index * 37) % 100000
					ELSE CAST($4 AS BIGINT) - 600000 - (a.host_index * 7919) % 2592000000 END,
					'198.51.100.' || (a.host_index % 250 + 1) || ':' || (40000 + a.host_index % 20000)
				FROM device_addresses a JOIN devices d ON d.id = a.device_id
				WHERE a.location_id = $1 AND (a.host_index % 12 < 6 OR a.host_index % CAST($5 AS BIGINT) = 0)`,
				append(args, now, every)...)
			if err != nil {
				return fmt.Errorf("peer handshakes: %w", err)
			}
			handshakes += n
			if cfg.activeEvery == 0 {
				return nil
			}
			// Minutes k = 0 .. usageHours*60-1 before now, then hours.
			mins := cfg.usageHours * 60
			if mins > 0 {
				n, err = count(tx, `INSERT INTO usage_minutes (location_id, device_id, gateway_id, minute, rx, tx)
					WITH RECURSIVE m(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM m WHERE k < CAST($5 AS BIGINT) - 1)
					SELECT a.location_id, a.device_id, `+gwCase+`, CAST($4 AS BIGINT) - m.k * 60000,
						(a.host_index * 7919 + m.k * 104729) % 4000000, (a.host_index * 104729 + m.k * 7919) % 40000000
					FROM device_addresses a CROSS JOIN m
					WHERE a.location_id = $1 AND a.host_index % CAST($6 AS BIGINT) = 0`,
					append(args, minute, mins, every)...)
				if err != nil {
					return fmt.Errorf("usage minutes: %w", err)
				}
				usage += n
			}
			hours := cfg.usageDays * 24
			if hours > 0 {
				// Hourly rows start before the first per-minute hour.
				firstHour := (minute - int64(mins)*60_000) / 3_600_000 * 3_600_000
				if mins == 0 {
					firstHour = hour
				}
				n, err = count(tx, `INSERT INTO usage_minutes (location_id, device_id, gateway_id, minute, rx, tx)
					WITH RECURSIVE m(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM m WHERE k < CAST($5 AS BIGINT))
					SELECT a.location_id, a.device_id, `+gwCase+`, CAST($4 AS BIGINT) - m.k * 3600000,
						(a.host_index * 7919 + m.k * 104729) % 240000000, (a.host_index * 104729 + m.k * 7919) % 2400000000
					FROM device_addresses a CROSS JOIN m
					WHERE a.location_id = $1 AND a.host_index % CAST($6 AS BIGINT) = 0`,
					append(args, firstHour, hours, every)...)
				if err != nil {
					return fmt.Errorf("usage hours: %w", err)
				}
				usage += n
			}
			// The per-location series core keeps beside the device rows
			// at ingestion (what the overview's graph reads).
			n, err = count(tx, `INSERT INTO location_usage_minutes (location_id, gateway_id, minute, rx, tx)
				SELECT location_id, gateway_id, minute, SUM(rx), SUM(tx) FROM usage_minutes WHERE location_id = $1
				GROUP BY location_id, gateway_id, minute`, l.id)
			if err != nil {
				return fmt.Errorf("location usage: %w", err)
			}
			usage += n
			return nil
		})
		if err != nil {
			return handshakes, usage, err
		}
	}
	return handshakes, usage, nil
}
