package proxy

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	pb "github.com/wardvpn/ward/internal/rpc/proxyv1"
)

// MaxBodyBytes bounds public request bodies.
const MaxBodyBytes = 1 << 20

// hopHeaders are connection-level and not forwarded.
var hopHeaders = map[string]bool{"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Transfer-Encoding": true,
	"Te": true, "Trailer": true, "Upgrade": true}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func (p *Proxy) clientIP(r *http.Request) string {
	if p.cfg.TrustForwarded {
		if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
			first, _, _ := strings.Cut(xff, ",")
			if ip := net.ParseIP(strings.TrimSpace(first)); ip != nil {
				return ip.String()
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// idempotent requests may be retried on another core when one drops.
func idempotent(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
		return true
	}
	return r.Header.Get("Idempotency-Key") != ""
}

func (p *Proxy) publicHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ip := p.clientIP(r)
		if !p.limiter.allow(ip) {
			p.metrics.requests.WithLabelValues("rate_limited").Inc()
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusTooManyRequests, "rate_limited", "too many requests from your address; slow down")
			return
		}
		if p.links.size() == 0 {
			p.metrics.requests.WithLabelValues("no_core").Inc()
			writeError(w, http.StatusServiceUnavailable, "core_unavailable", "no core is connected to this proxy; try again shortly")
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
		if err != nil {
			var maxErr *http.MaxBytesError
			if errors.As(err, &maxErr) {
				p.metrics.requests.WithLabelValues("too_large").Inc()
				writeError(w, http.StatusRequestEntityTooLarge, "body_too_large", "the body exceeds 1 MiB")
				return
			}
			writeError(w, http.StatusBadRequest, "bad_request", "could not read the request body")
			return
		}
		req := &pb.HTTPRequest{Method: r.Method, Uri: r.URL.RequestURI(), Body: body, RemoteIp: ip, Host: r.Host, Tls: r.TLS != nil}
		for name, values := range r.Header {
			if !hopHeaders[name] {
				req.Headers = append(req.Headers, &pb.Header{Name: name, Values: values})
			}
		}
		resp, outcome, coreID := p.relay(r, req)
		p.metrics.requests.WithLabelValues(outcome).Inc()
		switch outcome {
		case "relayed":
			p.metrics.latency.Observe(time.Since(start).Seconds())
			p.metrics.byCore.WithLabelValues(coreID).Inc()
		case "timeout":
			writeError(w, http.StatusGatewayTimeout, "core_timeout", "core did not answer in time")
			return
		case "client_gone":
			return
		default:
			writeError(w, http.StatusServiceUnavailable, "core_unavailable", "no core could answer the request; try again shortly")
			return
		}
		for _, h := range resp.GetHeaders() {
			if hopHeaders[h.GetName()] || h.GetName() == "Content-Length" {
				continue
			}
			for _, v := range h.GetValues() {
				w.Header().Add(h.GetName(), v)
			}
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(resp.GetBody())))
		w.WriteHeader(int(resp.GetStatus()))
		_, _ = w.Write(resp.GetBody())
	})
}

// relay sends the request to a core and waits; an idempotent request is
// tried on every connected core before giving up. It returns the response,
// the outcome (a metrics label) and the replica that answered.
func (p *Proxy) relay(r *http.Request, req *pb.HTTPRequest) (*pb.HTTPResponse, string, string) {
	tried := map[*coreLink]bool{}
	deadline := time.NewTimer(p.cfg.RequestTimeout)
	defer deadline.Stop()
	for attempt := 0; ; attempt++ {
		link := p.links.pick(tried)
		if link == nil {
			return nil, "failed", ""
		}
		tried[link] = true
		if attempt > 0 {
			p.metrics.retries.Inc()
		}
		req.Id = p.nextID.Add(1)
		ch, ok := link.register(req.Id)
		if !ok {
			continue
		}
		if err := link.send(&pb.ProxyToCore{Msg: &pb.ProxyToCore_Request{Request: req}}); err != nil {
			link.forget(req.Id)
			if idempotent(r) || attempt == 0 {
				// Nothing reached the core when the send failed.
				continue
			}
			return nil, "failed", ""
		}
		select {
		case resp, ok := <-ch:
			if ok {
				return resp, "relayed", link.coreID
			}
			// The link died with the request in flight: the core may or may
			// not have acted on it, so only idempotent requests go again.
			if !idempotent(r) {
				return nil, "failed", ""
			}
		case <-deadline.C:
			link.forget(req.Id)
			_ = link.send(&pb.ProxyToCore{Msg: &pb.ProxyToCore_Cancel{Cancel: req.Id}})
			return nil, "timeout", ""
		case <-r.Context().Done():
			link.forget(req.Id)
			_ = link.send(&pb.ProxyToCore{Msg: &pb.ProxyToCore_Cancel{Cancel: req.Id}})
			return nil, "client_gone", ""
		}
	}
}

func (p *Proxy) healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	// Ready = at least one core connected: without one every public request
	// would be a 503.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if p.links.size() == 0 {
			writeError(w, http.StatusServiceUnavailable, "no_core", "no core connected")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ready"}` + "\n"))
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		type link struct {
			CoreID string `json:"core_id"`
			Since  int64  `json:"since"`
		}
		st := struct {
			ProxyID string `json:"proxy_id"`
			Adopted bool   `json:"adopted"`
			Version string `json:"version"`
			Links   []link `json:"core_links"`
		}{ProxyID: p.adoptee.ID(), Version: p.version, Links: []link{}}
		st.Adopted = st.ProxyID != ""
		for _, l := range p.links.snapshot() {
			st.Links = append(st.Links, link{CoreID: l.coreID, Since: l.since.UnixMilli()})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(st)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(p.registry, promhttp.HandlerOpts{}))
	return mux
}
