package vpn

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/pressly/goose/v3"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/store"
)

// The policy for life without core (peers_without_core, drop_peers_after):
// defaults, validation, storage, revision bumps and what gateways receive.
func TestLocationCoreLossPolicy(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		e := newPeerEnv(t, db)
		addrs := []string{"10.10.0.1/24"}

		// policyOf re-reads the location and what a gateway receives, so
		// the stored row, the API view and the gateway view must all agree.
		policyOf := func(id string) (string, int) {
			t.Helper()
			l, err := e.svc.GetLocation(e.ctx, e.admin, id)
			if err != nil {
				t.Fatal(err)
			}
			in := e.update(id, 0).Interface
			if in.PeersWithoutCore != l.PeersWithoutCore || in.DropPeersAfter != l.DropPeersAfter {
				t.Fatalf("gateway gets %q/%d, location says %q/%d", in.PeersWithoutCore, in.DropPeersAfter, l.PeersWithoutCore, l.DropPeersAfter)
			}
			return l.PeersWithoutCore, l.DropPeersAfter
		}

		t.Run("defaults on create", func(t *testing.T) {
			l := e.location("defaults", nil, "10.20.0.1/24")
			if l.PeersWithoutCore != PeersWithoutCoreKeep || l.DropPeersAfter != DefaultDropPeersAfter {
				t.Fatalf("created with %q/%d, want keep/%d", l.PeersWithoutCore, l.DropPeersAfter, DefaultDropPeersAfter)
			}
			if p, d := policyOf(l.ID); p != PeersWithoutCoreKeep || d != DefaultDropPeersAfter {
				t.Fatalf("stored %q/%d, want keep/%d", p, d, DefaultDropPeersAfter)
			}
		})

		t.Run("set on create", func(t *testing.T) {
			for _, tc := range []struct {
				name   string
				policy *string
				after  *int
				want   string
				wantD  int
			}{
				{"drop after 10 min", ptr(PeersWithoutCoreDrop), ptr(600), PeersWithoutCoreDrop, 600},
				{"drop, default time", ptr(PeersWithoutCoreDrop), nil, PeersWithoutCoreDrop, DefaultDropPeersAfter},
				{"keep with a time", ptr(PeersWithoutCoreKeep), ptr(MaxDropPeersAfter), PeersWithoutCoreKeep, MaxDropPeersAfter},
				{"only the time", nil, ptr(MinDropPeersAfter), PeersWithoutCoreKeep, MinDropPeersAfter},
			} {
				t.Run(tc.name, func(t *testing.T) {
					l := e.location("created", func(in *LocationInput) {
						in.PeersWithoutCore, in.DropPeersAfter = tc.policy, tc.after
					}, "10.30.0.1/24")
					defer func() {
						if err := e.svc.DeleteLocation(e.ctx, e.admin, l.ID); err != nil {
							t.Fatal(err)
						}
					}()
					if p, d := policyOf(l.ID); p != tc.want || d != tc.wantD {
						t.Fatalf("stored %q/%d, want %q/%d", p, d, tc.want, tc.wantD)
					}
				})
			}
		})

		office := e.location("office", nil, addrs...)

		t.Run("update bumps the revision and reaches gateways", func(t *testing.T) {
			for _, tc := range []struct {
				name   string
				in     LocationInput
				want   string
				wantD  int
				fields []string
			}{
				{"switch to drop", LocationInput{PeersWithoutCore: ptr(PeersWithoutCoreDrop)}, PeersWithoutCoreDrop, DefaultDropPeersAfter, []string{"peers_without_core"}},
				{"shorten the time", LocationInput{DropPeersAfter: ptr(120)}, PeersWithoutCoreDrop, 120, []string{"drop_peers_after"}},
				{"both at once", LocationInput{PeersWithoutCore: ptr(PeersWithoutCoreKeep), DropPeersAfter: ptr(7200)}, PeersWithoutCoreKeep, 7200,
					[]string{"peers_without_core", "drop_peers_after"}},
				{"unrelated change keeps the policy", LocationInput{MTU: ptr(1400)}, PeersWithoutCoreKeep, 7200, []string{"mtu"}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					rev := e.revision(office.ID)
					l, err := e.svc.UpdateLocation(e.ctx, e.admin, office.ID, tc.in)
					if err != nil {
						t.Fatal(err)
					}
					if l.PeersWithoutCore != tc.want || l.DropPeersAfter != tc.wantD {
						t.Fatalf("update returned %q/%d, want %q/%d", l.PeersWithoutCore, l.DropPeersAfter, tc.want, tc.wantD)
					}
					if p, d := policyOf(office.ID); p != tc.want || d != tc.wantD {
						t.Fatalf("stored %q/%d, want %q/%d", p, d, tc.want, tc.wantD)
					}
					if l.Revision <= rev {
						t.Fatalf("revision %d after the update, was %d", l.Revision, rev)
					}
					// A gateway that applied the previous revision learns the
					// new policy from the incremental update, not only from a
					// snapshot.
					u := e.update(office.ID, rev)
					if u.Snapshot || u.Revision != l.Revision {
						t.Fatalf("update from %d: snapshot %v, revision %d, want incremental to %d", rev, u.Snapshot, u.Revision, l.Revision)
					}
					if u.Interface.PeersWithoutCore != tc.want || u.Interface.DropPeersAfter != tc.wantD {
						t.Fatalf("gateway gets %q/%d, want %q/%d", u.Interface.PeersWithoutCore, u.Interface.DropPeersAfter, tc.want, tc.wantD)
					}
					details := lastAudit(t, e, "location.update", office.ID)
					for _, f := range tc.fields {
						if _, ok := details[f]; !ok {
							t.Errorf("audit details %v lack %s", details, f)
						}
					}
				})
			}
		})

		t.Run("invalid values are refused and change nothing", func(t *testing.T) {
			for _, tc := range []struct {
				name  string
				in    LocationInput
				field string
			}{
				{"unknown policy", LocationInput{PeersWithoutCore: ptr("maybe")}, "peers_without_core"},
				{"empty policy", LocationInput{PeersWithoutCore: ptr("")}, "peers_without_core"},
				{"policy in capitals", LocationInput{PeersWithoutCore: ptr("DROP")}, "peers_without_core"},
				{"time of 10 s", LocationInput{DropPeersAfter: ptr(10)}, "drop_peers_after"},
				{"time of 0", LocationInput{DropPeersAfter: ptr(0)}, "drop_peers_after"},
				{"negative time", LocationInput{DropPeersAfter: ptr(-60)}, "drop_peers_after"},
				{"one below the minimum", LocationInput{DropPeersAfter: ptr(MinDropPeersAfter - 1)}, "drop_peers_after"},
				{"one above the maximum", LocationInput{DropPeersAfter: ptr(MaxDropPeersAfter + 1)}, "drop_peers_after"},
				{"bad time with valid policy", LocationInput{PeersWithoutCore: ptr(PeersWithoutCoreDrop), DropPeersAfter: ptr(10)}, "drop_peers_after"},
				{"bad time with keep", LocationInput{PeersWithoutCore: ptr(PeersWithoutCoreKeep), DropPeersAfter: ptr(59)}, "drop_peers_after"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					check := func(op string, err error) {
						t.Helper()
						ce, ok := core.AsError(err)
						if !ok || ce.Kind != core.KindInvalid || ce.Code != "invalid_value" || ce.Field != tc.field {
							t.Fatalf("%s: error %v, want invalid_value on %s", op, err, tc.field)
						}
					}
					var before int
					if err := db.QueryRowContext(e.ctx, `SELECT COUNT(*) FROM locations`).Scan(&before); err != nil {
						t.Fatal(err)
					}
					in := tc.in
					in.Name, in.Addresses, in.Endpoint = ptr("refused"), ptr([]string{"10.40.0.1/24"}), ptr("refused.example.com")
					_, err := e.svc.CreateLocation(e.ctx, e.admin, in)
					check("create", err)
					var after int
					if err := db.QueryRowContext(e.ctx, `SELECT COUNT(*) FROM locations`).Scan(&after); err != nil {
						t.Fatal(err)
					}
					if after != before {
						t.Fatalf("%d locations after a refused create, was %d", after, before)
					}

					rev := e.revision(office.ID)
					p0, d0 := policyOf(office.ID)
					_, err = e.svc.UpdateLocation(e.ctx, e.admin, office.ID, tc.in)
					check("update", err)
					if p, d := policyOf(office.ID); p != p0 || d != d0 {
						t.Fatalf("refused update changed the policy to %q/%d, was %q/%d", p, d, p0, d0)
					}
					if r := e.revision(office.ID); r != rev {
						t.Fatalf("refused update moved the revision to %d, was %d", r, rev)
					}
				})
			}
		})
	})
}

// Locations that exist before migration 00007 get the defaults, and the
// migration can be rolled back and re-applied on both engines.
func TestLocationCoreLossPolicyMigration(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		e := newPeerEnv(t, db)
		l := e.location("office", nil, "10.10.0.1/24")
		dialect := goose.DialectSQLite3
		if db.Engine == store.Postgres {
			dialect = goose.DialectPostgres
		}
		provider, err := goose.NewProvider(dialect, db.DB, os.DirFS("../../store/migrations"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := provider.DownTo(e.ctx, 6); err != nil {
			t.Fatalf("down to 6: %v", err)
		}
		var n int
		err = db.QueryRowContext(e.ctx, `SELECT COUNT(*) FROM locations WHERE id = $1`, l.ID).Scan(&n)
		if err != nil || n != 1 {
			t.Fatalf("location after down: %d, %v", n, err)
		}
		var policy string
		if err := db.QueryRowContext(e.ctx, `SELECT peers_without_core FROM locations WHERE id = $1`, l.ID).Scan(&policy); err == nil {
			t.Fatal("peers_without_core survived the down migration")
		}
		if _, err := provider.Up(e.ctx); err != nil {
			t.Fatalf("up again: %v", err)
		}
		got, err := e.svc.GetLocation(e.ctx, e.admin, l.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.PeersWithoutCore != PeersWithoutCoreKeep || got.DropPeersAfter != DefaultDropPeersAfter {
			t.Fatalf("existing location migrated to %q/%d, want keep/%d", got.PeersWithoutCore, got.DropPeersAfter, DefaultDropPeersAfter)
		}
	})
}

// lastAudit returns the details of the newest audit entry of action on target.
func lastAudit(t *testing.T, e *peerEnv, action, target string) map[string]any {
	t.Helper()
	var raw string
	err := e.db.QueryRowContext(e.ctx, `SELECT details FROM audit_log WHERE action = $1 AND target_id = $2 ORDER BY at DESC, id DESC LIMIT 1`,
		action, target).Scan(&raw)
	if err != nil {
		t.Fatalf("audit entry %s of %s: %v", action, target, err)
	}
	var d map[string]any
	if err := json.Unmarshal([]byte(raw), &d); err != nil {
		t.Fatalf("audit details %q: %v", raw, err)
	}
	return d
}
