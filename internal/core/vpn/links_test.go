package vpn

import (
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/store"
)

// A link row left "connected" by a core replica that was killed must stop
// counting once its heartbeat is older than LinkStaleAfter; a fresh one
// counts. Both for gateways and proxies.
func TestLinkStatusGoesStaleWithoutHeartbeat(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		e := newPeerEnv(t, db)
		loc := e.location("office", nil, "10.70.0.0/24")
		gw, err := e.svc.CreateGateway(e.ctx, e.admin, loc.ID, ComponentInput{Name: ptr("gw1"), ControlAddress: ptr("127.0.0.1:50066")})
		if err != nil {
			t.Fatal(err)
		}
		px, err := e.svc.CreateProxy(e.ctx, e.admin, ComponentInput{Name: ptr("px1"), ControlAddress: ptr("127.0.0.1:50068")})
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name, table, column, id string
			record                  func(LinkEvent) error
			status                  func() (Component, error)
		}{
			{"gateway", "gateway_links", "gateway_id", gw.ID,
				func(ev LinkEvent) error { return e.svc.RecordLink(e.ctx, e.admin, ev, false) },
				func() (Component, error) { return e.svc.GetGateway(e.ctx, e.admin, loc.ID, gw.ID) }},
			{"proxy", "proxy_links", "proxy_id", px.ID,
				func(ev LinkEvent) error { return e.svc.RecordProxyLink(e.ctx, e.admin, ev, false) },
				func() (Component, error) { return e.svc.GetProxy(e.ctx, e.admin, px.ID) }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if err := tc.record(LinkEvent{GatewayID: tc.id, CoreID: "core-a", Connected: true}); err != nil {
					t.Fatal(err)
				}
				c, err := tc.status()
				if err != nil {
					t.Fatal(err)
				}
				if !c.Status.Connected || !c.Status.Links[0].Connected {
					t.Fatalf("fresh link: status %+v, want connected", c.Status)
				}
				old := time.Now().Add(-LinkStaleAfter - time.Second).UnixMilli()
				if _, err := db.ExecContext(e.ctx, `UPDATE `+tc.table+` SET last_contact = $1 WHERE `+tc.column+` = $2`, old, tc.id); err != nil {
					t.Fatal(err)
				}
				if c, err = tc.status(); err != nil {
					t.Fatal(err)
				}
				if c.Status.Connected || c.Status.Links[0].Connected {
					t.Fatalf("link silent for more than %s: status %+v, want disconnected", LinkStaleAfter, c.Status)
				}
			})
		}
	})
}
