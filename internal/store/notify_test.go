package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/wardvpn/ward/internal/store"
)

// Two handles on one PostgreSQL database stand for two core replicas: a
// notification queued in a transaction reaches the other only if it
// commits, and the listener comes back by itself after its connection is
// killed, announcing the reconnection so followers re-read.
func TestNotifyAcrossHandles(t *testing.T) {
	url := env.NewPostgresURL(t)
	ctx := t.Context()
	open := func() *store.DB {
		db, err := store.Open(ctx, url, "")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	writer, listener := open(), open()
	got := make(chan string, 16)
	connected := make(chan struct{}, 16)
	lctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		listener.Listen(lctx, "ward_test", store.Listener{
			OnNotify:  func(p string) { got <- p },
			OnConnect: func() { connected <- struct{}{} },
			Log:       slog.New(slog.DiscardHandler),
		})
	}()
	defer func() { stop(); <-done }()
	wait := func(what string, ch <-chan struct{}) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("timed out waiting for %s", what)
		}
	}
	expect := func(want string) {
		t.Helper()
		select {
		case p := <-got:
			if p != want {
				t.Fatalf("notification %q, want %q", p, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("notification %q not received", want)
		}
	}
	notify := func(payload string, commit bool) {
		t.Helper()
		rollback := errors.New("rollback")
		err := writer.Tx(ctx, func(tx *sql.Tx) error {
			if err := writer.Notify(ctx, tx, "ward_test", payload); err != nil {
				return err
			}
			if !commit {
				return rollback
			}
			return nil
		})
		if err != nil && !(errors.Is(err, rollback) && !commit) {
			t.Fatal(err)
		}
	}
	wait("the first connection", connected)
	notify("rolled-back", false)
	notify("loc-1", true)
	expect("loc-1") // and not the rolled-back one before it

	var n int
	if err := writer.QueryRowContext(ctx, `SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN%'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminate the listening backend: %d, %v", n, err)
	}
	wait("the reconnection", connected)
	notify("loc-2", true)
	expect("loc-2")
}

// On SQLite Notify and Listen do nothing (one process), without error.
func TestNotifySQLiteIsANoOp(t *testing.T) {
	db := env.Open(t, store.SQLite)
	err := db.Tx(t.Context(), func(tx *sql.Tx) error { return db.Notify(t.Context(), tx, "ward_test", "x") })
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		db.Listen(t.Context(), "ward_test", store.Listener{OnNotify: func(string) {}})
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Listen on SQLite did not return")
	}
}

func TestIsUnavailable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"refused", fmt.Errorf("query: %w", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}), true},
		{"reset", fmt.Errorf("read: %w", syscall.ECONNRESET), true},
		{"eof mid-query", fmt.Errorf("receive message: %w", io.ErrUnexpectedEOF), true},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, true},
		{"starting up", &pgconn.PgError{Code: "57P03"}, true},
		{"connection exception", &pgconn.PgError{Code: "08006"}, true},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"syntax error", &pgconn.PgError{Code: "42601"}, false},
		{"no rows", sql.ErrNoRows, false},
		{"canceled", context.Canceled, false},
		{"other", errors.New("boom"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := store.IsUnavailable(tc.err); got != tc.want {
				t.Fatalf("IsUnavailable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// A real outage: the server is gone, and the error a query returns is
// classified as unavailable (what the API turns into 503).
func TestIsUnavailableOnDeadServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	db, err := sql.Open("pgx", "postgres://ward@"+addr+"/ward?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.PingContext(t.Context())
	if err == nil || !store.IsUnavailable(err) {
		t.Fatalf("ping of a closed port: %v, IsUnavailable = false", err)
	}
}
