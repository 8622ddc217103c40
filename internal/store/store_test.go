package store_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"testing"

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

func TestMigrationsAndConstraints(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		insert := func(id, name string) error {
			_, err := db.ExecContext(ctx, `INSERT INTO groups (id, name, is_admin, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)`, id, name, true, store.Now())
			return err
		}
		if err := insert("g1", "admins"); err != nil {
			t.Fatal(err)
		}
		err := insert("g2", "admins")
		if !store.IsUniqueViolation(err) || !store.UniqueViolationOn(err, "name") {
			t.Fatalf("duplicate name: want unique violation on name, got %v", err)
		}
		_, err = db.ExecContext(ctx, `INSERT INTO group_members (group_id, user_id) VALUES ($1, $2)`, "g1", "nobody")
		if !store.IsForeignKeyViolation(err) {
			t.Fatalf("dangling member: want foreign key violation, got %v", err)
		}
		var isAdmin bool
		var name string
		// Placeholders bound by number, reused and out of order, on both engines.
		if err := db.QueryRowContext(ctx, `SELECT name, is_admin FROM groups WHERE id = $2 AND name = $1 AND id = $2`, "admins", "g1").Scan(&name, &isAdmin); err != nil {
			t.Fatal(err)
		}
		if name != "admins" || !isAdmin {
			t.Fatalf("got %q %v", name, isAdmin)
		}
		// A failing transaction leaves nothing behind.
		boom := errors.New("boom")
		err = db.Tx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO groups (id, name, is_admin, created_at, updated_at) VALUES ('g3', 'ops', FALSE, 1, 1)`); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("tx error: %v", err)
		}
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM groups WHERE id = 'g3'`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("rolled back row present: n=%d err=%v", n, err)
		}
		// Migrating again is a no-op.
		if err := db.Migrate(ctx, nil); err != nil {
			t.Fatal(err)
		}
	})
}
