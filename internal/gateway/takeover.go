package gateway

import (
	"context"
	"time"

	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
)

const (
	// takeoverMaxAge bounds which known endpoints a gateway taking over
	// initiates to. Core only sends endpoints younger than 5 minutes, but a
	// gateway restarted while core is away has only the ones it persisted;
	// clients rarely change address, and a wrong guess costs wireguard-go's
	// retries (18 packets over 90 s), so an hour is a fair bound.
	takeoverMaxAge = time.Hour
	// takeoverGrace: endpoints that arrive from core this soon after
	// becoming active are initiated too (a gateway that started without a
	// configuration gets them only after its first snapshot).
	takeoverGrace = 10 * time.Second
	// roleReassert is how often a standby re-asserts itself on the engine,
	// closing the window in which a TUN "up" event could wake the device.
	roleReassert = time.Second
	// endpointPersistEvery bounds disk writes caused by endpoint updates,
	// which arrive every second on a busy location; config changes are
	// still written at once.
	endpointPersistEvery = 30 * time.Second
)

// takeoverRetries are when, after taking over, the gateway initiates again
// to the peers that have not shaken hands with it yet. The first
// initiations can be lost in the moment the floating IP moves: measured in
// the drill, the new active gateway sent them 1-2 ms before keepalived's
// gratuitous ARP reached the router, which then sent the clients' answers
// to the old node, and wireguard-go only retries after 5 s.
var takeoverRetries = []time.Duration{50 * time.Millisecond, 150 * time.Millisecond, 400 * time.Millisecond, time.Second, 2 * time.Second}

// knownEndpoint is where a peer was last seen, by core (any gateway of the
// location) or by this gateway's own device.
type knownEndpoint struct {
	Endpoint      string `json:"endpoint"`
	LastHandshake int64  `json:"last_handshake"` // Unix ms
}

// TakeoverStatus describes the last time this gateway became active.
type TakeoverStatus struct {
	At         int64   `json:"at"`         // Unix ms
	Candidates int     `json:"candidates"` // peers with a known, recent endpoint
	Initiated  int     `json:"initiated"`  // handshakes started
	TookMs     float64 `json:"took_ms"`
	Error      string  `json:"error,omitempty"`
}

// kickRole wakes the role loop; one pending wake-up is enough.
func (g *Gateway) kickRole() {
	select {
	case g.roleKick <- struct{}{}:
	default:
	}
}

// roleUpdated logs a role change and hands it to the role loop.
func (g *Gateway) roleUpdated(info roleInfo, changed bool) {
	if changed {
		g.log.Info("gateway role changed", "role", info.Role, "reason", info.Reason)
		g.reportRole()
	}
	g.kickRole()
}

// roleLoop applies the role to the engine whenever it may have changed,
// and repeats the takeover initiations on the takeoverRetries schedule.
func (g *Gateway) roleLoop(ctx context.Context) {
	t := time.NewTicker(roleReassert)
	defer t.Stop()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		g.syncRole()
		g.mu.Lock()
		next, ok := g.nextTakeoverRetryLocked()
		g.mu.Unlock()
		if ok {
			retry.Reset(time.Until(next))
		}
		select {
		case <-ctx.Done():
			return
		case <-g.roleKick:
		case <-t.C:
		case <-retry.C:
			g.mu.Lock()
			g.retryTakeoverLocked()
			g.mu.Unlock()
		}
	}
}

// nextTakeoverRetryLocked is when the next repeated initiation is due.
func (g *Gateway) nextTakeoverRetryLocked() (time.Time, bool) {
	if g.takeoverAt.IsZero() || g.takeoverRetry >= len(takeoverRetries) {
		return time.Time{}, false
	}
	return g.takeoverAt.Add(takeoverRetries[g.takeoverRetry]), true
}

// retryTakeoverLocked initiates again, when due, to the peers that have not
// shaken hands since the gateway became active.
func (g *Gateway) retryTakeoverLocked() {
	next, ok := g.nextTakeoverRetryLocked()
	if !ok || time.Now().Before(next) {
		return
	}
	g.takeoverRetry++
	if g.engine == nil || g.engineStandby || !g.roles.active() {
		g.takeoverAt = time.Time{}
		return
	}
	all := make(map[string]bool, len(g.state.peers))
	for k := range g.state.peers {
		all[k] = true
	}
	g.takeoverLocked(all)
}

// syncRole brings the engine to the current role: a standby's device goes
// down (silent), an active one comes up and, in active-passive mode,
// initiates handshakes to every peer whose endpoint is known.
func (g *Gateway) syncRole() {
	info := g.roles.get()
	active := info.Role == RoleActive
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.engine == nil {
		return // configureLocked applies the role when it creates the engine
	}
	switch {
	case !active:
		// Re-asserted every time: setting a standby down again is free.
		if err := g.engine.SetActive(false); err != nil {
			g.log.Error("could not take the interface out of service", "err", err)
			return
		}
		if !g.engineStandby {
			g.log.Info("interface is standby: sessions dropped, nothing is sent", "reason", info.Reason)
		}
		g.engineStandby, g.initiatePending = true, false
	case g.engineStandby:
		if err := g.engine.SetActive(true); err != nil {
			g.log.Error("could not put the interface in service", "err", err)
			return
		}
		g.engineStandby = false
		g.activatedAt = time.Now()
		g.initiatePending = info.HA
		g.log.Info("interface is active", "reason", info.Reason)
	}
	if g.initiatePending && active {
		g.initiatePending = false
		g.takeoverLocked(nil)
		g.takeoverAt, g.takeoverRetry = time.Now(), 0
	}
}

// takeoverLocked points peers at their newest known endpoint and starts a
// handshake with each, so clients that were talking to the previous active
// gateway get a session here within a round trip instead of after their own
// 15 s timeout. With only set, just those keys are considered, and only if
// the device has not shaken hands with them since becoming active.
func (g *Gateway) takeoverLocked(only map[string]bool) {
	start := time.Now()
	own := map[string]knownEndpoint{}
	if peers, err := g.engine.Peers(); err == nil {
		for _, p := range peers {
			if p.Endpoint != "" && !p.LastHandshake.IsZero() {
				own[p.PublicKey] = knownEndpoint{Endpoint: p.Endpoint, LastHandshake: p.LastHandshake.UnixMilli()}
			}
		}
	}
	cutoff := start.Add(-takeoverMaxAge).UnixMilli()
	targets := map[string]string{}
	for key := range g.state.peers {
		if only != nil && !only[key] {
			continue
		}
		best, mine := g.endpoints[key], own[key]
		if only != nil && mine.LastHandshake >= g.activatedAt.UnixMilli() {
			continue // already talking to us
		}
		// The device's own view wins when newer (it saw the client itself).
		if mine.LastHandshake > best.LastHandshake {
			best = mine
		}
		if best.Endpoint == "" || best.LastHandshake < cutoff {
			continue
		}
		targets[key] = best.Endpoint
	}
	if len(targets) == 0 {
		if only == nil {
			g.lastTakeover = &TakeoverStatus{At: start.UnixMilli()}
			g.log.Info("took over: no peer with a known endpoint to initiate to")
		}
		return
	}
	n, err := g.engine.Initiate(targets)
	took := time.Since(start)
	g.metrics.initiated.Add(float64(n))
	st := &TakeoverStatus{At: start.UnixMilli(), Candidates: len(targets), Initiated: n, TookMs: float64(took.Microseconds()) / 1000}
	if err != nil {
		st.Error = err.Error()
		g.log.Warn("initiating handshakes failed in part", "initiated", n, "candidates", len(targets), "err", err)
	}
	if only == nil {
		g.lastTakeover = st
		g.log.Info("took over: handshakes initiated", "initiated", n, "candidates", len(targets), "took", took)
	} else {
		g.log.Info("takeover: handshakes initiated to peers that have not answered yet", "initiated", n, "candidates", len(targets))
	}
}

// mergeEndpoints keeps, per key, the entry with the newest handshake. Right
// after becoming active, fresh entries are initiated at once.
func (g *Gateway) mergeEndpoints(eps []*gw.PeerEndpoint) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var changed map[string]bool
	cutoff := time.Now().Add(-takeoverMaxAge).UnixMilli()
	for _, e := range eps {
		k, at := e.GetPublicKey(), e.GetLastHandshake()
		if k == "" || e.GetEndpoint() == "" || at < cutoff {
			continue
		}
		if old, ok := g.endpoints[k]; ok && old.LastHandshake > at {
			continue
		} else if ok && old == (knownEndpoint{Endpoint: e.GetEndpoint(), LastHandshake: at}) {
			continue
		}
		g.endpoints[k] = knownEndpoint{Endpoint: e.GetEndpoint(), LastHandshake: at}
		if changed == nil {
			changed = map[string]bool{}
		}
		changed[k] = true
	}
	if changed == nil {
		return
	}
	g.endpointsDirty = true
	g.metrics.endpoints.Set(float64(len(g.endpoints)))
	if g.engine != nil && !g.engineStandby && g.roles.get().HA && time.Since(g.activatedAt) < takeoverGrace {
		g.takeoverLocked(changed)
	}
}

// pruneEndpointsLocked drops entries too old to initiate to.
func (g *Gateway) pruneEndpointsLocked() {
	cutoff := time.Now().Add(-takeoverMaxAge).UnixMilli()
	for k, e := range g.endpoints {
		if e.LastHandshake < cutoff {
			delete(g.endpoints, k)
		}
	}
	g.metrics.endpoints.Set(float64(len(g.endpoints)))
}
