package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/wardvpn/ward/internal/adoption"
	"github.com/wardvpn/ward/internal/pki"
	pb "github.com/wardvpn/ward/internal/rpc/proxyv1"
)

// Proxy is a running `ward proxy`.
type Proxy struct {
	pb.UnimplementedProxyServer

	cfg      Config
	log      *slog.Logger
	version  string
	adoptee  *adoption.Adoptee
	links    pool
	limiter  *ipLimiter
	nextID   atomic.Uint64
	shutdown chan struct{}
	registry *prometheus.Registry
	metrics  *proxyMetrics
}

type proxyMetrics struct {
	links    prometheus.Gauge
	requests *prometheus.CounterVec
	latency  prometheus.Histogram
	retries  prometheus.Counter
	// byCore counts answers per core replica: how the load spreads, and
	// which replica answered a given request (the HA tests rely on it).
	byCore *prometheus.CounterVec
}

// New prepares a proxy.
func New(cfg Config, version string, log *slog.Logger) (*Proxy, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	ad, err := adoption.NewAdoptee(pki.RoleProxy, cfg.DataDir, cfg.JoinToken, log)
	if err != nil {
		return nil, err
	}
	p := &Proxy{cfg: cfg, log: log, version: version, adoptee: ad, limiter: newIPLimiter(cfg.RateLimit, cfg.RateBurst),
		shutdown: make(chan struct{}), registry: prometheus.NewRegistry()}
	p.metrics = &proxyMetrics{
		links: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ward_proxy_core_links", Help: "Core replicas connected."}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ward_proxy_requests_total",
			Help: "Public requests by outcome (relayed, no_core, rate_limited, timeout, too_large, failed)."}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ward_proxy_request_duration_seconds", Help: "Latency of relayed requests.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10}}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Name: "ward_proxy_retries_total", Help: "Idempotent requests retried on another core."}),
		byCore: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ward_proxy_core_answers_total",
			Help: "Relayed requests answered, by the core replica that answered."}, []string{"core_id"}),
	}
	p.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		p.metrics.links, p.metrics.requests, p.metrics.latency, p.metrics.retries, p.metrics.byCore)
	if id := ad.ID(); id != "" {
		log.Info("proxy adopted", "proxy_id", id)
	} else if cfg.JoinToken == "" {
		log.Warn("proxy is not adopted and has no join token: register it in core and start it with WARD_JOIN_TOKEN")
	}
	return p, nil
}

// Adopt runs the adoption exchange (see internal/adoption).
func (p *Proxy) Adopt(stream pb.Proxy_AdoptServer) error { return p.adoptee.Serve(stream) }

func (p *Proxy) forget(reason string) {
	if err := p.adoptee.Forget(); err != nil {
		p.log.Error("could not remove the revoked identity", "err", err)
	}
	p.log.Warn("core revoked this proxy: adoption removed", "reason", reason)
}

// Run listens on the configured addresses and serves until ctx ends.
func (p *Proxy) Run(ctx context.Context) error {
	control, err := net.Listen("tcp", p.cfg.ControlAddr)
	if err != nil {
		return fmt.Errorf("listen on control address %s: %w", p.cfg.ControlAddr, err)
	}
	public, err := net.Listen("tcp", p.cfg.HTTPAddr)
	if err != nil {
		control.Close()
		return fmt.Errorf("listen on %s: %w", p.cfg.HTTPAddr, err)
	}
	var health net.Listener
	if p.cfg.HealthAddr != "" {
		if health, err = net.Listen("tcp", p.cfg.HealthAddr); err != nil {
			control.Close()
			public.Close()
			return fmt.Errorf("listen on health address %s: %w", p.cfg.HealthAddr, err)
		}
	}
	return p.Serve(ctx, control, public, health)
}

// Serve runs on given listeners (tests pass their own).
func (p *Proxy) Serve(ctx context.Context, control, public, health net.Listener) error {
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(p.adoptee.ServerTLS())),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Second, Timeout: 2 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Second, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(8<<20),
	)
	pb.RegisterProxyServer(srv, p)
	pubSrv := &http.Server{Handler: p.publicHandler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: p.cfg.RequestTimeout + 10*time.Second, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(p.log.Handler(), slog.LevelWarn)}
	servers := []*http.Server{pubSrv}
	errc := make(chan error, 3)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); errc <- srv.Serve(control) }()
	go func() {
		defer wg.Done()
		var err error
		if p.cfg.TLSCert != "" {
			err = pubSrv.ServeTLS(public, p.cfg.TLSCert, p.cfg.TLSKey)
		} else {
			err = pubSrv.Serve(public)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	if health != nil {
		hs := &http.Server{Handler: p.healthHandler(), ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, hs)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := hs.Serve(health); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	janitorCtx, stopJanitor := context.WithCancel(ctx)
	wg.Add(1)
	go func() { defer wg.Done(); p.limiter.janitor(janitorCtx) }()
	p.log.Info("proxy listening", "public", public.Addr().String(), "control", control.Addr().String())

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	stopJanitor()
	// Finish public requests first (they need the relays), then end the
	// relay streams and stop gRPC.
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	for _, s := range servers {
		_ = s.Shutdown(shutCtx)
	}
	cancel()
	close(p.shutdown)
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(3 * time.Second):
		srv.Stop()
	}
	wg.Wait()
	p.log.Info("proxy stopped")
	if errors.Is(runErr, grpc.ErrServerStopped) {
		return nil
	}
	return runErr
}
