package web

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/store"
)

func TestGroupsCreateAndValidate(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		b := u.browser()
		b.login("admin", adminPassword)
		list := b.get("/groups", false)
		wantStatus(t, "groups", list, http.StatusOK)
		wantContains(t, "groups", list, "Groups 1–1 of 1", `data-group="admin"`, `action="/groups"`, `for="name"`)

		for _, tc := range []struct {
			name   string
			form   url.Values
			status int
			field  string
			kept   string
		}{
			{"empty name", url.Values{"name": {""}, "description": {"Kept text"}}, http.StatusBadRequest, "name", `value="Kept text"`},
			{"bad name", url.Values{"name": {"no/slashes"}}, http.StatusBadRequest, "name", `value="no/slashes"`},
			{"duplicate", url.Values{"name": {"admin"}, "is_admin": {"on"}}, http.StatusConflict, "name", `id="is_admin" name="is_admin" type="checkbox" checked`},
			{"long description", url.Values{"name": {"ok"}, "description": {strings.Repeat("x", 200)}}, http.StatusBadRequest, "description", `value="ok"`},
		} {
			p := b.post("/groups", tc.form)
			wantStatus(t, tc.name, p, tc.status)
			wantContains(t, tc.name, p, tc.kept, `data-group="admin"`)
			admWantDescribed(t, tc.name, p, tc.field)
		}
		wantStatus(t, "create without csrf", b.post("/groups", url.Values{"name": {"staff"}, "csrf_token": {"x"}}), http.StatusForbidden)

		loc := admRedirect(t, "create", b.post("/groups", url.Values{"name": {"staff"}, "description": {"Everybody"}}), "/groups/")
		id := strings.TrimSuffix(strings.TrimPrefix(loc, "/groups/"), "?done=created")
		g, err := u.ident.GetGroup(u.ctx, u.admin, id)
		if err != nil || g.Name != "staff" || g.Description != "Everybody" || g.IsAdmin {
			t.Fatalf("created: %+v, %v", g, err)
		}
		wantContains(t, "group page", b.get(loc, false), "Group staff", "Created.", `value="Everybody"`, "No members.")

		// Many groups page.
		for i := range 60 {
			if _, err := u.ident.CreateGroup(u.ctx, u.admin, identity.NewGroup{Name: fmt.Sprintf("g%02d", i)}); err != nil {
				t.Fatal(err)
			}
		}
		p2 := b.get("/groups?page=2", false)
		wantContains(t, "groups page 2", p2, "Groups 51–62 of 62", `href="/groups"`, `rel="prev"`, `data-group="staff"`)
		admWantNot(t, "groups page 2", p2, `rel="next"`, `data-group="g00"`)
		wantContains(t, "groups past the end", b.get("/groups?page=7", false), "Groups 51–62 of 62")
	})
}

func TestGroupEditMembersDelete(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		admUser(t, u, "alice", "")
		admUser(t, u, "bob", "")
		g, err := u.ident.CreateGroup(u.ctx, u.admin, identity.NewGroup{Name: "staff", Members: []string{"bob"}})
		if err != nil {
			t.Fatal(err)
		}
		path := "/groups/" + g.ID
		b := u.browser()
		b.login("admin", adminPassword)
		p := b.get(path, false)
		wantStatus(t, "group page", p, http.StatusOK)
		wantContains(t, "group page", p, `data-member="bob"`, `data-confirm="Remove bob from staff?"`, `data-confirm="Delete group staff?`, "Members <span class=\"muted\">(1)")

		// Add: unknown user at the field with the value kept; then alice.
		unknown := b.post(path+"/members", url.Values{"username": {"nobody"}})
		wantStatus(t, "unknown member", unknown, http.StatusBadRequest)
		wantContains(t, "unknown member", unknown, `value="nobody"`, "does not exist")
		admWantDescribed(t, "unknown member", unknown, "username")
		dup := b.post(path+"/members", url.Values{"username": {"bob"}})
		wantStatus(t, "member twice", dup, http.StatusConflict)
		wantContains(t, "member twice", dup, "The user is already a member")
		admRedirect(t, "add", b.post(path+"/members", url.Values{"username": {"Alice"}}), path+"?done=member_added")
		if g, _ = u.ident.GetGroup(u.ctx, u.admin, g.ID); strings.Join(g.Members, ",") != "alice,bob" {
			t.Fatalf("members: %v", g.Members)
		}
		admRedirect(t, "remove", b.post(path+"/members/remove", url.Values{"username": {"bob"}}), path+"?done=member_remove")
		if g, _ = u.ident.GetGroup(u.ctx, u.admin, g.ID); strings.Join(g.Members, ",") != "alice" {
			t.Fatalf("members: %v", g.Members)
		}
		wantStatus(t, "remove a non-member", b.post(path+"/members/remove", url.Values{"username": {"bob"}}), http.StatusConflict)

		// The admin group cannot stop granting administration while it is
		// the only one with an active member.
		admins, _, _ := u.ident.ListGroups(u.ctx, u.admin, identity.ListParams{Limit: 10})
		var adminGroup identity.Group
		for _, ag := range admins {
			if ag.Name == "admin" {
				adminGroup = ag
			}
		}
		if adminGroup.ID == "" {
			t.Fatalf("no admin group in %+v", admins)
		}
		last := b.post("/groups/"+adminGroup.ID, url.Values{"name": {"admin"}})
		wantStatus(t, "last admin group", last, http.StatusConflict)
		wantContains(t, "last admin group", last, "no active administrator")

		// Edit: errors at the field, values kept.
		bad := b.post(path, url.Values{"name": {"!bad"}, "description": {"New text"}, "is_admin": {"on"}})
		wantStatus(t, "bad name", bad, http.StatusBadRequest)
		wantContains(t, "bad name", bad, `value="!bad"`, `value="New text"`, `id="is_admin" name="is_admin" type="checkbox" checked`)
		admWantDescribed(t, "bad name", bad, "name")
		admRedirect(t, "edit", b.post(path, url.Values{"name": {"team"}, "description": {"New text"}, "is_admin": {"on"}}), path+"?done=saved")
		if g, _ = u.ident.GetGroup(u.ctx, u.admin, g.ID); g.Name != "team" || g.Description != "New text" || !g.IsAdmin {
			t.Fatalf("after edit: %+v", g)
		}

		wantStatus(t, "delete without csrf", b.post(path+"/delete", url.Values{"csrf_token": {"x"}}), http.StatusForbidden)
		admRedirect(t, "delete", b.post(path+"/delete", nil), "/groups?done=deleted")
		if _, err := u.ident.GetGroup(u.ctx, u.admin, g.ID); !errors.Is(err, core.ErrNotFound) {
			t.Fatalf("deleted group: %v", err)
		}
		wantStatus(t, "deleted group's page", b.get(path, false), http.StatusNotFound)
	})
}

func TestGroupMembersPages(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		var names []string
		for i := range 60 {
			n := fmt.Sprintf("m%02d", i)
			admUser(t, u, n, "")
			names = append(names, n)
		}
		g, err := u.ident.CreateGroup(u.ctx, u.admin, identity.NewGroup{Name: "big", Members: names})
		if err != nil {
			t.Fatal(err)
		}
		b := u.browser()
		b.login("admin", adminPassword)
		p1 := b.get("/groups/"+g.ID, false)
		wantContains(t, "members page 1", p1, `data-member="m49"`, `href="/groups/`+g.ID+`?page=2"`, "Members <span class=\"muted\">(60)")
		admWantNot(t, "members page 1", p1, `data-member="m50"`)
		p2 := b.get("/groups/"+g.ID+"?page=2", false)
		wantContains(t, "members page 2", p2, `data-member="m50"`, `data-member="m59"`, `name="page" value="2"`)
		admWantNot(t, "members page 2", p2, `data-member="m49"`, `rel="next"`)
		// Removing from page 2 comes back to page 2.
		admRedirect(t, "remove", b.post("/groups/"+g.ID+"/members/remove", url.Values{"username": {"m55"}, "page": {"2"}}),
			"/groups/"+g.ID+"?done=member_remove&page=2")
	})
}

// Two admins adding different members to one group at the same time both
// get their change (the page changes one member, not the whole list).
func TestGroupConcurrentMemberChanges(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		g, err := u.ident.CreateGroup(u.ctx, u.admin, identity.NewGroup{Name: "staff"})
		if err != nil {
			t.Fatal(err)
		}
		names := []string{"ann", "ben", "cat", "dan", "eve", "fay"}
		for _, n := range names {
			admUser(t, u, n, memberPassword)
		}
		errs := make(chan error, len(names))
		for _, n := range names {
			go func() { errs <- u.ident.ChangeGroupMember(u.ctx, u.admin, g.ID, n, true) }()
		}
		for range names {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		if g, _ = u.ident.GetGroup(u.ctx, u.admin, g.ID); len(g.Members) != len(names) {
			t.Fatalf("members after %d concurrent additions: %v", len(names), g.Members)
		}
	})
}
