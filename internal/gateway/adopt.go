package gateway

import (
	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
)

// Adopt runs the adoption exchange (see internal/adoption).
func (g *Gateway) Adopt(stream gw.Gateway_AdoptServer) error { return g.adoptee.Serve(stream) }

// forget drops the adoption (core revoked this gateway) and stops serving:
// a revoked gateway must not keep the location's key and peers in use.
func (g *Gateway) forget(reason string) {
	if err := g.adoptee.Forget(); err != nil {
		g.log.Error("could not remove the revoked identity", "err", err)
	}
	g.mu.Lock()
	if g.engine != nil {
		g.runHook("pre-down", g.cfg.PreDown)
		_ = g.engine.Close()
		g.engine = nil
		g.removeMasqueradeLocked()
		g.runHook("post-down", g.cfg.PostDown)
	}
	g.state = applied{peers: map[string]*gw.Peer{}}
	g.mu.Unlock()
	if err := removeFile(g.cfg.DataDir, configFile); err != nil {
		g.log.Error("could not remove the revoked configuration", "err", err)
	}
	g.log.Warn("core revoked this gateway: adoption, configuration and interface removed", "reason", reason)
}
