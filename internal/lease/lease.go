// Package lease runs singleton work on exactly one core replica at a time.
// Replicas compete for a row in the leases table; the winner holds it for a
// TTL and renews it, and every change of holder increments the row's epoch.
// Work runs under a store fence that re-checks the epoch inside each of its
// transactions just before commit, so a holder that was paused, partitioned
// or slow past its TTL can never commit once another replica took over: its
// epoch is stale and the transaction rolls back with store.ErrFenced.
//
// Timing uses each replica's clock against expiry times written by others;
// clock skew between replicas (keep them on NTP) can only make a takeover
// early or late, never let two epochs commit at once.
package lease

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/wardvpn/ward/internal/store"
)

// DefaultTTL is how long a lease lasts without renewal: a killed holder's
// work resumes elsewhere within about this long.
const DefaultTTL = 3 * time.Second

// Job is one piece of singleton work, run right after the lease is taken
// and then every Every while it is held.
type Job struct {
	Name  string
	Every time.Duration
	Run   func(ctx context.Context) error
}

// Options configure a Lease; zero values take defaults.
type Options struct {
	// Name of the lease row; replicas competing for the same work share it.
	Name string
	// Holder names this replica (its core id) in the row and in logs.
	Holder string
	TTL    time.Duration
	Log    *slog.Logger
	Now    func() time.Time
}

// Lease competes for one lease and runs jobs while holding it.
type Lease struct {
	db      *store.DB
	o       Options
	metrics *Metrics

	mu    sync.Mutex
	held  bool
	epoch int64
}

// New builds a lease; metrics may be shared by several leases.
func New(db *store.DB, o Options, metrics *Metrics) *Lease {
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if metrics == nil {
		metrics = NewMetrics()
	}
	o.Log = o.Log.With("lease", o.Name)
	return &Lease{db: db, o: o, metrics: metrics}
}

// Held reports whether this replica holds the lease, and with which epoch.
func (l *Lease) Held() (bool, int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held, l.epoch
}

func (l *Lease) setHeld(held bool, epoch int64) {
	l.mu.Lock()
	l.held, l.epoch = held, epoch
	l.mu.Unlock()
	v := 0.0
	if held {
		v = 1
	}
	l.metrics.held.WithLabelValues(l.o.Name).Set(v)
	l.metrics.epoch.WithLabelValues(l.o.Name).Set(float64(epoch))
}

// Run competes for the lease until ctx ends: it renews the lease every
// TTL/3 while holding it and tries to take it every TTL/6 otherwise, and
// runs jobs only while it holds it. On return it releases a held lease so
// another replica takes over at once instead of after the TTL.
func (l *Lease) Run(ctx context.Context, jobs ...Job) {
	l.setHeld(false, 0)
	var running *jobRunner
	var validUntil time.Time
	stopJobs := func() {
		if running != nil {
			running.stop()
			running = nil
		}
	}
	defer stopJobs()
	renewEvery, pollEvery := l.o.TTL/3, l.o.TTL/6
	timer := time.NewTimer(0)
	defer timer.Stop()
	var fenced <-chan struct{}
	for {
		select {
		case <-ctx.Done():
			if held, epoch := l.Held(); held {
				stopJobs()
				l.release(epoch)
			}
			return
		case <-timer.C:
		case <-fenced:
			// A job was refused: check the row now rather than at the
			// next renewal.
		}
		now := l.o.Now()
		held, epoch := l.Held()
		if held {
			ok, err := l.renew(ctx, epoch, now)
			switch {
			case err == nil && ok:
				validUntil = now.Add(l.o.TTL)
			case err == nil:
				l.lose(epoch, "another replica holds it now")
			case !now.Before(validUntil):
				l.lose(epoch, "could not renew it before it expired: "+err.Error())
			default:
				l.o.Log.Warn("cannot renew the lease; retrying", "epoch", epoch, "err", err)
			}
			if held, _ := l.Held(); !held {
				stopJobs()
				fenced = nil
			}
		} else {
			newEpoch, prev, err := l.acquire(ctx, now)
			switch {
			case err != nil:
				if ctx.Err() == nil {
					l.o.Log.Debug("cannot try the lease", "err", err)
				}
			case newEpoch > 0:
				validUntil = now.Add(l.o.TTL)
				l.setHeld(true, newEpoch)
				l.metrics.acquired.WithLabelValues(l.o.Name).Inc()
				l.o.Log.Info("lease acquired: running singleton jobs here", "holder", l.o.Holder, "epoch", newEpoch,
					"previous_holder", prev.holder, "previous", prev.state)
				running = l.startJobs(ctx, newEpoch, jobs)
				fenced = running.fenced
			}
		}
		if held, _ := l.Held(); held {
			timer.Reset(renewEvery)
		} else {
			timer.Reset(pollEvery)
		}
	}
}

func (l *Lease) lose(epoch int64, reason string) {
	l.setHeld(false, 0)
	l.metrics.lost.WithLabelValues(l.o.Name).Inc()
	l.o.Log.Warn("lease lost: singleton jobs stop here", "holder", l.o.Holder, "epoch", epoch, "reason", reason)
}

type previous struct {
	holder string
	// state is how the previous holder let go: "released", "expired 1.2s
	// ago", or "none" for a new lease.
	state string
}

// acquire takes the lease when it is free or expired; it returns the new
// epoch, or 0 when another replica holds it.
func (l *Lease) acquire(ctx context.Context, now time.Time) (int64, previous, error) {
	var holder string
	var epoch, expires int64
	read := func() error {
		return l.db.QueryRowContext(ctx, `SELECT holder, epoch, expires_at FROM leases WHERE name = $1`, l.o.Name).Scan(&holder, &epoch, &expires)
	}
	err := read()
	if errors.Is(err, sql.ErrNoRows) {
		if _, err := l.db.ExecContext(ctx, `INSERT INTO leases (name) VALUES ($1) ON CONFLICT DO NOTHING`, l.o.Name); err != nil {
			return 0, previous{}, fmt.Errorf("create lease row: %w", err)
		}
		err = read()
	}
	if err != nil {
		return 0, previous{}, fmt.Errorf("read lease: %w", err)
	}
	nowMs := now.UnixMilli()
	if expires > nowMs {
		return 0, previous{}, nil
	}
	// The epoch in the condition makes this a compare-and-swap: of several
	// replicas seeing the lease free, one wins.
	var newEpoch int64
	err = l.db.QueryRowContext(ctx, `UPDATE leases SET holder = $2, epoch = epoch + 1, acquired_at = $3, expires_at = $4
		WHERE name = $1 AND epoch = $5 AND expires_at <= $3 RETURNING epoch`,
		l.o.Name, l.o.Holder, nowMs, now.Add(l.o.TTL).UnixMilli(), epoch).Scan(&newEpoch)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, previous{}, nil
	}
	if err != nil {
		return 0, previous{}, fmt.Errorf("take lease: %w", err)
	}
	prev := previous{holder: holder, state: "none"}
	switch {
	case holder != "" && expires == 0:
		prev.state = "released"
	case holder != "":
		prev.state = "expired " + now.Sub(time.UnixMilli(expires)).Round(time.Millisecond).String() + " ago"
	}
	return newEpoch, prev, nil
}

// renew extends the lease; false means another replica took it.
func (l *Lease) renew(ctx context.Context, epoch int64, now time.Time) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, l.o.TTL/2)
	defer cancel()
	res, err := l.db.ExecContext(ctx, `UPDATE leases SET expires_at = $4 WHERE name = $1 AND holder = $2 AND epoch = $3`,
		l.o.Name, l.o.Holder, epoch, now.Add(l.o.TTL).UnixMilli())
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func (l *Lease) release(epoch int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := l.db.ExecContext(ctx, `UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2 AND epoch = $3`,
		l.o.Name, l.o.Holder, epoch); err != nil {
		l.o.Log.Warn("cannot release the lease; another replica takes it when it expires", "epoch", epoch, "err", err)
	} else {
		l.o.Log.Info("lease released", "holder", l.o.Holder, "epoch", epoch)
	}
	l.setHeld(false, 0)
}

// Fence returns the store fence of epoch: a transaction under it commits
// only while this replica still holds the lease with that epoch and it has
// not expired. The no-op UPDATE takes the lease row's lock, so a takeover
// in progress either waits for this commit or makes it fail.
func (l *Lease) Fence(epoch int64) store.Fence {
	return func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE leases SET epoch = epoch WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > $4`,
			l.o.Name, l.o.Holder, epoch, l.o.Now().UnixMilli())
		if err != nil {
			return fmt.Errorf("check lease %s: %w", l.o.Name, err)
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			l.metrics.refused.WithLabelValues(l.o.Name).Inc()
			return fmt.Errorf("%w (lease %q, epoch %d)", store.ErrFenced, l.o.Name, epoch)
		}
		return nil
	}
}
