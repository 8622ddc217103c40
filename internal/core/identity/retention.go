package identity

import (
	"context"
	"fmt"
	"time"
)

// attemptRetention outlasts any lockout window and duration the settings
// allow, so purging never forgives a failure that still counts.
const attemptRetention = 8 * 24 * time.Hour

// Purge deletes expired login sessions and stale failed-login counters (a
// singleton job). It returns the rows deleted.
func (s *Service) Purge(ctx context.Context, now time.Time) (int64, error) {
	nowMs := now.UnixMilli()
	old := now.Add(-attemptRetention).UnixMilli()
	var total int64
	for _, q := range []struct {
		what string
		sql  string
		args []any
	}{
		{"expired sessions", `DELETE FROM sessions WHERE expires_at < $1`, []any{nowMs}},
		{"old failed logins", `DELETE FROM login_attempts WHERE first_failure_at < $1 AND locked_until < $1`, []any{old}},
	} {
		res, err := s.db.ExecContext(ctx, q.sql, q.args...)
		if err != nil {
			return total, fmt.Errorf("purge %s: %w", q.what, err)
		}
		n, _ := res.RowsAffected()
		total += n
	}
	return total, nil
}
