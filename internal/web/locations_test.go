package web

import (
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/store"
)

// locationForm is a complete, valid location form; set overrides fields.
func locationForm(set map[string][]string) url.Values {
	f := url.Values{
		"name":                 {"office"},
		"addresses":            {"10.20.0.0/24, fd00:20::/64"},
		"endpoint":             {"vpn.example.com"},
		"listen_port":          {"51821"},
		"extra_endpoints":      {"vpn2.example.com:51822\nvpn3.example.com"},
		"allowed_ips":          {"10.20.0.0/24, 192.168.5.0/24"},
		"dns":                  {"10.20.0.1, corp.example"},
		"keepalive":            {"15"},
		"mtu":                  {"1380"},
		"fwmark":               {"51820"},
		"mfa_mode":             {"internal"},
		"disconnect_threshold": {"600"},
		"peers_without_core":   {"drop"},
		"drop_peers_after":     {"120"},
		"allowed_groups":       {"staff"},
	}
	for k, v := range set {
		if v == nil {
			f.Del(k)
			continue
		}
		f[k] = v
	}
	return f
}

func TestLocationCreateEditDelete(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		for _, g := range []string{"staff", "ops"} {
			if _, err := u.ident.CreateGroup(u.ctx, u.admin, identity.NewGroup{Name: g}); err != nil {
				t.Fatal(err)
			}
		}
		b := u.browser()
		b.login("admin", adminPassword)
		wantContains(t, "empty list", b.get("/locations", false), "No locations yet", `href="/locations/new"`)
		form := b.get("/locations/new", false)
		wantStatus(t, "new form", form, http.StatusOK)
		// The form starts with the domain's defaults.
		wantContains(t, "new form", form, `name="listen_port" type="number" min="1" max="65535" value="51820"`, `value="1420"`, `value="300"`,
			`value="3600"`, `<option value="disabled" selected>`, `<option value="keep" selected>`, `name="all_groups" value="on" checked`,
			`name="allowed_groups" value="ops"`, `name="allowed_groups" value="staff"`)

		p := b.post("/locations", locationForm(nil))
		if p.status != http.StatusSeeOther || !strings.HasPrefix(p.location, "/locations/") {
			t.Fatalf("create: %d to %q\n%s", p.status, p.location, p.body)
		}
		id := strings.TrimPrefix(p.location, "/locations/")
		l, err := u.vpn.GetLocation(u.ctx, u.admin, id)
		if err != nil {
			t.Fatal(err)
		}
		want := vpn.Location{Name: "office", Addresses: []string{"10.20.0.1/24", "fd00:20::1/64"}, ListenPort: 51821, Endpoint: "vpn.example.com",
			ExtraEndpoints: []string{"vpn2.example.com:51822", "vpn3.example.com"}, AllowedIPs: []string{"10.20.0.0/24", "192.168.5.0/24"},
			DNS: []string{"10.20.0.1", "corp.example"}, Keepalive: 15, MTU: 1380, FwMark: 51820, MFAMode: "internal", DisconnectThreshold: 600,
			PeersWithoutCore: "drop", DropPeersAfter: 120, AllGroups: false, AllowedGroups: []string{"staff"}}
		got := l
		got.ID, got.PublicKey, got.Revision, got.CreatedAt, got.UpdatedAt = "", "", 0, 0, 0
		if !sameLocation(got, want) {
			t.Fatalf("created %+v\nwant %+v", got, want)
		}
		detail := b.get(p.location, false)
		wantStatus(t, "detail", detail, http.StatusOK)
		wantContains(t, "detail", detail, "Location office", "10.20.0.1/24, fd00:20::1/64", "vpn.example.com, port 51821", "vpn2.example.com:51822, vpn3.example.com",
			"members of staff", "drop peers without MFA after 120 s", esc(l.PublicKey), "No gateways registered", `href="/locations/`+id+`/edit"`,
			`data-confirm="Delete location office`)
		wantContains(t, "list", b.get("/locations", false), `href="/locations/`+id+`"`, "vpn.example.com:51821", "internal", "staff")

		// Edit: the form holds the current values.
		edit := b.get("/locations/"+id+"/edit", false)
		wantStatus(t, "edit form", edit, http.StatusOK)
		wantContains(t, "edit form", edit, `value="office"`, `value="10.20.0.1/24, fd00:20::1/64"`, ">vpn2.example.com:51822\nvpn3.example.com</textarea>",
			`<option value="internal" selected>`, `<option value="drop" selected>`, `name="allowed_groups" value="staff" checked`, `action="/locations/`+id+`/edit"`)
		wantLacks(t, "edit form", edit, `name="all_groups" value="on" checked`, `name="allowed_groups" value="ops" checked`)
		ok := b.post("/locations/"+id+"/edit", locationForm(map[string][]string{"name": {"head office"}, "mfa_mode": {"disabled"}, "extra_endpoints": {""},
			"all_groups": {"on"}, "dns": {""}}))
		if ok.status != http.StatusSeeOther || ok.location != "/locations/"+id {
			t.Fatalf("edit: %d to %q\n%s", ok.status, ok.location, ok.body)
		}
		l, err = u.vpn.GetLocation(u.ctx, u.admin, id)
		if err != nil {
			t.Fatal(err)
		}
		if l.Name != "head office" || l.MFAMode != "disabled" || len(l.ExtraEndpoints) != 0 || len(l.DNS) != 0 || !l.AllGroups || len(l.AllowedGroups) != 0 || l.MTU != 1380 {
			t.Fatalf("after edit: %+v", l)
		}

		// CSRF: a forged token changes nothing.
		wantStatus(t, "delete without csrf", b.post("/locations/"+id+"/delete", url.Values{"csrf_token": {"forged"}}), http.StatusForbidden)
		wantStatus(t, "edit without csrf", b.post("/locations/"+id+"/edit", locationForm(map[string][]string{"csrf_token": {"forged"}})), http.StatusForbidden)
		wantStatus(t, "create without csrf", b.post("/locations", locationForm(map[string][]string{"name": {"x"}, "csrf_token": {"forged"}})), http.StatusForbidden)
		if _, err := u.vpn.GetLocation(u.ctx, u.admin, id); err != nil {
			t.Fatal(err)
		}
		del := b.post("/locations/"+id+"/delete", nil)
		if del.status != http.StatusSeeOther || del.location != "/locations" {
			t.Fatalf("delete: %d to %q", del.status, del.location)
		}
		wantStatus(t, "deleted location", b.get("/locations/"+id, false), http.StatusNotFound)
		wantStatus(t, "edit a deleted location", b.get("/locations/"+id+"/edit", false), http.StatusNotFound)
	})
}

func sameLocation(a, b vpn.Location) bool {
	return a.Name == b.Name && slices.Equal(a.Addresses, b.Addresses) && a.ListenPort == b.ListenPort && a.Endpoint == b.Endpoint &&
		slices.Equal(a.ExtraEndpoints, b.ExtraEndpoints) && slices.Equal(a.AllowedIPs, b.AllowedIPs) && slices.Equal(a.DNS, b.DNS) &&
		a.Keepalive == b.Keepalive && a.MTU == b.MTU && a.FwMark == b.FwMark && a.MFAMode == b.MFAMode && a.DisconnectThreshold == b.DisconnectThreshold &&
		a.PeersWithoutCore == b.PeersWithoutCore && a.DropPeersAfter == b.DropPeersAfter && a.AllGroups == b.AllGroups && slices.Equal(a.AllowedGroups, b.AllowedGroups)
}

func TestLocationFormValidation(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		if _, err := u.ident.CreateGroup(u.ctx, u.admin, identity.NewGroup{Name: "staff"}); err != nil {
			t.Fatal(err)
		}
		existing := u.newLocation("branch", "10.30.0.0/24")
		b := u.browser()
		b.login("admin", adminPassword)
		for _, tc := range []struct {
			name    string
			set     map[string][]string
			status  int
			errorID string
			msg     string
			kept    []string
		}{
			{"bad network", map[string][]string{"addresses": {"10.0.0.0/33"}}, http.StatusBadRequest, "addresses-error",
				"is not a CIDR such as 10.10.0.0/24", []string{`value="10.0.0.0/33"`, `value="office"`, `value="1380"`}},
			{"no endpoint", map[string][]string{"endpoint": {" "}}, http.StatusBadRequest, "endpoint-error", "Endpoint is required", []string{`value="51821"`}},
			{"port not a number", map[string][]string{"listen_port": {"abc"}}, http.StatusBadRequest, "listen_port-error",
				"&#34;abc&#34; is not a whole number", []string{`value="abc"`}},
			{"port out of range", map[string][]string{"listen_port": {"70000"}}, http.StatusBadRequest, "listen_port-error",
				"Must be between 1 and 65535", []string{`value="70000"`}},
			{"bad extra endpoint", map[string][]string{"extra_endpoints": {"vpn2.example.com:0:1"}}, http.StatusBadRequest, "extra_endpoints-error",
				"vpn2.example.com:0:1", []string{">vpn2.example.com:0:1</textarea>"}},
			{"bad dns", map[string][]string{"dns": {"not_a_host!"}}, http.StatusBadRequest, "dns-error", "is neither an IP address nor a search domain", nil},
			{"mtu", map[string][]string{"mtu": {"100"}}, http.StatusBadRequest, "mtu-error", "Must be between 1280 and 9000", []string{`value="100"`}},
			{"keepalive", map[string][]string{"keepalive": {"-1"}}, http.StatusBadRequest, "keepalive-error", "Must be between 0 (off) and 3600 seconds", nil},
			{"threshold under the MFA minimum", map[string][]string{"disconnect_threshold": {"60"}}, http.StatusBadRequest, "disconnect_threshold-error",
				"Must be between 120 and 604800 seconds for this MFA mode", []string{`value="60"`, `<option value="internal" selected>`}},
			{"drop after too short", map[string][]string{"drop_peers_after": {"10"}}, http.StatusBadRequest, "drop_peers_after-error",
				"Must be between 60 and 2592000 seconds", []string{`<option value="drop" selected>`}},
			{"unknown group", map[string][]string{"allowed_groups": {"staff", "nope"}}, http.StatusBadRequest, "allowed_groups-error",
				"Group &#34;nope&#34; does not exist", []string{`name="allowed_groups" value="nope" checked`, `name="allowed_groups" value="staff" checked`}},
			{"duplicate name", map[string][]string{"name": {"branch"}}, http.StatusConflict, "name-error",
				"A location with this name already exists", []string{`value="branch"`}},
			{"overlapping network", map[string][]string{"addresses": {"10.30.0.0/16"}}, http.StatusConflict, "addresses-error",
				"overlaps 10.30.0.0/24 of location &#34;branch&#34;", []string{`value="10.30.0.0/16"`}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				p := b.post("/locations", locationForm(tc.set))
				wantFieldError(t, tc.name, p, tc.status, tc.errorID, tc.msg, tc.kept...)
				wantContains(t, tc.name, p, `action="/locations"`)
			})
		}
		if _, total, err := u.vpn.ListLocations(u.ctx, u.admin, vpn.ListParams{Limit: 10}); err != nil || total != 1 {
			t.Fatalf("locations after failed forms: %d, %v", total, err)
		}
		// Editing validates the same way, and keeps the values.
		p := b.post("/locations/"+existing.ID+"/edit", locationForm(map[string][]string{"name": {"branch"}, "addresses": {"10.30.0.0/24"}, "mtu": {"99999"}}))
		wantFieldError(t, "edit", p, http.StatusBadRequest, "mtu-error", "Must be between 1280 and 9000", `value="99999"`, `action="/locations/`+existing.ID+`/edit"`)
		wantStatus(t, "edit an unknown location", b.post("/locations/nope/edit", locationForm(nil)), http.StatusNotFound)
	})
}

var (
	joinTokenRe = regexp.MustCompile(`wgj1\.[0-9]+\.[A-Za-z0-9_-]+`)
	gatewayIDRe = regexp.MustCompile(`id="gw-([^"]+)-state"`)
)

func TestGatewayRegistrationShowsTokenOnce(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		office := u.newLocation("office", "10.10.0.0/24")
		b := u.browser()
		b.login("admin", adminPassword)
		base := "/locations/" + office.ID
		wantContains(t, "detail", b.get(base, false), `action="`+base+`/gateways"`, `hx-get="`+base+`/gateways/live"`)

		bad := b.post(base+"/gateways", url.Values{"name": {"gw-a"}, "control_address": {"no port"}})
		wantFieldError(t, "bad control address", bad, http.StatusBadRequest, "gw-control_address-error", "Control address must be host:port", `value="gw-a"`, `value="no port"`)
		wantLacks(t, "bad control address", bad, "wgj1.")

		p := b.post(base+"/gateways", url.Values{"name": {"gw-a"}, "control_address": {"10.0.0.2:50066"}})
		wantStatus(t, "register", p, http.StatusOK)
		token := joinTokenRe.FindString(p.body)
		if token == "" {
			t.Fatalf("no join token in the answer\n%s", p.body)
		}
		wantContains(t, "register", p, "Gateway gw-a registered", "Shown once",
			esc("WARD_JOIN_TOKEN='"+token+"' ward gateway --data-dir /var/lib/ward-gateway --control-addr :50066 --interface wg0"),
			`data-state="not adopted"`, "waiting for adoption")
		gws, _, err := u.vpn.ListGateways(u.ctx, u.admin, office.ID, vpn.ListParams{Limit: 10})
		if err != nil || len(gws) != 1 {
			t.Fatalf("gateways: %v %v", gws, err)
		}
		gw := gws[0]
		// A later GET never shows it.
		later := b.get(base, false)
		wantContains(t, "later", later, "gw-a", "10.0.0.2:50066", `data-confirm="Issue a new join token for gw-a?`, `data-confirm="Delete gateway gw-a?`)
		wantLacks(t, "later", later, token, "Shown once")

		dup := b.post(base+"/gateways", url.Values{"name": {"gw-a"}, "control_address": {"10.0.0.3:50066"}})
		wantFieldError(t, "duplicate", dup, http.StatusConflict, "gw-name-error", "A gateway with this name already exists", `value="10.0.0.3:50066"`)

		// New join token: shown once, different.
		wantStatus(t, "token without csrf", b.post(base+"/gateways/"+gw.ID+"/token", url.Values{"csrf_token": {"forged"}}), http.StatusForbidden)
		nt := b.post(base+"/gateways/"+gw.ID+"/token", nil)
		wantStatus(t, "new token", nt, http.StatusOK)
		token2 := joinTokenRe.FindString(nt.body)
		if token2 == "" || token2 == token {
			t.Fatalf("new token %q (old %q)\n%s", token2, token, nt.body)
		}
		wantContains(t, "new token", nt, "New join token for gw-a", "previous adoption is revoked", esc("WARD_JOIN_TOKEN='"+token2+"'"))
		wantLacks(t, "later", b.get(base, false), token2)
		wantStatus(t, "token of an unknown gateway", b.post(base+"/gateways/nope/token", nil), http.StatusNotFound)

		// The live fragment: states swapped into the rows by id.
		live := b.get(base+"/gateways/live", true)
		wantStatus(t, "live", live, http.StatusOK)
		wantContains(t, "live", live, `id="gw-`+gw.ID+`-state" class="state-cell" hx-swap-oob="true"`, `data-state="not adopted"`)
		wantLacks(t, "live", live, "<html", "<form")
		if m := gatewayIDRe.FindStringSubmatch(later.body); m == nil || m[1] != gw.ID {
			t.Fatalf("the page's state cell has no id the live fragment swaps into")
		}
		if err := u.vpn.RecordLink(u.ctx, u.admin, vpn.LinkEvent{GatewayID: gw.ID, CoreID: "core-1", Version: "9.9.9", Connected: true, AppliedRevision: 3}, false); err != nil {
			t.Fatal(err)
		}
		live = b.get(base+"/gateways/live", true)
		wantContains(t, "live connected", live, `data-state="connected"`, "9.9.9", `hx-swap-oob="true">3</span>`)
		if err := u.vpn.RecordLink(u.ctx, u.admin, vpn.LinkEvent{GatewayID: gw.ID, CoreID: "core-1", Version: "9.9.9", Error: "connection refused"}, false); err != nil {
			t.Fatal(err)
		}
		wantContains(t, "live disconnected", b.get(base+"/gateways/live", true), `data-state="not adopted"`, "connection refused")

		// Delete.
		wantStatus(t, "delete without csrf", b.post(base+"/gateways/"+gw.ID+"/delete", url.Values{"csrf_token": {"forged"}}), http.StatusForbidden)
		del := b.post(base+"/gateways/"+gw.ID+"/delete", nil)
		if del.status != http.StatusSeeOther || del.location != base {
			t.Fatalf("delete: %d to %q", del.status, del.location)
		}
		wantContains(t, "after delete", b.get(base, false), "No gateways registered")
		wantStatus(t, "delete again", b.post(base+"/gateways/"+gw.ID+"/delete", nil), http.StatusNotFound)
		wantStatus(t, "register in an unknown location", b.post("/locations/nope/gateways", url.Values{"name": {"x"}, "control_address": {"10.0.0.9:1"}}), http.StatusNotFound)
	})
}

func TestComponentStates(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name      string
		status    *vpn.GatewayStatus
		state     string
		class     string
		noteParts string
	}{
		{"no status", nil, "unknown", "idle", ""},
		{"connected", &vpn.GatewayStatus{Adopted: true, Connected: true}, "connected", "ok", ""},
		{"disconnected", &vpn.GatewayStatus{Adopted: true}, "disconnected", "bad", ""},
		{"waiting", &vpn.GatewayStatus{JoinTokenExpiresAt: now.Add(time.Hour).UnixMilli()}, "not adopted", "idle", "waiting for adoption"},
		{"expired", &vpn.GatewayStatus{JoinTokenExpiresAt: now.Add(-time.Hour).UnixMilli()}, "not adopted", "idle", "expired"},
		{"no token", &vpn.GatewayStatus{}, "not adopted", "idle", "no valid join token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := componentViews([]vpn.Component{{Name: "x", Status: tc.status}}, now)[0]
			if v.State != tc.state || v.StateClass != tc.class || !strings.Contains(v.Note, tc.noteParts) || (tc.noteParts == "" && v.Note != "") {
				t.Fatalf("%+v", v)
			}
		})
	}
	for _, tc := range []struct{ kind, addr, want string }{
		{"gateway", "10.0.0.2:50066", "WARD_JOIN_TOKEN='T' ward gateway --data-dir /var/lib/ward-gateway --control-addr :50066 --interface wg0"},
		{"gateway", "[fd00::2]:7000", "WARD_JOIN_TOKEN='T' ward gateway --data-dir /var/lib/ward-gateway --control-addr :7000 --interface wg0"},
		{"proxy", "px.example.com:50068", "WARD_JOIN_TOKEN='T' ward proxy --data-dir /var/lib/ward-proxy --control-addr :50068"},
	} {
		if got := joinCommand(tc.kind, tc.addr, "T"); got != tc.want {
			t.Errorf("joinCommand(%s, %s) = %q, want %q", tc.kind, tc.addr, got, tc.want)
		}
	}
}
