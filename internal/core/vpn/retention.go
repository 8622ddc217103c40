package vpn

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// ChangeRetention is how long change records are kept so that a gateway
// that was away gets only what changed; one away longer gets a snapshot.
const ChangeRetention = 24 * time.Hour

// PurgeChanges deletes the change records of every location older than
// ChangeRetention, one location per transaction, and remembers up to which
// revision they are gone so GatewayUpdateSince answers a gateway still
// behind it with a snapshot (a singleton job). It returns the revisions
// purged.
func (s *Service) PurgeChanges(ctx context.Context, now time.Time) (int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT location_id, MAX(revision) FROM location_changes WHERE created_at < $1 GROUP BY location_id`,
		now.Add(-ChangeRetention).UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("old location changes: %w", err)
	}
	upTo := map[string]int64{}
	for rows.Next() {
		var id string
		var rev int64
		if err := rows.Scan(&id, &rev); err != nil {
			rows.Close()
			return 0, err
		}
		upTo[id] = rev
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	var total int64
	for id, rev := range upTo {
		err := s.db.Tx(ctx, func(tx *sql.Tx) error {
			// The marker first: a concurrent GatewayUpdateSince that reads
			// it after this commits never trusts the missing records.
			if _, err := tx.ExecContext(ctx, `UPDATE locations SET changes_pruned_to = $2 WHERE id = $1 AND changes_pruned_to < $2`, id, rev); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM location_change_peers WHERE location_id = $1 AND revision <= $2`, id, rev); err != nil {
				return err
			}
			res, err := tx.ExecContext(ctx, `DELETE FROM location_changes WHERE location_id = $1 AND revision <= $2`, id, rev)
			if err != nil {
				return err
			}
			n, _ := res.RowsAffected()
			total += n
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("purge changes of location %s: %w", id, err)
		}
	}
	return total, nil
}
