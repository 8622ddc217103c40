package lease

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the lease and job metrics of one replica.
type Metrics struct {
	held, epoch    *prometheus.GaugeVec
	acquired, lost *prometheus.CounterVec
	refused        *prometheus.CounterVec
	runs           *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	lastSuccess    *prometheus.GaugeVec
}

// NewMetrics builds unregistered metrics; register Collectors().
func NewMetrics() *Metrics {
	return &Metrics{
		held: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ward_lease_held",
			Help: "1 while this replica holds the lease (runs its singleton jobs)."}, []string{"lease"}),
		epoch: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ward_lease_epoch",
			Help: "Epoch of the lease while this replica holds it, else 0."}, []string{"lease"}),
		acquired: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ward_lease_acquired_total",
			Help: "Times this replica took the lease (leader changes to it)."}, []string{"lease"}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ward_lease_lost_total",
			Help: "Times this replica lost the lease without releasing it."}, []string{"lease"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ward_lease_fenced_commits_total",
			Help: "Transactions refused at commit because their lease epoch was stale."}, []string{"lease"}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ward_job_runs_total",
			Help: "Singleton job runs on this replica by result (ok, error, fenced)."}, []string{"job", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ward_job_duration_seconds",
			Help: "Duration of singleton job runs.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}, []string{"job"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ward_job_last_success_timestamp_seconds",
			Help: "When the job last completed on this replica (Unix seconds)."}, []string{"job"}),
	}
}

// Collectors lists the metrics for registration.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.held, m.epoch, m.acquired, m.lost, m.refused, m.runs, m.duration, m.lastSuccess}
}
