package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrUnavailable is what IsUnavailable errors are reported as to callers
// that want a sentinel (e.g. readiness).
var ErrUnavailable = errors.New("store: the database is unavailable")

// IsUnavailable tells whether err means the database could not be reached
// or went away (refused or reset connection, server shutting down or
// starting, too many connections), as opposed to a query the database
// rejected. The API answers those with 503 so clients and load balancers
// retry instead of reporting a bug.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrUnavailable) || errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) ||
		errors.Is(err, pgconn.ErrConnClosed) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case len(pgErr.Code) == 5 && pgErr.Code[:2] == "08": // connection exception
			return true
		case pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03", pgErr.Code == "53300":
			// admin/crash shutdown, cannot connect now, too many connections
			return true
		}
		return false
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	// A query cut short by the statement deadline the caller set while the
	// server did not answer is an outage too, not a request error.
	return errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) && pgconn.Timeout(err)
}
