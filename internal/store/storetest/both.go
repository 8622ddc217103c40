package storetest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/wardvpn/ward/internal/store"
)

// Env holds the PostgreSQL server shared by the tests of one package. Create
// it in TestMain with Setup and stop it with Close.
type Env struct {
	once     sync.Once
	pg       *PGServer
	startErr error
	template string
	counter  atomic.Int64
}

// Setup prepares an Env; PostgreSQL starts lazily with the first test that
// needs it.
func Setup() *Env { return &Env{} }

// Close stops the PostgreSQL server if one was started.
func (e *Env) Close() {
	if e.pg != nil {
		e.pg.Stop()
	}
}

// Postgres returns the running server, starting it and a migrated template
// database on first use.
func (e *Env) Postgres(t testing.TB) *PGServer {
	t.Helper()
	e.once.Do(func() {
		ctx := context.Background()
		if _, err := FindPGBin("initdb"); err != nil {
			e.startErr = fmt.Errorf("%w: %v", ErrNoPostgres, err)
			return
		}
		e.pg, e.startErr = StartPG(ctx)
		if e.startErr != nil {
			return
		}
		url, err := e.pg.CreateDatabase(ctx, "ward_template", "")
		if err != nil {
			e.startErr = err
			return
		}
		db, err := store.Open(ctx, url, "")
		if err != nil {
			e.startErr = err
			return
		}
		defer db.Close()
		if err := db.Migrate(ctx, nil); err != nil {
			e.startErr = err
			return
		}
		e.template = "ward_template"
	})
	if e.startErr != nil {
		if os.Getenv("WARD_REQUIRE_POSTGRES") == "" && strings.Contains(e.startErr.Error(), ErrNoPostgres.Error()) {
			t.Skipf("SKIP postgres: %v (set WARD_REQUIRE_POSTGRES=1 to make this a failure)", e.startErr)
		}
		t.Fatalf("start throwaway postgres: %v", e.startErr)
	}
	return e.pg
}

// NewPostgresURL creates a fresh, migrated database and returns its URL.
func (e *Env) NewPostgresURL(t testing.TB) string {
	t.Helper()
	pg := e.Postgres(t)
	name := fmt.Sprintf("t%d_%d", os.Getpid(), e.counter.Add(1))
	url, err := pg.CreateDatabase(context.Background(), name, e.template)
	if err != nil {
		t.Fatal(err)
	}
	return url
}

// Open opens a fresh, migrated database of the given engine, closed when the
// test ends.
func (e *Env) Open(t testing.TB, engine store.Engine) *store.DB {
	t.Helper()
	ctx := context.Background()
	var dsn string
	switch engine {
	case store.Postgres:
		dsn = e.NewPostgresURL(t)
	default:
		dsn = filepath.Join(t.TempDir(), "ward.db")
	}
	db, err := store.Open(ctx, dsn, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if engine == store.SQLite {
		if err := db.Migrate(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

// Engines is the list every store test runs over.
var Engines = []store.Engine{store.SQLite, store.Postgres}

// ForEach runs fn as a subtest on each engine with a fresh database.
func (e *Env) ForEach(t *testing.T, fn func(t *testing.T, db *store.DB)) {
	t.Helper()
	for _, engine := range Engines {
		t.Run(string(engine), func(t *testing.T) {
			fn(t, e.Open(t, engine))
		})
	}
}
