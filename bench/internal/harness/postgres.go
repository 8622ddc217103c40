package harness

import (
	"context"
	"fmt"
	"time"

	"github.com/wardvpn/ward/internal/store/storetest"
)

// Postgres starts a throwaway PostgreSQL server from the installed binaries
// (as nobody when running as root) and registers its shutdown with cl. The
// server runs with fsync off, which only affects writes.
func (e *Env) Postgres(ctx context.Context, cl *Cleanups) (*storetest.PGServer, error) {
	if _, err := storetest.FindPGBin("initdb"); err != nil {
		return nil, fmt.Errorf("%w (run ./scripts/install-deps.sh as root)", err)
	}
	start := time.Now()
	pg, err := storetest.StartPG(ctx)
	if err != nil {
		return nil, fmt.Errorf("start postgresql: %w", err)
	}
	cl.Defer(func() {
		pg.Stop()
		e.Logf("postgresql on port %d stopped", pg.Port())
	})
	e.Logf("postgresql started on 127.0.0.1:%d in %s", pg.Port(), time.Since(start).Round(time.Millisecond))
	return pg, nil
}
