package store

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
)

// Notify queues a wake-up on channel with payload inside tx. PostgreSQL
// delivers it to every listening replica when tx commits, and never if it
// rolls back. On SQLite (one core process) it does nothing: the caller's
// own after-commit hooks are the only followers.
func (db *DB) Notify(ctx context.Context, tx *sql.Tx, channel, payload string) error {
	if db.Engine != Postgres {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_notify($1, $2)`, channel, payload); err != nil {
		return fmt.Errorf("notify %s: %w", channel, err)
	}
	return nil
}

// Listener receives the notifications of one channel.
type Listener struct {
	// OnNotify gets each payload, in order, on the listening goroutine.
	OnNotify func(payload string)
	// OnConnect runs after every (re)connection, once LISTEN is active:
	// notifications sent while disconnected are lost, so followers should
	// re-read what they follow.
	OnConnect func()
	// OnState reports whether the listening connection is up.
	OnState func(up bool)
	Log     *slog.Logger
}

// Listen holds a dedicated connection listening on channel until ctx ends,
// reconnecting with a backoff (100 ms up to 5 s) whenever it breaks, so a
// database restart needs no core restart. On SQLite it returns at once.
func (db *DB) Listen(ctx context.Context, channel string, l Listener) {
	if db.Engine != Postgres {
		return
	}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := db.listenOnce(ctx, channel, l)
		if l.OnState != nil {
			l.OnState(false)
		}
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 30*time.Second {
			backoff = 100 * time.Millisecond
		}
		l.Log.Warn("database notifications interrupted; reconnecting", "channel", channel, "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (db *DB) listenOnce(ctx context.Context, channel string, l Listener) error {
	connectCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := pgx.Connect(connectCtx, db.dsn)
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		return err
	}
	if l.OnState != nil {
		l.OnState(true)
	}
	if l.OnConnect != nil {
		l.OnConnect()
	}
	for {
		// A silent network partition never errors a blocked read: wake up
		// now and then and ping, so a dead connection is noticed in seconds.
		waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		n, err := conn.WaitForNotification(waitCtx)
		cancel()
		if err == nil {
			l.OnNotify(n.Payload)
			continue
		}
		if ctx.Err() != nil || waitCtx.Err() == nil {
			return err
		}
		pingCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err = conn.Ping(pingCtx)
		cancel()
		if err != nil {
			return fmt.Errorf("ping: %w", err)
		}
	}
}
