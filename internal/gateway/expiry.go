package gateway

import (
	"sort"
	"time"

	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
)

// While a core is connected, core decides when peers go: it sees every
// gateway's handshakes, so a client served by another gateway stays. While
// no core is connected the gateway must enforce the rules itself, with what
// it knows: MFA peers expire like core would expire their sessions, and the
// location's policy says whether the other peers stay.

// corePolicy is what the location's configuration says about life without
// core.
type corePolicy struct {
	// mfaThreshold > 0 makes every peer an MFA session: it goes once its
	// newest known handshake is older than this, or, never connected,
	// once its expires_at (the session's deadline to connect) passed.
	mfaThreshold time.Duration
	// dropAfter > 0 drops the peers of a location without MFA once no core
	// has been connected for this long; 0 keeps them.
	dropAfter time.Duration
}

// expiredPeers returns the keys (sorted) of the peers that must go at now.
// handshakes holds the newest handshake known per key (this gateway's own,
// or what core reported seeing on any gateway); installed, when known, is
// when the key's current session was installed here: a handshake before
// it belongs to an earlier session of the key and does not count (as in
// core's sweep). coreAwaySince is when the last core link went (zero while
// one is connected: nothing expires then, core decides).
func expiredPeers(now time.Time, p corePolicy, peers map[string]*gw.Peer, handshakes, installed map[string]time.Time, coreAwaySince time.Time) []string {
	if coreAwaySince.IsZero() {
		return nil
	}
	var out []string
	for key, peer := range peers {
		if p.mfaThreshold <= 0 {
			if p.dropAfter > 0 && now.Sub(coreAwaySince) >= p.dropAfter {
				out = append(out, key)
			}
			continue
		}
		hs := handshakes[key]
		if inst, ok := installed[key]; ok && hs.Before(inst) {
			hs = time.Time{}
		}
		if deadline := peer.GetExpiresAt(); deadline > 0 && hs.IsZero() {
			// A new session that has not connected anywhere we know of.
			if now.UnixMilli() >= deadline {
				out = append(out, key)
			}
			continue
		}
		// Connected: it lives a threshold past its newest handshake. With
		// no handshake known at all, core still had the session when it was
		// last in touch (its sweep would have closed a stale one), so count
		// from then.
		newest := hs
		if newest.IsZero() {
			newest = coreAwaySince
		}
		if now.Sub(newest) > p.mfaThreshold {
			out = append(out, key)
		}
	}
	sort.Strings(out)
	return out
}

// policyOf reads the location's life-without-core settings.
func policyOf(iface *gw.Interface) corePolicy {
	p := corePolicy{mfaThreshold: time.Duration(iface.GetMfaDisconnectThreshold()) * time.Second}
	if iface.GetPeersWithoutCore() == "drop" && iface.GetDropPeersAfter() > 0 {
		p.dropAfter = time.Duration(iface.GetDropPeersAfter()) * time.Second
	}
	return p
}
