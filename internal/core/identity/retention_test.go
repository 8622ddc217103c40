package identity

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/store"
	"github.com/wardvpn/ward/internal/store/storetest"
)

var env *storetest.Env

func TestMain(m *testing.M) {
	env = storetest.Setup()
	code := m.Run()
	env.Close()
	os.Exit(code)
}

// Purge drops expired login sessions and failed-login counters older than
// any lockout the settings allow, and keeps the rest.
func TestPurge(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		inst, err := core.EnsureInstance(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		s := New(db, inst, PasswordParams{MemoryKiB: 1024, Time: 1, Threads: 1}, nil, nil)
		if _, err := s.EnsureAdmin(ctx, "correct horse battery staple"); err != nil {
			t.Fatal(err)
		}
		live, err := s.Login(ctx, "admin", "correct horse battery staple", "", "")
		if err != nil {
			t.Fatal(err)
		}
		expired, err := s.Login(ctx, "admin", "correct horse battery staple", "", "")
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		if _, err := db.ExecContext(ctx, `UPDATE sessions SET expires_at = $1 WHERE token_hash = $2`, now.Add(-time.Minute).UnixMilli(), s.hashToken(expired.Token)); err != nil {
			t.Fatal(err)
		}
		old := now.Add(-attemptRetention - time.Hour).UnixMilli()
		for key, at := range map[string]int64{"unknown:old": old, "unknown:recent": now.UnixMilli()} {
			if _, err := db.ExecContext(ctx, `INSERT INTO login_attempts (login_key, failures, first_failure_at, locked_until) VALUES ($1, 1, $2, $2)`, key, at); err != nil {
				t.Fatal(err)
			}
		}
		n, err := s.Purge(ctx, now)
		if err != nil || n != 2 {
			t.Fatalf("purged %d rows (%v), want the expired session and the old counter", n, err)
		}
		if _, err := s.Authenticate(ctx, live.Token); err != nil {
			t.Fatalf("the live session was purged: %v", err)
		}
		var left int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM login_attempts WHERE login_key = 'unknown:recent'`).Scan(&left); err != nil || left != 1 {
			t.Fatalf("recent failed-login counter: %d (%v)", left, err)
		}
	})
}
