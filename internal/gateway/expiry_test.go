package gateway

import (
	"slices"
	"testing"
	"time"

	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
)

func TestExpiredPeers(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	mfa := corePolicy{mfaThreshold: 5 * time.Minute}
	peers := map[string]*gw.Peer{
		"connected-fresh":    {PublicKey: "connected-fresh"},
		"connected-stale":    {PublicKey: "connected-stale"},
		"new-before-dead":    {PublicKey: "new-before-dead", ExpiresAt: now.Add(time.Minute).UnixMilli()},
		"new-past-dead":      {PublicKey: "new-past-dead", ExpiresAt: now.Add(-time.Second).UnixMilli()},
		"new-then-connected": {PublicKey: "new-then-connected", ExpiresAt: now.Add(-time.Minute).UnixMilli()},
		"no-info":            {PublicKey: "no-info"},
	}
	handshakes := map[string]time.Time{
		"connected-fresh":    ago(4 * time.Minute),
		"connected-stale":    ago(6 * time.Minute),
		"new-then-connected": ago(time.Minute),
	}
	// A handshake of an earlier session of the key does not count.
	peers["reinstalled"] = &gw.Peer{PublicKey: "reinstalled", ExpiresAt: now.Add(-time.Second).UnixMilli()}
	handshakes["reinstalled"] = ago(time.Minute)
	installed := map[string]time.Time{"reinstalled": ago(10 * time.Second)}
	tests := []struct {
		name      string
		policy    corePolicy
		awaySince time.Time
		want      []string
	}{
		{"core connected: core decides", mfa, time.Time{}, nil},
		{"mfa, core away briefly", mfa, ago(time.Second), []string{"connected-stale", "new-past-dead", "reinstalled"}},
		{"mfa, core away long", mfa, ago(10 * time.Minute), []string{"connected-stale", "new-past-dead", "no-info", "reinstalled"}},
		{"no mfa, keep", corePolicy{}, ago(48 * time.Hour), nil},
		{"no mfa, drop, not yet", corePolicy{dropAfter: time.Hour}, ago(59 * time.Minute), nil},
		{"no mfa, drop", corePolicy{dropAfter: time.Hour}, ago(time.Hour), []string{"connected-fresh", "connected-stale", "new-before-dead",
			"new-past-dead", "new-then-connected", "no-info", "reinstalled"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := expiredPeers(now, tt.policy, peers, handshakes, installed, tt.awaySince)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("expired %v, want %v", got, tt.want)
			}
		})
	}
}
