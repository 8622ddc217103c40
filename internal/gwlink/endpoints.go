package gwlink

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/wardvpn/ward/internal/core/stats"
	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
)

// endpointChunk bounds one PeerEndpoints message (~80 bytes an entry, far
// under gRPC's 4 MB default) so a location of 100k peers still streams.
const endpointChunk = 5000

// endpointCache shares one endpoint query per location and poll interval
// among all of this replica's sessions to that location's gateways: N
// gateways of a location cost one query a second, not N.
type endpointCache struct {
	stats *stats.Service
	every time.Duration

	mu   sync.Mutex
	locs map[string]*locationEndpoints
}

type locationEndpoints struct {
	mu    sync.Mutex // one query at a time per location
	next  time.Time  // earliest next query
	used  time.Time  // last asked for, for eviction
	byKey map[string]stats.PeerEndpoint
}

func newEndpointCache(s *stats.Service, every time.Duration) *endpointCache {
	return &endpointCache{stats: s, every: every, locs: map[string]*locationEndpoints{}}
}

// get returns the location's recent endpoints, at most one poll interval
// old. The map is shared and must not be changed. A slow query stretches
// the interval (to 20 times its duration) so a large location on a busy
// database is not queried back to back.
func (c *endpointCache) get(ctx context.Context, locationID string) (map[string]stats.PeerEndpoint, error) {
	now := time.Now()
	c.mu.Lock()
	l := c.locs[locationID]
	if l == nil {
		l = &locationEndpoints{}
		c.locs[locationID] = l
	}
	l.used = now
	for id, o := range c.locs { // locations nobody asked for in a while
		if id != locationID && now.Sub(o.used) > 10*c.every+time.Minute {
			delete(c.locs, id)
		}
	}
	c.mu.Unlock()

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byKey != nil && now.Before(l.next) {
		return l.byKey, nil
	}
	start := time.Now()
	byKey, err := c.stats.RecentEndpoints(ctx, locationID, start)
	took := time.Since(start)
	l.next = start.Add(max(c.every-c.every/10, 20*took))
	if err != nil {
		return nil, err
	}
	l.byKey = byKey
	return byKey, nil
}

// endpointSync is one stream's view of what the gateway was sent.
type endpointSync struct {
	sent    map[string]stats.PeerEndpoint
	lastErr string // logged once, not every poll
}

// changes lists the entries the gateway does not have yet, sorted by key.
func (s *endpointSync) changes(current map[string]stats.PeerEndpoint) []stats.PeerEndpoint {
	var out []stats.PeerEndpoint
	for k, e := range current {
		if old, ok := s.sent[k]; ok && old == e {
			continue
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b stats.PeerEndpoint) int {
		switch {
		case a.PublicKey < b.PublicKey:
			return -1
		case a.PublicKey > b.PublicKey:
			return 1
		}
		return 0
	})
	return out
}

// syncEndpoints sends the gateway the endpoints that changed since the last
// call (all of them on the first), in chunks. Entries that age out are not
// withdrawn: the gateway keeps the newest per key and bounds age itself.
func (w *worker) syncEndpoints(ctx context.Context, locationID string, s *endpointSync, send func(*gw.CoreMessage) error) error {
	current, err := w.m.endpoints.get(ctx, locationID)
	if err != nil {
		if ctx.Err() == nil && err.Error() != s.lastErr {
			w.log.Warn("cannot read peer endpoints", "err", err)
			s.lastErr = err.Error()
		}
		return nil // a query failure must not cost the control stream
	}
	s.lastErr = ""
	if s.sent == nil {
		s.sent = make(map[string]stats.PeerEndpoint, len(current))
	}
	for _, msg := range endpointMessages(s.changes(current)) {
		if err := send(msg); err != nil {
			return fmt.Errorf("send peer endpoints: %w", err)
		}
		part := msg.GetPeerEndpoints().GetEndpoints()
		for _, e := range part {
			s.sent[e.GetPublicKey()] = current[e.GetPublicKey()]
		}
		w.m.metrics.endpoints.Add(float64(len(part)))
	}
	// Forget what aged out of the window, so the map stays the size of
	// the location's active peers.
	for k := range s.sent {
		if _, ok := current[k]; !ok {
			delete(s.sent, k)
		}
	}
	return nil
}

// endpointMessages splits entries into messages of at most endpointChunk.
func endpointMessages(entries []stats.PeerEndpoint) []*gw.CoreMessage {
	var out []*gw.CoreMessage
	for start := 0; start < len(entries); start += endpointChunk {
		part := entries[start:min(start+endpointChunk, len(entries))]
		msg := &gw.PeerEndpoints{Endpoints: make([]*gw.PeerEndpoint, len(part))}
		for i, e := range part {
			msg.Endpoints[i] = &gw.PeerEndpoint{PublicKey: e.PublicKey, Endpoint: e.Endpoint, LastHandshake: e.LastHandshake}
		}
		out = append(out, &gw.CoreMessage{Msg: &gw.CoreMessage_PeerEndpoints{PeerEndpoints: msg}})
	}
	return out
}
