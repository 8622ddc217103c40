package web

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/mfa"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/mail/mailtest"
	"github.com/wardvpn/ward/internal/store"
)

const memberPassword = "Member-password-1"

// admUser creates a user through the service (with a password when given).
func admUser(t *testing.T, u *testUI, username, password string, groups ...string) identity.User {
	t.Helper()
	usr, err := u.ident.CreateUser(u.ctx, u.admin, identity.NewUser{Username: username, Email: username + "@example.com",
		FirstName: "First " + username, Password: password, Groups: groups})
	if err != nil {
		t.Fatal(err)
	}
	return usr
}

// admWantNot fails when the page holds any of parts.
func admWantNot(t *testing.T, what string, p page, parts ...string) {
	t.Helper()
	for _, s := range parts {
		if strings.Contains(p.body, s) {
			t.Fatalf("%s: page holds %q\n%s", what, s, p.body)
		}
	}
}

// admWantDescribed checks that a field's error message is shown and that
// the field (or its fieldset) points at it with aria-describedby.
func admWantDescribed(t *testing.T, what string, p page, field string) {
	t.Helper()
	re := regexp.MustCompile(`aria-describedby="[^"]*\b` + regexp.QuoteMeta(field) + `-error\b`)
	if !strings.Contains(p.body, `id="`+field+`-error"`) || !re.MatchString(p.body) {
		t.Fatalf("%s: no error message for %s referenced by aria-describedby\n%s", what, field, p.body)
	}
}

// admGetHeader fetches an htmx fragment and returns it with one response
// header.
func admGetHeader(b *browser, path, header string) (page, string) {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.base+path, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("HX-Request", "true")
	resp, err := b.hc.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return page{status: resp.StatusCode, location: resp.Header.Get("Location"), body: string(raw)}, resp.Header.Get(header)
}

// admLocation answers a redirect's target or fails.
func admRedirect(t *testing.T, what string, p page, prefix string) string {
	t.Helper()
	if p.status != http.StatusSeeOther || !strings.HasPrefix(p.location, prefix) {
		t.Fatalf("%s: %d to %q, want 303 to %s…\n%s", what, p.status, p.location, prefix, p.body)
	}
	return p.location
}

func TestAdminPagesRefuseMembers(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		member := admUser(t, u, "member", memberPassword)
		g, err := u.ident.CreateGroup(u.ctx, u.admin, identity.NewGroup{Name: "staff"})
		if err != nil {
			t.Fatal(err)
		}
		b := u.browser()
		b.login("member", memberPassword)
		for _, path := range []string{"/users", "/users/rows?search=a", "/users/new", "/users/" + member.ID, "/users/" + u.admin.UserID,
			"/groups", "/groups/" + g.ID, "/settings", "/audit", "/audit?action=user."} {
			wantStatus(t, "member GET "+path, b.get(path, strings.Contains(path, "rows")), http.StatusForbidden)
		}
		for _, path := range []string{"/users", "/users/" + member.ID, "/users/" + member.ID + "/disable", "/users/" + u.admin.UserID + "/delete",
			"/users/" + member.ID + "/enrollment", "/users/" + member.ID + "/mfa-reset", "/groups", "/groups/" + g.ID,
			"/groups/" + g.ID + "/members", "/groups/" + g.ID + "/delete", "/settings", "/settings/test-mail"} {
			wantStatus(t, "member POST "+path, b.post(path, url.Values{"username": {"member"}, "name": {"x"}, "groups": {"staff"}}), http.StatusForbidden)
		}
		if got, err := u.ident.GetUser(u.ctx, u.admin, member.ID); err != nil || len(got.Groups) != 0 {
			t.Fatalf("member after refused posts: %+v, %v", got, err)
		}
		// The menu does not offer what the member may not open.
		ov := b.get("/", false)
		admWantNot(t, "member's menu", ov, `href="/users"`, `href="/settings"`, `href="/audit"`)
	})
}

func TestUsersListSearchAndPages(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		for i := 1; i <= 120; i++ {
			admUser(t, u, fmt.Sprintf("user%03d", i), "")
		}
		b := u.browser()
		b.login("admin", adminPassword)

		first := b.get("/users", false)
		wantStatus(t, "users", first, http.StatusOK)
		wantContains(t, "users", first, "Users 1–50 of 121", `href="/users?page=2"`, `hx-get="/users/rows"`,
			`hx-trigger="input changed delay:300ms, search"`, `action="/users"`, `name="search"`, "user049", `<caption`, `scope="col"`)
		admWantNot(t, "users page 1", first, "user050", `rel="prev"`)

		for _, tc := range []struct{ query, want, absent string }{
			{"page=2", "Users 51–100 of 121", "user100"},
			{"page=3", "Users 101–121 of 121", `rel="next"`},
			{"page=99", "Users 101–121 of 121", `rel="next"`},      // past the end: the last page
			{"page=0", "Users 1–50 of 121", `rel="prev"`},          // before the start: the first
			{"page=-3", "Users 1–50 of 121", `rel="prev"`},         //
			{"page=abc", "Users 1–50 of 121", `rel="prev"`},        //
			{"page=99999999999999999999", "Users 1–50 of 121", ""}, // not a page number
		} {
			p := b.get("/users?"+tc.query, false)
			wantStatus(t, tc.query, p, http.StatusOK)
			wantContains(t, tc.query, p, tc.want)
			if tc.absent != "" {
				admWantNot(t, tc.query, p, tc.absent)
			}
		}

		// A plain GET form search (no JavaScript): the whole page.
		s := b.get("/users?search=user11", false)
		wantStatus(t, "search", s, http.StatusOK)
		wantContains(t, "search", s, "Users 1–10 of 10 matching “user11”", "user110", "user119", `value="user11"`, "<html")
		admWantNot(t, "search", s, "user011", "user120")
		// Search with pages keeps the search in the links.
		s = b.get("/users?search=user0", false)
		wantContains(t, "search with pages", s, "of 99 matching", `href="/users?page=2&amp;search=user0"`)

		// The htmx fragment: only the rows, and the address follows.
		frag, replace := admGetHeader(b, "/users/rows?search=First+user12", "HX-Replace-Url")
		wantStatus(t, "fragment", frag, http.StatusOK)
		wantContains(t, "fragment", frag, "user120", "Users 1–1 of 1")
		admWantNot(t, "fragment", frag, "<html", "user119", "New user")
		if replace != "/users?search=First+user12" {
			t.Fatalf("fragment HX-Replace-Url = %q", replace)
		}
		none, _ := admGetHeader(b, "/users/rows?search=nobody-at-all", "HX-Replace-Url")
		wantContains(t, "empty search", none, "No user matches")
		// Without htmx the fragment address shows the page.
		if p := b.get("/users/rows?search=x", false); p.status != http.StatusFound || p.location != "/users?search=x" {
			t.Fatalf("fragment without htmx: %d to %q", p.status, p.location)
		}
	})
}

func TestUserCreateEditDisableDelete(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		if _, err := u.ident.CreateGroup(u.ctx, u.admin, identity.NewGroup{Name: "staff"}); err != nil {
			t.Fatal(err)
		}
		b := u.browser()
		b.login("admin", adminPassword)
		form := b.get("/users/new", false)
		wantStatus(t, "new user form", form, http.StatusOK)
		wantContains(t, "new user form", form, `for="username"`, `name="groups" type="checkbox" value="staff"`, `id="active" name="active" type="checkbox" checked`)

		base := url.Values{"username": {"bob"}, "email": {"bob@example.com"}, "first_name": {"Bob"}, "last_name": {"Builder"},
			"groups": {"staff"}, "active": {"on"}}
		with := func(k, v string) url.Values {
			f := url.Values{}
			for key, vals := range base {
				f[key] = append([]string(nil), vals...)
			}
			f.Set(k, v)
			return f
		}
		for _, tc := range []struct {
			name   string
			form   url.Values
			status int
			field  string
			kept   string
		}{
			{"bad e-mail", with("email", "not-an-address"), http.StatusBadRequest, "email", `value="Builder"`},
			{"bad username", with("username", "Bad Name!"), http.StatusBadRequest, "username", `value="bob@example.com"`},
			{"weak password", with("password", "short"), http.StatusBadRequest, "password", `value="bob"`},
			{"duplicate username", with("username", "admin"), http.StatusConflict, "username", `value="Bob"`},
			{"unknown group", with("groups", "nope"), http.StatusBadRequest, "groups", `value="nope" checked`},
		} {
			p := b.post("/users", tc.form)
			wantStatus(t, tc.name, p, tc.status)
			wantContains(t, tc.name, p, `id="`+tc.field+`-error" class="field-error"`, tc.kept)
			admWantDescribed(t, tc.name, p, tc.field)
			admWantNot(t, tc.name, p, `value="short"`)
		}
		// CSRF: a forged token changes nothing.
		forged := with("csrf_token", "forged")
		wantStatus(t, "create without csrf", b.post("/users", forged), http.StatusForbidden)
		if users, _, _ := u.ident.ListUsers(u.ctx, u.admin, identity.ListParams{Search: "bob", Limit: 10}); len(users) != 0 {
			t.Fatalf("users after refused posts: %+v", users)
		}

		loc := admRedirect(t, "create", b.post("/users", with("password", "Bob-the-Builder-1")), "/users/")
		id := strings.TrimSuffix(strings.TrimPrefix(loc, "/users/"), "?done=created")
		bob, err := u.ident.GetUser(u.ctx, u.admin, id)
		if err != nil || bob.Username != "bob" || !bob.HasPassword || !bob.Active || len(bob.Groups) != 1 || bob.Groups[0] != "staff" || bob.LastName != "Builder" {
			t.Fatalf("created: %+v, %v", bob, err)
		}
		detail := b.get(loc, false)
		wantStatus(t, "user page", detail, http.StatusOK)
		wantContains(t, "user page", detail, "User bob", "Created.", `value="bob@example.com"`, `value="staff" checked`, `data-confirm="Delete user bob`, `action="/users/`+id+`/enrollment"`, `<option value="new_client" selected>`)

		// Edit: validation at the field, values kept, the password never echoed.
		edit := url.Values{"email": {"bob@example.com"}, "first_name": {"Robert"}, "last_name": {"Builder"}, "phone": {"+49 30 1234"},
			"active": {"on"}, "password": {"weak"}}
		bad := b.post("/users/"+id, edit)
		wantStatus(t, "weak new password", bad, http.StatusBadRequest)
		wantContains(t, "weak new password", bad, `id="password-error"`, `value="Robert"`, `value="&#43;49 30 1234"`)
		admWantNot(t, "weak new password", bad, `value="weak"`, `value="staff" checked`)
		edit.Set("phone", "call me")
		wantContains(t, "bad phone", b.post("/users/"+id, edit), `id="phone-error"`, `value="call me"`)
		edit.Set("phone", "+49 30 1234")
		edit.Del("password")
		admRedirect(t, "edit", b.post("/users/"+id, edit), "/users/"+id+"?done=saved")
		bob, _ = u.ident.GetUser(u.ctx, u.admin, id)
		if bob.FirstName != "Robert" || bob.Phone != "+49 30 1234" || len(bob.Groups) != 0 || !bob.HasPassword {
			t.Fatalf("after edit: %+v", bob)
		}

		// Disable ends the user's sessions; enable again.
		bb := u.browser()
		bb.login("bob", "Bob-the-Builder-1")
		admRedirect(t, "disable", b.post("/users/"+id+"/disable", nil), "/users/"+id+"?done=disabled")
		if bob, _ = u.ident.GetUser(u.ctx, u.admin, id); bob.Active {
			t.Fatal("still active")
		}
		if p := bb.get("/", false); p.status != http.StatusFound {
			t.Fatalf("disabled user's session: %d", p.status)
		}
		wantContains(t, "disabled", b.get("/users/"+id+"?done=disabled", false), "disabled and was logged out", `action="/users/`+id+`/enable"`)
		admRedirect(t, "enable", b.post("/users/"+id+"/enable", nil), "/users/"+id+"?done=enabled")
		if bob, _ = u.ident.GetUser(u.ctx, u.admin, id); !bob.Active {
			t.Fatal("not active again")
		}

		// The last administrator cannot lock everybody out.
		self := b.post("/users/"+u.admin.UserID+"/disable", nil)
		wantStatus(t, "disable the last admin", self, http.StatusConflict)
		wantContains(t, "disable the last admin", self, "no active administrator")

		admRedirect(t, "delete", b.post("/users/"+id+"/delete", nil), "/users?done=deleted")
		if _, err := u.ident.GetUser(u.ctx, u.admin, id); !errors.Is(err, core.ErrNotFound) {
			t.Fatalf("deleted user: %v", err)
		}
		wantStatus(t, "deleted user's page", b.get("/users/"+id, false), http.StatusNotFound)
		wantContains(t, "list after delete", b.get("/users?done=deleted", false), "Deleted.")
	})
}

var enrollURLRe = regexp.MustCompile(`https://vpn\.example\.com/enroll/[A-Za-z0-9_-]+`)

func TestUserEnrollmentLinkShownOnce(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		sink := mailtest.NewSink(t)
		b := u.browser()
		b.login("admin", adminPassword)

		// Without a public URL the link is relative: no QR code, a hint.
		newbie := admUser(t, u, "newbie", "")
		rel := b.post("/users/"+newbie.ID+"/enrollment", url.Values{"kind": {"enrollment"}})
		wantStatus(t, "relative link", rel, http.StatusOK)
		wantContains(t, "relative link", rel, `value="/enroll/`, "proxy_public_url")
		admWantNot(t, "relative link", rel, "data:image/png")

		host, port := sink.Host, sink.Port
		if _, err := core.UpdateSettings(u.ctx, db, u.admin, core.SettingsPatch{SMTPHost: &host, SMTPPort: &port, SMTPTLS: new("none"),
			SMTPFrom: new("ward@example.com"), ProxyPublicURL: new("https://vpn.example.com")}); err != nil {
			t.Fatal(err)
		}
		bad := b.post("/users/"+newbie.ID+"/enrollment", url.Values{"kind": {"vip"}})
		wantStatus(t, "bad kind", bad, http.StatusBadRequest)
		wantContains(t, "bad kind", bad, `id="kind-error"`)

		p := b.post("/users/"+newbie.ID+"/enrollment", url.Values{"kind": {"enrollment"}, "send_email": {"on"}})
		wantStatus(t, "enrollment", p, http.StatusOK)
		wantContains(t, "enrollment", p, "Shown only now", `src="data:image/png;base64,`, "e-mailed to newbie@example.com", `data-copy="#enrollment-url"`)
		link := enrollURLRe.FindString(p.body)
		if link == "" {
			t.Fatalf("no link in\n%s", p.body)
		}
		token := link[strings.LastIndex(link, "/")+1:]
		msgs := sink.Messages()
		if len(msgs) != 1 || msgs[0].To[0] != "newbie@example.com" || !strings.Contains(msgs[0].Data, token) {
			t.Fatalf("mails: %+v", msgs)
		}
		// Never again: the page later shows neither the link nor its code.
		again := b.get("/users/"+newbie.ID, false)
		wantStatus(t, "user page later", again, http.StatusOK)
		admWantNot(t, "user page later", again, token, "data:image/png", "Shown only now")

		// A user with a password gets new-client links, not enrollments.
		member := admUser(t, u, "member", memberPassword)
		conflict := b.post("/users/"+member.ID+"/enrollment", url.Values{"kind": {"enrollment"}})
		wantStatus(t, "enrollment of an enrolled user", conflict, http.StatusConflict)
		wantContains(t, "enrollment of an enrolled user", conflict, `id="kind-error"`, "already has a password")
		nc := b.post("/users/"+member.ID+"/enrollment", url.Values{"kind": {"new_client"}})
		wantStatus(t, "new client", nc, http.StatusOK)
		wantContains(t, "new client", nc, "New-client link for member", "https://vpn.example.com/enroll/")
		admWantNot(t, "new client (no mail asked)", nc, "e-mailed")
		if len(sink.Messages()) != 1 {
			t.Fatalf("a mail went out unasked: %d", len(sink.Messages()))
		}

		// Creating a user can start the enrollment at once.
		created := b.post("/users", url.Values{"username": {"carol"}, "email": {"carol@example.com"}, "active": {"on"}, "start_enrollment": {"on"}})
		wantStatus(t, "create with enrollment", created, http.StatusOK)
		wantContains(t, "create with enrollment", created, "The user was created.", "Enrollment link for carol", "https://vpn.example.com/enroll/",
			`src="data:image/png;base64,`)
		admWantNot(t, "create with enrollment", created, "e-mailed")
	})
}

func TestUserResetMFAAndDevices(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		member := admUser(t, u, "member", memberPassword)
		self := core.Actor{UserID: member.ID, Username: "member"}
		setup, err := u.mfa.Setup(u.ctx, self, member.ID)
		if err != nil {
			t.Fatal(err)
		}
		code, _ := mfa.GenerateCode(setup.Secret, time.Now())
		if _, err := u.mfa.Confirm(u.ctx, self, member.ID, code); err != nil {
			t.Fatal(err)
		}
		dev, err := u.vpn.CreateDevice(u.ctx, u.admin, vpn.NewDevice{Name: "laptop", GenerateKey: true, UserID: member.ID})
		if err != nil {
			t.Fatal(err)
		}
		b := u.browser()
		b.login("admin", adminPassword)
		// The list's TOTP and device columns (one bulk query each).
		list := b.get("/users?search=member", false)
		wantContains(t, "users list", list, `<tr data-user="member">`, `<td class="hide-narrow">on</td>`, `<td class="hide-narrow">1</td>`)
		p := b.get("/users/"+member.ID, false)
		wantContains(t, "user page", p, "on · 10 recovery codes left", `action="/users/`+member.ID+`/mfa-reset"`, `data-confirm="Reset the second factors of member?`,
			`href="/devices/`+dev.ID+`"`, "laptop", "Devices <span class=\"muted\">(1)")

		wantStatus(t, "reset without csrf", b.post("/users/"+member.ID+"/mfa-reset", url.Values{"csrf_token": {"nope"}}), http.StatusForbidden)
		admRedirect(t, "reset", b.post("/users/"+member.ID+"/mfa-reset", nil), "/users/"+member.ID+"?done=mfa_reset")
		if has, _ := u.mfa.HasTOTP(u.ctx, member.ID); has {
			t.Fatal("TOTP still on")
		}
		after := b.get("/users/"+member.ID+"?done=mfa_reset", false)
		wantContains(t, "after reset", after, "TOTP, recovery codes and security keys were removed", `<dd id="totp-state">off</dd>`)
		admWantNot(t, "after reset", after, "/mfa-reset")
		twice := b.post("/users/"+member.ID+"/mfa-reset", nil)
		wantStatus(t, "reset twice", twice, http.StatusNotFound)
		wantContains(t, "reset twice", twice, "TOTP of this user not found")
	})
}

func TestEnrollmentQRHasQuietZone(t *testing.T) {
	b64, err := enrollmentQR("https://vpn.example.com/enroll/" + strings.Repeat("x", 43))
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
	side := img.Bounds().Dx()
	if side != img.Bounds().Dy() || side < 200 || side > 256 {
		t.Fatalf("QR image is %v", img.Bounds())
	}
	dark := func(x, y int) bool { r, _, _, _ := img.At(x, y).RGBA(); return r < 0x8000 }
	// The quiet zone is white; the finder pattern starts right after it.
	first := -1
	for x := 0; x < side && first < 0; x++ {
		if dark(x, x) {
			first = x
		}
	}
	if first < 4*2 || dark(first-1, first-1) || !dark(side-1-first, first) || dark(side-first, first) {
		t.Fatalf("QR of %d px: first dark pixel at %d", side, first)
	}
}
