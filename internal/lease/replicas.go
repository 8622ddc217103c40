package lease

import (
	"context"
	"fmt"
	"time"

	"github.com/wardvpn/ward/internal/store"
)

const (
	// HeartbeatEvery is how often a replica refreshes its row.
	HeartbeatEvery = 5 * time.Second
	// replicaLiveFor: a replica silent this long is shown as gone.
	replicaLiveFor = 3 * HeartbeatEvery
	// replicaRetention: rows of replicas gone this long are purged.
	replicaRetention = 24 * time.Hour
)

// Replica is one core replica as the cluster view shows it.
type Replica struct {
	ID         string `json:"id"`
	Version    string `json:"version"`
	StartedAt  int64  `json:"started_at"` // Unix ms
	LastSeenAt int64  `json:"last_seen_at"`
	Live       bool   `json:"live"`
	// Leases this replica holds (unexpired), e.g. ["jobs"].
	Leases []string `json:"leases"`
}

// LeaseState is one lease row.
type LeaseState struct {
	Name       string `json:"name"`
	Holder     string `json:"holder"`
	Epoch      int64  `json:"epoch"`
	AcquiredAt int64  `json:"acquired_at"` // Unix ms
	ExpiresAt  int64  `json:"expires_at"`
	Held       bool   `json:"held"`
}

// Cluster is the replicas and leases of one database.
type Cluster struct {
	Replicas []Replica    `json:"replicas"`
	Leases   []LeaseState `json:"leases"`
}

// Registry records this replica's presence and reads the cluster view.
type Registry struct {
	db        *store.DB
	id        string
	version   string
	startedAt time.Time
}

// NewRegistry builds the registry of replica id.
func NewRegistry(db *store.DB, id, version string) *Registry {
	return &Registry{db: db, id: id, version: version, startedAt: time.Now()}
}

// Run refreshes this replica's row every HeartbeatEvery until ctx ends,
// then deletes it: a replica that stopped cleanly leaves the cluster view
// at once (one that was killed shows as not live after replicaLiveFor).
// Failures (database away) are retried on the next beat.
func (r *Registry) Run(ctx context.Context) {
	t := time.NewTicker(HeartbeatEvery)
	defer t.Stop()
	for {
		_ = r.heartbeat(ctx, time.Now())
		select {
		case <-ctx.Done():
			leaveCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, _ = r.db.ExecContext(leaveCtx, `DELETE FROM core_replicas WHERE id = $1`, r.id)
			return
		case <-t.C:
		}
	}
}

func (r *Registry) heartbeat(ctx context.Context, now time.Time) error {
	_, err := r.db.ExecContext(ctx, `INSERT INTO core_replicas (id, version, started_at, last_seen_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (id) DO UPDATE SET version = excluded.version, started_at = excluded.started_at, last_seen_at = excluded.last_seen_at`,
		r.id, r.version, r.startedAt.UnixMilli(), now.UnixMilli())
	return err
}

// Purge deletes replicas not seen for a day (a singleton job).
func (r *Registry) Purge(ctx context.Context, now time.Time) (int64, error) {
	res, err := r.db.ExecContext(ctx, `DELETE FROM core_replicas WHERE last_seen_at < $1`, now.Add(-replicaRetention).UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("purge replicas: %w", err)
	}
	return res.RowsAffected()
}

// Cluster reads every replica and lease.
func (r *Registry) Cluster(ctx context.Context, now time.Time) (Cluster, error) {
	c := Cluster{Replicas: []Replica{}, Leases: []LeaseState{}}
	rows, err := r.db.QueryContext(ctx, `SELECT name, holder, epoch, acquired_at, expires_at FROM leases ORDER BY name`)
	if err != nil {
		return c, fmt.Errorf("leases: %w", err)
	}
	held := map[string][]string{}
	for rows.Next() {
		var l LeaseState
		if err := rows.Scan(&l.Name, &l.Holder, &l.Epoch, &l.AcquiredAt, &l.ExpiresAt); err != nil {
			rows.Close()
			return c, err
		}
		l.Held = l.ExpiresAt > now.UnixMilli()
		if l.Held {
			held[l.Holder] = append(held[l.Holder], l.Name)
		}
		c.Leases = append(c.Leases, l)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return c, err
	}
	rows, err = r.db.QueryContext(ctx, `SELECT id, version, started_at, last_seen_at FROM core_replicas ORDER BY id`)
	if err != nil {
		return c, fmt.Errorf("replicas: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var rep Replica
		if err := rows.Scan(&rep.ID, &rep.Version, &rep.StartedAt, &rep.LastSeenAt); err != nil {
			return c, err
		}
		rep.Live = now.UnixMilli()-rep.LastSeenAt < replicaLiveFor.Milliseconds()
		rep.Leases = held[rep.ID]
		if rep.Leases == nil {
			rep.Leases = []string{}
		}
		c.Replicas = append(c.Replicas, rep)
	}
	return c, rows.Err()
}
