package web

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/wardvpn/ward/internal/core/stats"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/lease"
)

func (s *Server) overviewRoutes() []route {
	return []route{
		{pattern: "GET /{$}", handle: s.overview},
		{pattern: "GET /overview/live", handle: s.overviewLive},
		{pattern: "GET /overview/traffic/{id}", handle: s.traffic},
	}
}

// overviewLocation is one location with its gateways and who is connected.
type overviewLocation struct {
	vpn.Location
	Gateways  []vpn.Component
	Connected stats.Connected
}

type overviewData struct {
	Locations []overviewLocation
	Total     stats.Connected
	Cluster   *lease.Cluster
	// Now is when the data was read (the live fragment shows it).
	Now int64
}

// maxOverviewLocations bounds one overview; installations with more
// locations page through the locations list instead.
const maxOverviewLocations = 200

func (s *Server) overviewData(r *http.Request, c *reqCtx) (overviewData, error) {
	ctx := r.Context()
	locs, _, err := s.o.VPN.ListLocations(ctx, c.actor(), vpn.ListParams{Limit: maxOverviewLocations})
	if err != nil {
		return overviewData{}, err
	}
	now := time.Now()
	connected, err := s.o.Stats.ConnectedByLocation(ctx, now)
	if err != nil {
		return overviewData{}, err
	}
	d := overviewData{Now: now.UnixMilli()}
	for _, l := range locs {
		ol := overviewLocation{Location: l, Connected: connected[l.ID]}
		if c.principal.IsAdmin {
			if ol.Gateways, _, err = s.o.VPN.ListGateways(ctx, c.actor(), l.ID, vpn.ListParams{Limit: 100}); err != nil {
				return overviewData{}, err
			}
		}
		d.Total.Devices += ol.Connected.Devices
		d.Total.Users += ol.Connected.Users
		d.Locations = append(d.Locations, ol)
	}
	if c.principal.IsAdmin && s.o.Cluster != nil {
		cl, err := s.o.Cluster.Cluster(ctx, now)
		if err != nil {
			return overviewData{}, err
		}
		d.Cluster = &cl
	}
	return d, nil
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	d, err := s.overviewData(r, c)
	if err != nil {
		return err
	}
	s.render(w, http.StatusOK, "overview.html", s.page(c, "Overview", "overview", d))
	return nil
}

// overviewLive is the fragment the overview page polls: gateway states and
// connected counts, so a gateway that stops turns "disconnected" without a
// reload.
func (s *Server) overviewLive(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	d, err := s.overviewData(r, c)
	if err != nil {
		return err
	}
	s.render(w, http.StatusOK, "overview.html#live", s.page(c, "Overview", "overview", d))
	return nil
}

// trafficRanges are the graph windows and their bucket sizes (about 60 to
// 170 points each).
var trafficRanges = map[string]struct{ span, step time.Duration }{
	"1h":  {time.Hour, time.Minute},
	"24h": {24 * time.Hour, 15 * time.Minute},
	"7d":  {7 * 24 * time.Hour, time.Hour},
}

type trafficData struct {
	LocationID string
	Name       string
	// From and To bound the window (Unix seconds) for the chart's x axis.
	From, To int64
	Range    string
	Ranges   []string
	// Points is JSON for the chart script: [[t...], [up...], [down...]].
	Points string
	Totals stats.Totals
}

func (s *Server) traffic(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	id := r.PathValue("id")
	loc, err := s.o.VPN.GetLocation(r.Context(), c.actor(), id)
	if err != nil {
		return err
	}
	rng := r.URL.Query().Get("range")
	win, ok := trafficRanges[rng]
	if !ok {
		rng, win = "1h", trafficRanges["1h"]
	}
	to := time.Now()
	points, err := s.o.Stats.Series(r.Context(), id, to.Add(-win.span).UnixMilli(), to.UnixMilli(), win.step)
	if err != nil {
		return err
	}
	cols := [3][]float64{{}, {}, {}}
	var tot stats.Totals
	for _, p := range points {
		cols[0] = append(cols[0], float64(p.Minute/1000))
		cols[1] = append(cols[1], float64(p.UploadBytes))
		cols[2] = append(cols[2], float64(p.DownloadBytes))
		tot.UploadBytes += p.UploadBytes
		tot.DownloadBytes += p.DownloadBytes
	}
	raw, err := json.Marshal(cols)
	if err != nil {
		return err
	}
	d := trafficData{LocationID: id, Name: loc.Name, From: to.Add(-win.span).Unix(), To: to.Unix(), Range: rng, Ranges: []string{"1h", "24h", "7d"}, Points: string(raw), Totals: tot}
	s.render(w, http.StatusOK, "overview.html#traffic", s.page(c, "Traffic", "overview", d))
	return nil
}
