package coreapp

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/lease"
	"github.com/wardvpn/ward/internal/store"
)

// JobsLease names the lease under which the singleton jobs run.
const JobsLease = "jobs"

// RetentionEvery is how often the retention job purges old rows.
const RetentionEvery = 10 * time.Minute

// singletonJobs is the work exactly one replica does at a time (see
// internal/lease): each job's writes commit only under the current epoch.
func (a *App) singletonJobs() []lease.Job {
	return []lease.Job{
		{Name: "sweep", Every: a.cfg.SweepInterval, Run: func(ctx context.Context) error {
			_, err := a.Sessions.Sweep(ctx, time.Now())
			return err
		}},
		{Name: "retention", Every: RetentionEvery, Run: a.retention},
		{Name: "stats-rollup", Every: RetentionEvery, Run: func(ctx context.Context) error {
			n, err := a.Stats.Rollup(ctx, time.Now())
			if n > 0 {
				a.log.Info("statistics rolled up into hours", "minute_rows", n)
			}
			return err
		}},
	}
}

// retention purges rows past their retention: delivered or expired
// revocations, old location change records, statistics batch ids and idle
// series, expired login sessions and failed-login counters, replicas gone
// for a day. Each purge runs even when an earlier one failed.
func (a *App) retention(ctx context.Context) error {
	now := time.Now()
	purges := []struct {
		what string
		run  func(context.Context, time.Time) (int64, error)
	}{
		{"revoked gateways and proxies", a.VPN.PurgeRevoked},
		{"location changes", a.VPN.PurgeChanges},
		{"statistics", a.Stats.Purge},
		{"login sessions and counters", a.Identity.Purge},
		{"core replicas", a.Replicas.Purge},
	}
	var errs []error
	for _, p := range purges {
		n, err := p.run(ctx, now)
		if err != nil {
			errs = append(errs, err)
			if errors.Is(err, store.ErrFenced) {
				break
			}
			continue
		}
		if n > 0 {
			a.log.Info("retention purge", "what", p.what, "rows", n)
		}
	}
	return errors.Join(errs...)
}

// listen feeds other replicas' location changes, announced through the
// database, into this replica's hub; after every (re)connection it wakes
// every follower, since changes made meanwhile were not announced to it.
// On SQLite it returns at once (one process, nothing to hear).
func (a *App) listen(ctx context.Context) {
	hub := a.VPN.Hub()
	a.DB.Listen(ctx, vpn.LocationChannel, store.Listener{
		OnNotify: func(locationID string) {
			a.notify.received.Inc()
			hub.Publish(locationID)
		},
		OnConnect: hub.PublishAll,
		OnState: func(up bool) {
			if up {
				a.notify.up.Set(1)
			} else {
				a.notify.up.Set(0)
			}
		},
		Log: a.log,
	})
}

type notifyMetrics struct {
	up       prometheus.Gauge
	received prometheus.Counter
}

func newNotifyMetrics() *notifyMetrics {
	return &notifyMetrics{
		up: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ward_db_notify_listening",
			Help: "1 while this replica listens for other replicas' changes (PostgreSQL LISTEN); always 0 on SQLite."}),
		received: prometheus.NewCounter(prometheus.CounterOpts{Name: "ward_db_notifications_total",
			Help: "Location change notifications received from the database."}),
	}
}

func (m *notifyMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.up, m.received}
}
