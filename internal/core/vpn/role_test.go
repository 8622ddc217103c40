package vpn

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/store"
)

// TestGatewayRoleSummary: each link keeps the role its gateway reported;
// the gateway's role is active if any live link says active, standby if all
// live links say standby, and unknown otherwise (no live link, a gateway
// that reports no role). Stale links do not count. Proxies show no role.
func TestGatewayRoleSummary(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		e := newPeerEnv(t, db)
		loc := e.location("office", nil, "10.71.0.0/24")
		gw, err := e.svc.CreateGateway(e.ctx, e.admin, loc.ID, ComponentInput{Name: ptr("gw1"), ControlAddress: ptr("127.0.0.1:50066")})
		if err != nil {
			t.Fatal(err)
		}
		status := func() *GatewayStatus {
			t.Helper()
			c, err := e.svc.GetGateway(e.ctx, e.admin, loc.ID, gw.ID)
			if err != nil {
				t.Fatal(err)
			}
			return c.Status
		}
		link := func(st *GatewayStatus, core string) GatewayLink {
			t.Helper()
			for _, l := range st.Links {
				if l.CoreID == core {
					return l
				}
			}
			t.Fatalf("no link of %s in %+v", core, st.Links)
			return GatewayLink{}
		}
		record := func(core string, connected bool, role string, since int64) {
			t.Helper()
			if err := e.svc.RecordLink(e.ctx, e.admin, LinkEvent{GatewayID: gw.ID, CoreID: core, Connected: connected, Version: "v1",
				Role: role, RoleSince: since}, true); err != nil {
				t.Fatal(err)
			}
		}

		if st := status(); st.Role != RoleUnknown || st.RoleSince != 0 {
			t.Fatalf("never linked: role %q since %d, want unknown", st.Role, st.RoleSince)
		}

		t1 := time.Now().Add(-time.Hour).UnixMilli()
		record("core-a", true, RoleActive, t1)
		st := status()
		if st.Role != RoleActive || st.RoleSince != t1 {
			t.Fatalf("one active link: role %q since %d, want active since %d", st.Role, st.RoleSince, t1)
		}
		if l := link(st, "core-a"); l.Role != RoleActive || l.RoleSince != t1 {
			t.Fatalf("link: %+v", l)
		}

		// A second replica's link of a gateway older than the role report.
		record("core-b", true, "", 0)
		if st := status(); st.Role != RoleActive || link(st, "core-b").Role != RoleUnknown || link(st, "core-b").RoleSince != 0 {
			t.Fatalf("active + unknown: role %q, links %+v", st.Role, st.Links)
		}

		// The gateway turns standby; core-a hears it first.
		t2 := time.Now().Add(-time.Minute).UnixMilli()
		if err := e.svc.RecordRole(e.ctx, gw.ID, "core-a", RoleStandby, t2); err != nil {
			t.Fatal(err)
		}
		if st := status(); st.Role != RoleUnknown || st.RoleSince != 0 {
			t.Fatalf("standby + unknown: role %q since %d, want unknown", st.Role, st.RoleSince)
		}
		if err := e.svc.RecordRole(e.ctx, gw.ID, "core-b", RoleStandby, t2); err != nil {
			t.Fatal(err)
		}
		if st := status(); st.Role != RoleStandby || st.RoleSince != t2 {
			t.Fatalf("all standby: role %q since %d, want standby since %d", st.Role, st.RoleSince, t2)
		}

		// core-b's report of the next change to active arrives first: any
		// live active link makes the gateway active.
		t3 := time.Now().Add(-time.Second).UnixMilli()
		if err := e.svc.RecordRole(e.ctx, gw.ID, "core-b", RoleActive, t3); err != nil {
			t.Fatal(err)
		}
		if st := status(); st.Role != RoleActive || st.RoleSince != t3 {
			t.Fatalf("standby + active: role %q since %d, want active since %d", st.Role, st.RoleSince, t3)
		}

		// A stale live link does not count: only core-a (standby) is left.
		old := time.Now().Add(-LinkStaleAfter - time.Second).UnixMilli()
		if _, err := db.ExecContext(e.ctx, `UPDATE gateway_links SET last_contact = $1 WHERE gateway_id = $2 AND core_id = 'core-b'`, old, gw.ID); err != nil {
			t.Fatal(err)
		}
		if st := status(); st.Role != RoleStandby || st.RoleSince != t2 || link(st, "core-b").Role != RoleActive {
			t.Fatalf("core-b stale: role %q since %d, links %+v", st.Role, st.RoleSince, st.Links)
		}

		// Disconnected: the link keeps the last reported role, the gateway's
		// role is unknown.
		record("core-a", false, RoleStandby, t2)
		st = status()
		if st.Role != RoleUnknown || st.RoleSince != 0 {
			t.Fatalf("no live link: role %q since %d, want unknown", st.Role, st.RoleSince)
		}
		if l := link(st, "core-a"); l.Role != RoleStandby || l.RoleSince != t2 || l.Connected {
			t.Fatalf("disconnected link: %+v", l)
		}

		// A reconnect with a since in the future (clock skew) is clamped;
		// nonsense roles are not reported roles.
		record("core-a", true, RoleActive, time.Now().Add(time.Hour).UnixMilli())
		if st := status(); st.Role != RoleActive || st.RoleSince > time.Now().UnixMilli() {
			t.Fatalf("future since: role %q since %d", st.Role, st.RoleSince)
		}
		if err := e.svc.RecordRole(e.ctx, gw.ID, "core-a", "leader", t3); err != nil {
			t.Fatal(err)
		}
		if l := link(status(), "core-a"); l.Role != RoleUnknown || l.RoleSince != 0 {
			t.Fatalf("unknown role word: %+v", l)
		}

		// The connect audit entries name the role reported at connect.
		rows, err := db.QueryContext(e.ctx, `SELECT details FROM audit_log WHERE action = 'gateway.connected' AND target_id = $1`, gw.ID)
		if err != nil {
			t.Fatal(err)
		}
		var all []string
		for rows.Next() {
			var d string
			if err := rows.Scan(&d); err != nil {
				t.Fatal(err)
			}
			all = append(all, d)
		}
		rows.Close()
		joined := strings.Join(all, " ")
		if len(all) != 3 || strings.Count(joined, `"role":"active"`) != 2 || strings.Count(joined, `"role":"unknown"`) != 1 {
			t.Fatalf("connect audit details %v, want the roles active, unknown, active", all)
		}

		// Proxies have no role: the fields are absent from their JSON.
		px, err := e.svc.CreateProxy(e.ctx, e.admin, ComponentInput{Name: ptr("px1"), ControlAddress: ptr("127.0.0.1:50068")})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.svc.RecordProxyLink(e.ctx, e.admin, LinkEvent{GatewayID: px.ID, CoreID: "core-a", Connected: true, Role: RoleActive}, false); err != nil {
			t.Fatal(err)
		}
		p, err := e.svc.GetProxy(e.ctx, e.admin, px.ID)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(raw), `"role`) || len(p.Status.Links) != 1 {
			t.Fatalf("proxy JSON %s, want links without a role", raw)
		}
	})
}
