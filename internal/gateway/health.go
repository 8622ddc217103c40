package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type gatewayMetrics struct {
	applies   prometheus.Counter
	peers     prometheus.Gauge
	revision  prometheus.Gauge
	links     prometheus.Gauge
	initiated prometheus.Counter
	endpoints prometheus.Gauge
	// Life without core.
	expired           prometheus.Counter
	signatureFailures prometheus.Counter
}

func newGatewayMetrics(reg *prometheus.Registry, g *Gateway) *gatewayMetrics {
	m := &gatewayMetrics{
		applies:  prometheus.NewCounter(prometheus.CounterOpts{Name: "ward_gateway_config_applies_total", Help: "Configurations (snapshots or changes) applied."}),
		peers:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "ward_gateway_peers", Help: "Peers installed on the interface."}),
		revision: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ward_gateway_applied_revision", Help: "Location revision applied."}),
		links:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "ward_gateway_core_links", Help: "Core replicas connected."}),
		initiated: prometheus.NewCounter(prometheus.CounterOpts{Name: "ward_gateway_takeover_handshakes_total",
			Help: "Handshakes this gateway initiated when it became active."}),
		endpoints: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ward_gateway_known_endpoints",
			Help: "Peers whose recent endpoint is known (from core), for taking over."}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{Name: "ward_gateway_peers_expired_total",
			Help: "Peers the gateway removed by itself while no core was connected (MFA session rules, or the location's drop policy)."}),
		signatureFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "ward_gateway_config_signature_failures_total",
			Help: "Configuration signatures from core that did not match the applied configuration."}),
	}
	active := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ward_gateway_active",
		Help: "1 while this gateway is active (holds the floating IP, or has none configured), 0 while standby."}, func() float64 {
		if g.roles.active() {
			return 1
		}
		return 0
	})
	roleChanges := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "ward_gateway_role_changes_total",
		Help: "Changes between active and standby since the gateway started."}, func() float64 { return float64(g.roles.get().Changes) })
	ready := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ward_gateway_ready", Help: "1 when the data plane is ready."}, func() float64 {
		if ok, _ := g.Ready(); ok {
			return 1
		}
		return 0
	})
	reg.MustRegister(m.applies, m.peers, m.revision, m.links, ready, m.initiated, m.endpoints, active, roleChanges, m.expired, m.signatureFailures)
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
	// Role is "active" or "standby" (active-passive high availability);
	// RoleSince is when it last changed (Unix ms), RoleReason why.
	Role           Role            `json:"role"`
	RoleSince      int64           `json:"role_since"`
	RoleReason     string          `json:"role_reason"`
	RoleChanges    uint64          `json:"role_changes"`
	FloatingIPs    []string        `json:"floating_ips"`
	KnownEndpoints int             `json:"known_endpoints"`
	LastTakeover   *TakeoverStatus `json:"last_takeover,omitempty"`
	// SignedRevision is the revision of the signed configuration on disk
	// (what a restart without core restores), UnsignedChanges the keys
	// changed after it, which such a restore leaves out.
	SignedRevision  uint64 `json:"signed_revision"`
	UnsignedChanges int    `json:"unsigned_changes"`
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
	role := g.roles.get()
	s.Role, s.RoleSince, s.RoleReason, s.RoleChanges = role.Role, role.Since.UnixMilli(), role.Reason, role.Changes
	s.FloatingIPs = make([]string, len(g.cfg.FloatingIPs))
	for i, a := range g.cfg.FloatingIPs {
		s.FloatingIPs[i] = a.String()
	}
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
	s.KnownEndpoints = len(g.endpoints)
	s.SignedRevision, s.UnsignedChanges = g.diskSigned, g.diskUnsigned
	if g.lastTakeover != nil {
		t := *g.lastTakeover
		s.LastTakeover = &t
	}
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
	// gateway in rotation while core is away. A healthy standby is ready
	// too: keepalived's track script asks whether this node could serve if
	// it became master, and a standby that looked broken could never be
	// promoted.
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

// Healthcheck asks url (normally /readyz) and fails unless it answers 200
// within timeout: `ward gateway healthcheck` for keepalived's track_script,
// so nodes need no curl.
func Healthcheck(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// HealthURL turns a --health-addr into the /readyz URL to probe; an
// address without host (":50067") means this machine.
func HealthURL(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("health address %q: %w", addr, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/readyz", nil
}
