package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/store"
)

// seedBatch is the number of rows per multi-row INSERT: 500 rows of at most
// 9 columns stay far below both engines' placeholder limits.
const seedBatch = 500

// publicKeys returns n distinct WireGuard public keys of fresh key pairs.
func publicKeys(ctx context.Context, n int) ([]string, error) {
	keys := make([]string, n)
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				if i%1000 == 0 && ctx.Err() != nil {
					errs[w] = ctx.Err()
					return
				}
				k, err := wgtypes.GeneratePrivateKey()
				if err != nil {
					errs[w] = err
					return
				}
				keys[i] = k.PublicKey().String()
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return keys, nil
}

type seedResult struct {
	deviceIDs []string
	addresses []string // IPv4 address of deviceIDs[i] in the location
	elapsed   time.Duration
}

// seed inserts users (all in one non-admin group) and one device per key,
// spread round-robin over the users, each with its address in the location:
// host_index 2, 3, ... of benchNetwork (host 1 is the interface), the same
// numbering ward's allocator produces. The location's revision is bumped
// with a change row naming every new peer, as ward does when peers change.
// SQL is the same on both engines: multi-row INSERTs with $N placeholders
// in two transactions.
func seed(ctx context.Context, db *store.DB, locationID string, users int, keys []string) (seedResult, error) {
	start := time.Now()
	now := store.Now()
	prefix := netip.MustParsePrefix(benchNetwork)
	groupID := core.NewID()
	userIDs := make([]string, users)
	for i := range userIDs {
		userIDs[i] = core.NewID()
	}
	res := seedResult{deviceIDs: make([]string, len(keys)), addresses: make([]string, len(keys))}
	for i := range keys {
		res.deviceIDs[i] = core.NewID()
		res.addresses[i] = hostAddr(prefix, int64(i+2)).String()
	}

	err := db.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO groups (id, name, is_admin, description, created_at, updated_at) VALUES ($1, $2, FALSE, $3, $4, $4)`,
			groupID, "bench-users", "seeded by wardbench", now); err != nil {
			return fmt.Errorf("group: %w", err)
		}
		err := insertRows(ctx, tx, "users", []string{"id", "username", "email", "first_name", "last_name", "active", "password_hash", "created_at", "updated_at"},
			users, func(i int) []any {
				name := fmt.Sprintf("user%05d", i+1)
				return []any{userIDs[i], name, name + "@bench.example", "Bench", fmt.Sprintf("User %d", i+1), true, "", now, now}
			})
		if err != nil {
			return fmt.Errorf("users: %w", err)
		}
		if err := insertRows(ctx, tx, "group_members", []string{"group_id", "user_id"}, users, func(i int) []any {
			return []any{groupID, userIDs[i]}
		}); err != nil {
			return fmt.Errorf("group members: %w", err)
		}
		return nil
	})
	if err != nil {
		return res, err
	}

	err = db.Tx(ctx, func(tx *sql.Tx) error {
		if err := insertRows(ctx, tx, "devices", []string{"id", "user_id", "kind", "name", "public_key", "created_at", "updated_at"},
			len(keys), func(i int) []any {
				return []any{res.deviceIDs[i], userIDs[i%users], "user", fmt.Sprintf("device-%d", i/users+1), keys[i], now, now}
			}); err != nil {
			return fmt.Errorf("devices: %w", err)
		}
		if err := insertRows(ctx, tx, "device_addresses", []string{"device_id", "location_id", "family", "host_index", "address"},
			len(keys), func(i int) []any {
				return []any{res.deviceIDs[i], locationID, 4, int64(i + 2), res.addresses[i]}
			}); err != nil {
			return fmt.Errorf("device addresses: %w", err)
		}
		var rev int64
		if err := tx.QueryRowContext(ctx, `UPDATE locations SET revision = revision + 1, updated_at = $2 WHERE id = $1 RETURNING revision`,
			locationID, now).Scan(&rev); err != nil {
			return fmt.Errorf("bump location revision: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO location_changes (location_id, revision, kind, subject_id, created_at) VALUES ($1, $2, 'peers.sync', $1, $3)`,
			locationID, rev, now); err != nil {
			return fmt.Errorf("location change: %w", err)
		}
		if err := insertRows(ctx, tx, "location_change_peers", []string{"location_id", "revision", "public_key"}, len(keys), func(i int) []any {
			return []any{locationID, rev, keys[i]}
		}); err != nil {
			return fmt.Errorf("changed peers: %w", err)
		}
		return nil
	})
	res.elapsed = time.Since(start)
	return res, err
}

// insertRows inserts n rows in multi-row INSERTs of seedBatch rows.
func insertRows(ctx context.Context, tx *sql.Tx, table string, cols []string, n int, row func(i int) []any) error {
	head := "INSERT INTO " + table + " (" + strings.Join(cols, ", ") + ") VALUES "
	var b strings.Builder
	args := make([]any, 0, seedBatch*len(cols))
	for lo := 0; lo < n; lo += seedBatch {
		hi := min(lo+seedBatch, n)
		b.Reset()
		args = args[:0]
		b.WriteString(head)
		for i := lo; i < hi; i++ {
			if i > lo {
				b.WriteString(", ")
			}
			b.WriteByte('(')
			for j, v := range row(i) {
				if j > 0 {
					b.WriteString(", ")
				}
				args = append(args, v)
				fmt.Fprintf(&b, "$%d", len(args))
			}
			b.WriteByte(')')
		}
		if _, err := tx.ExecContext(ctx, b.String(), args...); err != nil {
			return fmt.Errorf("rows %d-%d: %w", lo, hi-1, err)
		}
	}
	return nil
}

// hostAddr is the IPv4 address at offset i of the network.
func hostAddr(p netip.Prefix, i int64) netip.Addr {
	b := p.Masked().Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(i)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
