package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/wardvpn/ward/internal/core/stats"
)

// timeRange reads ?from= and ?to= (RFC 3339 or Unix ms; default: the last
// hour).
func timeRange(r *http.Request) (int64, int64, error) {
	var bounds [2]int64
	for i, name := range []string{"from", "to"} {
		v := r.URL.Query().Get(name)
		if v == "" {
			continue
		}
		if t, err := time.Parse(time.RFC3339, v); err == nil {
			bounds[i] = t.UnixMilli()
			continue
		}
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms <= 0 {
			return 0, 0, badRequest("invalid_query", name, "%s must be RFC 3339 or Unix milliseconds", name)
		}
		bounds[i] = ms
	}
	return stats.Range(bounds[0], bounds[1])
}

func (s *Server) locationStats(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	l, err := s.vpn.GetLocation(r.Context(), c.actor(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if !c.principal.IsAdmin {
		return forbidden("only admins can read location statistics")
	}
	from, to, err := timeRange(r)
	if err != nil {
		return err
	}
	st, err := s.stats.Location(r.Context(), l.ID, from, to, l.DisconnectThreshold)
	return ok(w, st, err)
}

func (s *Server) deviceStats(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	d, err := s.vpn.GetDevice(r.Context(), c.actor(), r.PathValue("id"))
	if err != nil {
		return err
	}
	from, to, err := timeRange(r)
	if err != nil {
		return err
	}
	st, err := s.stats.Device(r.Context(), d.ID, d.PublicKey, from, to)
	return ok(w, st, err)
}
