package gateway

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/wardvpn/ward/internal/gwsign"
	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
)

// The configuration on disk is the last one core signed (ConfigSignature,
// sent once this gateway acknowledged a revision), so a restart while no
// core is reachable restores only what core issued. Changes applied since
// that signature are not signed yet: their keys are written next to it
// ("touched") and left out on restore, so a restore never brings back a
// peer that core removed or replaced, at the cost of the few peers changed
// in the last second or so before a restart until core is back.

// signedConfig is a configuration core signed.
type signedConfig struct {
	revision  uint64
	iface     *gw.Interface
	peers     map[string]*gw.Peer
	signature []byte
}

// handleSignature keeps the applied configuration as the signed one when
// core's signature matches it, and has the persist loop write it (off this
// stream's goroutine: at 10,000 peers the file is megabytes, and the next
// change must not wait for the disk).
func (g *Gateway) handleSignature(s *gw.ConfigSignature) {
	if g.takeSignature(s) {
		g.mu.Lock()
		g.signalPersistLocked()
		g.mu.Unlock()
	}
}

func (g *Gateway) takeSignature(s *gw.ConfigSignature) bool {
	pub := g.caKey()
	g.mu.Lock()
	if s.GetRevision() != g.state.revision || g.localDirty || pub == nil {
		g.mu.Unlock()
		return false // stale (a newer revision is applied), or not what core signed
	}
	// Digest a copy outside the lock: at 10,000 peers it takes
	// milliseconds, and changes must keep applying meanwhile.
	cand := &signedConfig{revision: g.state.revision, iface: g.state.iface, peers: maps.Clone(g.state.peers), signature: s.GetSignature()}
	g.mu.Unlock()
	d, err := gwsign.Digest(cand.revision, cand.iface, slices.Collect(maps.Values(cand.peers)))
	if err == nil {
		err = gwsign.Verify(pub, d, s.GetSignature())
	}
	if err != nil {
		g.metrics.signatureFailures.Inc()
		g.log.Warn("core's signature does not match the applied configuration", "revision", s.GetRevision(), "err", err)
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state.revision != cand.revision || g.localDirty {
		// Changed meanwhile; the keys it touched are in g.touched,
		// recorded against the previous signed base: keep that base.
		return false
	}
	g.signed = cand
	clear(g.touched)
	return true
}

// noteTouchedLocked records keys changed since the signed configuration.
func (g *Gateway) noteTouchedLocked(keys ...string) {
	if g.signed == nil {
		return
	}
	for _, k := range keys {
		g.touched[k] = true
	}
}

// restoreSigned turns the saved configuration into the snapshot to apply
// at boot: only a configuration whose signature verifies, without the
// peers changed after it, and without the peers that expired meanwhile
// (core is away at boot as far as this process knows).
func (g *Gateway) restoreSigned(saved *savedConfig, now time.Time) (*gw.Snapshot, error) {
	if len(saved.Signature) == 0 {
		return nil, errors.New("the saved configuration is not signed by core: not restoring it, waiting for core")
	}
	pub := g.caKey()
	if pub == nil {
		return nil, errors.New("no CA to check the saved configuration against")
	}
	d, err := gwsign.Digest(saved.Revision, saved.Interface, saved.Peers)
	if err != nil {
		return nil, err
	}
	if err := gwsign.Verify(pub, d, saved.Signature); err != nil {
		return nil, fmt.Errorf("the saved configuration's signature does not verify (changed on disk?): not restoring it: %w", err)
	}
	peers := make(map[string]*gw.Peer, len(saved.Peers))
	for _, p := range saved.Peers {
		peers[p.GetPublicKey()] = p
	}
	g.signed = &signedConfig{revision: saved.Revision, iface: saved.Interface, peers: maps.Clone(peers), signature: saved.Signature}
	var dropped []string
	for _, k := range saved.Touched {
		if _, ok := peers[k]; ok {
			delete(peers, k)
			dropped = append(dropped, k)
		}
		g.touched[k] = true
	}
	awaySince := now
	if saved.CoreContact > 0 {
		awaySince = time.UnixMilli(saved.CoreContact)
		g.savedCoreContact = awaySince
	}
	expired := expiredPeers(now, policyOf(saved.Interface), peers, g.handshakesLocked(nil), nil, awaySince)
	for _, k := range expired {
		delete(peers, k)
		g.touched[k] = true
	}
	if len(dropped)+len(expired) > 0 {
		// The device will not match core's revision: ask for a snapshot.
		g.localDirty = true
		g.log.Info("restoring the signed configuration without some peers", "changed_after_signature", len(dropped), "expired", len(expired))
	}
	return &gw.Snapshot{Revision: saved.Revision, Interface: saved.Interface, Peers: slices.Collect(maps.Values(peers))}, nil
}

// handshakesLocked merges the newest handshake known per key: core's
// reports (from any gateway of the location) and this device's own.
func (g *Gateway) handshakesLocked(own []peerHandshake) map[string]time.Time {
	out := make(map[string]time.Time, len(g.endpoints)+len(own))
	for k, e := range g.endpoints {
		if e.LastHandshake > 0 {
			out[k] = time.UnixMilli(e.LastHandshake)
		}
	}
	for _, p := range own {
		if p.at.After(out[p.key]) {
			out[p.key] = p.at
		}
	}
	return out
}

type peerHandshake struct {
	key string
	at  time.Time
}

// coreAwaySince is when the last core link went, or zero while one is up.
func (g *Gateway) coreAwaySince() time.Time {
	g.linksMu.Lock()
	defer g.linksMu.Unlock()
	if len(g.links) > 0 {
		return time.Time{}
	}
	if !g.coreLeft.IsZero() {
		return g.coreLeft
	}
	if !g.savedCoreContact.IsZero() {
		return g.savedCoreContact
	}
	return g.started
}

// expiryLoop enforces the location's rules while no core is connected: MFA
// peers expire by their session rules, and with the "drop" policy every
// peer goes after the configured time.
func (g *Gateway) expiryLoop(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		away := g.coreAwaySince()
		if away.IsZero() {
			continue
		}
		if err := g.expireOnce(time.Now(), away); err != nil {
			g.log.Warn("could not remove expired peers", "err", err)
		}
	}
}

func (g *Gateway) expireOnce(now, away time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.engine == nil || g.state.iface == nil || len(g.state.peers) == 0 {
		return nil
	}
	policy := policyOf(g.state.iface)
	if policy.mfaThreshold <= 0 && policy.dropAfter <= 0 {
		return nil
	}
	var own []peerHandshake
	if policy.mfaThreshold > 0 {
		states, err := g.engine.Peers()
		if err != nil {
			return err
		}
		for _, s := range states {
			if !s.LastHandshake.IsZero() {
				own = append(own, peerHandshake{s.PublicKey, s.LastHandshake})
			}
		}
	}
	expired := expiredPeers(now, policy, g.state.peers, g.handshakesLocked(own), g.installed, away)
	if len(expired) == 0 {
		return nil
	}
	if err := g.engine.Apply(nil, expired); err != nil {
		return err
	}
	for _, k := range expired {
		delete(g.state.peers, k)
	}
	g.noteTouchedLocked(expired...)
	g.localDirty = true
	g.log.Info("removed peers while no core is connected", "peers", len(expired), "mfa_threshold", policy.mfaThreshold, "drop_after", policy.dropAfter,
		"core_away_for", now.Sub(away).Round(time.Second))
	g.metrics.expired.Add(float64(len(expired)))
	g.afterApplyLocked(0, len(expired))
	return nil
}
