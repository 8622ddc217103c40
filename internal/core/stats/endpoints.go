package stats

import (
	"context"
	"fmt"
	"time"
)

// EndpointWindow bounds which handshakes say where a peer is now. A client
// that sends anything handshakes at least every two minutes, so an older
// handshake is a peer that went quiet or away; a standby gateway would only
// waste handshake retries on it.
const EndpointWindow = 5 * time.Minute

// PeerEndpoint is where a peer was last seen by any gateway of its location.
type PeerEndpoint struct {
	PublicKey     string
	Endpoint      string
	LastHandshake int64 // Unix ms
}

// RecentEndpoints returns, for each peer of the location with a handshake
// in the last EndpointWindow (before now) on any of its gateways, the
// endpoint of its newest handshake. Gateways that take over the location's
// floating IP initiate handshakes towards these endpoints.
//
// One query on the primary key's location prefix; the newest row per key is
// picked here rather than with a window function or correlated subquery, so
// the statement stays one scan on SQLite and PostgreSQL alike.
func (s *Service) RecentEndpoints(ctx context.Context, locationID string, now time.Time) (map[string]PeerEndpoint, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT public_key, gateway_id, endpoint, last_handshake FROM peer_handshakes
		WHERE location_id = $1 AND last_handshake >= $2 AND endpoint <> ''`, locationID, now.Add(-EndpointWindow).UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("recent endpoints: %w", err)
	}
	defer rows.Close()
	out := map[string]PeerEndpoint{}
	from := map[string]string{} // key -> gateway of the chosen row, for a stable tie-break
	for rows.Next() {
		var e PeerEndpoint
		var gatewayID string
		if err := rows.Scan(&e.PublicKey, &gatewayID, &e.Endpoint, &e.LastHandshake); err != nil {
			return nil, fmt.Errorf("recent endpoints: %w", err)
		}
		old, ok := out[e.PublicKey]
		if ok && (old.LastHandshake > e.LastHandshake || old.LastHandshake == e.LastHandshake && from[e.PublicKey] < gatewayID) {
			continue
		}
		out[e.PublicKey] = e
		from[e.PublicKey] = gatewayID
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("recent endpoints: %w", err)
	}
	return out, nil
}
