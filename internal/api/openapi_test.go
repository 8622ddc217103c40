package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/enroll"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/mfa"
	"github.com/wardvpn/ward/internal/core/stats"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/core/webauthn"
	"github.com/wardvpn/ward/internal/core/webauthn/webauthntest"
	"github.com/wardvpn/ward/internal/lease"
	"github.com/wardvpn/ward/internal/mail/mailtest"
	"github.com/wardvpn/ward/internal/store"
)

// The tests in this file keep openapi.json true to the code: the routes, the
// request bodies, the response schemas and the statuses a live server
// answers with.

var oapiHTTPMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// oapiInputTypes names the Go type each route's handler decodes its JSON
// body into. A route that gains a body must be added here and documented.
var oapiInputTypes = map[string]reflect.Type{
	"POST /api/v1/auth/login":                     reflect.TypeFor[loginRequest](),
	"POST /api/v1/auth/mfa":                       reflect.TypeFor[codeRequest](),
	"POST /api/v1/me/password":                    reflect.TypeFor[passwordChange](),
	"POST /api/v1/me/tokens":                      reflect.TypeFor[identity.NewAPIToken](),
	"POST /api/v1/users":                          reflect.TypeFor[identity.NewUser](),
	"PATCH /api/v1/users/{id}":                    reflect.TypeFor[identity.UserPatch](),
	"POST /api/v1/groups":                         reflect.TypeFor[identity.NewGroup](),
	"PATCH /api/v1/groups/{id}":                   reflect.TypeFor[identity.GroupPatch](),
	"POST /api/v1/devices":                        reflect.TypeFor[vpn.NewDevice](),
	"PATCH /api/v1/devices/{id}":                  reflect.TypeFor[vpn.DevicePatch](),
	"POST /api/v1/locations":                      reflect.TypeFor[vpn.LocationInput](),
	"PATCH /api/v1/locations/{id}":                reflect.TypeFor[vpn.LocationInput](),
	"POST /api/v1/locations/{id}/gateways":        reflect.TypeFor[vpn.ComponentInput](),
	"PATCH /api/v1/locations/{id}/gateways/{gid}": reflect.TypeFor[vpn.ComponentInput](),
	"POST /api/v1/proxies":                        reflect.TypeFor[vpn.ComponentInput](),
	"PATCH /api/v1/proxies/{id}":                  reflect.TypeFor[vpn.ComponentInput](),
	"PATCH /api/v1/settings":                      reflect.TypeFor[core.SettingsPatch](),
	"POST /api/v1/settings/test-mail":             reflect.TypeFor[testMailRequest](),
	"POST /api/v1/users/{id}/enrollment":          reflect.TypeFor[enroll.StartInput](),
	"POST /api/v1/me/totp/confirm":                reflect.TypeFor[codeRequest](),
	"DELETE /api/v1/me/totp":                      reflect.TypeFor[codeRequest](),
	"POST /api/v1/me/recovery-codes":              reflect.TypeFor[codeRequest](),
	"POST /api/v1/me/webauthn/register/finish":    reflect.TypeFor[webauthnRegisterFinish](),
	"PATCH /api/v1/me/webauthn/credentials/{id}":  reflect.TypeFor[webauthnRename](),
	"POST /api/v1/auth/webauthn/finish":           reflect.TypeFor[webauthnLoginFinish](),
}

// oapiOutputTypes maps a schema (a JSON pointer into the document) to the Go
// type the server encodes for it.
var oapiOutputTypes = map[string]reflect.Type{
	"#/components/schemas/Error":                             reflect.TypeFor[errorBody](),
	"#/components/schemas/Error/properties/error":            reflect.TypeFor[errorDetail](),
	"#/components/schemas/LoginResponse":                     reflect.TypeFor[loginResponse](),
	"#/components/schemas/User":                              reflect.TypeFor[identity.User](),
	"#/components/schemas/Me":                                reflect.TypeFor[meResponse](),
	"#/components/schemas/Group":                             reflect.TypeFor[identity.Group](),
	"#/components/schemas/APIToken":                          reflect.TypeFor[identity.APIToken](),
	"#/components/schemas/Device":                            reflect.TypeFor[vpn.Device](),
	"#/components/schemas/DeviceAddress":                     reflect.TypeFor[vpn.DeviceAddress](),
	"#/components/schemas/CreatedDevice":                     reflect.TypeFor[createdDeviceResponse](),
	"#/components/schemas/Location":                          reflect.TypeFor[vpn.Location](),
	"#/components/schemas/Component":                         reflect.TypeFor[vpn.Component](),
	"#/components/schemas/GatewayStatus":                     reflect.TypeFor[vpn.GatewayStatus](),
	"#/components/schemas/GatewayLink":                       reflect.TypeFor[vpn.GatewayLink](),
	"#/components/schemas/JoinToken":                         reflect.TypeFor[vpn.JoinToken](),
	"#/components/schemas/CreatedGateway":                    reflect.TypeFor[vpn.CreatedGateway](),
	"#/components/schemas/TrafficTotals":                     reflect.TypeFor[stats.Totals](),
	"#/components/schemas/TrafficPoint":                      reflect.TypeFor[stats.Point](),
	"#/components/schemas/DeviceUsage":                       reflect.TypeFor[stats.DeviceUsage](),
	"#/components/schemas/GatewayUsage":                      reflect.TypeFor[stats.GatewayUsage](),
	"#/components/schemas/LocationStats":                     reflect.TypeFor[stats.LocationStats](),
	"#/components/schemas/DeviceLocationUsage":               reflect.TypeFor[stats.DeviceLocationUsage](),
	"#/components/schemas/DeviceStats":                       reflect.TypeFor[stats.DeviceStats](),
	"#/components/schemas/Settings":                          reflect.TypeFor[core.Settings](),
	"#/components/schemas/AuditEntry":                        reflect.TypeFor[core.AuditEntry](),
	"#/components/schemas/UserPage":                          reflect.TypeFor[page[identity.User]](),
	"#/components/schemas/GroupPage":                         reflect.TypeFor[page[identity.Group]](),
	"#/components/schemas/APITokenPage":                      reflect.TypeFor[page[identity.APIToken]](),
	"#/components/schemas/DevicePage":                        reflect.TypeFor[page[vpn.Device]](),
	"#/components/schemas/LocationPage":                      reflect.TypeFor[page[vpn.Location]](),
	"#/components/schemas/ComponentPage":                     reflect.TypeFor[page[vpn.Component]](),
	"#/components/schemas/AuditPage":                         reflect.TypeFor[page[core.AuditEntry]](),
	"#/components/schemas/Enrollment":                        reflect.TypeFor[enroll.Started](),
	"#/components/schemas/TOTPSetup":                         reflect.TypeFor[mfa.Setup](),
	"#/components/schemas/RecoveryCodes":                     reflect.TypeFor[mfa.RecoveryCodes](),
	"#/components/schemas/Cluster":                           reflect.TypeFor[lease.Cluster](),
	"#/components/schemas/Cluster/properties/replicas/items": reflect.TypeFor[lease.Replica](),
	"#/components/schemas/Cluster/properties/leases/items":   reflect.TypeFor[lease.LeaseState](),
	"#/components/schemas/WebAuthnCredential":                reflect.TypeFor[webauthn.Credential](),
	"#/components/schemas/WebAuthnCredentialPage":            reflect.TypeFor[page[webauthn.Credential]](),
	"#/components/schemas/WebAuthnRegistrationStart":         reflect.TypeFor[webauthn.RegistrationStart](),
	"#/components/schemas/WebAuthnLoginStart":                reflect.TypeFor[webauthn.LoginStart](),
}

// oapiUntypedSchemas are encoded from maps, so no struct can be compared.
var oapiUntypedSchemas = []string{"Health", "Readiness"}

// oapiOp is one documented operation.
type oapiOp struct {
	method, path string
	pathItem     map[string]any
	op           map[string]any
}

func (o oapiOp) key() string { return strings.ToUpper(o.method) + " " + o.path }

func oapiLoad(t *testing.T) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatalf("openapi.json does not parse: %v", err)
	}
	return doc
}

func oapiOps(t *testing.T, doc map[string]any) []oapiOp {
	t.Helper()
	paths, ok := doc["paths"].(map[string]any)
	if !ok {
		t.Fatal("openapi.json has no paths object")
	}
	var ops []oapiOp
	for p, v := range paths {
		item, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("path %s is not an object", p)
		}
		for _, m := range oapiHTTPMethods {
			if o, ok := item[m].(map[string]any); ok {
				ops = append(ops, oapiOp{method: m, path: p, pathItem: item, op: o})
			}
		}
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].key() < ops[j].key() })
	return ops
}

func oapiNewServer(t *testing.T) (*Server, *identity.Service) {
	t.Helper()
	ctx := t.Context()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "ward.db"), "")
	if err != nil {
		t.Fatalf("open db: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx, nil); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	inst, err := core.EnsureInstance(ctx, db)
	if err != nil {
		t.Fatalf("instance: %v", err)
	}
	vpnSvc := vpn.New(db, nil)
	ident := identity.New(db, inst, identity.PasswordParams{MemoryKiB: 1024, Time: 1, Threads: 1}, vpnSvc, nil)
	wa, err := webauthn.New(db, webauthn.Config{PublicURL: oapiPublicURL})
	if err != nil {
		t.Fatalf("webauthn: %v", err)
	}
	srv := New(db, ident, vpnSvc, Options{WebAuthn: wa})
	srv.mfa.AddSecondFactors(wa)
	ident.SetSecondFactor(srv.mfa)
	return srv, ident
}

// oapiPublicURL is the public URL of the test servers: the WebAuthn
// relying party (the software authenticator plays a browser there).
const oapiPublicURL = "http://localhost:8000"

// oapiJSON encodes a decoded value again (e.g. WebAuthn options for the
// software authenticator).
func oapiJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sessionCookie(t *testing.T, resp *http.Response) string {
	t.Helper()
	for _, ck := range resp.Cookies() {
		if ck.Name == SessionCookie {
			return ck.Name + "=" + ck.Value
		}
	}
	t.Fatal("no session cookie set")
	return ""
}

// oapiResolve follows a local JSON pointer such as #/components/schemas/User.
func oapiResolve(doc map[string]any, ref string) (any, error) {
	ptr, ok := strings.CutPrefix(ref, "#")
	if !ok {
		return nil, fmt.Errorf("not a local reference")
	}
	var cur any = doc
	if ptr == "" {
		return cur, nil
	}
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch c := cur.(type) {
		case map[string]any:
			next, ok := c[tok]
			if !ok {
				return nil, fmt.Errorf("no %q", tok)
			}
			cur = next
		case []any:
			n, err := strconv.Atoi(tok)
			if err != nil || n < 0 || n >= len(c) {
				return nil, fmt.Errorf("no index %q", tok)
			}
			cur = c[n]
		default:
			return nil, fmt.Errorf("cannot descend into %T at %q", cur, tok)
		}
	}
	return cur, nil
}

// oapiDeref follows $ref chains of an object.
func oapiDeref(t *testing.T, doc map[string]any, v any) map[string]any {
	t.Helper()
	for range 16 {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("expected an object, got %T", v)
		}
		ref, ok := m["$ref"].(string)
		if !ok {
			return m
		}
		if v, ok = oapiMustResolve(t, doc, ref); !ok {
			return nil
		}
	}
	t.Fatal("$ref chain too long")
	return nil
}

func oapiMustResolve(t *testing.T, doc map[string]any, ref string) (any, bool) {
	t.Helper()
	v, err := oapiResolve(doc, ref)
	if err != nil {
		t.Errorf("$ref %s does not resolve: %v", ref, err)
		return nil, false
	}
	return v, true
}

// oapiFlatten returns the property names and required names of a schema,
// merging allOf parts.
func oapiFlatten(t *testing.T, doc map[string]any, v any) (props, required []string) {
	t.Helper()
	s := oapiDeref(t, doc, v)
	if s == nil {
		return nil, nil
	}
	if all, ok := s["allOf"].([]any); ok {
		for _, part := range all {
			p, r := oapiFlatten(t, doc, part)
			props, required = append(props, p...), append(required, r...)
		}
	}
	if p, ok := s["properties"].(map[string]any); ok {
		for name := range p {
			props = append(props, name)
		}
	}
	if r, ok := s["required"].([]any); ok {
		for _, name := range r {
			required = append(required, name.(string))
		}
	}
	slices.Sort(props)
	slices.Sort(required)
	return slices.Compact(props), slices.Compact(required)
}

// oapiJSONFields lists the JSON names of a struct, promoting embedded
// structs as encoding/json does, and which of them are always present.
func oapiJSONFields(typ reflect.Type) (names, always []string) {
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			n, a := oapiJSONFields(f.Type)
			names, always = append(names, n...), append(always, a...)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		names = append(names, name)
		if !slices.Contains(strings.Split(opts, ","), "omitempty") && !slices.Contains(strings.Split(opts, ","), "omitzero") {
			always = append(always, name)
		}
	}
	slices.Sort(names)
	slices.Sort(always)
	return names, always
}

// oapiDiff reports what want has that got lacks, and the reverse.
func oapiDiff(want, got []string) (missing, extra []string) {
	for _, w := range want {
		if !slices.Contains(got, w) {
			missing = append(missing, w)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			extra = append(extra, g)
		}
	}
	return missing, extra
}

var oapiPathParamRe = regexp.MustCompile(`\{([^}]+)\}`)

// TestOpenAPIMatchesRoutes checks that every registered route is documented
// and nothing else is, with operation ids, summaries, path parameters and
// the security each route really applies.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc := oapiLoad(t)
	srv, _ := oapiNewServer(t)

	var routes []string
	byKey := map[string]Route{}
	for _, rt := range srv.Routes() {
		routes = append(routes, rt.Method+" "+rt.Path)
		byKey[rt.Method+" "+rt.Path] = rt
	}
	var documented []string
	ops := oapiOps(t, doc)
	for _, o := range ops {
		documented = append(documented, o.key())
	}
	slices.Sort(routes)
	missing, extra := oapiDiff(routes, documented)
	if len(missing) > 0 {
		t.Errorf("routes not documented in openapi.json:\n  %s", strings.Join(missing, "\n  "))
	}
	if len(extra) > 0 {
		t.Errorf("openapi.json documents routes the server does not have:\n  %s", strings.Join(extra, "\n  "))
	}

	opIDs := map[string]string{}
	for _, o := range ops {
		id, _ := o.op["operationId"].(string)
		if id == "" {
			t.Errorf("%s: no operationId", o.key())
		} else if prev, dup := opIDs[id]; dup {
			t.Errorf("%s: operationId %q also used by %s", o.key(), id, prev)
		}
		opIDs[id] = o.key()
		if s, _ := o.op["summary"].(string); s == "" {
			t.Errorf("%s: no summary", o.key())
		}

		// Path parameters declared equal those in the template.
		var want []string
		for _, m := range oapiPathParamRe.FindAllStringSubmatch(o.path, -1) {
			want = append(want, m[1])
		}
		var got []string
		for _, src := range []any{o.pathItem["parameters"], o.op["parameters"]} {
			list, _ := src.([]any)
			for _, p := range list {
				pm := oapiDeref(t, doc, p)
				if pm == nil || pm["in"] != "path" {
					continue
				}
				got = append(got, pm["name"].(string))
				if pm["required"] != true {
					t.Errorf("%s: path parameter %v must be required", o.key(), pm["name"])
				}
			}
		}
		slices.Sort(want)
		slices.Sort(got)
		if m, x := oapiDiff(want, got); len(m)+len(x) > 0 {
			t.Errorf("%s: path parameters undeclared %v, declared but not in the path %v", o.key(), m, x)
		}

		// Security as the route applies it.
		rt, ok := byKey[o.key()]
		if !ok {
			continue
		}
		sec, hasSec := o.op["security"].([]any)
		if !hasSec {
			t.Errorf("%s: no security (public routes need security: [])", o.key())
			continue
		}
		if rt.auth == public {
			if len(sec) != 0 {
				t.Errorf("%s is public but documents security %v", o.key(), sec)
			}
			continue
		}
		if len(sec) == 0 {
			t.Errorf("%s needs authentication but documents security: []", o.key())
			continue
		}
		schemes := map[string]bool{}
		for _, req := range sec {
			r := req.(map[string]any)
			for name := range r {
				schemes[name] = true
			}
			_, cookie := r["sessionCookie"]
			_, csrf := r["csrfToken"]
			if cookie && csrf != (rt.Method != http.MethodGet) {
				t.Errorf("%s: a cookie session requires the CSRF header exactly for non-GET methods; documented %v", o.key(), r)
			}
		}
		if !schemes["sessionCookie"] || !schemes["bearerAuth"] {
			t.Errorf("%s: security must offer sessionCookie and bearerAuth, got %v", o.key(), sec)
		}
	}

	schemes, _ := oapiResolve(doc, "#/components/securitySchemes")
	sm, _ := schemes.(map[string]any)
	for name, want := range map[string]map[string]any{
		"sessionCookie": {"type": "apiKey", "in": "cookie", "name": SessionCookie},
		"csrfToken":     {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"},
		"bearerAuth":    {"type": "http", "scheme": "bearer"},
	} {
		got, _ := sm[name].(map[string]any)
		for k, v := range want {
			if got[k] != v {
				t.Errorf("securitySchemes.%s.%s = %v, want %v", name, k, got[k], v)
			}
		}
	}
	if doc["openapi"] != "3.1.0" {
		t.Errorf("openapi = %v, want 3.1.0", doc["openapi"])
	}
	if servers, _ := json.Marshal(doc["servers"]); string(servers) != `[{"url":"/"}]` {
		t.Errorf("servers = %s, want [{\"url\":\"/\"}]", servers)
	}
}

// TestOpenAPIRequestBodiesMatchInputTypes checks that each documented body
// has exactly the JSON fields of the Go type its handler decodes, and is
// closed (the server rejects unknown fields).
func TestOpenAPIRequestBodiesMatchInputTypes(t *testing.T) {
	doc := oapiLoad(t)
	withBody := map[string]bool{}
	for _, o := range oapiOps(t, doc) {
		rb, ok := o.op["requestBody"]
		if !ok {
			continue
		}
		withBody[o.key()] = true
		typ, ok := oapiInputTypes[o.key()]
		if !ok {
			t.Errorf("%s documents a request body but oapiInputTypes names no Go input type for it", o.key())
			continue
		}
		body := oapiDeref(t, doc, rb)
		if body == nil {
			continue
		}
		if body["required"] != true {
			t.Errorf("%s: requestBody must be required (an empty body is rejected)", o.key())
		}
		content, _ := body["content"].(map[string]any)
		if len(content) != 1 || content["application/json"] == nil {
			t.Errorf("%s: requestBody must be application/json only, got %v", o.key(), slices.Collect(oapiMapKeys(content)))
			continue
		}
		schema := oapiDeref(t, doc, content["application/json"].(map[string]any)["schema"])
		if schema == nil {
			continue
		}
		if schema["additionalProperties"] != false {
			t.Errorf("%s: request schema must set additionalProperties: false (unknown fields are rejected)", o.key())
		}
		props, required := oapiFlatten(t, doc, schema)
		names, _ := oapiJSONFields(typ)
		missing, extra := oapiDiff(names, props)
		if len(missing) > 0 {
			t.Errorf("%s: request schema lacks fields of %v: %v", o.key(), typ, missing)
		}
		if len(extra) > 0 {
			t.Errorf("%s: request schema has fields %v does not: %v", o.key(), typ, extra)
		}
		if _, notProps := oapiDiff(props, required); len(notProps) > 0 {
			t.Errorf("%s: required names non-properties %v", o.key(), notProps)
		}
	}
	var undocumented []string
	for k := range oapiInputTypes {
		if !withBody[k] {
			undocumented = append(undocumented, k)
		}
	}
	slices.Sort(undocumented)
	if len(undocumented) > 0 {
		t.Errorf("routes that decode a body but document no requestBody:\n  %s", strings.Join(undocumented, "\n  "))
	}
}

func oapiMapKeys(m map[string]any) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestOpenAPIResponseSchemasMatchOutputTypes checks response schemas against
// the Go types the server encodes: the same fields, and required exactly for
// those without omitempty. Every schema must be checked by this test or the
// request-body one.
func TestOpenAPIResponseSchemasMatchOutputTypes(t *testing.T) {
	doc := oapiLoad(t)
	checked := map[string]bool{}
	for _, name := range oapiUntypedSchemas {
		checked["#/components/schemas/"+name] = true
	}
	for ptr, typ := range oapiOutputTypes {
		checked[ptr] = true
		v, ok := oapiMustResolve(t, doc, ptr)
		if !ok {
			continue
		}
		props, required := oapiFlatten(t, doc, v)
		names, always := oapiJSONFields(typ)
		if missing, extra := oapiDiff(names, props); len(missing)+len(extra) > 0 {
			t.Errorf("%s vs %v: schema lacks %v, has extra %v", ptr, typ, missing, extra)
		}
		if missing, extra := oapiDiff(always, required); len(missing)+len(extra) > 0 {
			t.Errorf("%s vs %v: always-present fields not required %v; required but omitempty %v", ptr, typ, missing, extra)
		}
	}
	// Request schemas are checked by TestOpenAPIRequestBodiesMatchInputTypes.
	for _, o := range oapiOps(t, doc) {
		if rb, ok := o.op["requestBody"].(map[string]any); ok {
			if s, ok := rb["content"].(map[string]any)["application/json"].(map[string]any)["schema"].(map[string]any); ok {
				if ref, ok := s["$ref"].(string); ok {
					checked[ref] = true
				}
			}
		}
	}
	schemas, _ := oapiResolve(doc, "#/components/schemas")
	var unchecked []string
	for name := range schemas.(map[string]any) {
		if !checked["#/components/schemas/"+name] {
			unchecked = append(unchecked, name)
		}
	}
	slices.Sort(unchecked)
	if len(unchecked) > 0 {
		t.Errorf("schemas compared with no Go type (add them to oapiOutputTypes): %v", unchecked)
	}
}

// TestOpenAPIServed checks GET /api/v1/openapi.json on a running server.
func TestOpenAPIServed(t *testing.T) {
	srv, _ := oapiNewServer(t)
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	resp, err := http.Get(ts.URL + "/api/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200: %s", resp.StatusCode, body)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		t.Errorf("Content-Type %q, want application/json", resp.Header.Get("Content-Type"))
	}
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("served document does not parse: %v", err)
	}
	if doc["openapi"] != "3.1.0" {
		t.Errorf("served openapi = %v", doc["openapi"])
	}
	if !bytes.Equal(body, openAPIDoc) {
		t.Error("served document differs from the embedded openapi.json")
	}
}

// TestOpenAPIRefsResolve checks that every $ref points at something.
func TestOpenAPIRefsResolve(t *testing.T) {
	doc := oapiLoad(t)
	var bad []string
	n := 0
	var walk func(at string, v any)
	walk = func(at string, v any) {
		switch x := v.(type) {
		case map[string]any:
			if ref, ok := x["$ref"].(string); ok {
				n++
				if _, err := oapiResolve(doc, ref); err != nil {
					bad = append(bad, fmt.Sprintf("%s at %s: %v", ref, at, err))
				}
			}
			for k, c := range x {
				walk(at+"/"+strings.ReplaceAll(strings.ReplaceAll(k, "~", "~0"), "/", "~1"), c)
			}
		case []any:
			for i, c := range x {
				walk(at+"/"+strconv.Itoa(i), c)
			}
		}
	}
	walk("#", doc)
	slices.Sort(bad)
	if len(bad) > 0 {
		t.Errorf("unresolvable $refs:\n  %s", strings.Join(bad, "\n  "))
	}
	if n == 0 {
		t.Error("no $ref found; the walk is broken")
	}
}

// oapiResponses returns an operation's documented responses, dereferenced.
func oapiResponses(t *testing.T, doc map[string]any, o oapiOp) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	rs, _ := o.op["responses"].(map[string]any)
	for code, r := range rs {
		out[code] = oapiDeref(t, doc, r)
	}
	return out
}

// TestOpenAPIDocumentsCommonStatuses checks the statuses every operation of
// a kind can answer with: body routes 400/413/415, authenticated routes 401,
// state-changing authenticated routes 403 (CSRF).
func TestOpenAPIDocumentsCommonStatuses(t *testing.T) {
	doc := oapiLoad(t)
	srv, _ := oapiNewServer(t)
	auth := map[string]authMode{}
	for _, rt := range srv.Routes() {
		auth[rt.Method+" "+rt.Path] = rt.auth
	}
	for _, o := range oapiOps(t, doc) {
		rs := oapiResponses(t, doc, o)
		var want []string
		if _, ok := o.op["requestBody"]; ok {
			want = append(want, "400", "413", "415")
		}
		if auth[o.key()] == authenticated {
			want = append(want, "401")
			if o.method != "get" {
				want = append(want, "403")
			}
		}
		for _, code := range want {
			if rs[code] == nil {
				t.Errorf("%s does not document %s", o.key(), code)
			}
		}
		for code, r := range rs {
			if r == nil {
				continue
			}
			if d, _ := r["description"].(string); d == "" {
				t.Errorf("%s %s: response has no description", o.key(), code)
			}
		}
	}
}

type oapiClient struct {
	t    *testing.T
	base string
}

func (c oapiClient) do(method, path, contentType string, body []byte, hdr map[string]string) (*http.Response, []byte) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp, b
}

// TestOpenAPIStatusesMatchLiveServer sends every route a handful of requests
// (no credentials; an admin bearer token with an empty object or no body; a
// cookie session without CSRF token; a non-JSON body; an oversized body) and
// checks that each answer's status is documented for that operation, with
// the documented media type.
func TestOpenAPIStatusesMatchLiveServer(t *testing.T) {
	doc := oapiLoad(t)
	srv, ident := oapiNewServer(t)
	const password = "oapi-Password-1234"
	if _, err := ident.EnsureAdmin(t.Context(), password); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	c := oapiClient{t: t, base: ts.URL}

	resp, body := c.do("POST", "/api/v1/auth/login", "application/json", []byte(`{"username":"admin","password":"`+password+`"}`), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	var cookie string
	for _, ck := range resp.Cookies() {
		if ck.Name == SessionCookie {
			cookie = ck.Name + "=" + ck.Value
		}
	}
	var login struct {
		CSRFToken string `json:"csrf_token"`
	}
	_ = json.Unmarshal(body, &login)
	if cookie == "" || login.CSRFToken == "" {
		t.Fatalf("login gave no session cookie or CSRF token: %s", body)
	}
	resp, body = c.do("POST", "/api/v1/me/tokens", "application/json", []byte(`{"name":"oapi"}`),
		map[string]string{"Cookie": cookie, "X-CSRF-Token": login.CSRFToken})
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(body, &tok); err != nil || resp.StatusCode != http.StatusCreated || tok.Token == "" {
		t.Fatalf("create token: %d %s", resp.StatusCode, body)
	}
	bearer := map[string]string{"Authorization": "Bearer " + tok.Token}

	huge := append([]byte(`{"name":"`), bytes.Repeat([]byte("x"), MaxBodyBytes+1)...)
	huge = append(huge, `"}`...)

	for _, o := range oapiOps(t, doc) {
		if o.key() == "POST /api/v1/auth/logout" {
			continue // run last: it would end the cookie session
		}
		oapiCheckOp(t, doc, c, o, bearer, cookie, huge)
	}
	for _, o := range oapiOps(t, doc) {
		if o.key() == "POST /api/v1/auth/logout" {
			oapiCheckOp(t, doc, c, o, bearer, cookie, huge)
		}
	}
}

func oapiCheckOp(t *testing.T, doc map[string]any, c oapiClient, o oapiOp, bearer map[string]string, cookie string, huge []byte) {
	t.Helper()
	method := strings.ToUpper(o.method)
	path := oapiPathParamRe.ReplaceAllString(o.path, "oapi-missing")
	rs := oapiResponses(t, doc, o)
	_, hasBody := o.op["requestBody"]

	check := func(mode string, resp *http.Response, body []byte) {
		t.Helper()
		code := strconv.Itoa(resp.StatusCode)
		r := rs[code]
		if r == nil {
			t.Errorf("%s (%s): status %s is not documented (documented: %v); body %.200s", o.key(), mode, code,
				slices.Sorted(func(yield func(string) bool) {
					for k := range rs {
						if !yield(k) {
							return
						}
					}
				}), body)
			return
		}
		content, _ := r["content"].(map[string]any)
		if len(content) == 0 {
			if len(body) != 0 {
				t.Errorf("%s (%s): %s is documented without content but has a body: %.200s", o.key(), mode, code, body)
			}
			return
		}
		mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		if err != nil || content[mt] == nil {
			t.Errorf("%s (%s): %s answered as %q, documented %v", o.key(), mode, code, resp.Header.Get("Content-Type"),
				slices.Collect(oapiMapKeys(content)))
			return
		}
		if mt == "application/json" && !json.Valid(body) {
			t.Errorf("%s (%s): %s body is not JSON: %.200s", o.key(), mode, code, body)
		}
	}

	var jsonBody []byte
	if hasBody {
		jsonBody = []byte(`{}`)
	}
	resp, body := c.do(method, path, "application/json", jsonBody, nil)
	check("no credentials", resp, body)
	resp, body = c.do(method, path, "application/json", jsonBody, bearer)
	check("admin bearer", resp, body)
	if method != http.MethodGet {
		resp, body = c.do(method, path, "application/json", jsonBody, map[string]string{"Cookie": cookie})
		check("cookie without CSRF", resp, body)
	}
	if hasBody {
		resp, body = c.do(method, path, "text/plain", []byte(`{}`), bearer)
		check("text/plain body", resp, body)
		if resp.StatusCode != http.StatusUnsupportedMediaType {
			t.Errorf("%s: a text/plain body got %d, want 415", o.key(), resp.StatusCode)
		}
		resp, body = c.do(method, path, "application/json", huge, bearer)
		check("oversized body", resp, body)
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("%s: an oversized body got %d, want 413", o.key(), resp.StatusCode)
		}
		resp, body = c.do(method, path, "application/json", []byte(`{"oapi_unknown_field":1}`), bearer)
		check("unknown field", resp, body)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: an unknown field got %d, want 400", o.key(), resp.StatusCode)
		}
	}
}

// oapiValidate checks a decoded JSON value against a schema of the document:
// $ref, allOf, type (or a list of types), enum, object properties, required
// and additionalProperties, array items. It returns every mismatch.
func oapiValidate(t *testing.T, doc map[string]any, schema any, v any, at string) []string {
	t.Helper()
	s := oapiDeref(t, doc, schema)
	if s == nil {
		return []string{at + ": unresolvable schema"}
	}
	var errs []string
	if all, ok := s["allOf"].([]any); ok {
		// Parts are validated for their types only; properties are
		// checked against the union below.
		props, required := oapiFlatten(t, doc, s)
		m, ok := v.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: want an object, got %T", at, v)}
		}
		for _, r := range required {
			if _, ok := m[r]; !ok {
				errs = append(errs, fmt.Sprintf("%s: required %q missing", at, r))
			}
		}
		for k, pv := range m {
			if !slices.Contains(props, k) {
				errs = append(errs, fmt.Sprintf("%s: undocumented property %q", at, k))
				continue
			}
			for _, part := range all {
				ps := oapiDeref(t, doc, part)
				if p, ok := ps["properties"].(map[string]any)[k]; ok {
					errs = append(errs, oapiValidate(t, doc, p, pv, at+"."+k)...)
				}
			}
		}
		return errs
	}
	var types []string
	switch ty := s["type"].(type) {
	case string:
		types = []string{ty}
	case []any:
		for _, x := range ty {
			types = append(types, x.(string))
		}
	}
	if len(types) > 0 {
		got := "object"
		switch x := v.(type) {
		case nil:
			got = "null"
		case bool:
			got = "boolean"
		case string:
			got = "string"
		case float64:
			got = "number"
			if x == float64(int64(x)) {
				got = "integer"
			}
		case []any:
			got = "array"
		}
		if !slices.Contains(types, got) && !(got == "integer" && slices.Contains(types, "number")) {
			return []string{fmt.Sprintf("%s: want %v, got %s (%v)", at, types, got, v)}
		}
	}
	if enum, ok := s["enum"].([]any); ok && !slices.Contains(enum, v) {
		errs = append(errs, fmt.Sprintf("%s: %v not in enum %v", at, v, enum))
	}
	switch x := v.(type) {
	case map[string]any:
		props, _ := s["properties"].(map[string]any)
		if req, ok := s["required"].([]any); ok {
			for _, r := range req {
				if _, ok := x[r.(string)]; !ok {
					errs = append(errs, fmt.Sprintf("%s: required %q missing", at, r))
				}
			}
		}
		for k, pv := range x {
			if p, ok := props[k]; ok {
				errs = append(errs, oapiValidate(t, doc, p, pv, at+"."+k)...)
				continue
			}
			switch ap := s["additionalProperties"].(type) {
			case map[string]any:
				errs = append(errs, oapiValidate(t, doc, ap, pv, at+"."+k)...)
			case bool:
				if !ap {
					errs = append(errs, fmt.Sprintf("%s: undocumented property %q", at, k))
				}
			default:
				if props != nil {
					errs = append(errs, fmt.Sprintf("%s: undocumented property %q", at, k))
				}
			}
		}
	case []any:
		if items, ok := s["items"]; ok {
			for i, e := range x {
				errs = append(errs, oapiValidate(t, doc, items, e, fmt.Sprintf("%s[%d]", at, i))...)
			}
		}
	}
	return errs
}

// oapiLive drives a running server and checks each answer against the
// operation the request belongs to: documented status and media type, and a
// JSON body that validates against the documented schema.
type oapiLive struct {
	t   *testing.T
	doc map[string]any
	c   oapiClient
	ops map[string]oapiOp
	hdr map[string]string
}

func (l oapiLive) call(opKey, path string, body any, want int) (map[string]any, *http.Response) {
	l.t.Helper()
	method, _, _ := strings.Cut(opKey, " ")
	var raw []byte
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			l.t.Fatal(err)
		}
	}
	o, ok := l.ops[opKey]
	if !ok {
		l.t.Fatalf("%s is not documented", opKey)
	}
	resp, b := l.c.do(method, path, "application/json", raw, l.hdr)
	if resp.StatusCode != want {
		l.t.Fatalf("%s %s: status %d, want %d: %.300s", method, path, resp.StatusCode, want, b)
	}
	r := oapiResponses(l.t, l.doc, o)[strconv.Itoa(resp.StatusCode)]
	if r == nil {
		l.t.Errorf("%s: status %d is not documented", opKey, resp.StatusCode)
		return nil, resp
	}
	content, _ := r["content"].(map[string]any)
	if len(content) == 0 {
		if len(b) != 0 {
			l.t.Errorf("%s: %d documented without content but has a body: %.200s", opKey, resp.StatusCode, b)
		}
		return nil, resp
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	media, ok := content[mt].(map[string]any)
	if !ok {
		l.t.Errorf("%s: %d answered as %q, documented %v", opKey, resp.StatusCode, mt, slices.Collect(oapiMapKeys(content)))
		return nil, resp
	}
	if mt != "application/json" {
		return map[string]any{"text": string(b)}, resp
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		l.t.Errorf("%s: body is not JSON: %v", opKey, err)
		return nil, resp
	}
	for _, e := range oapiValidate(l.t, l.doc, media["schema"], v, opKey+" "+strconv.Itoa(resp.StatusCode)) {
		l.t.Error(e)
	}
	m, _ := v.(map[string]any)
	return m, resp
}

// TestOpenAPIHappyPathsMatchLiveServer walks every operation through a
// successful call and validates the answers against the document.
func TestOpenAPIHappyPathsMatchLiveServer(t *testing.T) {
	doc := oapiLoad(t)
	srv, ident := oapiNewServer(t)
	const password = "oapi-Password-1234"
	if _, err := ident.EnsureAdmin(t.Context(), password); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	ops := map[string]oapiOp{}
	for _, o := range oapiOps(t, doc) {
		ops[o.key()] = o
	}
	done := map[string]bool{}
	anon := oapiLive{t: t, doc: doc, c: oapiClient{t: t, base: ts.URL}, ops: ops}
	var lastResp *http.Response
	call := func(l oapiLive, opKey, path string, body any, want int) map[string]any {
		t.Helper()
		done[opKey] = true
		m, resp := l.call(opKey, path, body, want)
		lastResp = resp
		return m
	}

	call(anon, "GET /livez", "/livez", nil, 200)
	call(anon, "GET /readyz", "/readyz", nil, 200)
	call(anon, "GET /metrics", "/metrics", nil, 404) // no registry in this server
	call(anon, "GET /api/v1/openapi.json", "/api/v1/openapi.json", nil, 200)
	call(anon, "POST /api/v1/auth/login", "/api/v1/auth/login", map[string]any{"username": "admin", "password": "wrong-Password-1"}, 401)

	// A cookie session.
	login := call(anon, "POST /api/v1/auth/login", "/api/v1/auth/login", map[string]any{"username": "ADMIN", "password": password}, 200)
	var cookie string
	for _, ck := range lastResp.Cookies() {
		if ck.Name == SessionCookie {
			cookie = ck.Name + "=" + ck.Value
		}
	}
	csrf := oapiStr(login, "csrf_token")
	if csrf == "" || cookie == "" {
		t.Fatal("login gave no session cookie or CSRF token")
	}
	session := anon
	session.hdr = map[string]string{"Cookie": cookie, "X-CSRF-Token": csrf}
	me := call(session, "GET /api/v1/me", "/api/v1/me", nil, 200)
	if me["csrf_token"] != csrf {
		t.Errorf("GET /api/v1/me over a cookie session: csrf_token %v", me["csrf_token"])
	}
	tok := call(session, "POST /api/v1/me/tokens", "/api/v1/me/tokens", map[string]any{"name": "oapi", "expires_in_days": 30}, 201)
	admin := anon
	admin.hdr = map[string]string{"Authorization": "Bearer " + oapiStr(tok, "token")}
	other := call(admin, "POST /api/v1/me/tokens", "/api/v1/me/tokens", map[string]any{"name": "other"}, 201)
	call(admin, "GET /api/v1/me/tokens", "/api/v1/me/tokens", nil, 200)
	call(admin, "DELETE /api/v1/me/tokens/{id}", "/api/v1/me/tokens/"+oapiStr(other, "id"), nil, 204)

	g := call(admin, "POST /api/v1/groups", "/api/v1/groups", map[string]any{"name": "staff", "description": "Staff"}, 201)
	gid := oapiStr(g, "id")
	call(admin, "GET /api/v1/groups", "/api/v1/groups?limit=10&offset=0", nil, 200)
	call(admin, "GET /api/v1/groups/{id}", "/api/v1/groups/"+gid, nil, 200)
	call(admin, "PATCH /api/v1/groups/{id}", "/api/v1/groups/"+gid, map[string]any{"description": "All staff"}, 200)

	u := call(admin, "POST /api/v1/users", "/api/v1/users", map[string]any{"username": "alice", "email": "alice@example.com",
		"password": "alice-Password-1", "groups": []string{"staff"}}, 201)
	uid := oapiStr(u, "id")
	call(admin, "GET /api/v1/users", "/api/v1/users?search=ali", nil, 200)
	call(admin, "GET /api/v1/users/{id}", "/api/v1/users/"+uid, nil, 200)
	call(admin, "PATCH /api/v1/users/{id}", "/api/v1/users/"+uid, map[string]any{"first_name": "Alice"}, 200)

	loc := call(admin, "POST /api/v1/locations", "/api/v1/locations", map[string]any{"name": "hq", "addresses": []string{"10.66.0.1/24", "fd66::1/64"},
		"endpoint": "vpn.example.com", "dns": []string{"10.66.0.1"}}, 201)
	lid := oapiStr(loc, "id")
	call(admin, "GET /api/v1/locations", "/api/v1/locations", nil, 200)
	call(admin, "GET /api/v1/locations/{id}", "/api/v1/locations/"+lid, nil, 200)
	call(admin, "PATCH /api/v1/locations/{id}", "/api/v1/locations/"+lid, map[string]any{"mtu": 1400, "extra_endpoints": []string{"vpn2.example.com:51821"}}, 200)

	dev := call(admin, "POST /api/v1/devices", "/api/v1/devices", map[string]any{"name": "laptop", "generate_key": true, "user_id": uid}, 201)
	if dev["private_key"] == nil || dev["configs"] == nil || oapiLen(dev, "addresses") == 0 {
		t.Errorf("a device with a generated key should come with private_key, configs and addresses: %v", dev)
	}
	did := oapiStr(dev, "id")
	net := call(admin, "POST /api/v1/devices", "/api/v1/devices", map[string]any{"name": "router", "kind": "network", "location_id": lid,
		"public_key": "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="}, 201)
	if net["location_id"] != lid || net["private_key"] != nil {
		t.Errorf("network device: %v", net)
	}
	call(admin, "GET /api/v1/devices", "/api/v1/devices?user_id="+uid+"&location_id="+lid+"&search=lap", nil, 200)
	call(admin, "GET /api/v1/devices/{id}", "/api/v1/devices/"+did, nil, 200)
	cfg := call(admin, "GET /api/v1/devices/{id}/config", "/api/v1/devices/"+did+"/config?location="+lid, nil, 200)
	if !strings.Contains(oapiStr(cfg, "text"), "[Peer]") {
		t.Errorf("config: %v", cfg)
	}
	call(admin, "PATCH /api/v1/devices/{id}", "/api/v1/devices/"+did, map[string]any{"name": "laptop-2", "description": "work"}, 200)

	gw := call(admin, "POST /api/v1/locations/{id}/gateways", "/api/v1/locations/"+lid+"/gateways", map[string]any{"name": "gw1", "control_address": "10.0.0.2:7000"}, 201)
	if oapiStr(gw, "join_token") == "" || gw["join_token_expires_at"] == nil || gw["status"] == nil {
		t.Errorf("a new gateway should come with its join token and status: %v", gw)
	}
	gwID := oapiStr(gw, "id")
	gwPath := "/api/v1/locations/" + lid + "/gateways/" + gwID
	jt := call(admin, "POST /api/v1/locations/{id}/gateways/{gid}/join-token", gwPath+"/join-token", nil, 201)
	if oapiStr(jt, "join_token") == "" || oapiStr(jt, "join_token") == oapiStr(gw, "join_token") {
		t.Errorf("join-token should issue a fresh token: %v", jt)
	}
	// Control links of two core replicas, one up and one failing, so the
	// gateway status carries links with and without last_error.
	if err := srv.vpn.RecordLink(t.Context(), core.SystemActor("oapi"), vpn.LinkEvent{GatewayID: gwID, CoreID: "core-a",
		Version: "v0.0.0-oapi", BootID: "boot-1", Connected: true, AppliedRevision: 1}, false); err != nil {
		t.Fatal(err)
	}
	if err := srv.vpn.RecordLinkError(t.Context(), vpn.LinkEvent{GatewayID: gwID, CoreID: "core-b", Error: "dial: connection refused"}); err != nil {
		t.Fatal(err)
	}
	call(admin, "GET /api/v1/locations/{id}/gateways", "/api/v1/locations/"+lid+"/gateways", nil, 200)
	if g := call(admin, "GET /api/v1/locations/{id}/gateways/{gid}", gwPath, nil, 200); g["status"] == nil {
		t.Errorf("a gateway should have a status: %v", g)
	} else if st, _ := g["status"].(map[string]any); oapiLen(st, "links") != 2 || st["connected"] != true {
		t.Errorf("gateway status with two links, one connected: %v", st)
	}

	// Traffic of the laptop through gw1, then both statistics views.
	now := time.Now()
	if _, err := srv.stats.Ingest(t.Context(), stats.Report{GatewayID: gwID, LocationID: lid, BootID: "boot-1", Seq: 1, At: now.UnixMilli(),
		Samples: []stats.Sample{{PublicKey: oapiStr(dev, "public_key"), Generation: 1, RxBytes: 1000, TxBytes: 5000, LastHandshake: now.UnixMilli()}}}); err != nil {
		t.Fatal(err)
	}
	window := "?from=" + now.Add(-time.Hour).UTC().Format(time.RFC3339) + "&to=" + strconv.FormatInt(now.Add(time.Minute).UnixMilli(), 10)
	ls := call(admin, "GET /api/v1/locations/{id}/stats", "/api/v1/locations/"+lid+"/stats"+window, nil, 200)
	if oapiLen(ls, "series") != 1 || oapiLen(ls, "devices") != 1 || oapiLen(ls, "gateways") != 1 {
		t.Errorf("location stats: want one minute, device and gateway: %v", ls)
	} else if d := ls["devices"].([]any)[0].(map[string]any); d["device_id"] != did || d["upload_bytes"] != 1000.0 || d["download_bytes"] != 5000.0 || d["connected"] != true {
		t.Errorf("location stats device: %v", d)
	}
	ds := call(admin, "GET /api/v1/devices/{id}/stats", "/api/v1/devices/"+did+"/stats", nil, 200)
	if oapiLen(ds, "locations") != 1 {
		t.Errorf("device stats: want one location: %v", ds)
	} else if tot, _ := ds["totals"].(map[string]any); tot["upload_bytes"] != 1000.0 || tot["download_bytes"] != 5000.0 {
		t.Errorf("device stats totals: %v", tot)
	}
	call(admin, "GET /api/v1/locations/{id}/stats", "/api/v1/locations/"+lid+"/stats?from=2020-01-01T00:00:00Z&to=2020-01-01T00:00:00Z", nil, 400)
	call(admin, "GET /api/v1/devices/{id}/stats", "/api/v1/devices/"+did+"/stats?to=yesterday", nil, 400)
	call(admin, "PATCH /api/v1/locations/{id}/gateways/{gid}", gwPath, map[string]any{"control_address": "10.0.0.3:7000"}, 200)
	call(admin, "DELETE /api/v1/locations/{id}/gateways/{gid}", gwPath, nil, 204)

	px := call(admin, "POST /api/v1/proxies", "/api/v1/proxies", map[string]any{"name": "px1", "control_address": "proxy.example.com:7001"}, 201)
	pxPath := "/api/v1/proxies/" + oapiStr(px, "id")
	call(admin, "GET /api/v1/proxies", "/api/v1/proxies", nil, 200)
	call(admin, "GET /api/v1/proxies/{id}", pxPath, nil, 200)
	call(admin, "PATCH /api/v1/proxies/{id}", pxPath, map[string]any{"name": "px-1"}, 200)
	if oapiStr(px, "join_token") == "" {
		t.Errorf("a new proxy should come with its join token: %v", px)
	}
	if jt := call(admin, "POST /api/v1/proxies/{id}/join-token", pxPath+"/join-token", nil, 201); oapiStr(jt, "join_token") == "" {
		t.Errorf("proxy join token: %v", jt)
	}
	call(admin, "DELETE /api/v1/proxies/{id}", pxPath, nil, 204)

	call(admin, "GET /api/v1/settings", "/api/v1/settings", nil, 200)
	call(admin, "PATCH /api/v1/settings", "/api/v1/settings", map[string]any{"instance_name": "ward-oapi", "lockout_threshold": 7}, 200)

	// Onboarding: mail through an SMTP sink, an enrollment link, TOTP.
	sink := mailtest.NewSink(t)
	call(admin, "POST /api/v1/settings/test-mail", "/api/v1/settings/test-mail", map[string]any{"to": "ops@example.com"}, 409)
	st := call(admin, "PATCH /api/v1/settings", "/api/v1/settings", map[string]any{"smtp_host": "127.0.0.1", "smtp_port": sink.Port,
		"smtp_tls": "none", "smtp_from": "ward <ward@example.com>", "smtp_username": "ward", "smtp_password": "oapi-smtp-secret",
		"proxy_public_url": "https://vpn.example.com/", "enrollment_token_lifetime_seconds": 7200}, 200)
	if st["smtp_password_set"] != true || st["smtp_password"] != nil || st["proxy_public_url"] != "https://vpn.example.com" {
		t.Errorf("settings after the SMTP change: %v", st)
	}
	call(admin, "POST /api/v1/settings/test-mail", "/api/v1/settings/test-mail", map[string]any{"to": "not an address"}, 400)
	call(admin, "POST /api/v1/settings/test-mail", "/api/v1/settings/test-mail", map[string]any{"to": "ops@example.com"}, 204)
	if msgs := sink.Messages(); len(msgs) != 1 || msgs[0].To[0] != "ops@example.com" {
		t.Errorf("test mail: %+v", msgs)
	}
	en := call(admin, "POST /api/v1/users/{id}/enrollment", "/api/v1/users/"+uid+"/enrollment", map[string]any{"kind": "new_client", "send_email": true}, 201)
	if en["email_sent"] != true || !strings.HasPrefix(oapiStr(en, "url"), "https://vpn.example.com/enroll/") {
		t.Errorf("enrollment: %v", en)
	}
	call(admin, "POST /api/v1/users/{id}/enrollment", "/api/v1/users/"+uid+"/enrollment", map[string]any{}, 409) // alice has a password
	// The caller's own TOTP, over the cookie session.
	call(session, "DELETE /api/v1/me/totp", "/api/v1/me/totp", map[string]any{"code": "123456"}, 409)
	setup := call(session, "POST /api/v1/me/totp", "/api/v1/me/totp", nil, 200)
	call(session, "POST /api/v1/me/totp/confirm", "/api/v1/me/totp/confirm", map[string]any{"code": "abc"}, 400)
	code, err := mfa.GenerateCode(oapiStr(setup, "secret"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rc := call(session, "POST /api/v1/me/totp/confirm", "/api/v1/me/totp/confirm", map[string]any{"code": code}, 200)
	codes, _ := rc["recovery_codes"].([]any)
	if len(codes) != 10 {
		t.Fatalf("recovery codes: %v", rc)
	}
	if me := call(session, "GET /api/v1/me", "/api/v1/me", nil, 200); me["totp_enabled"] != true || me["recovery_codes_left"] != 10.0 {
		t.Errorf("me after enabling TOTP: %v", me)
	}
	call(session, "POST /api/v1/me/totp", "/api/v1/me/totp", nil, 409)
	call(session, "POST /api/v1/me/recovery-codes", "/api/v1/me/recovery-codes", map[string]any{"code": code}, 400) // used already
	rc = call(session, "POST /api/v1/me/recovery-codes", "/api/v1/me/recovery-codes", map[string]any{"code": codes[0]}, 200)
	codes, _ = rc["recovery_codes"].([]any)
	// With TOTP on, a login waits for the second factor; any replica can
	// finish it (the state is a session row).
	pending := call(anon, "POST /api/v1/auth/login", "/api/v1/auth/login", map[string]any{"username": "admin", "password": password}, 200)
	if pending["second_factor_required"] != true {
		t.Fatalf("login with TOTP on: %v", pending)
	}
	half := anon
	half.hdr = map[string]string{"Cookie": sessionCookie(t, lastResp), "X-CSRF-Token": oapiStr(pending, "csrf_token")}
	call(half, "GET /api/v1/me", "/api/v1/me", nil, 401)
	call(half, "POST /api/v1/auth/mfa", "/api/v1/auth/mfa", map[string]any{"code": "000000"}, 400)
	full := call(half, "POST /api/v1/auth/mfa", "/api/v1/auth/mfa", map[string]any{"code": codes[1]}, 200)
	if full["second_factor_required"] != false {
		t.Errorf("after the second factor: %v", full)
	}
	fullSess := anon
	fullSess.hdr = map[string]string{"Cookie": sessionCookie(t, lastResp), "X-CSRF-Token": oapiStr(full, "csrf_token")}
	call(fullSess, "GET /api/v1/me", "/api/v1/me", nil, 200)
	call(half, "GET /api/v1/me", "/api/v1/me", nil, 401) // the waiting session's token is gone
	call(fullSess, "POST /api/v1/auth/mfa", "/api/v1/auth/mfa", map[string]any{"code": codes[2]}, 409)
	call(session, "DELETE /api/v1/me/totp", "/api/v1/me/totp", map[string]any{"code": codes[0]}, 204)
	// A security key (WebAuthn): the software authenticator plays the
	// browser and the key.
	waKey := webauthntest.New(oapiPublicURL)
	waReg := call(admin, "POST /api/v1/me/webauthn/register/begin", "/api/v1/me/webauthn/register/begin", nil, 200)
	waCreated, err := waKey.Create(oapiJSON(t, waReg["options"]))
	if err != nil {
		t.Fatal(err)
	}
	waFinish := map[string]any{"ceremony_id": waReg["ceremony_id"], "name": "YubiKey", "credential": json.RawMessage(waCreated)}
	waCred := call(admin, "POST /api/v1/me/webauthn/register/finish", "/api/v1/me/webauthn/register/finish", waFinish, 201)
	if waCred["name"] != "YubiKey" || waCred["credential_id"] != waKey.LastCredentialID() {
		t.Errorf("registered key: %v", waCred)
	}
	call(admin, "POST /api/v1/me/webauthn/register/finish", "/api/v1/me/webauthn/register/finish", waFinish, 409) // single use
	if list := call(admin, "GET /api/v1/me/webauthn/credentials", "/api/v1/me/webauthn/credentials", nil, 200); oapiLen(list, "items") != 1 {
		t.Errorf("keys: %v", list)
	}
	waPath := "/api/v1/me/webauthn/credentials/" + oapiStr(waCred, "id")
	call(admin, "PATCH /api/v1/me/webauthn/credentials/{id}", waPath, map[string]any{"name": strings.Repeat("x", 65)}, 400)
	call(admin, "PATCH /api/v1/me/webauthn/credentials/{id}", waPath, map[string]any{"name": "Keyring"}, 200)
	// A login now waits for the key, and the key completes it.
	waPending := call(anon, "POST /api/v1/auth/login", "/api/v1/auth/login", map[string]any{"username": "admin", "password": password}, 200)
	if f, _ := waPending["second_factors"].([]any); len(f) != 1 || f[0] != "webauthn" {
		t.Fatalf("login of a user with only a security key: %v", waPending)
	}
	waHalf := anon
	waHalf.hdr = map[string]string{"Cookie": sessionCookie(t, lastResp), "X-CSRF-Token": oapiStr(waPending, "csrf_token")}
	waLogin := call(waHalf, "POST /api/v1/auth/webauthn/begin", "/api/v1/auth/webauthn/begin", nil, 200)
	waAsserted, err := waKey.Get(oapiJSON(t, waLogin["options"]))
	if err != nil {
		t.Fatal(err)
	}
	call(waHalf, "POST /api/v1/auth/webauthn/finish", "/api/v1/auth/webauthn/finish", map[string]any{"ceremony_id": "nope", "credential": json.RawMessage(waAsserted)}, 409)
	waFull := call(waHalf, "POST /api/v1/auth/webauthn/finish", "/api/v1/auth/webauthn/finish",
		map[string]any{"ceremony_id": waLogin["ceremony_id"], "credential": json.RawMessage(waAsserted)}, 200)
	if waFull["second_factor_required"] != false {
		t.Errorf("after the security key: %v", waFull)
	}
	waSess := anon
	waSess.hdr = map[string]string{"Cookie": sessionCookie(t, lastResp), "X-CSRF-Token": oapiStr(waFull, "csrf_token")}
	call(waSess, "GET /api/v1/me", "/api/v1/me", nil, 200)
	call(waSess, "POST /api/v1/auth/webauthn/begin", "/api/v1/auth/webauthn/begin", nil, 409) // nothing due
	call(admin, "DELETE /api/v1/me/webauthn/credentials/{id}", waPath, nil, 204)
	call(admin, "DELETE /api/v1/me/webauthn/credentials/{id}", waPath, nil, 404)
	call(session, "POST /api/v1/me/password", "/api/v1/me/password", map[string]any{"current_password": "wrong", "new_password": "Another-Password-2"}, 400)
	call(admin, "POST /api/v1/me/password", "/api/v1/me/password", map[string]any{"current_password": password, "new_password": "Another-Password-2"}, 403)
	call(session, "POST /api/v1/me/password", "/api/v1/me/password", map[string]any{"current_password": password, "new_password": "Another-Password-2"}, 204)
	call(session, "POST /api/v1/me/password", "/api/v1/me/password", map[string]any{"current_password": "Another-Password-2", "new_password": password}, 204)
	// An admin resets another user's TOTP.
	if _, err := srv.mfa.Setup(t.Context(), core.Actor{UserID: uid, Username: "alice"}, uid); err != nil {
		t.Fatal(err)
	}
	call(admin, "DELETE /api/v1/users/{id}/totp", "/api/v1/users/"+uid+"/totp", nil, 204)
	call(admin, "DELETE /api/v1/users/{id}/totp", "/api/v1/users/"+uid+"/totp", nil, 404)
	audit := call(admin, "GET /api/v1/audit", "/api/v1/audit?action=device.&from=2020-01-01T00:00:00Z&to=4102444800000", nil, 200)
	if n, _ := audit["total"].(float64); n < 2 {
		t.Errorf("audit: want the device entries, got %v", audit)
	}
	if cl := call(admin, "GET /api/v1/cluster", "/api/v1/cluster", nil, 200); cl["replicas"] == nil || cl["leases"] == nil {
		t.Errorf("cluster: %v", cl)
	}

	call(admin, "DELETE /api/v1/devices/{id}", "/api/v1/devices/"+did, nil, 204)
	call(admin, "DELETE /api/v1/locations/{id}", "/api/v1/locations/"+lid, nil, 204)
	call(admin, "DELETE /api/v1/users/{id}", "/api/v1/users/"+uid, nil, 204)
	call(admin, "DELETE /api/v1/groups/{id}", "/api/v1/groups/"+gid, nil, 204)
	call(session, "POST /api/v1/auth/logout", "/api/v1/auth/logout", nil, 204)

	// /metrics with a registry, as ward core runs it.
	srvM := New(srv.db, srv.ident, srv.vpn, Options{Registry: prometheus.NewRegistry()})
	tsM := httptest.NewServer(srvM.Handler())
	defer tsM.Close()
	metrics := anon
	metrics.c = oapiClient{t: t, base: tsM.URL}
	call(metrics, "GET /livez", "/livez", nil, 200)
	if text := call(metrics, "GET /metrics", "/metrics", nil, 200); !strings.Contains(oapiStr(text, "text"), "ward_http_requests_total") {
		t.Errorf("metrics: %.300v", text)
	}

	var skipped []string
	for k := range ops {
		if !done[k] {
			skipped = append(skipped, k)
		}
	}
	slices.Sort(skipped)
	if len(skipped) > 0 {
		t.Errorf("operations this test does not call (add them): %v", skipped)
	}
}

// oapiStr reads a string field of a decoded object, "" when absent.
func oapiStr(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

// oapiLen is the length of an array field of a decoded object.
func oapiLen(m map[string]any, k string) int {
	a, _ := m[k].([]any)
	return len(a)
}
