package vpn

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/store"
)

// Service is the VPN domain service.
type Service struct {
	db  *store.DB
	log *slog.Logger
}

// New builds the service.
func New(db *store.DB, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{db: db, log: log}
}

// ListParams bounds a list query.
type ListParams struct {
	Search string
	Limit  int
	Offset int
}

// revisions bumps each location's revision at most once per transaction. The
// first bump also takes the location's row lock on PostgreSQL (SQLite has a
// single writer anyway), which serialises address allocation per location.
type revisions struct {
	tx     *sql.Tx
	bumped map[string]int64
}

func newRevisions(tx *sql.Tx) *revisions { return &revisions{tx: tx, bumped: map[string]int64{}} }

// bump records a change of kind (e.g. "peer.add") affecting the location.
func (r *revisions) bump(ctx context.Context, locationID, kind, subjectID string) error {
	if _, ok := r.bumped[locationID]; ok {
		return nil
	}
	var rev int64
	now := store.Now()
	err := r.tx.QueryRowContext(ctx, `UPDATE locations SET revision = revision + 1, updated_at = $2 WHERE id = $1 RETURNING revision`, locationID, now).Scan(&rev)
	if err != nil {
		return fmt.Errorf("bump revision of location %s: %w", locationID, err)
	}
	if _, err := r.tx.ExecContext(ctx, `INSERT INTO location_changes (location_id, revision, kind, subject_id, created_at) VALUES ($1, $2, $3, $4, $5)`,
		locationID, rev, kind, subjectID, now); err != nil {
		return fmt.Errorf("record location change: %w", err)
	}
	r.bumped[locationID] = rev
	return nil
}

func requireAdmin(a core.Actor, what string) error {
	if !a.IsAdmin {
		return core.Forbidden("only admins can %s", what)
	}
	return nil
}
