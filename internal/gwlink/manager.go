// Package gwlink is core's side of the control link: it dials every
// registered gateway, adopts new ones with their join token, keeps one
// Control stream per gateway, sends each gateway the changes of its
// location in revision order and ingests the statistics that come back.
package gwlink

import (
	"context"
	"crypto/tls"
	"log/slog"
	"time"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/stats"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/linkset"
	"github.com/wardvpn/ward/internal/pki"
)

// Options tune the manager; zero values take the defaults.
type Options struct {
	// Reconcile is how often the gateway registry is re-read.
	Reconcile time.Duration
	// RevisionPoll is how often each stream re-reads its location's
	// revision, so a change made by another replica (or missed) is sent
	// within this delay even without a wake-up. Changed peer endpoints
	// are sent on the same beat (one shared query per location).
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
	vpn       *vpn.Service
	stats     *stats.Service
	ca        *pki.CA
	coreID    string
	version   string
	cert      tls.Certificate
	log       *slog.Logger
	opts      Options
	metrics   *metrics
	set       *linkset.Set
	endpoints *endpointCache
}

// New builds a manager; it issues this replica's client certificate.
func New(vpnSvc *vpn.Service, statsSvc *stats.Service, ca *pki.CA, coreID, version string, log *slog.Logger, opts Options) (*Manager, error) {
	opts.defaults()
	cert, err := pki.IssueCoreCertificate(ca, coreID)
	if err != nil {
		return nil, err
	}
	m := &Manager{vpn: vpnSvc, stats: statsSvc, ca: ca, coreID: coreID, version: version, cert: cert,
		log: log.With("component", "gwlink"), opts: opts, metrics: newMetrics(), endpoints: newEndpointCache(statsSvc, opts.RevisionPoll)}
	m.set = &linkset.Set{List: vpnSvc.GatewayTargets, Every: opts.Reconcile, Log: m.log,
		Spawn: func(t vpn.GatewayTarget) linkset.Worker {
			w := &worker{m: m, log: m.log.With("gateway_id", t.ID, "gateway", t.Name)}
			w.Link = linkset.NewLink(w, "gateway", w.log, opts.MaxBackoff)
			return w
		},
		Removed: func(id string) {
			m.metrics.linkUp.DeleteLabelValues(id)
			m.metrics.applied.DeleteLabelValues(id)
			m.metrics.attempts.DeleteLabelValues(id)
		}}
	return m, nil
}

func (m *Manager) actor() core.Actor { return core.SystemActor("core " + m.coreID) }

// Run keeps one worker per registered gateway until ctx ends.
func (m *Manager) Run(ctx context.Context) { m.set.Run(ctx) }
