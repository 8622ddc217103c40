package lease

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

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

// clock is a settable clock shared by the leases of one test.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newLease(db *store.DB, holder string, c *clock) *Lease {
	return New(db, Options{Name: "jobs", Holder: holder, TTL: 3 * time.Second, Now: c.Now}, nil)
}

// fencedInsert writes a marker row under l's fence with epoch and reports
// whether it committed; pause runs inside the transaction after the write.
func fencedInsert(ctx context.Context, db *store.DB, l *Lease, epoch int64, id string, pause func()) error {
	ctx = store.WithFence(ctx, l.Fence(epoch))
	return db.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO core_replicas (id, started_at, last_seen_at) VALUES ($1, 1, 1)`, id); err != nil {
			return err
		}
		if pause != nil {
			pause()
		}
		return nil
	})
}

func markerExists(t *testing.T, db *store.DB, id string) bool {
	t.Helper()
	var n int
	if err := db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM core_replicas WHERE id = $1`, id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

func TestTakeoverFencesTheOldEpoch(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		ctx := t.Context()
		c := &clock{now: time.Now()}
		a, b := newLease(db, "core-a", c), newLease(db, "core-b", c)

		epochA, _, err := a.acquire(ctx, c.Now())
		if err != nil || epochA != 1 {
			t.Fatalf("a acquires: epoch %d, %v", epochA, err)
		}
		if e, _, err := b.acquire(ctx, c.Now()); err != nil || e != 0 {
			t.Fatalf("b takes a held lease: epoch %d, %v", e, err)
		}
		if err := fencedInsert(ctx, db, a, epochA, "a-1", nil); err != nil {
			t.Fatalf("holder's work refused: %v", err)
		}
		if ok, err := a.renew(ctx, epochA, c.Now()); !ok || err != nil {
			t.Fatalf("renew: %v %v", ok, err)
		}

		// a stops renewing (killed or paused); its TTL passes.
		c.Add(3*time.Second + time.Millisecond)
		// A paused holder whose lease expired refuses its own work even
		// before anyone took over.
		if err := fencedInsert(ctx, db, a, epochA, "a-expired", nil); !errors.Is(err, store.ErrFenced) {
			t.Fatalf("expired holder's work: %v, want ErrFenced", err)
		}
		epochB, prev, err := b.acquire(ctx, c.Now())
		if err != nil || epochB != epochA+1 || prev.holder != "core-a" {
			t.Fatalf("b takes over: epoch %d (want %d), previous %q, %v", epochB, epochA+1, prev.holder, err)
		}
		if err := fencedInsert(ctx, db, a, epochA, "a-stale", nil); !errors.Is(err, store.ErrFenced) {
			t.Fatalf("stale epoch's work: %v, want ErrFenced", err)
		}
		// A lone statement under a stale fence is refused too.
		staleCtx := store.WithFence(ctx, a.Fence(epochA))
		if _, err := db.ExecContext(staleCtx, `INSERT INTO core_replicas (id, started_at, last_seen_at) VALUES ('a-exec', 1, 1)`); !errors.Is(err, store.ErrFenced) {
			t.Fatalf("stale lone statement: %v, want ErrFenced", err)
		}
		if ok, err := a.renew(ctx, epochA, c.Now()); ok || err != nil {
			t.Fatalf("old holder renewed a lease it lost: %v %v", ok, err)
		}
		if err := fencedInsert(ctx, db, b, epochB, "b-1", nil); err != nil {
			t.Fatalf("new holder's work refused: %v", err)
		}
		for id, want := range map[string]bool{"a-1": true, "a-expired": false, "a-stale": false, "a-exec": false, "b-1": true} {
			if got := markerExists(t, db, id); got != want {
				t.Errorf("marker %s committed = %v, want %v", id, got, want)
			}
		}
		if got := metricValue(t, a.metrics.refused.WithLabelValues("jobs")); got != 3 {
			t.Errorf("refused commits counted %v, want 3", got)
		}
	})
}

// A holder paused in the middle of its transaction (PostgreSQL: several
// replicas) cannot commit once another replica took the lease, and does not
// block the takeover.
func TestPausedHolderInsideTransaction(t *testing.T) {
	db := env.Open(t, store.Postgres)
	ctx := t.Context()
	c := &clock{now: time.Now()}
	a, b := newLease(db, "core-a", c), newLease(db, "core-b", c)
	epochA, _, err := a.acquire(ctx, c.Now())
	if err != nil || epochA == 0 {
		t.Fatalf("a acquires: %d %v", epochA, err)
	}
	paused, resume := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- fencedInsert(ctx, db, a, epochA, "a-paused", func() { close(paused); <-resume })
	}()
	<-paused
	c.Add(4 * time.Second)
	takeover := make(chan int64, 1)
	go func() {
		e, _, err := b.acquire(ctx, c.Now())
		if err != nil {
			t.Error(err)
		}
		takeover <- e
	}()
	select {
	case e := <-takeover:
		if e != epochA+1 {
			t.Fatalf("takeover epoch %d, want %d", e, epochA+1)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the takeover waited for the paused holder's transaction")
	}
	close(resume)
	if err := <-done; !errors.Is(err, store.ErrFenced) {
		t.Fatalf("paused holder's commit: %v, want ErrFenced", err)
	}
	if markerExists(t, db, "a-paused") {
		t.Fatal("the paused holder's write committed with a stale epoch")
	}
}

// Run: one replica runs the jobs; when it stops it releases the lease and
// another takes over at once and runs them.
func TestRunHandsOver(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		var runsA, runsB atomic.Int64
		job := func(n *atomic.Int64) Job {
			return Job{Name: "count", Every: 50 * time.Millisecond, Run: func(ctx context.Context) error {
				n.Add(1)
				return nil
			}}
		}
		a := New(db, Options{Name: "jobs", Holder: "core-a", TTL: time.Second}, nil)
		b := New(db, Options{Name: "jobs", Holder: "core-b", TTL: time.Second}, nil)
		ctxA, stopA := context.WithCancel(t.Context())
		doneA := make(chan struct{})
		go func() { defer close(doneA); a.Run(ctxA, job(&runsA)) }()
		waitFor(t, "a holds the lease", func() bool { held, _ := a.Held(); return held && runsA.Load() > 0 })

		ctxB, stopB := context.WithCancel(t.Context())
		doneB := make(chan struct{})
		go func() { defer close(doneB); b.Run(ctxB, job(&runsB)) }()
		time.Sleep(500 * time.Millisecond)
		if held, _ := b.Held(); held || runsB.Load() != 0 {
			t.Fatalf("b runs jobs while a holds the lease (held %v, runs %d)", held, runsB.Load())
		}
		_, epochA := a.Held()
		stopA()
		<-doneA
		stoppedAt := time.Now()
		frozenA := runsA.Load()
		waitFor(t, "b takes over", func() bool { held, _ := b.Held(); return held && runsB.Load() > 0 })
		t.Logf("handover after a release: %s", time.Since(stoppedAt).Round(time.Millisecond))
		if _, epochB := b.Held(); epochB != epochA+1 {
			t.Errorf("epoch %d after handover, want %d", epochB, epochA+1)
		}
		if runsA.Load() != frozenA {
			t.Error("a ran a job after it stopped")
		}
		stopB()
		<-doneB
		if got := metricValue(t, b.metrics.held.WithLabelValues("jobs")); got != 0 {
			t.Errorf("ward_lease_held = %v after stop", got)
		}
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func metricValue(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	switch {
	case out.Gauge != nil:
		return out.Gauge.GetValue()
	case out.Counter != nil:
		return out.Counter.GetValue()
	}
	t.Fatalf("unsupported metric %v", out.String())
	return 0
}
