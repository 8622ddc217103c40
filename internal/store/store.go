// Package store opens the database (embedded SQLite or PostgreSQL), runs the
// embedded migrations and offers the transaction helpers every domain service
// uses. All SQL in ward is written once, with $N placeholders, and runs
// unchanged on both engines.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Engine names the database engine behind a DB.
type Engine string

const (
	SQLite   Engine = "sqlite"
	Postgres Engine = "postgres"
)

// DB is a database handle plus the knowledge of which engine it talks to.
type DB struct {
	*sql.DB
	// writer runs every write on SQLite: one connection, so writers queue
	// in Go and are handed the connection the moment it is free. Several
	// connections writing would queue on SQLite's busy handler instead,
	// which sleeps in growing steps (up to 100 ms) and left the machine
	// idle under a login load (measured). On PostgreSQL it is DB itself.
	writer *sql.DB
	Engine Engine
	// Target is a printable description of where the data lives; it never
	// contains a password.
	Target string

	hooksMu sync.Mutex
	hooks   map[*sql.Tx][]func()

	// dsn is kept for the dedicated LISTEN connection (PostgreSQL only).
	dsn string
}

// AfterCommit registers fn to run once tx has committed; it is dropped if
// the transaction rolls back. Used to wake up whoever follows a change
// (e.g. gateway streams) only for changes that really happened.
func (db *DB) AfterCommit(tx *sql.Tx, fn func()) {
	db.hooksMu.Lock()
	defer db.hooksMu.Unlock()
	if db.hooks == nil {
		db.hooks = map[*sql.Tx][]func(){}
	}
	db.hooks[tx] = append(db.hooks[tx], fn)
}

func (db *DB) takeHooks(tx *sql.Tx) []func() {
	db.hooksMu.Lock()
	defer db.hooksMu.Unlock()
	fns := db.hooks[tx]
	delete(db.hooks, tx)
	return fns
}

// ErrConflict reports a uniqueness or foreign-key violation.
var ErrConflict = errors.New("store: constraint violation")

// IsPostgresURL tells whether a --database value selects PostgreSQL.
func IsPostgresURL(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// SQLiteDSN builds the modernc DSN for a database file. Write transactions
// start IMMEDIATE so that concurrent writers queue on the busy timeout instead
// of failing when a reader upgrades.
func SQLiteDSN(path string) string {
	return "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)" +
		"&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_txlock=immediate"
}

// Open connects to the database named by dsn: a postgres:// URL, or else a
// path to a SQLite file (empty means <dataDir>/ward.db).
func Open(ctx context.Context, dsn, dataDir string) (*DB, error) {
	var db *DB
	if IsPostgresURL(dsn) {
		sqldb, err := sql.Open("pgx", dsn)
		if err != nil {
			return nil, fmt.Errorf("open postgres: %w", err)
		}
		// As many idle as open: a smaller idle pool made PostgreSQL fork
		// hundreds of backends per second under load (measured).
		sqldb.SetMaxOpenConns(20)
		sqldb.SetMaxIdleConns(20)
		sqldb.SetConnMaxIdleTime(5 * time.Minute)
		db = &DB{DB: sqldb, writer: sqldb, Engine: Postgres, Target: RedactURL(dsn), dsn: dsn}
	} else {
		path := dsn
		if path == "" {
			path = filepath.Join(dataDir, "ward.db")
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("create data dir: %w", err)
		}
		sqldb, err := sql.Open("sqlite", SQLiteDSN(path))
		if err != nil {
			return nil, fmt.Errorf("open sqlite: %w", err)
		}
		// SQLite has one writer at a time; a few connections let WAL readers
		// proceed while a write transaction is open.
		sqldb.SetMaxOpenConns(8)
		sqldb.SetMaxIdleConns(8)
		writer, err := sql.Open("sqlite", SQLiteDSN(path))
		if err != nil {
			sqldb.Close()
			return nil, fmt.Errorf("open sqlite: %w", err)
		}
		writer.SetMaxOpenConns(1)
		writer.SetMaxIdleConns(1)
		db = &DB{DB: sqldb, writer: writer, Engine: SQLite, Target: path}
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to %s database %s: %w", db.Engine, db.Target, err)
	}
	return db, nil
}

// Close closes both pools.
func (db *DB) Close() error {
	err := db.DB.Close()
	if db.writer != db.DB {
		err = errors.Join(err, db.writer.Close())
	}
	return err
}

// ExecContext runs a statement outside a transaction; on SQLite it queues
// for the writer connection. Inside Tx use the transaction, never db: on
// SQLite that would wait for the connection the transaction holds.
func (db *DB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if fenceFrom(ctx) == nil {
		return db.writer.ExecContext(ctx, query, args...)
	}
	// Under a fence a lone statement gets a transaction of its own, so the
	// fence decides whether it commits.
	var res sql.Result
	err := db.Tx(ctx, func(tx *sql.Tx) error {
		var err error
		res, err = tx.ExecContext(ctx, query, args...)
		return err
	})
	return res, err
}

// QueryContext runs a query; a writing one (UPDATE ... RETURNING) goes to
// the writer connection on SQLite.
func (db *DB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return db.pool(query).QueryContext(ctx, query, args...)
}

// QueryRowContext is QueryContext for one row.
func (db *DB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return db.pool(query).QueryRowContext(ctx, query, args...)
}

func (db *DB) pool(query string) *sql.DB {
	if db.writer != db.DB && writes(query) {
		return db.writer
	}
	return db.DB
}

// writes tells whether a statement may write: it starts with INSERT,
// UPDATE, DELETE, REPLACE or WITH (a CTE may end in a write).
func writes(query string) bool {
	q := strings.TrimLeft(query, " \t\r\n(")
	if len(q) > 7 {
		q = q[:7]
	}
	q = strings.ToUpper(q)
	for _, w := range []string{"INSERT", "UPDATE", "DELETE", "REPLACE", "WITH"} {
		if strings.HasPrefix(q, w) {
			return true
		}
	}
	return false
}

// RedactURL removes the password from a connection URL so it can be logged.
func RedactURL(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "postgres://(unparseable url)"
	}
	return u.Redacted()
}

// Migrate applies every embedded migration that has not run yet.
func (db *DB) Migrate(ctx context.Context, log *slog.Logger) error {
	dialect := goose.DialectSQLite3
	if db.Engine == Postgres {
		dialect = goose.DialectPostgres
	}
	var opts []goose.ProviderOption
	if db.Engine == Postgres {
		// Replicas starting together (or rolling to a new version) take
		// turns: an advisory lock held for the whole run.
		locker, err := lock.NewPostgresSessionLocker()
		if err != nil {
			return fmt.Errorf("migration lock: %w", err)
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	provider, err := goose.NewProvider(dialect, db.DB, mustSub(migrations, "migrations"), opts...)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	results, err := provider.Up(ctx)
	if err != nil {
		return fmt.Errorf("apply migrations: %w", err)
	}
	for _, r := range results {
		if log != nil {
			log.Info("migration applied", "version", r.Source.Version, "file", filepath.Base(r.Source.Path), "duration", r.Duration)
		}
	}
	return nil
}

// Tx runs fn in a transaction, committing when fn returns nil. Transactions
// that lose a serialization race or hit a locked SQLite database are retried
// a few times, so fn must be safe to run again.
func (db *DB) Tx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	const attempts = 8
	var err error
	for i := 0; i < attempts; i++ {
		err = db.tryTx(ctx, fn)
		if err == nil || !isRetryable(err) {
			return err
		}
		backoff := time.Duration(1<<i)*time.Millisecond + time.Duration(rand.IntN(1000))*time.Microsecond
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(backoff):
		}
	}
	return err
}

func (db *DB) tryTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := db.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		db.takeHooks(tx)
		return err
	}
	if fence := fenceFrom(ctx); fence != nil {
		if err := fence(ctx, tx); err != nil {
			_ = tx.Rollback()
			db.takeHooks(tx)
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		db.takeHooks(tx)
		return fmt.Errorf("commit: %w", err)
	}
	for _, hook := range db.takeHooks(tx) {
		hook()
	}
	return nil
}

func isRetryable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "40001" || pgErr.Code == "40P01"
	}
	var sqErr *sqlite.Error
	if errors.As(err, &sqErr) {
		code := sqErr.Code() & 0xff
		return code == sqlite3.SQLITE_BUSY || code == sqlite3.SQLITE_LOCKED
	}
	return false
}

// IsUniqueViolation tells whether err comes from a UNIQUE or PRIMARY KEY
// constraint.
func IsUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "23505"
	}
	var sqErr *sqlite.Error
	if errors.As(err, &sqErr) {
		return sqErr.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || sqErr.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// UniqueViolationOn tells whether err is a unique violation that mentions the
// given column (SQLite names "table.column", PostgreSQL the constraint).
func UniqueViolationOn(err error, column string) bool {
	if !IsUniqueViolation(err) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return strings.Contains(pgErr.ConstraintName, column) || strings.Contains(pgErr.Detail, "("+column)
	}
	return strings.Contains(err.Error(), "."+column)
}

// IsForeignKeyViolation tells whether err comes from a foreign-key constraint.
func IsForeignKeyViolation(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "23503"
	}
	var sqErr *sqlite.Error
	if errors.As(err, &sqErr) {
		return sqErr.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
	}
	return false
}

// Now is the timestamp format stored in every *_at column: Unix milliseconds,
// the one representation both engines compare and index the same way.
func Now() int64 { return time.Now().UnixMilli() }

// Millis converts a time to the stored representation; the zero time is 0.
func Millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// Time converts a stored timestamp back; 0 is the zero time.
func Time(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// Querier is what both *sql.DB and *sql.Tx offer; read helpers accept either.
type Querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Ping checks that the database answers, for readiness probes.
func (db *DB) Ping(ctx context.Context) error {
	var one int
	return db.QueryRowContext(ctx, "SELECT 1").Scan(&one)
}
