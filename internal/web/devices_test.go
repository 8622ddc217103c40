package web

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"html"
	"html/template"
	"image/png"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/stats"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/store"
)

// fetch is a GET that also returns the headers (downloads).
func fetch(b *browser, path string) (int, http.Header, []byte) {
	b.t.Helper()
	resp, err := b.hc.Get(b.base + path)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, body
}

// esc is s as html/template writes it into a page.
func esc(s string) string {
	var b strings.Builder
	if err := template.Must(template.New("").Parse("{{.}}")).Execute(&b, s); err != nil {
		panic(err)
	}
	return b.String()
}

// wantLacks fails when the page contains any of parts.
func wantLacks(t *testing.T, what string, p page, parts ...string) {
	t.Helper()
	for _, s := range parts {
		if strings.Contains(p.body, s) {
			t.Fatalf("%s: page has %q\n%s", what, s, p.body)
		}
	}
}

// wantFieldError checks that a form answer shows msg at field (the input
// marked invalid and pointing at its message) and kept the given values.
func wantFieldError(t *testing.T, what string, p page, status int, errorID, msg string, kept ...string) {
	t.Helper()
	wantStatus(t, what, p, status)
	wantContains(t, what, p, `aria-invalid="true"`, `id="`+errorID+`" class="field-error"`, msg)
	if !regexp.MustCompile(`aria-describedby="[^"]*\b` + regexp.QuoteMeta(errorID) + `\b`).MatchString(p.body) {
		t.Fatalf("%s: no input points at %s\n%s", what, errorID, p.body)
	}
	for _, v := range kept {
		wantContains(t, what+" (value kept)", p, v)
	}
}

// newUser creates a user with a password (no second factor).
func (u *testUI) newUser(name string, groups ...string) identity.User {
	u.t.Helper()
	usr, err := u.ident.CreateUser(u.ctx, u.admin, identity.NewUser{Username: name, Email: name + "@example.com", Password: adminPassword, Groups: groups})
	if err != nil {
		u.t.Fatal(err)
	}
	return usr
}

func (u *testUI) actorOf(usr identity.User) core.Actor {
	return core.Actor{UserID: usr.ID, Username: usr.Username, IsAdmin: usr.IsAdmin}
}

func (u *testUI) newLocation(name, cidr string) vpn.Location {
	u.t.Helper()
	in := vpnLocation(name)
	in.Addresses = &[]string{cidr}
	l, err := u.vpn.CreateLocation(u.ctx, u.admin, in)
	if err != nil {
		u.t.Fatal(err)
	}
	return l
}

func (u *testUI) newDevice(owner core.Actor, name string) vpn.Device {
	u.t.Helper()
	d, err := u.vpn.CreateDevice(u.ctx, owner, vpn.NewDevice{Name: name, GenerateKey: true})
	if err != nil {
		u.t.Fatal(err)
	}
	return d.Device
}

func (u *testUI) deviceNamed(owner core.Actor, name string) vpn.Device {
	u.t.Helper()
	ds, _, err := u.vpn.ListDevices(u.ctx, owner, vpn.DeviceFilter{UserID: owner.UserID, ListParams: vpn.ListParams{Search: name, Limit: 10}})
	if err != nil {
		u.t.Fatal(err)
	}
	for _, d := range ds {
		if d.Name == name {
			return d
		}
	}
	u.t.Fatalf("no device %q of %s", name, owner.Username)
	return vpn.Device{}
}

var privateKeyLine = regexp.MustCompile(`PrivateKey = ([A-Za-z0-9+/]{43}=)`)

func TestDeviceWithGeneratedKeyShownOnce(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		office := u.newLocation("office", "10.10.0.0/24")
		lab := u.newLocation("lab 2", "10.11.0.0/24")
		b := u.browser()
		b.login("admin", adminPassword)

		form := b.get("/devices/new", false)
		wantStatus(t, "add form", form, http.StatusOK)
		wantContains(t, "add form", form, `name="name"`, `value="generate" checked`, `name="public_key"`, `name="user" value="admin"`, "Network device in office only")

		p := b.post("/devices", url.Values{"name": {"laptop"}, "description": {"work"}, "key": {"generate"}, "user": {"admin"}})
		wantStatus(t, "create", p, http.StatusOK)
		wantContains(t, "create", p, "Shown once", "Configuration for office", "Configuration for lab 2",
			`download="office.conf"`, `download="lab_2.conf"`, `src="data:image/png;base64,`, `href="data:text/plain;base64,`)
		m := privateKeyLine.FindStringSubmatch(html.UnescapeString(p.body))
		if m == nil {
			t.Fatalf("no private key in the answer\n%s", p.body)
		}
		priv, err := wgtypes.ParseKey(m[1])
		if err != nil {
			t.Fatal(err)
		}
		dev := u.deviceNamed(u.admin, "laptop")
		if priv.PublicKey().String() != dev.PublicKey {
			t.Fatalf("shown private key belongs to %s, device has %s", priv.PublicKey(), dev.PublicKey)
		}
		if strings.Count(p.body, "PrivateKey = "+esc(m[1])) != 2 {
			t.Fatalf("want the private key in both configs\n%s", p.body)
		}
		// The config in the answer is the one the domain renders with the key.
		want, err := u.vpn.DeviceConfig(u.ctx, u.admin, dev.ID, office.ID, m[1])
		if err != nil {
			t.Fatal(err)
		}
		wantContains(t, "create", p, esc(want))

		// Never again: the device page and the downloads have a placeholder.
		detail := b.get("/devices/"+dev.ID, false)
		wantStatus(t, "detail", detail, http.StatusOK)
		wantContains(t, "detail", detail, "laptop", esc(dev.PublicKey), "10.10.0.2", "10.11.0.2", "office", "lab 2",
			`href="/devices/`+dev.ID+`/config?location=`+office.ID+`"`, `src="/devices/`+dev.ID+`/qr?location=`+lab.ID+`"`,
			"REPLACE_WITH_DEVICE_PRIVATE_KEY", `value="work"`)
		wantLacks(t, "detail", detail, esc(m[1]))
		for _, l := range []vpn.Location{office, lab} {
			status, hdr, body := fetch(b, "/devices/"+dev.ID+"/config?location="+l.ID)
			if status != http.StatusOK {
				t.Fatalf("config of %s: %d\n%s", l.Name, status, body)
			}
			wantName := map[string]string{office.ID: "office.conf", lab.ID: "lab_2.conf"}[l.ID]
			if cd := hdr.Get("Content-Disposition"); cd != `attachment; filename="`+wantName+`"` {
				t.Fatalf("Content-Disposition %q", cd)
			}
			if ct := hdr.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
				t.Fatalf("Content-Type %q", ct)
			}
			if hdr.Get("Cache-Control") != "no-store" {
				t.Fatalf("Cache-Control %q", hdr.Get("Cache-Control"))
			}
			want, err := u.vpn.DeviceConfig(u.ctx, u.admin, dev.ID, l.ID, "")
			if err != nil {
				t.Fatal(err)
			}
			if string(body) != want {
				t.Fatalf("config of %s:\n%s\nwant\n%s", l.Name, body, want)
			}
			for _, part := range []string{"[Interface]\nPrivateKey = REPLACE_WITH_DEVICE_PRIVATE_KEY\n", "[Peer]\nPublicKey = " + l.PublicKey, "Endpoint = vpn.example.com:51820"} {
				if !strings.Contains(string(body), part) {
					t.Fatalf("config of %s lacks %q:\n%s", l.Name, part, body)
				}
			}
			status, hdr, body = fetch(b, "/devices/"+dev.ID+"/qr?location="+l.ID)
			if status != http.StatusOK || hdr.Get("Content-Type") != "image/png" || !bytes.HasPrefix(body, []byte("\x89PNG")) {
				t.Fatalf("qr of %s: %d %s", l.Name, status, hdr.Get("Content-Type"))
			}
		}
		// The device is in two locations: the config needs one named.
		if status, _, _ := fetch(b, "/devices/"+dev.ID+"/config"); status != http.StatusBadRequest {
			t.Fatalf("config without a location: %d, want 400", status)
		}
		if status, _, _ := fetch(b, "/devices/"+dev.ID+"/config?location=nope"); status != http.StatusNotFound {
			t.Fatalf("config of an unknown location: %d, want 404", status)
		}
		if status, _, _ := fetch(b, "/devices/nope/config?location="+office.ID); status != http.StatusNotFound {
			t.Fatalf("config of an unknown device: %d, want 404", status)
		}
	})
}

func TestDeviceWithPastedKey(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		office := u.newLocation("office", "10.10.0.0/24")
		alice := u.newUser("alice")
		key, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		b := u.browser()
		b.login("admin", adminPassword)
		// An admin adds it for alice.
		p := b.post("/devices", url.Values{"name": {"router"}, "key": {"paste"}, "public_key": {key.PublicKey().String()}, "user": {"alice"}})
		if p.status != http.StatusSeeOther || !strings.HasPrefix(p.location, "/devices/") {
			t.Fatalf("create: %d to %q\n%s", p.status, p.location, p.body)
		}
		dev := u.deviceNamed(u.actorOf(alice), "router")
		if p.location != "/devices/"+dev.ID || dev.PublicKey != key.PublicKey().String() {
			t.Fatalf("redirect to %q, device %+v", p.location, dev)
		}
		detail := b.get(p.location, false)
		wantContains(t, "detail", detail, "router", "alice", esc(key.PublicKey().String()), "office.conf")
		// One location: the config needs no location parameter.
		status, hdr, body := fetch(b, "/devices/"+dev.ID+"/config")
		if status != http.StatusOK || hdr.Get("Content-Disposition") != `attachment; filename="office.conf"` {
			t.Fatalf("config: %d %q\n%s", status, hdr.Get("Content-Disposition"), body)
		}
		want, err := u.vpn.DeviceConfig(u.ctx, u.admin, dev.ID, office.ID, "")
		if err != nil {
			t.Fatal(err)
		}
		if string(body) != want || !strings.Contains(want, vpn.PrivateKeyPlaceholder) {
			t.Fatalf("config:\n%s\nwant\n%s", body, want)
		}

		// A network device is bound to the location chosen.
		p = b.post("/devices", url.Values{"name": {"nas"}, "key": {"generate"}, "user": {"admin"}, "location_id": {office.ID}})
		wantStatus(t, "network device", p, http.StatusOK)
		nas := u.deviceNamed(u.admin, "nas")
		if nas.Kind != vpn.KindNetwork || nas.LocationID != office.ID {
			t.Fatalf("network device: %+v", nas)
		}
	})
}

func TestDeviceFormValidation(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		u.newLocation("office", "10.10.0.0/24")
		u.newDevice(u.admin, "taken")
		key, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		pub := key.PublicKey().String()
		b := u.browser()
		b.login("admin", adminPassword)
		for _, tc := range []struct {
			name    string
			form    url.Values
			status  int
			errorID string
			msg     string
			kept    []string
		}{
			{"empty name", url.Values{"name": {" "}, "description": {"kept text"}, "key": {"generate"}}, http.StatusBadRequest,
				"name-error", "Device name must be 1 to 64 characters", []string{`value="kept text"`}},
			{"bad key", url.Values{"name": {"laptop"}, "key": {"paste"}, "public_key": {"not-a-key"}}, http.StatusBadRequest,
				"public_key-error", "Not a WireGuard public key", []string{`value="laptop"`, `value="not-a-key"`, `value="paste" checked`}},
			{"no key pasted", url.Values{"name": {"laptop"}, "key": {"paste"}}, http.StatusBadRequest,
				"public_key-error", "Paste the device&#39;s public key", []string{`value="laptop"`}},
			{"key and generate", url.Values{"name": {"laptop"}, "key": {"generate"}, "public_key": {pub}}, http.StatusBadRequest,
				"public_key-error", "Give either public_key or generate_key", []string{`value="` + esc(pub) + `"`}},
			{"unknown owner", url.Values{"name": {"laptop"}, "key": {"generate"}, "user": {"nobody"}}, http.StatusBadRequest,
				"user-error", "No user is named &#34;nobody&#34;", []string{`value="nobody"`}},
			{"duplicate name", url.Values{"name": {"taken"}, "key": {"generate"}}, http.StatusConflict,
				"name-error", "This owner already has a device with this name", []string{`value="taken"`}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				p := b.post("/devices", tc.form)
				wantFieldError(t, tc.name, p, tc.status, tc.errorID, tc.msg, tc.kept...)
				wantLacks(t, tc.name, p, "Shown once", "PrivateKey")
			})
		}
		if _, total, err := u.vpn.ListDevices(u.ctx, u.admin, vpn.DeviceFilter{ListParams: vpn.ListParams{Limit: 10}}); err != nil || total != 1 {
			t.Fatalf("devices after failed forms: %d, %v", total, err)
		}
	})
}

func TestDevicePermissions(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		u.newLocation("office", "10.10.0.0/24")
		alice, bob := u.newUser("alice"), u.newUser("bob")
		bobs := u.newDevice(u.actorOf(bob), "bob-laptop")
		u.newDevice(u.admin, "admin-pc")

		b := u.browser()
		b.login("alice", adminPassword)
		// A user adds their own device and sees only their own.
		p := b.post("/devices", url.Values{"name": {"alice-phone"}, "key": {"generate"}, "user": {"bob"}})
		wantStatus(t, "user creates a device", p, http.StatusOK)
		if d := u.deviceNamed(u.actorOf(alice), "alice-phone"); d.UserID != alice.ID {
			t.Fatalf("device of %s, want alice (a user cannot choose the owner)", d.Username)
		}
		list := b.get("/devices", false)
		wantStatus(t, "list", list, http.StatusOK)
		wantContains(t, "list", list, "alice-phone")
		wantLacks(t, "list", list, "bob-laptop", "admin-pc", `name="user"`, "<th scope=\"col\">Owner</th>")
		// Another user's device: the service says 403.
		wantStatus(t, "another user's device", b.get("/devices/"+bobs.ID, false), http.StatusForbidden)
		if status, _, _ := fetch(b, "/devices/"+bobs.ID+"/config"); status != http.StatusForbidden {
			t.Fatalf("config of another user's device: %d", status)
		}
		if status, _, _ := fetch(b, "/devices/"+bobs.ID+"/qr"); status != http.StatusForbidden {
			t.Fatalf("qr of another user's device: %d", status)
		}
		wantStatus(t, "usage of another user's device", b.get("/devices/"+bobs.ID+"/usage", true), http.StatusForbidden)
		wantStatus(t, "rename another user's device", b.post("/devices/"+bobs.ID, url.Values{"name": {"mine"}}), http.StatusForbidden)
		wantStatus(t, "delete another user's device", b.post("/devices/"+bobs.ID+"/delete", nil), http.StatusForbidden)
		if _, err := u.vpn.GetDevice(u.ctx, u.admin, bobs.ID); err != nil {
			t.Fatalf("bob's device after alice's attempts: %v", err)
		}
		// A user asking for another user's list is refused by the filter
		// being ignored: they still see their own.
		wantLacks(t, "user_id filter", b.get("/devices?user_id="+bob.ID, false), "bob-laptop")
		// Admin pages.
		for _, path := range []string{"/locations", "/locations/new", "/proxies"} {
			p := b.get(path, false)
			wantStatus(t, path, p, http.StatusForbidden)
			wantContains(t, path, p, "Only administrators")
		}
		for _, path := range []string{"/locations", "/proxies"} {
			wantStatus(t, "POST "+path, b.post(path, url.Values{"name": {"x"}, "control_address": {"10.0.0.1:1"}}), http.StatusForbidden)
		}
		// With device management by users off, the service refuses.
		no := false
		if _, err := core.UpdateSettings(u.ctx, db, u.admin, core.SettingsPatch{UsersCanManageDevices: &no}); err != nil {
			t.Fatal(err)
		}
		p = b.post("/devices", url.Values{"name": {"tablet"}, "key": {"generate"}})
		wantStatus(t, "create with user device management off", p, http.StatusForbidden)
		wantContains(t, "create with user device management off", p, "Device management by users is disabled", `value="tablet"`)

		// Admins see everyone's, filter by owner and search.
		a := u.browser()
		a.login("admin", adminPassword)
		all := a.get("/devices", false)
		wantContains(t, "admin list", all, "alice-phone", "bob-laptop", "admin-pc", `href="/devices?user_id=`+bob.ID+`"`)
		byUser := a.get("/devices?user=bob", false)
		wantContains(t, "by user", byUser, "bob-laptop", `value="bob"`)
		wantLacks(t, "by user", byUser, "alice-phone", "admin-pc")
		byID := a.get("/devices?user_id="+alice.ID, false)
		wantContains(t, "by user id", byID, "alice-phone", `value="alice"`)
		wantLacks(t, "by user id", byID, "bob-laptop")
		search := a.get("/devices?search=LAPTOP", false)
		wantContains(t, "search", search, "bob-laptop")
		wantLacks(t, "search", search, "alice-phone", "admin-pc")
		unknown := a.get("/devices?user=nobody", false)
		wantStatus(t, "unknown user filter", unknown, http.StatusOK)
		wantContains(t, "unknown user filter", unknown, `id="device-user-error" class="field-error"`, "No user has this username", "No devices match")
		// The search form's htmx request gets the results only.
		frag := a.get("/devices?search=alice", true)
		wantContains(t, "results fragment", frag, `id="device-results"`, "alice-phone")
		wantLacks(t, "results fragment", frag, "<html", "bob-laptop")
	})
}

func TestDeviceEditAndDelete(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		u.newLocation("office", "10.10.0.0/24")
		dev := u.newDevice(u.admin, "laptop")
		u.newDevice(u.admin, "phone")
		b := u.browser()
		b.login("admin", adminPassword)
		b.get("/devices/"+dev.ID, false)

		bad := b.post("/devices/"+dev.ID, url.Values{"name": {"phone"}, "description": {"new text"}})
		wantFieldError(t, "rename to a taken name", bad, http.StatusConflict, "name-error", "already has a device with this name", `value="phone"`, `value="new text"`)
		bad = b.post("/devices/"+dev.ID, url.Values{"name": {strings.Repeat("x", 65)}})
		wantFieldError(t, "too long", bad, http.StatusBadRequest, "name-error", "Device name must be 1 to 64 characters")
		bad = b.post("/devices/"+dev.ID, url.Values{"name": {"laptop"}, "description": {strings.Repeat("d", 257)}})
		wantFieldError(t, "long description", bad, http.StatusBadRequest, "description-error", "At most 256 characters")

		ok := b.post("/devices/"+dev.ID, url.Values{"name": {"work laptop"}, "description": {"the grey one"}})
		if ok.status != http.StatusSeeOther || ok.location != "/devices/"+dev.ID {
			t.Fatalf("rename: %d to %q\n%s", ok.status, ok.location, ok.body)
		}
		wantContains(t, "after rename", b.get(ok.location, false), "Device work laptop", `value="the grey one"`)

		// CSRF: a forged token changes nothing.
		wantStatus(t, "delete without csrf", b.post("/devices/"+dev.ID+"/delete", url.Values{"csrf_token": {"forged"}}), http.StatusForbidden)
		wantStatus(t, "rename without csrf", b.post("/devices/"+dev.ID, url.Values{"name": {"x"}, "csrf_token": {""}}), http.StatusForbidden)
		if _, err := u.vpn.GetDevice(u.ctx, u.admin, dev.ID); err != nil {
			t.Fatal(err)
		}
		detail := b.get("/devices/"+dev.ID, false)
		wantContains(t, "delete confirm", detail, `data-confirm="Delete device work laptop?`)
		del := b.post("/devices/"+dev.ID+"/delete", nil)
		if del.status != http.StatusSeeOther || del.location != "/devices" {
			t.Fatalf("delete: %d to %q", del.status, del.location)
		}
		wantStatus(t, "deleted device", b.get("/devices/"+dev.ID, false), http.StatusNotFound)
		wantStatus(t, "delete again", b.post("/devices/"+dev.ID+"/delete", nil), http.StatusNotFound)
	})
}

func TestDeviceUsage(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		office := u.newLocation("office", "10.10.0.0/24")
		gw, err := u.vpn.CreateGateway(u.ctx, u.admin, office.ID, vpnComponent("gw-a", "10.0.0.1:50066"))
		if err != nil {
			t.Fatal(err)
		}
		dev := u.newDevice(u.admin, "laptop")
		st := stats.New(db)
		now := time.Now()
		// Two batches: 3 days ago (in the 7-day window only) and now.
		for i, at := range []time.Time{now.Add(-72 * time.Hour), now.Add(-time.Minute)} {
			rx, tx := uint64(500*(i+1)), uint64(3*1024*1024*(i+1))
			if _, err := st.Ingest(u.ctx, stats.Report{GatewayID: gw.ID, LocationID: office.ID, BootID: "boot", Seq: uint64(i + 1), At: at.UnixMilli(),
				Samples: []stats.Sample{{PublicKey: dev.PublicKey, Generation: 1, RxBytes: rx, TxBytes: tx, LastHandshake: at.UnixMilli()}}}); err != nil {
				t.Fatal(err)
			}
		}
		b := u.browser()
		b.login("admin", adminPassword)
		p := b.get("/devices/"+dev.ID, false)
		wantStatus(t, "detail", p, http.StatusOK)
		// 24 h: the second batch's delta (500 B, 3 MiB); 7 d: both.
		wantContains(t, "detail", p, "500 B up · 3.0 MiB down", "1000 B up · 6.0 MiB down", `aria-pressed="true">24h</button>`, "uPlot-1.6.32.iife.min.js")
		wantLacks(t, "detail", p, "none in the last 7 days", `data-points="[[],[],[]]"`)
		week := b.get("/devices/"+dev.ID+"/usage?range=7d", true)
		wantStatus(t, "7d", week, http.StatusOK)
		wantContains(t, "7d", week, `aria-pressed="true">7d</button>`, "1000 B up · 6.0 MiB down in the last 7d")
		wantLacks(t, "7d", week, "<html")
		if n := strings.Count(week.body[strings.Index(week.body, "data-points="):], ","); n < 5 {
			t.Fatalf("7d chart has too few values:\n%s", week.body)
		}
		// Unknown ranges fall back to 24 h.
		wantContains(t, "bad range", b.get("/devices/"+dev.ID+"/usage?range=1y", true), `aria-pressed="true">24h</button>`)
		// A device without traffic.
		quiet := u.newDevice(u.admin, "quiet")
		wantContains(t, "no traffic", b.get("/devices/"+quiet.ID, false), "No traffic in the last 7 days", "none in the last 7 days")
	})
}

func TestDevicesPagination(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		for i := range 55 {
			u.newDevice(u.admin, fmt.Sprintf("dev-%02d", i))
		}
		b := u.browser()
		b.login("admin", adminPassword)
		first := b.get("/devices?search=dev", false)
		wantContains(t, "first page", first, "1–50 of 55", `href="/devices?offset=50&amp;search=dev" rel="next"`)
		wantLacks(t, "first page", first, `rel="prev"`)
		if n := strings.Count(first.body, `<tr>`) - 1; n != 50 {
			t.Fatalf("first page has %d rows, want 50", n)
		}
		second := b.get("/devices?offset=50&search=dev", false)
		wantContains(t, "second page", second, "51–55 of 55", `href="/devices?search=dev" rel="prev"`)
		wantLacks(t, "second page", second, `rel="next"`)
		if n := strings.Count(second.body, `<tr>`) - 1; n != 5 {
			t.Fatalf("second page has %d rows, want 5", n)
		}
		wantContains(t, "bad offset", b.get("/devices?offset=-3", false), "1–50 of 55")
	})
}

func TestConfigQRHasQuietZone(t *testing.T) {
	b64, err := configQR(strings.Repeat("[Interface]\nPrivateKey = x\n", 12))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	size := img.Bounds().Dx()
	if size != img.Bounds().Dy() || size < 200 || size > 400 {
		t.Fatalf("QR code is %v", img.Bounds())
	}
	gray := func(x, y int) uint32 { r, _, _, _ := img.At(x, y).RGBA(); return r }
	// The first dark pixel on the diagonal is the finder pattern's corner,
	// four modules in: a quiet zone of 4 modules of px pixels.
	first := -1
	for i := range size {
		if gray(i, i) == 0 {
			first = i
			break
		}
	}
	if first <= 0 || first%4 != 0 {
		t.Fatalf("first dark pixel on the diagonal at %d", first)
	}
	for i := range first {
		if gray(i, size/2) == 0 || gray(size/2, i) == 0 || gray(size-1-i, size/2) == 0 {
			t.Fatalf("dark pixel in the quiet zone at %d", i)
		}
	}
}
