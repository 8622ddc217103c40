// Package gwlink is core's side of the control link: it dials every
// registered gateway, adopts new ones with their join token, keeps one
// Control stream per gateway, sends each gateway the changes of its
// location in revision order and ingests the statistics that come back.
package gwlink

import (
	"context"
	"crypto/tls"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/stats"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/pki"
)

// Options tune the manager; zero values take the defaults.
type Options struct {
	// Reconcile is how often the gateway registry is re-read.
	Reconcile time.Duration
	// RevisionPoll is how often each stream re-reads its location's
	// revision, so a change made by another replica (or missed) is sent
	// within this delay even without a wake-up.
	RevisionPoll time.Duration
	// AckTimeout bounds how long a stream waits for the gateway's ack.
	AckTimeout time.Duration
	MaxBackoff time.Duration
}

func (o *Options) defaults() {
	if o.Reconcile == 0 {
		o.Reconcile = 2 * time.Second
	}
	if o.RevisionPoll == 0 {
		o.RevisionPoll = time.Second
	}
	if o.AckTimeout == 0 {
		o.AckTimeout = 30 * time.Second
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 10 * time.Second
	}
}

// Manager owns one worker per registered gateway.
type Manager struct {
	vpn     *vpn.Service
	stats   *stats.Service
	ca      *pki.CA
	coreID  string
	version string
	cert    tls.Certificate
	log     *slog.Logger
	opts    Options

	metrics *metrics

	mu      sync.Mutex
	workers map[string]*worker
}

// New builds a manager; it issues this replica's client certificate.
func New(vpnSvc *vpn.Service, statsSvc *stats.Service, ca *pki.CA, coreID, version string, log *slog.Logger, opts Options) (*Manager, error) {
	opts.defaults()
	cert, err := pki.IssueCoreCertificate(ca, coreID)
	if err != nil {
		return nil, err
	}
	return &Manager{vpn: vpnSvc, stats: statsSvc, ca: ca, coreID: coreID, version: version, cert: cert,
		log: log.With("component", "gwlink"), opts: opts, workers: map[string]*worker{}, metrics: newMetrics()}, nil
}

func (m *Manager) actor() core.Actor { return core.SystemActor("core " + m.coreID) }

// Run reconciles workers with the registry until ctx ends, then stops them
// and waits for them.
func (m *Manager) Run(ctx context.Context) {
	var wg sync.WaitGroup
	t := time.NewTicker(m.opts.Reconcile)
	defer t.Stop()
	for {
		m.reconcile(ctx, &wg)
		select {
		case <-ctx.Done():
			m.mu.Lock()
			for _, w := range m.workers {
				w.cancel()
			}
			m.mu.Unlock()
			wg.Wait()
			return
		case <-t.C:
		}
	}
}

func (m *Manager) reconcile(ctx context.Context, wg *sync.WaitGroup) {
	targets, err := m.vpn.GatewayTargets(ctx)
	if err != nil {
		if ctx.Err() == nil {
			m.log.Warn("cannot read the gateway registry", "err", err)
		}
		return
	}
	seen := map[string]bool{}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, t := range targets {
		seen[t.ID] = true
		if w, ok := m.workers[t.ID]; ok {
			w.update(t)
			continue
		}
		wctx, cancel := context.WithCancel(ctx)
		w := &worker{m: m, cancel: cancel, log: m.log.With("gateway_id", t.ID, "gateway", t.Name)}
		w.update(t)
		m.workers[t.ID] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(wctx)
		}()
	}
	for id, w := range m.workers {
		if !seen[id] {
			// Gone from the registry (revocation delivered, tombstone
			// expired, or its location deleted): stop.
			w.cancel()
			delete(m.workers, id)
			m.metrics.linkUp.DeleteLabelValues(id)
			m.metrics.applied.DeleteLabelValues(id)
			m.metrics.attempts.DeleteLabelValues(id)
		}
	}
}

// Kick makes every worker retry now (tests, and after registry changes).
func (m *Manager) Kick() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, w := range m.workers {
		w.kick()
	}
}

func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d)))
}
