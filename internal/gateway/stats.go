package gateway

import (
	"context"
	"time"

	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
)

// statsLoop reads the counters every interval and sends them to every
// connected core. Counters are cumulative, so a report that finds no core is
// not lost: the next one carries the totals.
func (g *Gateway) statsLoop(ctx context.Context) {
	t := time.NewTicker(g.cfg.StatsInterval)
	defer t.Stop()
	var seq uint64
	for {
		final := false
		select {
		case <-ctx.Done():
			final = true // flush what the last interval counted
		case <-t.C:
		}
		links, _ := g.linkSnapshot()
		if len(links) > 0 {
			if report := g.readStats(); report != nil {
				seq++
				report.Seq = seq
				for _, l := range links {
					if err := l.send(&gw.GatewayMessage{Msg: &gw.GatewayMessage_Stats{Stats: report}}); err != nil {
						g.log.Debug("stats not sent", "core_id", l.coreID, "err", err)
					}
				}
			}
		}
		if final {
			return
		}
	}
}

func (g *Gateway) readStats() *gw.StatsReport {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.engine == nil {
		return nil
	}
	peers, err := g.engine.Peers()
	if err != nil {
		g.log.Warn("reading peer statistics failed", "err", err)
		return nil
	}
	r := &gw.StatsReport{BootId: g.bootID, At: time.Now().UnixMilli(), Samples: make([]*gw.PeerSample, 0, len(peers))}
	for _, p := range peers {
		s := &gw.PeerSample{PublicKey: p.PublicKey, Generation: g.generation[p.PublicKey], RxBytes: p.RxBytes, TxBytes: p.TxBytes, Endpoint: p.Endpoint}
		if !p.LastHandshake.IsZero() {
			s.LastHandshake = p.LastHandshake.UnixMilli()
		}
		r.Samples = append(r.Samples, s)
	}
	return r
}
