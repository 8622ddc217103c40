package web

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/store"
)

func TestAuditLogFiltersAndPages(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		u := newTestUI(t, db)
		alice := admUser(t, u, "alice", memberPassword)
		// alice, an admin too, creates a group: an entry with her as actor.
		if _, err := u.ident.CreateGroup(u.ctx, u.admin, identity.NewGroup{Name: "admins2", IsAdmin: true, Members: []string{"alice"}}); err != nil {
			t.Fatal(err)
		}
		aliceActor := core.Actor{UserID: alice.ID, Username: "alice", IsAdmin: true, IP: "192.0.2.7"}
		staff, err := u.ident.CreateGroup(u.ctx, aliceActor, identity.NewGroup{Name: "staff", Description: "by alice"})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 110 {
			admUser(t, u, fmt.Sprintf("bulk%03d", i), "")
		}
		b := u.browser()
		b.login("admin", adminPassword)
		_, total, err := core.ListAudit(u.ctx, db, core.AuditFilter{Limit: 1})
		if err != nil {
			t.Fatal(err)
		}

		all := b.get("/audit", false)
		wantStatus(t, "audit", all, http.StatusOK)
		wantContains(t, "audit", all, `name="action"`, `name="actor"`, `name="target"`, `name="from" type="date"`, `name="to" type="date"`,
			`href="/audit?page=2"`, "newest first", `<option value="user.">`)
		// Newest first: the login comes after the users were created.
		if i, j := strings.Index(all.body, `data-action="auth.login"`), strings.Index(all.body, `data-action="user.create"`); i < 0 || j < 0 || i > j {
			t.Fatalf("not newest first (login at %d, user.create at %d)", i, j)
		}

		for _, tc := range []struct {
			name, query string
			want        []string
			absent      []string
		}{
			{"exact action", "action=group.create", []string{"Entries 1–2 of 2", `data-action="group.create"`, `value="group.create"`},
				[]string{`data-action="user.create"`}},
			{"action prefix", "action=group.", []string{"Entries 1–2 of 2"}, []string{`data-action="user.create"`}},
			{"no such action", "action=group", []string{"No entries match these filters."}, nil},
			{"actor by username", "actor=alice", []string{"Entries 1–1 of 1", "192.0.2.7", `value="alice"`, `href="/groups/` + staff.ID + `"`,
				"{&#34;is_admin&#34;:false,&#34;members&#34;:null,&#34;name&#34;:&#34;staff&#34;}"}, nil},
			{"actor by id", "actor=" + alice.ID, []string{"Entries 1–1 of 1"}, nil},
			{"target", "target=" + staff.ID, []string{"Entries 1–1 of 1", `data-action="group.create"`}, nil},
			{"target and action", "target=" + staff.ID + "&action=user.", []string{"No entries match"}, nil},
			{"from tomorrow", "from=" + time.Now().UTC().AddDate(0, 0, 1).Format(time.DateOnly), []string{"No entries match"}, nil},
			{"to yesterday", "to=" + time.Now().UTC().AddDate(0, 0, -1).Format(time.DateOnly), []string{"No entries match"}, nil},
			{"today", "from=" + time.Now().UTC().Format(time.DateOnly) + "&to=" + time.Now().UTC().Format(time.DateOnly), []string{fmt.Sprintf("Entries 1–50 of %d,", total)}, nil},
			{"pages keep filters", "action=user.create&page=2", []string{"Entries 51–100 of 112", `href="/audit?action=user.create&amp;page=3"`,
				`href="/audit?action=user.create"`}, nil},
			{"past the end", "action=user.create&page=50", []string{"Entries 101–112 of 112"}, []string{`rel="next"`}},
			{"bad page", "page=x", []string{"Entries 1–50 of"}, []string{`rel="prev"`}},
		} {
			p := b.get("/audit?"+tc.query, false)
			wantStatus(t, tc.name, p, http.StatusOK)
			wantContains(t, tc.name, p, tc.want...)
			admWantNot(t, tc.name, p, tc.absent...)
		}

		// A filter that is not a date: at its field, kept, nothing listed.
		bad := b.get("/audit?action=user.&from=yesterday", false)
		wantStatus(t, "bad date", bad, http.StatusBadRequest)
		wantContains(t, "bad date", bad, `value="yesterday"`, `value="user."`, "Must be a date")
		admWantDescribed(t, "bad date", bad, "from")
		admWantNot(t, "bad date", bad, `data-action=`)

		// Rows link to narrower views, with the other filters kept.
		f := b.get("/audit?action=group.create", false)
		wantContains(t, "filter links", f, `href="/audit?action=group.create&amp;actor=`+alice.ID+`"`,
			`href="/audit?action=group.create&amp;target=`+staff.ID+`"`)
	})
}
