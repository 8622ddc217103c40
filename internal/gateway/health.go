package gateway

import (
	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type gatewayMetrics struct {
	applies  prometheus.Counter
	peers    prometheus.Gauge
	revision prometheus.Gauge
	links    prometheus.Gauge
}

func newGatewayMetrics(reg *prometheus.Registry, g *Gateway) *gatewayMetrics {
	m := &gatewayMetrics{
		applies:  prometheus.NewCounter(prometheus.CounterOpts{Name: "ward_gateway_config_applies_total", Help: "Configurations (snapshots or changes) applied."}),
		peers:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "ward_gateway_peers", Help: "Peers installed on the interface."}),
		revision: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ward_gateway_applied_revision", Help: "Location revision applied."}),
		links:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "ward_gateway_core_links", Help: "Core replicas connected."}),
	}
	ready := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ward_gateway_ready", Help: "1 when the data plane is ready."}, func() float64 {
		if ok, _ := g.Ready(); ok {
			return 1
		}
		return 0
	})
	reg.MustRegister(m.applies, m.peers, m.revision, m.links, ready)
	return m
}

// Status is the gateway's /status document.
type Status struct {
	GatewayID       string       `json:"gateway_id"`
	Adopted         bool         `json:"adopted"`
	Version         string       `json:"version"`
	BootID          string       `json:"boot_id"`
	Backend         string       `json:"backend"`
	Interface       string       `json:"interface"`
	Ready           bool         `json:"ready"`
	ReadyReason     string       `json:"ready_reason"`
	LocationID      string       `json:"location_id"`
	AppliedRevision uint64       `json:"applied_revision"`
	Peers           []PeerStatus `json:"peers"`
	CoreLinks       []LinkStatus `json:"core_links"`
	LastCoreContact int64        `json:"last_core_contact"`
}

// PeerStatus is one peer in /status.
type PeerStatus struct {
	PublicKey     string `json:"public_key"`
	Endpoint      string `json:"endpoint,omitempty"`
	LastHandshake int64  `json:"last_handshake"`
	RxBytes       uint64 `json:"rx_bytes"`
	TxBytes       uint64 `json:"tx_bytes"`
	Generation    uint64 `json:"generation"`
}

// LinkStatus is one connected core.
type LinkStatus struct {
	CoreID string `json:"core_id"`
	Since  int64  `json:"since"`
}

// Status reports the gateway's state.
func (g *Gateway) Status() Status {
	ready, reason := g.Ready()
	s := Status{GatewayID: g.gatewayID(), Version: g.version, BootID: g.bootID, Interface: g.cfg.Interface, Ready: ready, ReadyReason: reason,
		Peers: []PeerStatus{}, CoreLinks: []LinkStatus{}}
	s.Adopted = s.GatewayID != ""
	links, last := g.linkSnapshot()
	for _, l := range links {
		s.CoreLinks = append(s.CoreLinks, LinkStatus{CoreID: l.coreID, Since: l.since.UnixMilli()})
	}
	if !last.IsZero() {
		s.LastCoreContact = last.UnixMilli()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	s.AppliedRevision = g.state.revision
	if g.state.iface != nil {
		s.LocationID = g.state.iface.GetLocationId()
	}
	if g.engine != nil {
		s.Backend = g.engine.Kind()
		if peers, err := g.engine.Peers(); err == nil {
			for _, p := range peers {
				ps := PeerStatus{PublicKey: p.PublicKey, Endpoint: p.Endpoint, RxBytes: p.RxBytes, TxBytes: p.TxBytes, Generation: g.generation[p.PublicKey]}
				if !p.LastHandshake.IsZero() {
					ps.LastHandshake = p.LastHandshake.UnixMilli()
				}
				s.Peers = append(s.Peers, ps)
			}
		}
	}
	return s
}

func (g *Gateway) healthHandler() http.Handler {
	mux := http.NewServeMux()
	writeJSON := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	// /readyz is the data plane only: a load balancer must keep a working
	// gateway in rotation while core is away.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if ok, reason := g.Ready(); !ok {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": map[string]string{"code": "not_ready", "message": reason}})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, g.Status())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.registry, promhttp.HandlerOpts{}))
	return mux
}
