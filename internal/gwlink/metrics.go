package gwlink

import "github.com/prometheus/client_golang/prometheus"

// metrics are this replica's view of its gateway links.
type metrics struct {
	linkUp    *prometheus.GaugeVec
	applied   *prometheus.GaugeVec
	batches   *prometheus.CounterVec
	samples   prometheus.Counter
	adopted   prometheus.Counter
	attempts  *prometheus.CounterVec
	endpoints prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		linkUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ward_gateway_link_up",
			Help: "1 while this core replica holds a control stream to the gateway."}, []string{"gateway_id"}),
		applied: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ward_gateway_link_applied_revision",
			Help: "Location revision the gateway acknowledged on this replica's stream."}, []string{"gateway_id"}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ward_stats_batches_total",
			Help: "Statistics batches received, by result (ingested, duplicate, error)."}, []string{"result"}),
		samples: prometheus.NewCounter(prometheus.CounterOpts{Name: "ward_stats_samples_ingested_total",
			Help: "Peer samples ingested from gateways."}),
		adopted: prometheus.NewCounter(prometheus.CounterOpts{Name: "ward_gateway_adoptions_total",
			Help: "Gateways adopted by this replica."}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ward_gateway_link_failures_total",
			Help: "Failed attempts to reach or keep a gateway link."}, []string{"gateway_id"}),
		endpoints: prometheus.NewCounter(prometheus.CounterOpts{Name: "ward_gateway_endpoints_sent_total",
			Help: "Peer endpoint entries sent to gateways (for gateway-initiated handshakes on takeover)."}),
	}
}

// Collectors returns the manager's metrics for registration.
func (m *Manager) Collectors() []prometheus.Collector {
	x := m.metrics
	return []prometheus.Collector{x.linkUp, x.applied, x.batches, x.samples, x.adopted, x.attempts, x.endpoints}
}
