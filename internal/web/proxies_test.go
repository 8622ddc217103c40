package web

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/store"
)

func TestProxies(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		b := u.browser()
		b.login("admin", adminPassword)
		list := b.get("/proxies", false)
		wantStatus(t, "empty list", list, http.StatusOK)
		wantContains(t, "empty list", list, "No proxies registered", `action="/proxies"`, `hx-get="/proxies/live"`)

		for _, tc := range []struct {
			name, proxy, addr, errorID, msg string
		}{
			{"no name", " ", "198.51.100.10:50068", "px-name-error", "Name must be 1 to 64 characters"},
			{"no port", "px1", "198.51.100.10", "px-control_address-error", "Control address must be host:port"},
		} {
			p := b.post("/proxies", url.Values{"name": {tc.proxy}, "control_address": {tc.addr}})
			wantFieldError(t, tc.name, p, http.StatusBadRequest, tc.errorID, tc.msg, `value="`+tc.addr+`"`)
			wantLacks(t, tc.name, p, "wgj1.")
		}

		p := b.post("/proxies", url.Values{"name": {"px1"}, "control_address": {"198.51.100.10:50068"}})
		wantStatus(t, "register", p, http.StatusOK)
		token := joinTokenRe.FindString(p.body)
		if token == "" {
			t.Fatalf("no join token\n%s", p.body)
		}
		wantContains(t, "register", p, "Proxy px1 registered", "Shown once",
			esc("WARD_JOIN_TOKEN='"+token+"' ward proxy --data-dir /var/lib/ward-proxy --control-addr :50068"), `data-state="not adopted"`)
		ps, _, err := u.vpn.ListProxies(u.ctx, u.admin, vpn.ListParams{Limit: 10})
		if err != nil || len(ps) != 1 {
			t.Fatalf("proxies: %v %v", ps, err)
		}
		px := ps[0]
		later := b.get("/proxies", false)
		wantContains(t, "later", later, "px1", "198.51.100.10:50068", `data-confirm="Delete proxy px1?`, `id="px-`+px.ID+`-state"`)
		wantLacks(t, "later", later, token, "Shown once")
		dup := b.post("/proxies", url.Values{"name": {"px1"}, "control_address": {"198.51.100.11:50068"}})
		wantFieldError(t, "duplicate", dup, http.StatusConflict, "px-name-error", "A proxy with this name already exists", `value="198.51.100.11:50068"`)

		wantStatus(t, "token without csrf", b.post("/proxies/"+px.ID+"/token", url.Values{"csrf_token": {"forged"}}), http.StatusForbidden)
		nt := b.post("/proxies/"+px.ID+"/token", nil)
		wantStatus(t, "new token", nt, http.StatusOK)
		token2 := joinTokenRe.FindString(nt.body)
		if token2 == "" || token2 == token {
			t.Fatalf("new token %q (old %q)", token2, token)
		}
		wantContains(t, "new token", nt, "New join token for px1", "previous adoption is revoked")
		wantLacks(t, "later", b.get("/proxies", false), token2)
		wantStatus(t, "token of an unknown proxy", b.post("/proxies/nope/token", nil), http.StatusNotFound)

		if err := u.vpn.RecordProxyLink(u.ctx, u.admin, vpn.LinkEvent{GatewayID: px.ID, CoreID: "core-1", Version: "7.7.7", Connected: true}, false); err != nil {
			t.Fatal(err)
		}
		live := b.get("/proxies/live", true)
		wantStatus(t, "live", live, http.StatusOK)
		wantContains(t, "live", live, `id="px-`+px.ID+`-state" class="state-cell" hx-swap-oob="true"`, `data-state="connected"`, "7.7.7")
		wantLacks(t, "live", live, "<html", "<form")

		wantStatus(t, "delete without csrf", b.post("/proxies/"+px.ID+"/delete", url.Values{"csrf_token": {"forged"}}), http.StatusForbidden)
		del := b.post("/proxies/"+px.ID+"/delete", nil)
		if del.status != http.StatusSeeOther || del.location != "/proxies" {
			t.Fatalf("delete: %d to %q", del.status, del.location)
		}
		wantContains(t, "after delete", b.get("/proxies", false), "No proxies registered")
		wantStatus(t, "delete again", b.post("/proxies/"+px.ID+"/delete", nil), http.StatusNotFound)
	})
}

func TestProxiesPagination(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		for i := range 52 {
			if _, err := u.vpn.CreateProxy(u.ctx, u.admin, vpnComponent(fmt.Sprintf("px-%02d", i), "198.51.100.10:50068")); err != nil {
				t.Fatal(err)
			}
		}
		b := u.browser()
		b.login("admin", adminPassword)
		first := b.get("/proxies", false)
		wantContains(t, "first page", first, "1–50 of 52", `href="/proxies?offset=50" rel="next"`, "px-49")
		wantLacks(t, "first page", first, "px-50")
		second := b.get("/proxies?offset=50", false)
		wantContains(t, "second page", second, "51–52 of 52", `href="/proxies" rel="prev"`, "px-51", `hx-get="/proxies/live?offset=50"`)
		if live := b.get("/proxies/live?offset=50", true); strings.Count(live.body, `class="state-cell" hx-swap-oob="true"`) != 2 {
			t.Fatalf("live fragment of the second page:\n%s", live.body)
		}
	})
}
