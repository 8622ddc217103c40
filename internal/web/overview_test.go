package web

import (
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/store"
)

// roleCell finds a gateway's row in the overview and returns its role cell.
func roleCell(t *testing.T, p page, gateway string) string {
	t.Helper()
	row := regexp.MustCompile(`(?s)<tr data-gateway="` + regexp.QuoteMeta(gateway) + `">.*?</tr>`).FindString(p.body)
	if row == "" {
		t.Fatalf("no row of gateway %s\n%s", gateway, p.body)
	}
	cell := regexp.MustCompile(`<td><span class="role"[^\n]*?</td>`).FindString(row)
	if cell == "" {
		t.Fatalf("row of %s has no role cell\n%s", gateway, row)
	}
	return cell
}

// TestOverviewShowsGatewayRole: the gateways table has a Role column that
// says the role in words (active, standby, unknown) with how long ago the
// gateway took it, in the page and in the live fragment.
func TestOverviewShowsGatewayRole(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		loc, err := u.vpn.CreateLocation(u.ctx, u.admin, vpnLocation("office"))
		if err != nil {
			t.Fatal(err)
		}
		ids := map[string]string{}
		for _, name := range []string{"gw-active", "gw-standby", "gw-old", "gw-new"} {
			g, err := u.vpn.CreateGateway(u.ctx, u.admin, loc.ID, vpnComponent(name, "10.0.0.1:5006"+string(rune('0'+len(ids)))))
			if err != nil {
				t.Fatal(err)
			}
			ids[name] = g.ID
		}
		since := time.Now().Add(-5 * time.Minute).UnixMilli()
		for name, role := range map[string]string{"gw-active": vpn.RoleActive, "gw-standby": vpn.RoleStandby, "gw-old": ""} {
			ev := vpn.LinkEvent{GatewayID: ids[name], CoreID: "core-1", Connected: true, Version: "v1", Role: role, RoleSince: since}
			if err := u.vpn.RecordLink(u.ctx, u.admin, ev, false); err != nil {
				t.Fatal(err)
			}
		}
		b := u.browser()
		b.login("admin", adminPassword)
		for _, p := range []page{b.get("/", false), b.get("/overview/live", true)} {
			wantStatus(t, "overview", p, http.StatusOK)
			wantContains(t, "overview", p, `<th scope="col">Role</th>`)
			for name, want := range map[string]string{
				"gw-active":  `<span class="role" data-role="active">active</span><br><span class="muted" title="`,
				"gw-standby": `<span class="role" data-role="standby">standby</span><br><span class="muted" title="`,
				"gw-old":     `<span class="role" data-role="unknown">unknown</span></td>`, // connected, reports no role
				"gw-new":     `<span class="role" data-role="unknown">unknown</span></td>`, // never connected
			} {
				cell := roleCell(t, p, name)
				if !regexp.MustCompile(regexp.QuoteMeta(want)).MatchString(cell) {
					t.Fatalf("%s: role cell %s, want %s", name, cell, want)
				}
				if name == "gw-active" || name == "gw-standby" {
					if !regexp.MustCompile(`changed 5m ago</span></td>$`).MatchString(cell) {
						t.Fatalf("%s: role cell %s, want when the role changed", name, cell)
					}
				}
			}
		}
	})
}
