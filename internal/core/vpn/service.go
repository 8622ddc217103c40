package vpn

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/store"
)

// Service is the VPN domain service.
type Service struct {
	db  *store.DB
	log *slog.Logger
	hub *core.Hub
	// testMinMFAThreshold, above zero, replaces MinMFADisconnectThreshold
	// (see SetTestMinMFADisconnectThreshold).
	testMinMFAThreshold atomic.Int32
}

// New builds the service.
func New(db *store.DB, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{db: db, log: log, hub: core.NewHub()}
}

// LocationChannel is the database notification channel that carries the
// id of every location whose revision changed, to every core replica.
const LocationChannel = "ward_location"

// Hub is where followers subscribe to location changes: the ones made in
// this process, and (once the caller feeds LocationChannel into it) the
// ones made by other replicas.
func (s *Service) Hub() *core.Hub { return s.hub }

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
	s      *Service
	tx     *sql.Tx
	bumped map[string]int64
}

func (s *Service) newRevisions(tx *sql.Tx) *revisions {
	return &revisions{s: s, tx: tx, bumped: map[string]int64{}}
}

// bump records a change of kind (e.g. "peer.add") affecting the location and
// the public keys of the peers it touched.
func (r *revisions) bump(ctx context.Context, locationID, kind, subjectID string, keys ...string) error {
	if err := r.bumpOnce(ctx, locationID, kind, subjectID); err != nil {
		return err
	}
	return insertChangePeers(ctx, r.tx, locationID, r.bumped[locationID], keys)
}

// insertChangePeers records keys as changed at revision: a batch of MFA
// logins touches dozens of keys at once.
func insertChangePeers(ctx context.Context, tx *sql.Tx, locationID string, revision int64, keys []string) error {
	rows := make([][]any, len(keys))
	for i, k := range keys {
		rows[i] = []any{locationID, revision, k}
	}
	if err := store.BulkExec(ctx, tx, `INSERT INTO location_change_peers (location_id, revision, public_key) VALUES `, ` ON CONFLICT DO NOTHING`, rows); err != nil {
		return fmt.Errorf("record changed peers: %w", err)
	}
	return nil
}

func (r *revisions) bumpOnce(ctx context.Context, locationID, kind, subjectID string) error {
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
	// Other replicas' streams hear of it through the database; this
	// replica's straight after the commit.
	if err := r.s.db.Notify(ctx, r.tx, LocationChannel, locationID); err != nil {
		return err
	}
	r.bumped[locationID] = rev
	r.s.db.AfterCommit(r.tx, func() { r.s.hub.Publish(locationID) })
	return nil
}

// TouchPeers bumps the location's revision inside tx, recording keys as the
// peers that changed: every gateway of the location then re-reads them in
// their current state (an upsert when the key is a peer now, a removal
// otherwise). It returns the new revision; followers are woken after commit.
// Each call bumps once: call it once per transaction and location.
func (s *Service) TouchPeers(ctx context.Context, tx *sql.Tx, locationID, kind, subjectID string, keys ...string) (int64, error) {
	c, err := s.BeginPeerChange(ctx, tx, locationID, kind, subjectID)
	if err != nil {
		return 0, err
	}
	return c.Revision, c.AddPeers(ctx, keys...)
}

// PeerChange is one revision bump of a location whose changed peers are
// added as the transaction learns them (TouchPeers when they are known up
// front).
type PeerChange struct {
	tx         *sql.Tx
	locationID string
	// Revision is the location's new revision.
	Revision int64
}

// BeginPeerChange bumps the location's revision inside tx. On PostgreSQL
// this takes the location's row lock until the transaction ends, so callers
// that read and then update state of the location's peers do it first.
func (s *Service) BeginPeerChange(ctx context.Context, tx *sql.Tx, locationID, kind, subjectID string) (*PeerChange, error) {
	r := s.newRevisions(tx)
	if err := r.bumpOnce(ctx, locationID, kind, subjectID); err != nil {
		return nil, err
	}
	return &PeerChange{tx: tx, locationID: locationID, Revision: r.bumped[locationID]}, nil
}

// AddPeers records keys as changed at the change's revision.
func (c *PeerChange) AddPeers(ctx context.Context, keys ...string) error {
	return insertChangePeers(ctx, c.tx, c.locationID, c.Revision, keys)
}

func requireAdmin(a core.Actor, what string) error {
	if !a.IsAdmin {
		return core.Forbidden("only admins can %s", what)
	}
	return nil
}
