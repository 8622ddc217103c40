package store

import (
	"context"
	"database/sql"
	"errors"
)

// ErrFenced reports that work ran under a lease this replica no longer
// holds (another replica took it with a newer epoch); nothing was committed.
var ErrFenced = errors.New("store: fenced: the lease this work ran under is held by another replica")

// Fence is checked inside a transaction right before it commits; an error
// (normally wrapping ErrFenced) rolls the transaction back. It runs after
// every other statement, so it holds whatever row lock it takes only until
// the commit: a replica taking the lease over waits at most that long.
type Fence func(ctx context.Context, tx *sql.Tx) error

type fenceKey struct{}

// WithFence returns a context under which every transaction (Tx) and every
// ExecContext outside one is fenced by f. Singleton jobs run under it, so
// their domain code needs no knowledge of leases: a paused holder that lost
// its lease cannot commit anything.
func WithFence(ctx context.Context, f Fence) context.Context {
	return context.WithValue(ctx, fenceKey{}, f)
}

func fenceFrom(ctx context.Context) Fence {
	f, _ := ctx.Value(fenceKey{}).(Fence)
	return f
}
