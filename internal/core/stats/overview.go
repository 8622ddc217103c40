package stats

import (
	"context"
	"fmt"
	"time"
)

// Connected is how many devices (and their users) of a location have a
// handshake on any gateway within the location's disconnect threshold.
type Connected struct {
	Devices int `json:"devices"`
	Users   int `json:"users"`
}

// ConnectedByLocation counts connected devices and users per location in
// one query (the overview polls it every few seconds).
func (s *Service) ConnectedByLocation(ctx context.Context, now time.Time) (map[string]Connected, error) {
	// From locations, so each location's recent handshakes are a range of
	// the (location_id, last_handshake) index.
	rows, err := s.db.QueryContext(ctx, `SELECT l.id, COUNT(DISTINCT d.id), COUNT(DISTINCT d.user_id)
		FROM locations l JOIN peer_handshakes h ON h.location_id = l.id AND h.last_handshake > CAST($1 AS BIGINT) - l.disconnect_threshold * 1000
		JOIN devices d ON d.public_key = h.public_key GROUP BY l.id`, now.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("connected devices: %w", err)
	}
	defer rows.Close()
	out := map[string]Connected{}
	for rows.Next() {
		var id string
		var c Connected
		if err := rows.Scan(&id, &c.Devices, &c.Users); err != nil {
			return nil, err
		}
		out[id] = c
	}
	return out, rows.Err()
}

// Series is a location's traffic from..to in buckets of step (at least a
// minute; a multiple of an hour reads hourly rollups as they are).
func (s *Service) Series(ctx context.Context, locationID string, from, to int64, step time.Duration) ([]Point, error) {
	stepMs := max(step.Milliseconds(), 60_000)
	rows, err := s.db.QueryContext(ctx, `SELECT minute / $4 * $4, SUM(rx), SUM(tx) FROM location_usage_minutes
		WHERE location_id = $1 AND minute >= $2 AND minute < $3 GROUP BY minute / $4 * $4 ORDER BY 1`,
		locationID, from/stepMs*stepMs, to, stepMs)
	if err != nil {
		return nil, fmt.Errorf("location series: %w", err)
	}
	defer rows.Close()
	out := []Point{}
	for rows.Next() {
		var p Point
		var rx, tx int64
		if err := rows.Scan(&p.Minute, &rx, &tx); err != nil {
			return nil, err
		}
		p.UploadBytes, p.DownloadBytes = uint64(rx), uint64(tx)
		out = append(out, p)
	}
	return out, rows.Err()
}
