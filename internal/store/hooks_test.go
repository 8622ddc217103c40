package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/wardvpn/ward/internal/store"
)

func insertGroup(ctx context.Context, tx *sql.Tx, id string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO groups (id, name, is_admin, created_at, updated_at) VALUES ($1, $1, FALSE, 1, 1)`, id)
	return err
}

func countGroups(t *testing.T, db *store.DB, id string) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM groups WHERE id = $1`, id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestAfterCommitRunsAfterCommit(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		var order []string
		visible := -1
		err := db.Tx(ctx, func(tx *sql.Tx) error {
			if err := insertGroup(ctx, tx, "g-commit"); err != nil {
				return err
			}
			db.AfterCommit(tx, func() {
				order = append(order, "first")
				// The change is committed when the hook runs: another
				// connection sees it.
				visible = countGroups(t, db, "g-commit")
			})
			db.AfterCommit(tx, func() { order = append(order, "second") })
			if len(order) != 0 {
				t.Error("hook ran before the transaction committed")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(order) != 2 || order[0] != "first" || order[1] != "second" {
			t.Fatalf("hooks ran %v, want [first second] once each", order)
		}
		if visible != 1 {
			t.Fatalf("the hook saw %d committed rows, want 1", visible)
		}
		// A later transaction does not run the earlier hooks again.
		if err := db.Tx(ctx, func(tx *sql.Tx) error { return nil }); err != nil {
			t.Fatal(err)
		}
		if len(order) != 2 {
			t.Fatalf("hooks ran again in a later transaction: %v", order)
		}
	})
}

func TestAfterCommitDroppedOnRollback(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		var ran atomic.Int32
		boom := errors.New("boom")

		// fn returns an error of its own.
		err := db.Tx(ctx, func(tx *sql.Tx) error {
			if err := insertGroup(ctx, tx, "g-rollback"); err != nil {
				return err
			}
			db.AfterCommit(tx, func() { ran.Add(1) })
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Tx = %v, want boom", err)
		}
		if ran.Load() != 0 || countGroups(t, db, "g-rollback") != 0 {
			t.Fatalf("rolled back: hook ran %d times, rows %d", ran.Load(), countGroups(t, db, "g-rollback"))
		}

		// A failing statement (unique violation) rolls back too.
		if err := db.Tx(ctx, func(tx *sql.Tx) error { return insertGroup(ctx, tx, "g-dup") }); err != nil {
			t.Fatal(err)
		}
		err = db.Tx(ctx, func(tx *sql.Tx) error {
			db.AfterCommit(tx, func() { ran.Add(1) })
			return insertGroup(ctx, tx, "g-dup")
		})
		if !store.IsUniqueViolation(err) {
			t.Fatalf("Tx = %v, want a unique violation", err)
		}
		if ran.Load() != 0 {
			t.Fatalf("hook of a failed statement's transaction ran %d times", ran.Load())
		}

		// A cancelled context: the transaction never commits.
		cctx, cancel := context.WithCancel(ctx)
		err = db.Tx(cctx, func(tx *sql.Tx) error {
			db.AfterCommit(tx, func() { ran.Add(1) })
			cancel()
			return insertGroup(cctx, tx, "g-cancel")
		})
		if err == nil {
			t.Fatal("transaction with a cancelled context succeeded")
		}
		if ran.Load() != 0 || countGroups(t, db, "g-cancel") != 0 {
			t.Fatalf("cancelled: hook ran %d times, rows %d", ran.Load(), countGroups(t, db, "g-cancel"))
		}

		// Hooks of a transaction that succeeds next are unaffected.
		if err := db.Tx(ctx, func(tx *sql.Tx) error {
			db.AfterCommit(tx, func() { ran.Add(10) })
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if ran.Load() != 10 {
			t.Fatalf("after the failures only the committed hook should run: total %d", ran.Load())
		}
	})
}

func TestAfterCommitRetriedAttempts(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		var attempts int
		hookRuns := map[int]int{}
		err := db.Tx(ctx, func(tx *sql.Tx) error {
			attempts++
			attempt := attempts
			if err := insertGroup(ctx, tx, "g-retry"); err != nil {
				return err
			}
			db.AfterCommit(tx, func() { hookRuns[attempt]++ })
			if attempt < 3 {
				// What PostgreSQL reports when a serializable transaction
				// loses a race: Tx retries.
				return &pgconn.PgError{Code: "40001", Message: "could not serialize access"}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if attempts != 3 {
			t.Fatalf("fn ran %d times, want 3", attempts)
		}
		if len(hookRuns) != 1 || hookRuns[3] != 1 {
			t.Fatalf("hook runs per attempt = %v, want only the committed attempt 3, once", hookRuns)
		}
		if n := countGroups(t, db, "g-retry"); n != 1 {
			t.Fatalf("rows = %d, want 1", n)
		}

		// Retries that all fail run no hook and report the error.
		var runs atomic.Int32
		err = db.Tx(ctx, func(tx *sql.Tx) error {
			db.AfterCommit(tx, func() { runs.Add(1) })
			return &pgconn.PgError{Code: "40P01", Message: "deadlock detected"}
		})
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "40P01" {
			t.Fatalf("Tx = %v, want the deadlock error", err)
		}
		if runs.Load() != 0 {
			t.Fatalf("hooks of failed attempts ran %d times", runs.Load())
		}
	})
}

// Hooks of transactions that end, whichever way, are released: the hook
// table does not grow with failed or retried attempts.
func TestAfterCommitHooksAreReleased(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		var released atomic.Int32
		const perAttempt = 1
		// register adds a hook holding an object whose cleanup tells when
		// the hook (and so the object) became unreachable.
		register := func(tx *sql.Tx) {
			obj := new([256]byte)
			runtime.AddCleanup(obj, func(*atomic.Int32) { released.Add(1) }, &released)
			db.AfterCommit(tx, func() { _ = obj[0] })
		}
		attempts := 0
		// Committed after two retryable failures.
		if err := db.Tx(ctx, func(tx *sql.Tx) error {
			attempts++
			register(tx)
			if attempts < 3 {
				return &pgconn.PgError{Code: "40001"}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		// Rolled back by fn.
		_ = db.Tx(ctx, func(tx *sql.Tx) error {
			register(tx)
			return errors.New("rollback")
		})
		want := int32(4 * perAttempt)
		deadline := time.Now().Add(10 * time.Second)
		for released.Load() < want && time.Now().Before(deadline) {
			runtime.GC()
			time.Sleep(10 * time.Millisecond)
		}
		if got := released.Load(); got != want {
			t.Fatalf("%d of %d hooks released; the others are still referenced by the DB", got, want)
		}
	})
}

func TestAfterCommitConcurrentTransactions(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		const n = 8
		var wg sync.WaitGroup
		runs := make([]atomic.Int32, n)
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				errs[i] = db.Tx(ctx, func(tx *sql.Tx) error {
					if err := insertGroup(ctx, tx, fmt.Sprintf("g-conc-%d", i)); err != nil {
						return err
					}
					db.AfterCommit(tx, func() { runs[i].Add(1) })
					if i%2 == 1 {
						return errors.New("odd transactions roll back")
					}
					return nil
				})
			})
		}
		wg.Wait()
		for i := range n {
			want := int32(1)
			if i%2 == 1 {
				want = 0
				if errs[i] == nil {
					t.Errorf("transaction %d: no error", i)
				}
			} else if errs[i] != nil {
				t.Errorf("transaction %d: %v", i, errs[i])
			}
			if got := runs[i].Load(); got != want {
				t.Errorf("transaction %d: its hook ran %d times, want %d", i, got, want)
			}
		}
	})
}
