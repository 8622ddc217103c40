package stats

import (
	"context"
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
