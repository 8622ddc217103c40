// Package stats ingests per-peer counters from gateways and answers usage
// queries. Every sample is keyed by gateway and peer; deltas are only taken
// inside one series (gateway boot + peer generation), a counter that goes
// down starts a new series, and a batch is ingested once per
// (gateway, boot, seq), so reports delivered by several core replicas or
// retried after a reconnect never double-count.
package stats

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/store"
)

// Sample is one peer's cumulative counters as a gateway read them.
type Sample struct {
	PublicKey     string
	Generation    uint64
	RxBytes       uint64 // received by the gateway: the device's upload
	TxBytes       uint64 // sent by the gateway: the device's download
	LastHandshake int64  // Unix ms, 0 = never
	Endpoint      string
}

// Report is one statistics batch from a gateway.
type Report struct {
	GatewayID  string
	LocationID string
	BootID     string
	Seq        uint64
	At         int64 // Unix ms
	Samples    []Sample
}

// Service ingests and queries statistics.
type Service struct {
	db *store.DB
}

// New builds the service.
func New(db *store.DB) *Service { return &Service{db: db} }

type series struct {
	boot       string
	generation uint64
	seq        uint64
	rx, tx     uint64
}

type usageKey struct {
	device string
	minute int64
}

// Ingest stores a report. It returns false when the batch was already
// ingested (a duplicate), which is not an error.
func (s *Service) Ingest(ctx context.Context, r Report) (bool, error) {
	if r.GatewayID == "" || r.BootID == "" || r.LocationID == "" {
		return false, core.Invalid("invalid_report", "", "report without gateway, boot or location")
	}
	ingested := false
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		now := store.Now()
		res, err := tx.ExecContext(ctx, `INSERT INTO stats_batches (gateway_id, boot_id, seq, received_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
			r.GatewayID, r.BootID, int64(r.Seq), now)
		if err != nil {
			return fmt.Errorf("record batch: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		ingested = true
		last, err := loadSeries(ctx, tx, r.GatewayID)
		if err != nil {
			return err
		}
		seen, err := loadHandshakes(ctx, tx, r.LocationID, r.GatewayID)
		if err != nil {
			return err
		}
		devices, err := deviceIDs(ctx, tx, r.Samples)
		if err != nil {
			return err
		}
		minute := r.At / 60000 * 60000
		usage := map[usageKey][2]uint64{}
		var seriesRows, handshakeRows [][]any
		for _, smp := range r.Samples {
			prev, ok := last[smp.PublicKey]
			if ok && prev.boot == r.BootID && prev.seq > r.Seq {
				continue // stale: a newer batch of this boot already counted these bytes
			}
			rx, tx2 := smp.RxBytes, smp.TxBytes
			sameSeries := ok && prev.boot == r.BootID && prev.generation == smp.Generation && smp.RxBytes >= prev.rx && smp.TxBytes >= prev.tx
			if sameSeries {
				rx, tx2 = smp.RxBytes-prev.rx, smp.TxBytes-prev.tx
			}
			if !sameSeries || rx > 0 || tx2 > 0 {
				seriesRows = append(seriesRows, []any{r.GatewayID, smp.PublicKey, r.BootID, int64(smp.Generation), int64(r.Seq),
					int64(smp.RxBytes), int64(smp.TxBytes), now})
			}
			if rx > 0 || tx2 > 0 {
				dev := devices[smp.PublicKey]
				if dev == "" {
					dev = "key:" + smp.PublicKey
				}
				k := usageKey{dev, minute}
				u := usage[k]
				usage[k] = [2]uint64{u[0] + rx, u[1] + tx2}
			}
			if old, ok := seen[smp.PublicKey]; smp.LastHandshake > 0 && (!ok || smp.LastHandshake > old.at || smp.Endpoint != old.endpoint) {
				handshakeRows = append(handshakeRows, []any{r.LocationID, smp.PublicKey, r.GatewayID, smp.LastHandshake, smp.Endpoint})
			}
		}
		// Set-based writes: a report of 10,000 active peers is a few dozen
		// statements, not tens of thousands, so it holds the (SQLite) write
		// lock briefly.
		if err := store.BulkExec(ctx, tx, `INSERT INTO peer_series (gateway_id, public_key, boot_id, generation, seq, rx, tx, updated_at) VALUES `,
			` ON CONFLICT (gateway_id, public_key) DO UPDATE SET boot_id = excluded.boot_id, generation = excluded.generation, seq = excluded.seq,
			  rx = excluded.rx, tx = excluded.tx, updated_at = excluded.updated_at`, seriesRows); err != nil {
			return fmt.Errorf("update series: %w", err)
		}
		if err := store.BulkExec(ctx, tx, `INSERT INTO peer_handshakes (location_id, public_key, gateway_id, last_handshake, endpoint) VALUES `,
			` ON CONFLICT (location_id, public_key, gateway_id) DO UPDATE SET
			  last_handshake = CASE WHEN excluded.last_handshake > peer_handshakes.last_handshake THEN excluded.last_handshake ELSE peer_handshakes.last_handshake END,
			  endpoint = excluded.endpoint`, handshakeRows); err != nil {
			return fmt.Errorf("update handshakes: %w", err)
		}
		usageRows := make([][]any, 0, len(usage))
		perMinute := map[int64][2]uint64{}
		for k, u := range usage {
			usageRows = append(usageRows, []any{r.LocationID, k.device, r.GatewayID, k.minute, int64(u[0]), int64(u[1])})
			m := perMinute[k.minute]
			perMinute[k.minute] = [2]uint64{m[0] + u[0], m[1] + u[1]}
		}
		locationRows := make([][]any, 0, len(perMinute))
		for minute, u := range perMinute {
			locationRows = append(locationRows, []any{r.LocationID, r.GatewayID, minute, int64(u[0]), int64(u[1])})
		}
		if err := store.BulkExec(ctx, tx, `INSERT INTO location_usage_minutes (location_id, gateway_id, minute, rx, tx) VALUES `,
			` ON CONFLICT (location_id, minute, gateway_id) DO UPDATE SET rx = location_usage_minutes.rx + excluded.rx, tx = location_usage_minutes.tx + excluded.tx`,
			locationRows); err != nil {
			return fmt.Errorf("update location usage: %w", err)
		}
		if err := store.BulkExec(ctx, tx, `INSERT INTO usage_minutes (location_id, device_id, gateway_id, minute, rx, tx) VALUES `,
			` ON CONFLICT (location_id, device_id, gateway_id, minute) DO UPDATE SET rx = usage_minutes.rx + excluded.rx, tx = usage_minutes.tx + excluded.tx`,
			usageRows); err != nil {
			return fmt.Errorf("update usage: %w", err)
		}
		return nil
	})
	return ingested, err
}

type handshake struct {
	at       int64
	endpoint string
}

func loadHandshakes(ctx context.Context, tx *sql.Tx, locationID, gatewayID string) (map[string]handshake, error) {
	rows, err := tx.QueryContext(ctx, `SELECT public_key, last_handshake, endpoint FROM peer_handshakes WHERE location_id = $1 AND gateway_id = $2`, locationID, gatewayID)
	if err != nil {
		return nil, fmt.Errorf("load handshakes: %w", err)
	}
	defer rows.Close()
	out := map[string]handshake{}
	for rows.Next() {
		var k string
		var h handshake
		if err := rows.Scan(&k, &h.at, &h.endpoint); err != nil {
			return nil, err
		}
		out[k] = h
	}
	return out, rows.Err()
}

func loadSeries(ctx context.Context, tx *sql.Tx, gatewayID string) (map[string]series, error) {
	rows, err := tx.QueryContext(ctx, `SELECT public_key, boot_id, generation, seq, rx, tx FROM peer_series WHERE gateway_id = $1`, gatewayID)
	if err != nil {
		return nil, fmt.Errorf("load series: %w", err)
	}
	defer rows.Close()
	out := map[string]series{}
	for rows.Next() {
		var k string
		var sr series
		var gen, seq, rx, tx int64
		if err := rows.Scan(&k, &sr.boot, &gen, &seq, &rx, &tx); err != nil {
			return nil, err
		}
		sr.generation, sr.seq, sr.rx, sr.tx = uint64(gen), uint64(seq), uint64(rx), uint64(tx)
		out[k] = sr
	}
	return out, rows.Err()
}

func deviceIDs(ctx context.Context, tx *sql.Tx, samples []Sample) (map[string]string, error) {
	out := map[string]string{}
	for start := 0; start < len(samples); start += 500 {
		chunk := samples[start:min(start+500, len(samples))]
		keys := make([]string, len(chunk))
		for i, s := range chunk {
			keys[i] = s.PublicKey
		}
		var args []any
		rows, err := tx.QueryContext(ctx, `SELECT public_key, id FROM devices WHERE public_key IN (`+store.InList(&args, keys...)+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("resolve devices: %w", err)
		}
		for rows.Next() {
			var k, id string
			if err := rows.Scan(&k, &id); err != nil {
				rows.Close()
				return nil, err
			}
			out[k] = id
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}
