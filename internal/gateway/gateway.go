package gateway

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/wardvpn/ward/internal/adoption"
	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/gateway/wgengine"
	"github.com/wardvpn/ward/internal/pki"
	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
)

// ProtocolVersion is the control protocol this gateway speaks.
const ProtocolVersion = 1

// Gateway is a running `ward gateway`.
type Gateway struct {
	gw.UnimplementedGatewayServer

	cfg     Config
	log     *slog.Logger
	version string
	bootID  string

	adoptee *adoption.Adoptee

	// mu guards the data plane state.
	mu         sync.Mutex
	engine     wgengine.Engine
	masq       *masquerade
	state      applied
	generation map[string]uint64
	lastApply  time.Time
	// Active-passive role (see role.go, takeover.go). engineStandby is
	// what the engine was last told; endpoints is where peers were last
	// seen (from core, persisted), used when taking over.
	roles           *roles
	roleKick        chan struct{}
	engineStandby   bool
	initiatePending bool
	activatedAt     time.Time
	lastTakeover    *TakeoverStatus
	takeoverAt      time.Time // when the last takeover initiated; retries count from it
	takeoverRetry   int       // next index into takeoverRetries
	endpoints       map[string]knownEndpoint
	endpointsDirty  bool
	// Life without core (signed.go): the last configuration core signed,
	// the keys changed since, and whether peers were removed here (the
	// device then differs from core's revision until a snapshot).
	signed     *signedConfig
	caKey      func() crypto.PublicKey // core's CA, which signs configurations
	touched    map[string]bool
	installed  map[string]time.Time // when each key's current session (preshared key) was installed
	localDirty bool
	started    time.Time
	restoring  bool // applying the saved configuration at boot
	// What config.json holds now: the signed revision and how many keys
	// changed after it (for /status).
	diskSigned   uint64
	diskUnsigned int
	persistMu    sync.Mutex
	// savedCoreContact is when a core was last connected before this
	// process started (from config.json).
	savedCoreContact time.Time

	linksMu     sync.Mutex
	links       map[*coreLink]struct{}
	lastContact time.Time
	// coreLeft is when the last core link closed (a core that is
	// connected but has nothing to say sends nothing for a while, so the
	// last message is not when it went).
	coreLeft time.Time

	persistDirty    chan struct{}
	shutdown        chan struct{} // closed to end the control streams
	memLimitFromEnv bool
	metrics         *gatewayMetrics
	registry        *prometheus.Registry
}

// New prepares a gateway: loads the adoption identity and restores the last
// known good configuration so tunnels come back even while core is away.
func New(cfg Config, version string, log *slog.Logger) (*Gateway, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	g := &Gateway{cfg: cfg, log: log, version: version, bootID: core.NewID(), generation: map[string]uint64{},
		links: map[*coreLink]struct{}{}, persistDirty: make(chan struct{}, 1), shutdown: make(chan struct{}), memLimitFromEnv: os.Getenv("GOMEMLIMIT") != "",
		roles: &roles{st: newRoleState(len(cfg.FloatingIPs) > 0, time.Now())}, roleKick: make(chan struct{}, 1), endpoints: map[string]knownEndpoint{},
		touched: map[string]bool{}, installed: map[string]time.Time{}, started: time.Now()}
	g.state.peers = map[string]*gw.Peer{}
	g.registry = prometheus.NewRegistry()
	g.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	g.metrics = newGatewayMetrics(g.registry, g)
	// The role is known before the restored config creates the engine, so a
	// gateway that starts without the floating IP never sends a packet.
	g.checkFloatingIP()
	var err error
	g.adoptee, err = adoption.NewAdoptee(pki.RoleGateway, cfg.DataDir, cfg.JoinToken, log)
	if err != nil {
		return nil, err
	}
	g.caKey = g.adoptee.CAPublicKey
	if id := g.adoptee.ID(); id != "" {
		log.Info("gateway adopted", "gateway_id", id)
		if err := g.restore(); err != nil {
			log.Error("could not restore the last known good config", "err", err)
		}
	} else if cfg.JoinToken == "" {
		log.Warn("gateway is not adopted and has no join token: register it in core and start it with WARD_JOIN_TOKEN")
	}
	return g, nil
}

func (g *Gateway) restore() error {
	saved, err := loadConfig(g.cfg.DataDir)
	if err != nil || saved == nil {
		return err
	}
	g.mu.Lock()
	for _, e := range saved.Endpoints {
		g.endpoints[e.PublicKey] = knownEndpoint{Endpoint: e.Endpoint, LastHandshake: e.LastHandshake}
	}
	g.pruneEndpointsLocked()
	if saved.Revision == 0 {
		g.mu.Unlock()
		return nil // nothing signed yet: only the endpoints
	}
	snap, err := g.restoreSigned(saved, time.Now())
	dirty := g.localDirty
	g.mu.Unlock()
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.restoring = true
	g.mu.Unlock()
	_, err = g.applySnapshot(snap)
	g.mu.Lock()
	g.restoring = false
	g.mu.Unlock()
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.localDirty = dirty
	g.mu.Unlock()
	g.log.Info("restored last known good config", "revision", saved.Revision, "peers", len(snap.GetPeers()), "signed_peers", len(saved.Peers),
		"known_endpoints", len(saved.Endpoints))
	return nil
}

// Run serves the control port and the health endpoints until ctx ends.
func (g *Gateway) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", g.cfg.ControlAddr)
	if err != nil {
		return fmt.Errorf("listen on control address %s: %w", g.cfg.ControlAddr, err)
	}
	var health net.Listener
	if g.cfg.HealthAddr != "" {
		if health, err = net.Listen("tcp", g.cfg.HealthAddr); err != nil {
			ln.Close()
			return fmt.Errorf("listen on health address %s: %w", g.cfg.HealthAddr, err)
		}
	}
	return g.Serve(ctx, ln, health)
}

// Serve is Run on given listeners (tests pass their own).
func (g *Gateway) Serve(ctx context.Context, control, health net.Listener) error {
	notify, err := listenNotify(g.cfg.DataDir)
	if err != nil {
		control.Close()
		if health != nil {
			health.Close()
		}
		return err
	}
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(g.adoptee.ServerTLS())),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Second, Timeout: 2 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Second, PermitWithoutStream: true}),
	)
	gw.RegisterGatewayServer(srv, g)
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(1)
	go func() {
		defer wg.Done()
		errc <- srv.Serve(control)
	}()
	var hs *http.Server
	if health != nil {
		hs = &http.Server{Handler: g.healthHandler(), ReadHeaderTimeout: 5 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := hs.Serve(health); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	loopCtx, stopLoops := context.WithCancel(ctx)
	var loops sync.WaitGroup
	loops.Add(5)
	go func() { defer loops.Done(); g.persistLoop(loopCtx) }()
	go func() { defer loops.Done(); g.expiryLoop(loopCtx) }()
	go func() { defer loops.Done(); g.statsLoop(loopCtx) }()
	go func() { defer loops.Done(); g.roleLoop(loopCtx) }()
	go func() { defer loops.Done(); g.serveNotify(notify) }()
	if len(g.cfg.FloatingIPs) > 0 {
		loops.Add(1)
		go func() { defer loops.Done(); g.watchFloatingIP(loopCtx) }()
	}
	info := g.roles.get()
	g.log.Info("gateway listening", "control", control.Addr().String(), "boot_id", g.bootID, "notify_socket", notify.Addr().String(),
		"role", info.Role, "role_reason", info.Reason)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	// The stats loop sends a last report while the streams are still open,
	// so a restart loses no accounting; then the streams end and gRPC stops.
	stopLoops()
	notify.Close() // ends serveNotify
	loops.Wait()
	close(g.shutdown)
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(3 * time.Second):
		srv.Stop()
	}
	if hs != nil {
		shut, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_ = hs.Shutdown(shut)
		cancel()
	}
	wg.Wait()
	g.persistNow()
	g.mu.Lock()
	if g.engine != nil {
		g.runHook("pre-down", g.cfg.PreDown)
		_ = g.engine.Close()
		g.engine = nil
		g.removeMasqueradeLocked()
		g.runHook("post-down", g.cfg.PostDown)
	}
	g.mu.Unlock()
	g.log.Info("gateway stopped")
	if errors.Is(runErr, grpc.ErrServerStopped) {
		return nil
	}
	return runErr
}

func (g *Gateway) removeMasqueradeLocked() {
	if g.masq == nil {
		return
	}
	if err := g.masq.remove(); err != nil {
		g.log.Warn("could not remove masquerade rules", "err", err)
	}
	g.masq = nil
}

// persistLoop writes the applied config at most every 200 ms, off the apply
// path so acknowledgements are not held up by disk writes. Endpoint updates
// alone are written every endpointPersistEvery.
func (g *Gateway) persistLoop(ctx context.Context) {
	eps := time.NewTicker(endpointPersistEvery)
	defer eps.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-eps.C:
			g.mu.Lock()
			dirty := g.endpointsDirty
			g.mu.Unlock()
			if dirty {
				g.persistNow()
			}
		case <-g.persistDirty:
			g.persistNow()
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}

func (g *Gateway) persistNow() {
	// One writer at a time, each capturing the state when it starts: a
	// write never replaces a newer one.
	g.persistMu.Lock()
	defer g.persistMu.Unlock()
	g.linksMu.Lock()
	contact := g.coreLeft
	if len(g.links) > 0 {
		contact = time.Now()
	}
	g.linksMu.Unlock()
	g.mu.Lock()
	if g.state.revision == 0 {
		g.mu.Unlock()
		return
	}
	// What core signed, plus the keys changed since (left out on restore).
	var saved savedConfig
	if s := g.signed; s != nil {
		saved = savedConfig{Revision: s.revision, Interface: s.iface, Peers: slices.Collect(maps.Values(s.peers)), Signature: s.signature,
			Touched: slices.Sorted(maps.Keys(g.touched))}
	}
	if !contact.IsZero() {
		saved.CoreContact = contact.UnixMilli()
	}
	g.pruneEndpointsLocked()
	saved.Endpoints = make([]savedEndpoint, 0, len(g.endpoints))
	for k, e := range g.endpoints {
		saved.Endpoints = append(saved.Endpoints, savedEndpoint{PublicKey: k, Endpoint: e.Endpoint, LastHandshake: e.LastHandshake})
	}
	g.endpointsDirty = false
	g.mu.Unlock()
	raw, err := json.Marshal(saved)
	if err == nil {
		err = adoption.WriteFileAtomic(filepath.Join(g.cfg.DataDir, configFile), raw)
	}
	if err != nil {
		g.log.Error("could not save the config to disk", "err", err)
		return
	}
	g.mu.Lock()
	g.diskSigned, g.diskUnsigned = saved.Revision, len(saved.Touched)
	g.mu.Unlock()
}

// Ready tells whether the data plane works: interface up, config applied.
// It does not depend on any core being connected.
func (g *Gateway) Ready() (bool, string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.engine == nil:
		return false, "no configuration applied yet"
	case !g.engine.Up():
		return false, "interface is down"
	case g.state.revision == 0:
		return false, "no configuration applied yet"
	}
	return true, "ok"
}
