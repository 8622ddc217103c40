package api_test

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wardvpn/ward/internal/api"
	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/store"
)

// TestCurlTour walks the path an operator takes on day one: log in, create a
// group, a user, a location and a device, download the device's config, log
// out.
func TestCurlTour(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		admin := f.admin

		// Operational endpoints answer without credentials.
		anon := f.anon()
		anon.mustDo(http.StatusOK, "GET", "/livez", nil)
		var ready map[string]string
		anon.mustDo(http.StatusOK, "GET", "/readyz", nil).decode(t, &ready)
		if ready["database"] != string(db.Engine) {
			t.Errorf("readyz database %q, want %q", ready["database"], db.Engine)
		}

		var me struct {
			identity.User
			CSRFToken string `json:"csrf_token"`
		}
		admin.mustDo(http.StatusOK, "GET", v1+"/me", nil).decode(t, &me)
		if me.Username != "admin" || !me.IsAdmin || !me.Active || me.CSRFToken != admin.csrf {
			t.Fatalf("me: %+v", me)
		}

		g := f.createGroup("engineering")
		if g.Name != "engineering" || g.IsAdmin || len(g.Members) != 0 {
			t.Fatalf("group: %+v", g)
		}
		alice := f.createUser("alice", "engineering")
		if alice.Username != "alice" || alice.Email != "alice@example.com" || !alice.Active || !alice.HasPassword || alice.IsAdmin ||
			!slices.Equal(alice.Groups, []string{"engineering"}) {
			t.Fatalf("user: %+v", alice)
		}
		var gotGroup identity.Group
		admin.mustDo(http.StatusOK, "GET", v1+"/groups/"+g.ID, nil).decode(t, &gotGroup)
		if !slices.Equal(gotGroup.Members, []string{"alice"}) {
			t.Fatalf("group members %v, want [alice]", gotGroup.Members)
		}

		loc := f.createLocation(map[string]any{
			"name": "office", "addresses": []string{"10.10.0.0/24", "fd00:10::/64"}, "endpoint": "vpn.example.com",
		})
		if !slices.Equal(loc.Addresses, []string{"10.10.0.1/24", "fd00:10::1/64"}) || loc.ListenPort != 51820 || loc.Revision != 1 || !loc.AllGroups {
			t.Fatalf("location: %+v", loc)
		}
		if _, err := wgtypes.ParseKey(loc.PublicKey); err != nil {
			t.Fatalf("location public key %q: %v", loc.PublicKey, err)
		}

		pub := newPublicKey(t)
		dev := f.createDevice(admin, map[string]any{"name": "laptop", "public_key": pub, "user_id": alice.ID})
		if dev.UserID != alice.ID || dev.Username != "alice" || dev.Kind != vpn.KindUser || dev.PublicKey != pub {
			t.Fatalf("device: %+v", dev)
		}
		if dev.PrivateKey != "" || dev.Configs != nil {
			t.Fatalf("device with a client key got a private key or configs: %+v", dev)
		}
		wantAddrs := []vpn.DeviceAddress{{LocationID: loc.ID, Address: "10.10.0.2"}, {LocationID: loc.ID, Address: "fd00:10::2"}}
		if !slices.Equal(dev.Addresses, wantAddrs) {
			t.Fatalf("device addresses %v, want %v", dev.Addresses, wantAddrs)
		}

		r := admin.mustDo(http.StatusOK, "GET", v1+"/devices/"+dev.ID+"/config?location="+loc.ID, nil)
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("config Content-Type %q", ct)
		}
		cfg := parseWGConfig(t, string(r.Body))
		want := wgConfig{
			"Interface": {"PrivateKey": vpn.PrivateKeyPlaceholder, "Address": "10.10.0.2/32, fd00:10::2/128", "MTU": "1420"},
			"Peer": {"PublicKey": loc.PublicKey, "AllowedIPs": "10.10.0.0/24, fd00:10::/64",
				"Endpoint": "vpn.example.com:51820", "PersistentKeepalive": "25"},
		}
		for sec, kv := range want {
			for k, v := range kv {
				if cfg[sec][k] != v {
					t.Errorf("config [%s] %s = %q, want %q\n%s", sec, k, cfg[sec][k], v, r.Body)
				}
			}
		}
		// With the device in one location, ?location= may be left out.
		if r2 := admin.mustDo(http.StatusOK, "GET", v1+"/devices/"+dev.ID+"/config", nil); string(r2.Body) != string(r.Body) {
			t.Errorf("config without ?location= differs:\n%s\nvs\n%s", r2.Body, r.Body)
		}

		// Alice sees her own device and config, not the user list.
		ac := f.login("alice", userPassword)
		var mine struct {
			Items []vpn.Device `json:"items"`
			Total int          `json:"total"`
		}
		ac.mustDo(http.StatusOK, "GET", v1+"/devices", nil).decode(t, &mine)
		if mine.Total != 1 || len(mine.Items) != 1 || mine.Items[0].ID != dev.ID {
			t.Fatalf("alice's devices: %+v", mine)
		}
		if string(ac.mustDo(http.StatusOK, "GET", v1+"/devices/"+dev.ID+"/config?location="+loc.ID, nil).Body) != string(r.Body) {
			t.Errorf("alice gets a different config than the admin")
		}
		expectError(t, ac.do("GET", v1+"/users", nil), http.StatusForbidden, "forbidden", "")

		// A server-generated key: the private key is returned once, inside
		// ready configs, and never again.
		gen := f.createDevice(ac, map[string]any{"name": "phone", "generate_key": true})
		if gen.PrivateKey == "" {
			t.Fatalf("generate_key returned no private key: %+v", gen)
		}
		priv, err := wgtypes.ParseKey(gen.PrivateKey)
		if err != nil {
			t.Fatalf("private key %q: %v", gen.PrivateKey, err)
		}
		if priv.PublicKey().String() != gen.PublicKey {
			t.Fatalf("public key %s does not belong to the returned private key", gen.PublicKey)
		}
		if !slices.Equal(gen.Addresses, []vpn.DeviceAddress{{LocationID: loc.ID, Address: "10.10.0.3"}, {LocationID: loc.ID, Address: "fd00:10::3"}}) {
			t.Fatalf("second device addresses %v", gen.Addresses)
		}
		if len(gen.Configs) != 1 || gen.Configs[loc.ID] == "" {
			t.Fatalf("configs %v, want one for location %s", gen.Configs, loc.ID)
		}
		genCfg := parseWGConfig(t, gen.Configs[loc.ID])
		if genCfg["Interface"]["PrivateKey"] != gen.PrivateKey || genCfg["Interface"]["Address"] != "10.10.0.3/32, fd00:10::3/128" ||
			genCfg["Peer"]["PublicKey"] != loc.PublicKey {
			t.Fatalf("generated config:\n%s", gen.Configs[loc.ID])
		}
		later := ac.mustDo(http.StatusOK, "GET", v1+"/devices/"+gen.ID+"/config?location="+loc.ID, nil)
		if strings.Contains(string(later.Body), gen.PrivateKey) || parseWGConfig(t, string(later.Body))["Interface"]["PrivateKey"] != vpn.PrivateKeyPlaceholder {
			t.Fatalf("later config must hold the placeholder, not the private key:\n%s", later.Body)
		}
		if strings.Contains(string(admin.mustDo(http.StatusOK, "GET", v1+"/devices/"+gen.ID, nil).Body), gen.PrivateKey) {
			t.Fatalf("GET device leaks the private key")
		}
		if n := f.count(`SELECT COUNT(*) FROM audit_log WHERE details LIKE $1`, "%"+gen.PrivateKey+"%"); n != 0 {
			t.Fatalf("private key stored in %d audit entries", n)
		}

		// The audit log recorded who did what.
		var audit struct {
			Items []core.AuditEntry `json:"items"`
		}
		admin.mustDo(http.StatusOK, "GET", v1+"/audit?action=device.", nil).decode(t, &audit)
		if len(audit.Items) != 2 || audit.Items[0].Actor != "alice" || audit.Items[1].Actor != "admin" || audit.Items[1].TargetID != dev.ID {
			t.Fatalf("device audit entries: %+v", audit.Items)
		}

		// Logout ends the session: replaying the old cookie gets 401, and
		// other sessions live on.
		adminCookie := cookieValue(t, admin, f.ts.URL)
		admin.mustDo(http.StatusNoContent, "POST", v1+"/auth/logout", nil)
		expectError(t, f.anon().do("GET", v1+"/me", nil, header("Cookie", api.SessionCookie+"="+adminCookie)), http.StatusUnauthorized, "unauthenticated", "")
		expectError(t, admin.do("GET", v1+"/me", nil), http.StatusUnauthorized, "unauthenticated", "")
		ac.mustDo(http.StatusOK, "GET", v1+"/me", nil)
		if n := f.count(`SELECT COUNT(*) FROM sessions`); n != 1 {
			t.Fatalf("%d sessions after the admin logged out, want alice's 1", n)
		}
	})
}

// TestBadInput sends malformed, conflicting and unauthorised requests. Each
// gets the documented status and error code, and nothing is half-written.
func TestBadInput(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		admin := f.admin
		f.createGroup("engineering")
		alice := f.createUser("alice", "engineering")
		mallory := f.createUser("mallory")
		loc := f.createLocation(map[string]any{"name": "office", "addresses": []string{"10.10.0.0/16", "fd00:10::/64"}, "endpoint": "vpn.example.com"})
		aliceKey := newPublicKey(t)
		aliceDev := f.createDevice(admin, map[string]any{"name": "laptop", "public_key": aliceKey, "user_id": alice.ID})
		restricted := f.createLocation(map[string]any{"name": "lab", "addresses": []string{"10.60.0.0/24"}, "endpoint": "lab.example.com",
			"allowed_groups": []string{"engineering"}})
		ac := f.login("alice", userPassword)
		mc := f.login("mallory", userPassword)
		// A session past its expiry.
		expiring := f.createUser("expiring")
		ec := f.login("expiring", userPassword)
		if _, err := db.ExecContext(f.ctx, `UPDATE sessions SET expires_at = $1 WHERE user_id = $2`, store.Now()-1000, expiring.ID); err != nil {
			t.Fatal(err)
		}

		// A revoked and an expired token.
		var tok identity.APIToken
		ac.mustDo(http.StatusCreated, "POST", v1+"/me/tokens", map[string]any{"name": "revoked"}).decode(t, &tok)
		ac.mustDo(http.StatusNoContent, "DELETE", v1+"/me/tokens/"+tok.ID, nil)
		revoked := tok.Token
		ac.mustDo(http.StatusCreated, "POST", v1+"/me/tokens", map[string]any{"name": "expired", "expires_in_days": 1}).decode(t, &tok)
		if _, err := db.ExecContext(f.ctx, `UPDATE api_tokens SET expires_at = $1 WHERE id = $2`, store.Now()-1000, tok.ID); err != nil {
			t.Fatal(err)
		}
		expired := tok.Token

		validLocation := func(extra map[string]any) map[string]any {
			m := map[string]any{"name": "branch", "addresses": []string{"10.20.0.0/24"}, "endpoint": "branch.example.com"}
			for k, v := range extra {
				m[k] = v
			}
			return m
		}
		validUser := func(extra map[string]any) map[string]any {
			m := map[string]any{"username": "bob", "email": "bob@example.com", "password": userPassword}
			for k, v := range extra {
				m[k] = v
			}
			return m
		}
		short := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 31))
		zero := base64.StdEncoding.EncodeToString(make([]byte, 32))
		huge := `{"name":"` + strings.Repeat("a", api.MaxBodyBytes+1024) + `"}`

		cases := []struct {
			name   string
			c      *client
			method string
			path   string
			body   any
			opts   []reqOpt
			status int
			code   string
			field  string
		}{
			// Locations.
			{"malformed CIDR", admin, "POST", "/locations", validLocation(map[string]any{"addresses": []string{"10.20.0.0/33"}}), nil, 400, "invalid_cidr", "addresses"},
			{"CIDR that is no CIDR", admin, "POST", "/locations", validLocation(map[string]any{"addresses": []string{"banana"}}), nil, 400, "invalid_cidr", "addresses"},
			{"IPv4 /31", admin, "POST", "/locations", validLocation(map[string]any{"addresses": []string{"10.20.0.0/31"}}), nil, 400, "invalid_cidr", "addresses"},
			{"IPv6 /127", admin, "POST", "/locations", validLocation(map[string]any{"addresses": []string{"fd00:20::/127"}}), nil, 400, "invalid_cidr", "addresses"},
			{"two IPv4 networks", admin, "POST", "/locations", validLocation(map[string]any{"addresses": []string{"10.20.0.0/24", "10.21.0.0/24"}}), nil, 400, "invalid_cidr", "addresses"},
			{"no networks", admin, "POST", "/locations", validLocation(map[string]any{"addresses": []string{}}), nil, 400, "invalid_cidr", "addresses"},
			{"overlapping IPv4 range", admin, "POST", "/locations", validLocation(map[string]any{"addresses": []string{"10.10.5.0/24"}}), nil, 409, "overlapping_network", "addresses"},
			{"enclosing IPv4 range", admin, "POST", "/locations", validLocation(map[string]any{"addresses": []string{"10.0.0.0/8"}}), nil, 409, "overlapping_network", "addresses"},
			{"overlapping IPv6 range", admin, "POST", "/locations", validLocation(map[string]any{"addresses": []string{"10.20.0.0/24", "fd00:10::/48"}}), nil, 409, "overlapping_network", "addresses"},
			{"renumber a network in use", admin, "PATCH", "/locations/" + loc.ID, map[string]any{"addresses": []string{"10.30.0.0/24"}}, nil, 409, "network_in_use", "addresses"},
			{"duplicate location name", admin, "POST", "/locations", validLocation(map[string]any{"name": "office"}), nil, 409, "duplicate_name", "name"},
			{"location for unknown group", admin, "POST", "/locations", validLocation(map[string]any{"allowed_groups": []string{"nobody"}}), nil, 400, "unknown_group", "allowed_groups"},
			{"bad endpoint", admin, "POST", "/locations", validLocation(map[string]any{"endpoint": "vpn.example.com:99999"}), nil, 400, "invalid_endpoint", "endpoint"},
			{"missing endpoint", admin, "POST", "/locations", map[string]any{"name": "branch", "addresses": []string{"10.20.0.0/24"}}, nil, 400, "missing_field", "endpoint"},
			{"bad allowed_ips", admin, "POST", "/locations", validLocation(map[string]any{"allowed_ips": []string{"0.0.0.0/99"}}), nil, 400, "invalid_cidr", "allowed_ips"},
			{"bad listen port", admin, "POST", "/locations", validLocation(map[string]any{"listen_port": 70000}), nil, 400, "invalid_port", "listen_port"},
			{"unknown peers_without_core", admin, "POST", "/locations", validLocation(map[string]any{"peers_without_core": "maybe"}), nil, 400, "invalid_value", "peers_without_core"},
			{"drop_peers_after of 10 s", admin, "POST", "/locations", validLocation(map[string]any{"peers_without_core": "drop", "drop_peers_after": 10}), nil, 400, "invalid_value", "drop_peers_after"},
			{"drop_peers_after over 30 days", admin, "POST", "/locations", validLocation(map[string]any{"drop_peers_after": 30*86400 + 1}), nil, 400, "invalid_value", "drop_peers_after"},
			{"patch peers_without_core to maybe", admin, "PATCH", "/locations/" + loc.ID, map[string]any{"peers_without_core": "maybe"}, nil, 400, "invalid_value", "peers_without_core"},
			{"patch drop_peers_after to 10 s", admin, "PATCH", "/locations/" + loc.ID, map[string]any{"peers_without_core": "drop", "drop_peers_after": 10}, nil, 400, "invalid_value", "drop_peers_after"},

			// Device keys and names.
			{"public key not base64", admin, "POST", "/devices", map[string]any{"name": "x", "public_key": "not base64!!"}, nil, 400, "invalid_public_key", "public_key"},
			{"public key of 31 bytes", admin, "POST", "/devices", map[string]any{"name": "x", "public_key": short}, nil, 400, "invalid_public_key", "public_key"},
			{"public key of 33 bytes", admin, "POST", "/devices", map[string]any{"name": "x", "public_key": base64.StdEncoding.EncodeToString(make([]byte, 33))}, nil, 400, "invalid_public_key", "public_key"},
			{"all-zero public key", admin, "POST", "/devices", map[string]any{"name": "x", "public_key": zero}, nil, 400, "invalid_public_key", "public_key"},
			{"URL-safe base64 key", admin, "POST", "/devices", map[string]any{"name": "x", "public_key": strings.NewReplacer("+", "-", "/", "_").Replace(alwaysURLUnsafeKey(t))}, nil, 400, "invalid_public_key", "public_key"},
			{"missing public key", admin, "POST", "/devices", map[string]any{"name": "x"}, nil, 400, "invalid_public_key", "public_key"},
			{"key and generate_key", admin, "POST", "/devices", map[string]any{"name": "x", "public_key": newPublicKey(t), "generate_key": true}, nil, 400, "invalid_value", "public_key"},
			{"empty device name", admin, "POST", "/devices", map[string]any{"name": " ", "public_key": newPublicKey(t)}, nil, 400, "invalid_name", "name"},
			{"duplicate device public key", admin, "POST", "/devices", map[string]any{"name": "other", "public_key": aliceKey, "user_id": mallory.ID}, nil, 409, "duplicate_public_key", "public_key"},
			{"duplicate device name", admin, "POST", "/devices", map[string]any{"name": "laptop", "public_key": newPublicKey(t), "user_id": alice.ID}, nil, 409, "duplicate_name", "name"},
			{"device of unknown user", admin, "POST", "/devices", map[string]any{"name": "x", "public_key": newPublicKey(t), "user_id": "no-such-user"}, nil, 400, "unknown_user", "user_id"},
			{"user device bound to a location", admin, "POST", "/devices", map[string]any{"name": "x", "public_key": newPublicKey(t), "location_id": loc.ID}, nil, 400, "invalid_value", "location_id"},
			{"network device in unknown location", admin, "POST", "/devices", map[string]any{"name": "x", "public_key": newPublicKey(t), "kind": "network", "location_id": "nowhere"}, nil, 400, "unknown_location", "location_id"},
			{"unknown device kind", admin, "POST", "/devices", map[string]any{"name": "x", "public_key": newPublicKey(t), "kind": "toaster"}, nil, 400, "invalid_kind", "kind"},
			{"patch key to invalid", admin, "PATCH", "/devices/" + aliceDev.ID, map[string]any{"public_key": "AAAA"}, nil, 400, "invalid_public_key", "public_key"},

			// Groups and users.
			{"duplicate group name", admin, "POST", "/groups", map[string]any{"name": "engineering"}, nil, 409, "duplicate_name", "name"},
			{"invalid group name", admin, "POST", "/groups", map[string]any{"name": "-bad/name"}, nil, 400, "invalid_name", "name"},
			{"group with unknown member", admin, "POST", "/groups", map[string]any{"name": "ops", "members": []string{"alice", "ghost"}}, nil, 400, "unknown_user", "members"},
			{"rename group onto another", admin, "PATCH", "/groups/" + groupID(t, f, "engineering"), map[string]any{"name": "admin"}, nil, 409, "duplicate_name", "name"},
			{"duplicate username", admin, "POST", "/users", validUser(map[string]any{"username": "alice"}), nil, 409, "duplicate_username", "username"},
			{"duplicate username, other case", admin, "POST", "/users", validUser(map[string]any{"username": "ALICE"}), nil, 409, "duplicate_username", "username"},
			{"duplicate email", admin, "POST", "/users", validUser(map[string]any{"email": "alice@example.com"}), nil, 409, "duplicate_email", "email"},
			{"patch email onto another", admin, "PATCH", "/users/" + mallory.ID, map[string]any{"email": "alice@example.com"}, nil, 409, "duplicate_email", "email"},
			{"user in unknown group", admin, "POST", "/users", validUser(map[string]any{"groups": []string{"engineering", "ghosts"}}), nil, 400, "unknown_group", "groups"},
			{"invalid username", admin, "POST", "/users", validUser(map[string]any{"username": "Bob Smith"}), nil, 400, "invalid_username", "username"},
			{"invalid email", admin, "POST", "/users", validUser(map[string]any{"email": "not-an-address"}), nil, 400, "invalid_email", "email"},
			{"weak password", admin, "POST", "/users", validUser(map[string]any{"password": "short"}), nil, 400, "weak_password", "password"},

			// Request bodies.
			{"unknown JSON field", admin, "POST", "/groups", map[string]any{"name": "ops", "colour": "red"}, nil, 400, "unknown_field", "colour"},
			{"unknown field on patch", admin, "PATCH", "/devices/" + aliceDev.ID, map[string]any{"name": "renamed", "owner": mallory.ID}, nil, 400, "unknown_field", "owner"},
			{"wrong field type", admin, "POST", "/groups", `{"name": 42}`, nil, 400, "invalid_json", "name"},
			{"body over 1 MiB", admin, "POST", "/groups", huge, nil, 413, "body_too_large", ""},
			{"text/plain body", admin, "POST", "/groups", `{"name":"ops"}`, []reqOpt{header("Content-Type", "text/plain")}, 415, "unsupported_media_type", ""},
			{"no Content-Type", admin, "POST", "/groups", `{"name":"ops"}`, []reqOpt{noHeader("Content-Type")}, 415, "unsupported_media_type", ""},
			{"form body", admin, "POST", "/groups", `name=ops`, []reqOpt{header("Content-Type", "application/x-www-form-urlencoded")}, 415, "unsupported_media_type", ""},
			{"malformed JSON", admin, "POST", "/groups", `{"name": "ops"`, nil, 400, "invalid_json", ""},
			{"not JSON at all", admin, "POST", "/groups", `name: ops`, nil, 400, "invalid_json", ""},
			{"trailing garbage", admin, "POST", "/groups", `{"name":"ops"} garbage`, nil, 400, "invalid_json", ""},
			{"two JSON values", admin, "POST", "/groups", `{"name":"ops"}{"name":"ops2"}`, nil, 400, "invalid_json", ""},
			{"empty body", admin, "POST", "/groups", ``, nil, 400, "invalid_json", ""},
			{"JSON array instead of object", admin, "POST", "/groups", `[{"name":"ops"}]`, nil, 400, "invalid_json", ""},

			// Credentials.
			{"no credentials", f.anon(), "POST", "/groups", map[string]any{"name": "ops"}, nil, 401, "unauthenticated", ""},
			{"wrong bearer token", f.anon().withBearer("ward_" + strings.Repeat("x", 43)), "POST", "/groups", map[string]any{"name": "ops"}, nil, 401, "unauthenticated", ""},
			{"bearer of another format", f.anon().withBearer("not-a-ward-token"), "GET", "/me", nil, nil, 401, "unauthenticated", ""},
			{"basic auth", f.anon(), "GET", "/me", nil, []reqOpt{header("Authorization", "Basic YWRtaW46YWRtaW4=")}, 401, "unauthenticated", ""},
			{"revoked token", f.anon().withBearer(revoked), "POST", "/devices", map[string]any{"name": "x", "public_key": newPublicKey(t)}, nil, 401, "unauthenticated", ""},
			{"expired token", f.anon().withBearer(expired), "POST", "/devices", map[string]any{"name": "x", "public_key": newPublicKey(t)}, nil, 401, "unauthenticated", ""},
			{"expired session", ec, "POST", "/devices", map[string]any{"name": "x", "public_key": newPublicKey(t)}, nil, 401, "unauthenticated", ""},
			{"forged session cookie", f.anon(), "GET", "/me", nil, []reqOpt{header("Cookie", api.SessionCookie+"=ws_forged")}, 401, "unauthenticated", ""},
			{"missing CSRF header", admin, "POST", "/groups", map[string]any{"name": "ops"}, []reqOpt{noHeader("X-CSRF-Token")}, 403, "csrf_failed", ""},
			{"wrong CSRF header", admin, "DELETE", "/devices/" + aliceDev.ID, nil, []reqOpt{header("X-CSRF-Token", "wrong")}, 403, "csrf_failed", ""},
			{"another session's CSRF token", ac, "DELETE", "/devices/" + aliceDev.ID, nil, []reqOpt{header("X-CSRF-Token", mc.csrf)}, 403, "csrf_failed", ""},
			{"logout without CSRF", admin, "POST", "/auth/logout", nil, []reqOpt{noHeader("X-CSRF-Token")}, 403, "csrf_failed", ""},

			// Another user's device and admin-only operations.
			{"read another user's device", mc, "GET", "/devices/" + aliceDev.ID, nil, nil, 403, "forbidden", ""},
			{"rename another user's device", mc, "PATCH", "/devices/" + aliceDev.ID, map[string]any{"name": "pwned"}, nil, 403, "forbidden", ""},
			{"rekey another user's device", mc, "PATCH", "/devices/" + aliceDev.ID, map[string]any{"public_key": newPublicKey(t)}, nil, 403, "forbidden", ""},
			{"delete another user's device", mc, "DELETE", "/devices/" + aliceDev.ID, nil, nil, 403, "forbidden", ""},
			{"config of another user's device", mc, "GET", "/devices/" + aliceDev.ID + "/config?location=" + loc.ID, nil, nil, 403, "forbidden", ""},
			{"list another user's devices", mc, "GET", "/devices?user_id=" + alice.ID, nil, nil, 403, "forbidden", ""},
			{"device for another user", mc, "POST", "/devices", map[string]any{"name": "x", "public_key": newPublicKey(t), "user_id": alice.ID}, nil, 403, "forbidden", ""},
			{"user creates network device", mc, "POST", "/devices", map[string]any{"name": "x", "public_key": newPublicKey(t), "kind": "network", "location_id": loc.ID}, nil, 403, "forbidden", ""},
			{"user creates user", mc, "POST", "/users", validUser(nil), nil, 403, "forbidden", ""},
			{"user creates location", mc, "POST", "/locations", validLocation(nil), nil, 403, "forbidden", ""},
			{"user creates group", mc, "POST", "/groups", map[string]any{"name": "ops"}, nil, 403, "forbidden", ""},
			{"user joins admin group", mc, "PATCH", "/users/" + mallory.ID, map[string]any{"groups": []string{"admin"}}, nil, 403, "forbidden", ""},
			{"user changes another user", mc, "PATCH", "/users/" + alice.ID, map[string]any{"first_name": "Pwned"}, nil, 403, "forbidden", ""},
			{"user deletes another user", mc, "DELETE", "/users/" + alice.ID, nil, nil, 403, "forbidden", ""},
			{"user reads another user", mc, "GET", "/users/" + alice.ID, nil, nil, 403, "forbidden", ""},
			{"user changes settings", mc, "PATCH", "/settings", map[string]any{"users_can_manage_devices": false}, nil, 403, "forbidden", ""},
			{"user reads settings", mc, "GET", "/settings", nil, nil, 403, "forbidden", ""},
			{"user reads a location not open to them", mc, "GET", "/locations/" + restricted.ID, nil, nil, 404, "not_found", ""},
			{"user reads audit log", mc, "GET", "/audit", nil, nil, 403, "forbidden", ""},
			{"user registers gateway", mc, "POST", "/locations/" + loc.ID + "/gateways", map[string]any{"name": "gw", "control_address": "10.0.0.1:7000"}, nil, 403, "forbidden", ""},

			// Queries and missing things.
			{"limit=0", admin, "GET", "/users?limit=0", nil, nil, 400, "invalid_query", "limit"},
			{"limit=abc", admin, "GET", "/users?limit=abc", nil, nil, 400, "invalid_query", "limit"},
			{"limit=501", admin, "GET", "/devices?limit=501", nil, nil, 400, "invalid_query", "limit"},
			{"offset=-1", admin, "GET", "/locations?offset=-1", nil, nil, 400, "invalid_query", "offset"},
			{"audit from=yesterday", admin, "GET", "/audit?from=yesterday", nil, nil, 400, "invalid_query", "from"},
			{"unknown device", admin, "GET", "/devices/nope", nil, nil, 404, "not_found", ""},
			{"delete unknown user", admin, "DELETE", "/users/nope", nil, nil, 404, "not_found", ""},
			{"config for foreign location", admin, "GET", "/devices/" + aliceDev.ID + "/config?location=nope", nil, nil, 404, "not_found", ""},
			{"unknown endpoint", admin, "GET", "/nope", nil, nil, 404, "not_found", ""},
			{"revoke unknown token", ac, "DELETE", "/me/tokens/nope", nil, nil, 404, "not_found", ""},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				before := f.snapshot()
				r, err := tc.c.try(tc.method, v1+tc.path, tc.body, tc.opts...)
				if err != nil {
					t.Fatalf("%s %s: %v", tc.method, tc.path, err)
				}
				expectError(t, r, tc.status, tc.code, tc.field)
				assertUnchanged(t, before, f.snapshot())
			})
		}

		// After all that the world is as it was set up.
		if got := f.device(aliceDev.ID); got.Name != "laptop" || got.PublicKey != aliceKey || len(got.Addresses) != 3 {
			t.Errorf("alice's device changed: %+v", got)
		}
		admin.mustDo(http.StatusOK, "GET", v1+"/me", nil)
		mc.mustDo(http.StatusOK, "GET", v1+"/me", nil)
		if n := f.count(`SELECT COUNT(*) FROM locations`); n != 2 {
			t.Errorf("%d locations, want 2", n)
		}
		// The media type check is not stricter than it should be.
		admin.mustDo(http.StatusCreated, "POST", v1+"/groups", `{"name":"ops"}`, header("Content-Type", "application/json; charset=utf-8"))
		// Mallory sees only the location open to everyone.
		var locs struct {
			Items []vpn.Location `json:"items"`
			Total int            `json:"total"`
		}
		mc.mustDo(http.StatusOK, "GET", v1+"/locations", nil).decode(t, &locs)
		if locs.Total != 1 || len(locs.Items) != 1 || locs.Items[0].ID != loc.ID {
			t.Errorf("mallory lists locations %+v, want only %s", locs, loc.Name)
		}
	})
}

// alwaysURLUnsafeKey returns a public key whose base64 holds '+' or '/', so
// that its URL-safe spelling differs from the standard one.
func alwaysURLUnsafeKey(t *testing.T) string {
	for {
		k := newPublicKey(t)
		if strings.ContainsAny(k, "+/") {
			return k
		}
	}
}

func groupID(t *testing.T, f *fixture, name string) string {
	t.Helper()
	var list struct {
		Items []identity.Group `json:"items"`
	}
	f.admin.mustDo(http.StatusOK, "GET", v1+"/groups", nil).decode(t, &list)
	for _, g := range list.Items {
		if g.Name == name {
			return g.ID
		}
	}
	t.Fatalf("no group %q in %+v", name, list.Items)
	return ""
}

// TestDeviceCreationAtomicWhenOneLocationIsFull: a device is admitted to two
// locations and the second has no free address. The request fails and
// leaves neither the device nor an address in the first location.
func TestDeviceCreationAtomicWhenOneLocationIsFull(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		// Addresses are allocated in location id order (ids are time
		// ordered), so the roomy location is filled first and the full one
		// fails second: the roomy one's address must be rolled back.
		roomy := f.createLocation(map[string]any{"name": "roomy", "addresses": []string{"10.30.0.0/24", "fd00:30::/64"}, "endpoint": "roomy.example.com"})
		tiny := f.createLocation(map[string]any{"name": "tiny", "addresses": []string{"10.31.0.0/30"}, "endpoint": "tiny.example.com"})
		if roomy.ID >= tiny.ID {
			t.Fatalf("location ids not time ordered: %s >= %s", roomy.ID, tiny.ID)
		}
		first := f.createDevice(f.admin, map[string]any{"name": "first", "public_key": newPublicKey(t)})
		want := []vpn.DeviceAddress{{LocationID: roomy.ID, Address: "10.30.0.2"}, {LocationID: roomy.ID, Address: "fd00:30::2"}, {LocationID: tiny.ID, Address: "10.31.0.2"}}
		slices.SortFunc(want, func(a, b vpn.DeviceAddress) int {
			return strings.Compare(a.LocationID+a.Address, b.LocationID+b.Address)
		})
		got := slices.Clone(first.Addresses)
		slices.SortFunc(got, func(a, b vpn.DeviceAddress) int {
			return strings.Compare(a.LocationID+a.Address, b.LocationID+b.Address)
		})
		if !slices.Equal(got, want) {
			t.Fatalf("first device addresses %v, want %v", got, want)
		}

		before := f.snapshot()
		key := newPublicKey(t)
		r := f.admin.do("POST", v1+"/devices", map[string]any{"name": "second", "public_key": key})
		expectError(t, r, http.StatusConflict, "address_pool_exhausted", "")
		assertUnchanged(t, before, f.snapshot())
		if n := f.count(`SELECT COUNT(*) FROM devices WHERE public_key = $1 OR name = 'second'`, key); n != 0 {
			t.Fatalf("%d rows of the failed device", n)
		}
		if n := f.count(`SELECT COUNT(*) FROM device_addresses WHERE location_id = $1`, roomy.ID); n != 2 {
			t.Fatalf("%d addresses in the roomy location, want the first device's 2", n)
		}
		if rev := f.location(roomy.ID).Revision; rev != roomy.Revision+1 {
			t.Fatalf("roomy revision %d, want %d (only the first device)", rev, roomy.Revision+1)
		}
		var list struct {
			Total int `json:"total"`
		}
		f.admin.mustDo(http.StatusOK, "GET", v1+"/devices?location_id="+roomy.ID, nil).decode(t, &list)
		if list.Total != 1 {
			t.Fatalf("API lists %d devices in roomy, want 1", list.Total)
		}

		// Once the tiny location is gone the same request succeeds, with
		// the address the failed attempt would have taken.
		f.admin.mustDo(http.StatusNoContent, "DELETE", v1+"/locations/"+tiny.ID, nil)
		second := f.createDevice(f.admin, map[string]any{"name": "second", "public_key": key})
		if !slices.Equal(second.Addresses, []vpn.DeviceAddress{{LocationID: roomy.ID, Address: "10.30.0.3"}, {LocationID: roomy.ID, Address: "fd00:30::3"}}) {
			t.Fatalf("second device addresses %v", second.Addresses)
		}
	})
}

// TestLockout: failed logins are counted in the database, so the lock holds
// on every replica; the administrative password reset lifts it.
func TestLockout(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		bob := f.createUser("bob")
		_, replicaTS, _ := f.replica()
		primary, second := f.anon(), newClient(t, replicaTS.URL)
		login := func(c *client, password string) *response {
			t.Helper()
			return c.do("POST", v1+"/auth/login", map[string]string{"username": "bob", "password": password})
		}
		// The default threshold is 5; failures alternate between the two
		// replicas and still add up.
		for i := 1; i <= 4; i++ {
			c := primary
			if i%2 == 0 {
				c = second
			}
			expectError(t, login(c, "wrong-password-"+strconv.Itoa(i)), http.StatusUnauthorized, "invalid_credentials", "")
		}
		if n := f.count(`SELECT failures FROM login_attempts WHERE login_key = $1`, bob.ID); n != 4 {
			t.Fatalf("stored failures %d, want 4", n)
		}
		// The fifth failure crosses the threshold and reports the lock.
		r := login(primary, "wrong-password-5")
		expectError(t, r, http.StatusTooManyRequests, "account_locked", "")
		checkRetryAfter(t, r, core.DefaultSettings().LockoutDurationSeconds)
		if locked := f.count(`SELECT COUNT(*) FROM login_attempts WHERE login_key = $1 AND locked_until > $2`, bob.ID, store.Now()); locked != 1 {
			t.Fatalf("no lock stored in the database")
		}

		// The sixth attempt, with the right password, is refused on both
		// replicas.
		for _, c := range []*client{primary, second} {
			r := login(c, userPassword)
			expectError(t, r, http.StatusTooManyRequests, "account_locked", "")
			checkRetryAfter(t, r, core.DefaultSettings().LockoutDurationSeconds)
			if r.Header.Get("Set-Cookie") != "" {
				t.Fatalf("a locked login set a cookie: %s", r.Header.Get("Set-Cookie"))
			}
		}
		if n := f.count(`SELECT COUNT(*) FROM sessions WHERE user_id = $1`, bob.ID); n != 0 {
			t.Fatalf("locked account got %d sessions", n)
		}
		// The lock is per account: the admin still logs in.
		loginAt(t, replicaTS.URL, "admin", adminPassword)

		// The admin CLI's password reset clears the lock.
		if err := f.ident.SetPasswordDirect(f.ctx, "bob", "Fresh-password-2"); err != nil {
			t.Fatal(err)
		}
		if n := f.count(`SELECT COUNT(*) FROM login_attempts WHERE login_key = $1`, bob.ID); n != 0 {
			t.Fatalf("lock row survives the reset")
		}
		expectError(t, login(second, userPassword), http.StatusUnauthorized, "invalid_credentials", "")
		bc := loginAt(t, replicaTS.URL, "bob", "Fresh-password-2")
		bc.mustDo(http.StatusOK, "GET", v1+"/me", nil)
		// A successful login resets the count of failures.
		if n := f.count(`SELECT COUNT(*) FROM login_attempts WHERE login_key = $1`, bob.ID); n != 0 {
			t.Fatalf("failure count survives a successful login")
		}

		// Unknown logins are counted too, so probing names gets locked.
		for i := 1; i <= 4; i++ {
			expectError(t, primary.do("POST", v1+"/auth/login", map[string]string{"username": "ghost", "password": "x"}), http.StatusUnauthorized, "invalid_credentials", "")
		}
		expectError(t, second.do("POST", v1+"/auth/login", map[string]string{"username": "ghost", "password": "x"}), http.StatusTooManyRequests, "account_locked", "")

		// A lower threshold from the settings applies on the other replica.
		f.admin.mustDo(http.StatusOK, "PATCH", v1+"/settings", map[string]any{"lockout_threshold": 2})
		f.createUser("carol")
		expectError(t, second.do("POST", v1+"/auth/login", map[string]string{"username": "carol", "password": "nope"}), http.StatusUnauthorized, "invalid_credentials", "")
		expectError(t, primary.do("POST", v1+"/auth/login", map[string]string{"username": "carol", "password": "nope"}), http.StatusTooManyRequests, "account_locked", "")
		// A lock whose time has passed lets the right password in again.
		expectError(t, primary.do("POST", v1+"/auth/login", map[string]string{"username": "carol", "password": userPassword}), http.StatusTooManyRequests, "account_locked", "")
		if _, err := db.ExecContext(f.ctx, `UPDATE login_attempts SET locked_until = $1`, store.Now()-1); err != nil {
			t.Fatal(err)
		}
		loginAt(t, replicaTS.URL, "carol", userPassword)
	})
}

func checkRetryAfter(t *testing.T, r *response, maxSeconds int) {
	t.Helper()
	ra := r.Header.Get("Retry-After")
	n, err := strconv.Atoi(ra)
	if err != nil || n < 1 || n > maxSeconds+1 {
		t.Fatalf("Retry-After %q, want 1..%d seconds", ra, maxSeconds+1)
	}
}

// TestAPITokens: a token is shown once, listed by prefix, works without
// CSRF, and stops working when revoked or when its user is disabled.
func TestAPITokens(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		alice := f.createUser("alice")
		ac := f.login("alice", userPassword)

		var tok identity.APIToken
		r := ac.mustDo(http.StatusCreated, "POST", v1+"/me/tokens", map[string]any{"name": "ci", "expires_in_days": 30})
		r.decode(t, &tok)
		if !strings.HasPrefix(tok.Token, "ward_") || tok.Prefix == "" || !strings.HasPrefix(tok.Token, tok.Prefix) || len(tok.Prefix) >= len(tok.Token) {
			t.Fatalf("token %q with prefix %q", tok.Token, tok.Prefix)
		}
		if tok.ExpiresAt <= store.Now() {
			t.Fatalf("expires_at %d is not in the future", tok.ExpiresAt)
		}
		if n := f.count(`SELECT COUNT(*) FROM api_tokens WHERE token_hash = $1 OR token_hash LIKE $2`, tok.Token, "%"+tok.Token[5:]+"%"); n != 0 {
			t.Fatalf("the token is stored in clear")
		}
		expectError(t, ac.do("POST", v1+"/me/tokens", map[string]any{"name": "ci"}), http.StatusConflict, "duplicate_name", "name")
		expectError(t, ac.do("POST", v1+"/me/tokens", map[string]any{"name": ""}), http.StatusBadRequest, "invalid_name", "name")
		expectError(t, ac.do("POST", v1+"/me/tokens", map[string]any{"name": "x", "expires_in_days": -1}), http.StatusBadRequest, "invalid_value", "expires_in_days")

		list := ac.mustDo(http.StatusOK, "GET", v1+"/me/tokens", nil)
		if strings.Contains(string(list.Body), tok.Token) || strings.Contains(string(list.Body), `"token"`) {
			t.Fatalf("token list shows the secret: %s", list.Body)
		}
		var tokens struct {
			Items []identity.APIToken `json:"items"`
		}
		list.decode(t, &tokens)
		if len(tokens.Items) != 1 || tokens.Items[0].ID != tok.ID || tokens.Items[0].Prefix != tok.Prefix || tokens.Items[0].Name != "ci" {
			t.Fatalf("token list: %s", list.Body)
		}
		// The admin's list does not show alice's token.
		var adminTokens struct {
			Items []identity.APIToken `json:"items"`
		}
		f.admin.mustDo(http.StatusOK, "GET", v1+"/me/tokens", nil).decode(t, &adminTokens)
		if len(adminTokens.Items) != 0 {
			t.Fatalf("admin sees tokens %+v", adminTokens.Items)
		}
		expectError(t, f.admin.do("DELETE", v1+"/me/tokens/"+tok.ID, nil), http.StatusNotFound, "not_found", "")

		// Bearer works for reads and writes without any CSRF header.
		bearer := f.anon().withBearer(tok.Token)
		var me struct {
			identity.User
			CSRFToken string `json:"csrf_token"`
		}
		bearer.mustDo(http.StatusOK, "GET", v1+"/me", nil).decode(t, &me)
		if me.ID != alice.ID || me.CSRFToken != "" {
			t.Fatalf("me over bearer: %+v", me)
		}
		loc := f.createLocation(map[string]any{"name": "office", "addresses": []string{"10.10.0.0/24"}, "endpoint": "vpn.example.com"})
		dev := f.createDevice(bearer, map[string]any{"name": "ci-runner", "public_key": newPublicKey(t)})
		if dev.UserID != alice.ID || len(dev.Addresses) != 1 || dev.Addresses[0].LocationID != loc.ID {
			t.Fatalf("device over bearer: %+v", dev)
		}
		bearer.mustDo(http.StatusOK, "PATCH", v1+"/devices/"+dev.ID, map[string]any{"description": "runner"})
		// A bearer token carries its user's rights, not more.
		expectError(t, bearer.do("POST", v1+"/groups", map[string]any{"name": "ops"}), http.StatusForbidden, "forbidden", "")
		var audit struct {
			Items []core.AuditEntry `json:"items"`
		}
		f.admin.mustDo(http.StatusOK, "GET", v1+"/audit?action=device.create&target_id="+dev.ID, nil).decode(t, &audit)
		if len(audit.Items) != 1 || audit.Items[0].ActorID != alice.ID {
			t.Fatalf("audit of the bearer's change: %+v", audit.Items)
		}
		if n := f.count(`SELECT COUNT(*) FROM api_tokens WHERE id = $1 AND last_used_at > 0`, tok.ID); n != 1 {
			t.Fatalf("last_used_at not recorded")
		}

		// A disabled user's token stops working at once.
		f.admin.mustDo(http.StatusOK, "PATCH", v1+"/users/"+alice.ID, map[string]any{"active": false})
		expectError(t, bearer.do("GET", v1+"/me", nil), http.StatusUnauthorized, "unauthenticated", "")
		expectError(t, bearer.do("DELETE", v1+"/devices/"+dev.ID, nil), http.StatusUnauthorized, "unauthenticated", "")
		expectError(t, ac.do("GET", v1+"/me", nil), http.StatusUnauthorized, "unauthenticated", "")
		f.admin.mustDo(http.StatusOK, "PATCH", v1+"/users/"+alice.ID, map[string]any{"active": true})

		// Revoked: 401 from then on, on this and any other replica.
		ac = f.login("alice", userPassword)
		bearer.mustDo(http.StatusOK, "GET", v1+"/me", nil)
		ac.mustDo(http.StatusNoContent, "DELETE", v1+"/me/tokens/"+tok.ID, nil)
		expectError(t, bearer.do("GET", v1+"/me", nil), http.StatusUnauthorized, "unauthenticated", "")
		expectError(t, bearer.do("POST", v1+"/devices", map[string]any{"name": "late", "public_key": newPublicKey(t)}), http.StatusUnauthorized, "unauthenticated", "")
		_, replicaTS, _ := f.replica()
		expectError(t, newClient(t, replicaTS.URL).withBearer(tok.Token).do("GET", v1+"/me", nil), http.StatusUnauthorized, "unauthenticated", "")
		expectError(t, ac.do("DELETE", v1+"/me/tokens/"+tok.ID, nil), http.StatusNotFound, "not_found", "")
		if n := f.count(`SELECT COUNT(*) FROM devices WHERE name = 'late'`); n != 0 {
			t.Fatalf("revoked token created a device")
		}

		// A token issued on one replica works on another.
		var tok2 identity.APIToken
		ac.mustDo(http.StatusCreated, "POST", v1+"/me/tokens", map[string]any{"name": "ci"}).decode(t, &tok2)
		if tok2.ExpiresAt != 0 {
			t.Fatalf("token without expiry has expires_at %d", tok2.ExpiresAt)
		}
		newClient(t, replicaTS.URL).withBearer(tok2.Token).mustDo(http.StatusOK, "GET", v1+"/me", nil)
		// Deleting the user removes the token with it.
		f.admin.mustDo(http.StatusNoContent, "DELETE", v1+"/users/"+alice.ID, nil)
		expectError(t, f.anon().withBearer(tok2.Token).do("GET", v1+"/me", nil), http.StatusUnauthorized, "unauthenticated", "")
	})
}

// TestSettings: instance settings gate device self-service and reject
// out-of-range values.
func TestSettings(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		alice := f.createUser("alice")
		f.createLocation(map[string]any{"name": "office", "addresses": []string{"10.10.0.0/24"}, "endpoint": "vpn.example.com"})
		ac := f.login("alice", userPassword)
		own := f.createDevice(ac, map[string]any{"name": "laptop", "public_key": newPublicKey(t)})

		var st core.Settings
		f.admin.mustDo(http.StatusOK, "GET", v1+"/settings", nil).decode(t, &st)
		if st != core.DefaultSettings() {
			t.Fatalf("settings %+v, want defaults %+v", st, core.DefaultSettings())
		}
		f.admin.mustDo(http.StatusOK, "PATCH", v1+"/settings", map[string]any{"users_can_manage_devices": false}).decode(t, &st)
		if st.UsersCanManageDevices {
			t.Fatalf("PATCH answered %+v", st)
		}

		before := f.snapshot()
		expectError(t, ac.do("POST", v1+"/devices", map[string]any{"name": "phone", "public_key": newPublicKey(t)}), http.StatusForbidden, "forbidden", "")
		expectError(t, ac.do("PATCH", v1+"/devices/"+own.ID, map[string]any{"name": "renamed"}), http.StatusForbidden, "forbidden", "")
		expectError(t, ac.do("DELETE", v1+"/devices/"+own.ID, nil), http.StatusForbidden, "forbidden", "")
		assertUnchanged(t, before, f.snapshot())
		// Reading stays allowed.
		ac.mustDo(http.StatusOK, "GET", v1+"/devices/"+own.ID, nil)
		ac.mustDo(http.StatusOK, "GET", v1+"/devices/"+own.ID+"/config", nil)
		// The admin still manages alice's devices.
		phone := f.createDevice(f.admin, map[string]any{"name": "phone", "public_key": newPublicKey(t), "user_id": alice.ID})
		if phone.UserID != alice.ID || len(phone.Addresses) != 1 {
			t.Fatalf("admin-created device: %+v", phone)
		}
		f.admin.mustDo(http.StatusOK, "PATCH", v1+"/devices/"+phone.ID, map[string]any{"name": "work phone"})
		// Another replica honours the setting too.
		_, replicaTS, _ := f.replica()
		expectError(t, loginAt(t, replicaTS.URL, "alice", userPassword).do("POST", v1+"/devices", map[string]any{"name": "tablet", "public_key": newPublicKey(t)}),
			http.StatusForbidden, "forbidden", "")

		f.admin.mustDo(http.StatusOK, "PATCH", v1+"/settings", map[string]any{"users_can_manage_devices": true})
		f.createDevice(ac, map[string]any{"name": "tablet", "public_key": newPublicKey(t)})
		ac.mustDo(http.StatusNoContent, "DELETE", v1+"/devices/"+phone.ID, nil)

		var audit struct {
			Total int `json:"total"`
		}
		f.admin.mustDo(http.StatusOK, "GET", v1+"/audit?action=settings.update", nil).decode(t, &audit)
		if audit.Total != 2 {
			t.Fatalf("%d settings.update audit entries, want 2", audit.Total)
		}

		for _, tc := range []struct {
			name  string
			body  any
			code  string
			field string
		}{
			{"threshold 0", map[string]any{"lockout_threshold": 0}, "invalid_value", "lockout_threshold"},
			{"negative window", map[string]any{"lockout_window_seconds": -5}, "invalid_value", "lockout_window_seconds"},
			{"zero lock duration", map[string]any{"lockout_duration_seconds": 0}, "invalid_value", "lockout_duration_seconds"},
			{"session of a minute", map[string]any{"session_lifetime_seconds": 60}, "invalid_value", "session_lifetime_seconds"},
			{"password of 7", map[string]any{"min_password_length": 7}, "invalid_value", "min_password_length"},
			{"empty instance name", map[string]any{"instance_name": ""}, "invalid_value", "instance_name"},
			{"long instance name", map[string]any{"instance_name": strings.Repeat("w", 65)}, "invalid_value", "instance_name"},
			{"valid and invalid together", map[string]any{"instance_name": "renamed", "min_password_length": 2}, "invalid_value", "min_password_length"},
			{"string for bool", `{"users_can_manage_devices": "no"}`, "invalid_json", "users_can_manage_devices"},
			{"float for int", `{"lockout_threshold": 2.5}`, "invalid_json", "lockout_threshold"},
			{"unknown setting", map[string]any{"allow_everything": true}, "unknown_field", "allow_everything"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := f.snapshot()
				expectError(t, f.admin.do("PATCH", v1+"/settings", tc.body), http.StatusBadRequest, tc.code, tc.field)
				assertUnchanged(t, before, f.snapshot())
			})
		}
		var after core.Settings
		f.admin.mustDo(http.StatusOK, "GET", v1+"/settings", nil).decode(t, &after)
		if after != core.DefaultSettings() {
			t.Fatalf("settings after rejected patches %+v, want defaults", after)
		}
		// The minimum password length applies to new passwords at once.
		f.admin.mustDo(http.StatusOK, "PATCH", v1+"/settings", map[string]any{"min_password_length": 20})
		expectError(t, f.admin.do("POST", v1+"/users", map[string]any{"username": "bob", "email": "bob@example.com", "password": userPassword}),
			http.StatusBadRequest, "weak_password", "password")
	})
}

// TestLastAdmin: no change may leave the instance without an active
// administrator.
func TestLastAdmin(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		var me identity.User
		f.admin.mustDo(http.StatusOK, "GET", v1+"/me", nil).decode(t, &me)
		adminGroup := groupID(t, f, "admin")
		f.createGroup("staff", "admin")
		// An inactive member of the admin group does not count.
		f.admin.mustDo(http.StatusCreated, "POST", v1+"/users", map[string]any{"username": "sleeper", "email": "sleeper@example.com", "groups": []string{"admin"}, "active": false})

		cases := []struct {
			name         string
			method, path string
			body         any
		}{
			{"deactivate the only admin", "PATCH", "/users/" + me.ID, map[string]any{"active": false}},
			{"delete the only admin", "DELETE", "/users/" + me.ID, nil},
			{"remove the only admin from the admin group", "PATCH", "/users/" + me.ID, map[string]any{"groups": []string{"staff"}}},
			{"clear the admin group", "PATCH", "/groups/" + adminGroup, map[string]any{"members": []string{"sleeper"}}},
			{"demote the admin group", "PATCH", "/groups/" + adminGroup, map[string]any{"is_admin": false}},
			{"delete the admin group", "DELETE", "/groups/" + adminGroup, nil},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				before := f.snapshot()
				expectError(t, f.admin.do(tc.method, v1+tc.path, tc.body), http.StatusConflict, "last_admin", "")
				assertUnchanged(t, before, f.snapshot())
				// The session survived: deactivation deletes sessions in the
				// same, rolled back, transaction.
				var u identity.User
				f.admin.mustDo(http.StatusOK, "GET", v1+"/me", nil).decode(t, &u)
				if !u.Active || !u.IsAdmin || !slices.Contains(u.Groups, "admin") {
					t.Fatalf("admin after refused change: %+v", u)
				}
			})
		}

		// With a second active admin the same changes are allowed.
		var second identity.User
		f.admin.mustDo(http.StatusCreated, "POST", v1+"/users", map[string]any{"username": "root2", "email": "root2@example.com", "password": userPassword, "groups": []string{"admin"}}).decode(t, &second)
		if !second.IsAdmin {
			t.Fatalf("root2 is not an admin: %+v", second)
		}
		r2 := f.login("root2", userPassword)
		r2.mustDo(http.StatusOK, "PATCH", v1+"/users/"+me.ID, map[string]any{"active": false})
		expectError(t, f.admin.do("GET", v1+"/me", nil), http.StatusUnauthorized, "unauthenticated", "")
		// root2 is now the last one and cannot remove themselves.
		expectError(t, r2.do("DELETE", v1+"/users/"+second.ID, nil), http.StatusConflict, "last_admin", "")
		expectError(t, r2.do("PATCH", v1+"/users/"+second.ID, map[string]any{"groups": []string{}}), http.StatusConflict, "last_admin", "")
		r2.mustDo(http.StatusOK, "GET", v1+"/me", nil)
		// Deleting the deactivated admin is fine.
		r2.mustDo(http.StatusNoContent, "DELETE", v1+"/users/"+me.ID, nil)
		if n := f.count(`SELECT COUNT(*) FROM users WHERE username = 'admin'`); n != 0 {
			t.Fatalf("admin still exists")
		}
	})
}

// TestRevision: a location's revision moves, by exactly one per request, with
// every change its gateways must apply, and only then.
func TestRevision(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		admin := f.admin
		vpnUsers := f.createGroup("vpn-users")
		alice := f.createUser("alice")
		bob := f.createUser("bob", "vpn-users")
		open := f.createLocation(map[string]any{"name": "open", "addresses": []string{"10.40.0.0/24"}, "endpoint": "open.example.com"})
		closed := f.createLocation(map[string]any{"name": "closed", "addresses": []string{"10.41.0.0/24", "fd00:41::/64"}, "endpoint": "closed.example.com",
			"allowed_groups": []string{"vpn-users"}})
		if closed.AllGroups || !slices.Equal(closed.AllowedGroups, []string{"vpn-users"}) {
			t.Fatalf("restricted location: %+v", closed)
		}

		revs := func() (int64, int64) {
			t.Helper()
			o, c := f.location(open.ID), f.location(closed.ID)
			// Every revision has its change row, so gateways can replay.
			for _, l := range []vpn.Location{o, c} {
				if n := f.count(`SELECT COUNT(*) FROM location_changes WHERE location_id = $1`, l.ID); int64(n) != l.Revision {
					t.Fatalf("location %s: revision %d but %d change rows", l.Name, l.Revision, n)
				}
				if n := f.count(`SELECT MAX(revision) FROM location_changes WHERE location_id = $1`, l.ID); int64(n) != l.Revision {
					t.Fatalf("location %s: revision %d but newest change %d", l.Name, l.Revision, n)
				}
			}
			return o.Revision, c.Revision
		}
		inClosed := func(deviceID string) bool {
			t.Helper()
			for _, a := range f.device(deviceID).Addresses {
				if a.LocationID == closed.ID {
					return true
				}
			}
			return false
		}

		var aliceDev createdDevice
		const in, out, gone = "in", "out", ""
		steps := []struct {
			name           string
			do             func()
			dOpen, dClosed int64
			alice          string // alice's device in the restricted location afterwards
		}{
			{"alice adds a device", func() {
				aliceDev = f.createDevice(admin, map[string]any{"name": "laptop", "public_key": newPublicKey(t), "user_id": alice.ID})
			}, 1, 0, out},
			{"bob adds a device", func() {
				d := f.createDevice(admin, map[string]any{"name": "laptop", "public_key": newPublicKey(t), "user_id": bob.ID})
				if len(d.Addresses) != 3 {
					t.Errorf("bob's device should be in both locations: %v", d.Addresses)
				}
			}, 1, 1, out},
			{"gateway registered", func() {
				admin.mustDo(http.StatusCreated, "POST", v1+"/locations/"+open.ID+"/gateways", map[string]any{"name": "gw1", "control_address": "10.0.0.1:7000"})
				admin.mustDo(http.StatusCreated, "POST", v1+"/locations/"+closed.ID+"/gateways", map[string]any{"name": "gw1", "control_address": "10.0.1.1:7000"})
			}, 0, 0, out},
			{"proxy registered", func() {
				admin.mustDo(http.StatusCreated, "POST", v1+"/proxies", map[string]any{"name": "px1", "control_address": "10.0.2.1:7001"})
			}, 0, 0, out},
			{"device renamed", func() {
				admin.mustDo(http.StatusOK, "PATCH", v1+"/devices/"+aliceDev.ID, map[string]any{"name": "old laptop", "description": "spare"})
			}, 0, 0, out},
			{"device key changed", func() {
				admin.mustDo(http.StatusOK, "PATCH", v1+"/devices/"+aliceDev.ID, map[string]any{"public_key": newPublicKey(t)})
			}, 1, 0, out},
			{"same key again", func() {
				admin.mustDo(http.StatusOK, "PATCH", v1+"/devices/"+aliceDev.ID, map[string]any{"public_key": f.device(aliceDev.ID).PublicKey})
			}, 0, 0, out},
			{"alice joins the group via her user", func() {
				admin.mustDo(http.StatusOK, "PATCH", v1+"/users/"+alice.ID, map[string]any{"groups": []string{"vpn-users"}})
			}, 0, 1, in},
			{"alice removed via the group's members", func() {
				admin.mustDo(http.StatusOK, "PATCH", v1+"/groups/"+vpnUsers.ID, map[string]any{"members": []string{"bob"}})
			}, 0, 1, out},
			{"alice added via the group's members", func() {
				admin.mustDo(http.StatusOK, "PATCH", v1+"/groups/"+vpnUsers.ID, map[string]any{"members": []string{"alice", "bob"}})
			}, 0, 1, in},
			{"group membership unchanged", func() {
				admin.mustDo(http.StatusOK, "PATCH", v1+"/groups/"+vpnUsers.ID, map[string]any{"members": []string{"bob", "alice"}})
			}, 0, 0, in},
			{"alice's profile edited", func() {
				admin.mustDo(http.StatusOK, "PATCH", v1+"/users/"+alice.ID, map[string]any{"first_name": "Alice"})
			}, 0, 0, in},
			{"alice deactivated", func() {
				admin.mustDo(http.StatusOK, "PATCH", v1+"/users/"+alice.ID, map[string]any{"active": false})
			}, 1, 1, in},
			{"alice reactivated", func() {
				admin.mustDo(http.StatusOK, "PATCH", v1+"/users/"+alice.ID, map[string]any{"active": true})
			}, 1, 1, in},
			{"alice's device deleted", func() {
				admin.mustDo(http.StatusNoContent, "DELETE", v1+"/devices/"+aliceDev.ID, nil)
			}, 1, 1, gone},
			{"bob deleted with his device", func() {
				admin.mustDo(http.StatusNoContent, "DELETE", v1+"/users/"+bob.ID, nil)
			}, 1, 1, gone},
			{"failed device creation", func() {
				expectError(t, admin.do("POST", v1+"/devices", map[string]any{"name": "x", "public_key": "bad"}), http.StatusBadRequest, "invalid_public_key", "public_key")
			}, 0, 0, gone},
		}
		o, c := revs()
		if o != 1 || c != 1 {
			t.Fatalf("new locations at revisions %d and %d, want 1", o, c)
		}
		for _, st := range steps {
			st.do()
			no, nc := revs()
			if no-o != st.dOpen || nc-c != st.dClosed {
				t.Errorf("%s: open %d->%d (want +%d), closed %d->%d (want +%d)", st.name, o, no, st.dOpen, c, nc, st.dClosed)
			}
			o, c = no, nc
			if st.alice != gone {
				if got := inClosed(aliceDev.ID); got != (st.alice == in) {
					t.Errorf("%s: alice's device in the restricted location = %v, want %s", st.name, got, st.alice)
				}
			}
		}
		if n := f.count(`SELECT COUNT(*) FROM device_addresses`); n != 0 {
			t.Errorf("%d addresses left after every device is gone", n)
		}
		// Every bump happened in the request that caused it, so the change
		// log names the kinds in order.
		rows, err := db.QueryContext(f.ctx, `SELECT kind FROM location_changes WHERE location_id = $1 ORDER BY revision`, open.ID)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var kinds []string
		for rows.Next() {
			var k string
			if err := rows.Scan(&k); err != nil {
				t.Fatal(err)
			}
			kinds = append(kinds, k)
		}
		wantKinds := []string{"location.create", "peer.add", "peer.add", "peer.update", "peers.user", "peers.user", "peer.remove", "peers.user"}
		if !slices.Equal(kinds, wantKinds) {
			t.Errorf("open location changes %v, want %v", kinds, wantKinds)
		}
	})
}

// cookieValue returns the session cookie a client holds.
func cookieValue(t *testing.T, c *client, base string) string {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	for _, ck := range c.hc.Jar.Cookies(u) {
		if ck.Name == api.SessionCookie {
			return ck.Value
		}
	}
	t.Fatalf("no %s cookie", api.SessionCookie)
	return ""
}
