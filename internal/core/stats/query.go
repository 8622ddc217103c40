package stats

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/wardvpn/ward/internal/core"
)

// Point is the traffic of one minute; beyond MinuteDetail (48 h) of one hour,
// keyed by the hour's first minute (see Rollup).
type Point struct {
	Minute        int64  `json:"minute"`
	UploadBytes   uint64 `json:"upload_bytes"`
	DownloadBytes uint64 `json:"download_bytes"`
}

// Totals sums traffic.
type Totals struct {
	UploadBytes   uint64 `json:"upload_bytes"`
	DownloadBytes uint64 `json:"download_bytes"`
}

// DeviceUsage is one device's traffic and liveness in a location.
type DeviceUsage struct {
	DeviceID string `json:"device_id"`
	Totals
	LastHandshake int64 `json:"last_handshake"`
	Connected     bool  `json:"connected"`
}

// GatewayUsage is one gateway's share of a location's traffic.
type GatewayUsage struct {
	GatewayID string `json:"gateway_id"`
	Totals
}

// LocationStats answers GET /locations/{id}/stats.
type LocationStats struct {
	LocationID string         `json:"location_id"`
	From       int64          `json:"from"`
	To         int64          `json:"to"`
	Series     []Point        `json:"series"`
	Totals     Totals         `json:"totals"`
	Devices    []DeviceUsage  `json:"devices"`
	Gateways   []GatewayUsage `json:"gateways"`
}

// Range validates a query window; zero values mean the last hour.
func Range(from, to int64) (int64, int64, error) {
	if to == 0 {
		to = time.Now().UnixMilli()
	}
	if from == 0 {
		from = to - int64(time.Hour/time.Millisecond)
	}
	if from >= to {
		return 0, 0, core.Invalid("invalid_range", "from", "from must be before to")
	}
	if to-from > int64(366*24*time.Hour/time.Millisecond) {
		return 0, 0, core.Invalid("invalid_range", "from", "the window may span at most a year")
	}
	return from, to, nil
}

// Location returns per-minute series, totals, per-device and per-gateway
// usage of a location. A device is connected when its newest handshake on
// any gateway is younger than thresholdSeconds.
func (s *Service) Location(ctx context.Context, locationID string, from, to int64, thresholdSeconds int) (LocationStats, error) {
	out := LocationStats{LocationID: locationID, From: from, To: to, Series: []Point{}, Devices: []DeviceUsage{}, Gateways: []GatewayUsage{}}
	rows, err := s.db.QueryContext(ctx, `SELECT minute, SUM(rx), SUM(tx) FROM usage_minutes WHERE location_id = $1 AND minute >= $2 AND minute < $3
		GROUP BY minute ORDER BY minute`, locationID, from/60000*60000, to)
	if err != nil {
		return out, fmt.Errorf("location series: %w", err)
	}
	for rows.Next() {
		var p Point
		var rx, tx int64
		if err := rows.Scan(&p.Minute, &rx, &tx); err != nil {
			rows.Close()
			return out, err
		}
		p.UploadBytes, p.DownloadBytes = uint64(rx), uint64(tx)
		out.Series = append(out.Series, p)
		out.Totals.UploadBytes += p.UploadBytes
		out.Totals.DownloadBytes += p.DownloadBytes
	}
	rows.Close()
	handshakes, err := s.handshakes(ctx, locationID)
	if err != nil {
		return out, err
	}
	rows, err = s.db.QueryContext(ctx, `SELECT device_id, SUM(rx), SUM(tx) FROM usage_minutes WHERE location_id = $1 AND minute >= $2 AND minute < $3
		GROUP BY device_id ORDER BY device_id`, locationID, from/60000*60000, to)
	if err != nil {
		return out, fmt.Errorf("device usage: %w", err)
	}
	for rows.Next() {
		var d DeviceUsage
		var rx, tx int64
		if err := rows.Scan(&d.DeviceID, &rx, &tx); err != nil {
			rows.Close()
			return out, err
		}
		d.UploadBytes, d.DownloadBytes = uint64(rx), uint64(tx)
		d.LastHandshake = handshakes[d.DeviceID]
		d.Connected = connected(d.LastHandshake, thresholdSeconds)
		out.Devices = append(out.Devices, d)
	}
	rows.Close()
	rows, err = s.db.QueryContext(ctx, `SELECT gateway_id, SUM(rx), SUM(tx) FROM usage_minutes WHERE location_id = $1 AND minute >= $2 AND minute < $3
		GROUP BY gateway_id ORDER BY gateway_id`, locationID, from/60000*60000, to)
	if err != nil {
		return out, fmt.Errorf("gateway usage: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var g GatewayUsage
		var rx, tx int64
		if err := rows.Scan(&g.GatewayID, &rx, &tx); err != nil {
			return out, err
		}
		g.UploadBytes, g.DownloadBytes = uint64(rx), uint64(tx)
		out.Gateways = append(out.Gateways, g)
	}
	return out, rows.Err()
}

// handshakes returns, per device id, the newest handshake across all
// gateways of the location.
func (s *Service) handshakes(ctx context.Context, locationID string) (map[string]int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT d.id, MAX(h.last_handshake) FROM peer_handshakes h JOIN devices d ON d.public_key = h.public_key
		WHERE h.location_id = $1 GROUP BY d.id`, locationID)
	if err != nil {
		return nil, fmt.Errorf("handshakes: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var id string
		var hs int64
		if err := rows.Scan(&id, &hs); err != nil {
			return nil, err
		}
		out[id] = hs
	}
	return out, rows.Err()
}

func connected(lastHandshake int64, thresholdSeconds int) bool {
	return lastHandshake > 0 && time.Since(time.UnixMilli(lastHandshake)) < time.Duration(thresholdSeconds)*time.Second
}

// DeviceLocationUsage is a device's traffic in one location.
type DeviceLocationUsage struct {
	LocationID    string  `json:"location_id"`
	Series        []Point `json:"series"`
	Totals        Totals  `json:"totals"`
	LastHandshake int64   `json:"last_handshake"`
}

// DeviceStats answers GET /devices/{id}/stats.
type DeviceStats struct {
	DeviceID  string                `json:"device_id"`
	From      int64                 `json:"from"`
	To        int64                 `json:"to"`
	Totals    Totals                `json:"totals"`
	Locations []DeviceLocationUsage `json:"locations"`
}

// Device returns a device's usage per location and minute.
func (s *Service) Device(ctx context.Context, deviceID, publicKey string, from, to int64) (DeviceStats, error) {
	out := DeviceStats{DeviceID: deviceID, From: from, To: to, Locations: []DeviceLocationUsage{}}
	rows, err := s.db.QueryContext(ctx, `SELECT location_id, minute, SUM(rx), SUM(tx) FROM usage_minutes WHERE device_id = $1 AND minute >= $2 AND minute < $3
		GROUP BY location_id, minute ORDER BY location_id, minute`, deviceID, from/60000*60000, to)
	if err != nil {
		return out, fmt.Errorf("device series: %w", err)
	}
	defer rows.Close()
	idx := map[string]int{}
	for rows.Next() {
		var loc string
		var p Point
		var rx, tx int64
		if err := rows.Scan(&loc, &p.Minute, &rx, &tx); err != nil {
			return out, err
		}
		p.UploadBytes, p.DownloadBytes = uint64(rx), uint64(tx)
		i, ok := idx[loc]
		if !ok {
			i = len(out.Locations)
			idx[loc] = i
			out.Locations = append(out.Locations, DeviceLocationUsage{LocationID: loc, Series: []Point{}})
		}
		l := &out.Locations[i]
		l.Series = append(l.Series, p)
		l.Totals.UploadBytes += p.UploadBytes
		l.Totals.DownloadBytes += p.DownloadBytes
		out.Totals.UploadBytes += p.UploadBytes
		out.Totals.DownloadBytes += p.DownloadBytes
	}
	if err := rows.Err(); err != nil {
		return out, err
	}
	for i := range out.Locations {
		var hs sql.NullInt64
		err := s.db.QueryRowContext(ctx, `SELECT MAX(last_handshake) FROM peer_handshakes WHERE location_id = $1 AND public_key = $2`,
			out.Locations[i].LocationID, publicKey).Scan(&hs)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return out, err
		}
		out.Locations[i].LastHandshake = hs.Int64
	}
	return out, nil
}
