package stats

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

const (
	// BatchRetention is how long ingested batch ids are kept to recognise a
	// duplicate: a gateway resends unacknowledged reports within minutes.
	BatchRetention = 24 * time.Hour
	// SeriesRetention drops the counters of peers a gateway stopped
	// reporting (removed devices, retired gateways).
	SeriesRetention = 30 * 24 * time.Hour
)

// Purge deletes batch ids and peer series past their retention (a
// singleton job). It returns the rows deleted.
func (s *Service) Purge(ctx context.Context, now time.Time) (int64, error) {
	var total int64
	for _, q := range []struct {
		what, sql string
		cutoff    time.Duration
	}{
		{"batch ids", `DELETE FROM stats_batches WHERE received_at < $1`, BatchRetention},
		{"idle series", `DELETE FROM peer_series WHERE updated_at < $1`, SeriesRetention},
	} {
		res, err := s.db.ExecContext(ctx, q.sql, now.Add(-q.cutoff).UnixMilli())
		if err != nil {
			return total, fmt.Errorf("purge %s: %w", q.what, err)
		}
		n, _ := res.RowsAffected()
		total += n
	}
	return total, nil
}

const (
	// MinuteDetail is how long traffic is kept per minute; older minutes
	// are rolled up into hours (the row of the hour's first minute).
	MinuteDetail = 48 * time.Hour
	// UsageRetention is how long hourly traffic is kept: a year's window
	// (the longest a query may ask for) plus a month.
	UsageRetention = 395 * 24 * time.Hour
	hourMs         = int64(time.Hour / time.Millisecond)
)

// Rollup folds the per-minute traffic older than MinuteDetail into one row
// per hour (keyed by the hour's first minute, so queries read both alike)
// and deletes hourly rows past UsageRetention (a singleton job). Each
// hour's fold and delete commit together, so a failure never counts bytes
// twice or loses them. It returns the minute rows folded.
func (s *Service) Rollup(ctx context.Context, now time.Time) (int64, error) {
	var folded int64
	for _, t := range usageTables {
		n, err := s.rollup(ctx, t, now)
		folded += n
		if err != nil {
			return folded, err
		}
	}
	return folded, nil
}

// usageTable is a traffic table keyed by (key..., minute).
type usageTable struct {
	name string
	key  string // the key columns besides minute, as in its primary key
}

var usageTables = []usageTable{
	{"usage_minutes", "location_id, device_id, gateway_id"},
	{"location_usage_minutes", "location_id, gateway_id"},
}

func (s *Service) rollup(ctx context.Context, t usageTable, now time.Time) (int64, error) {
	cutoff := now.Add(-MinuteDetail).UnixMilli() / hourMs * hourMs
	var folded int64
	if _, err := s.db.ExecContext(ctx, `DELETE FROM `+t.name+` WHERE minute < $1`, now.Add(-UsageRetention).UnixMilli()); err != nil {
		return 0, fmt.Errorf("purge old %s: %w", t.name, err)
	}
	// A day per transaction, so the first run on a long history does not
	// hold one huge transaction.
	const day = 24 * hourMs
	for {
		var oldest sql.NullInt64
		if err := s.db.QueryRowContext(ctx, `SELECT MIN(minute) FROM `+t.name+` WHERE minute < $1 AND minute % $2 <> 0`, cutoff, hourMs).Scan(&oldest); err != nil {
			return folded, fmt.Errorf("oldest minute of %s to fold: %w", t.name, err)
		}
		if !oldest.Valid {
			return folded, nil
		}
		upTo := min(oldest.Int64/hourMs*hourMs+day, cutoff)
		err := s.db.Tx(ctx, func(tx *sql.Tx) error {
			// WHERE ... keeps SQLite from reading ON CONFLICT as a join.
			if _, err := tx.ExecContext(ctx, `INSERT INTO `+t.name+` (`+t.key+`, minute, rx, tx)
				SELECT `+t.key+`, minute / $2 * $2, SUM(rx), SUM(tx) FROM `+t.name+`
				WHERE minute < $1 AND minute % $2 <> 0 GROUP BY `+t.key+`, minute / $2 * $2
				ON CONFLICT (`+t.key+`, minute) DO UPDATE SET rx = `+t.name+`.rx + excluded.rx, tx = `+t.name+`.tx + excluded.tx`,
				upTo, hourMs); err != nil {
				return fmt.Errorf("fold minutes of %s into hours: %w", t.name, err)
			}
			res, err := tx.ExecContext(ctx, `DELETE FROM `+t.name+` WHERE minute < $1 AND minute % $2 <> 0`, upTo, hourMs)
			if err != nil {
				return fmt.Errorf("delete folded minutes of %s: %w", t.name, err)
			}
			n, _ := res.RowsAffected()
			folded += n
			return nil
		})
		if err != nil {
			return folded, err
		}
	}
}
