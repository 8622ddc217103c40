package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/mfa"
	"github.com/wardvpn/ward/internal/core/vpn"
)

func (s *Server) buildRoutes() []Route {
	r := func(method, path string, auth authMode, h handlerFunc) Route {
		return Route{Method: method, Path: path, auth: auth, handle: h}
	}
	const v1 = "/api/v1"
	return append([]Route{
		r("GET", "/livez", public, s.livez),
		r("GET", "/readyz", public, s.readyz),
		r("GET", "/metrics", public, s.metricsHandler()),
		r("GET", v1+"/openapi.json", public, serveOpenAPI),

		r("POST", v1+"/auth/login", public, s.login),
		r("POST", v1+"/auth/mfa", secondFactor, s.loginSecondFactor),
		r("POST", v1+"/auth/logout", secondFactor, s.logout),
		r("GET", v1+"/me", authenticated, s.me),
		r("POST", v1+"/me/password", authenticated, s.changePassword),
		r("GET", v1+"/me/tokens", authenticated, s.listTokens),
		r("POST", v1+"/me/tokens", authenticated, s.createToken),
		r("DELETE", v1+"/me/tokens/{id}", authenticated, s.revokeToken),
		r("POST", v1+"/me/totp", authenticated, s.setupTOTP),
		r("POST", v1+"/me/totp/confirm", authenticated, s.confirmTOTP),
		r("DELETE", v1+"/me/totp", authenticated, s.disableTOTP),
		r("POST", v1+"/me/recovery-codes", authenticated, s.regenerateRecoveryCodes),

		r("GET", v1+"/users", authenticated, s.listUsers),
		r("POST", v1+"/users", authenticated, s.createUser),
		r("GET", v1+"/users/{id}", authenticated, s.getUser),
		r("PATCH", v1+"/users/{id}", authenticated, s.updateUser),
		r("DELETE", v1+"/users/{id}", authenticated, s.deleteUser),
		r("POST", v1+"/users/{id}/enrollment", authenticated, s.startEnrollment),
		r("DELETE", v1+"/users/{id}/totp", authenticated, s.resetUserTOTP),

		r("GET", v1+"/groups", authenticated, s.listGroups),
		r("POST", v1+"/groups", authenticated, s.createGroup),
		r("GET", v1+"/groups/{id}", authenticated, s.getGroup),
		r("PATCH", v1+"/groups/{id}", authenticated, s.updateGroup),
		r("DELETE", v1+"/groups/{id}", authenticated, s.deleteGroup),

		r("GET", v1+"/devices", authenticated, s.listDevices),
		r("POST", v1+"/devices", authenticated, s.createDevice),
		r("GET", v1+"/devices/{id}", authenticated, s.getDevice),
		r("PATCH", v1+"/devices/{id}", authenticated, s.updateDevice),
		r("DELETE", v1+"/devices/{id}", authenticated, s.deleteDevice),
		r("GET", v1+"/devices/{id}/config", authenticated, s.deviceConfig),

		r("GET", v1+"/locations", authenticated, s.listLocations),
		r("POST", v1+"/locations", authenticated, s.createLocation),
		r("GET", v1+"/locations/{id}", authenticated, s.getLocation),
		r("PATCH", v1+"/locations/{id}", authenticated, s.updateLocation),
		r("DELETE", v1+"/locations/{id}", authenticated, s.deleteLocation),
		r("GET", v1+"/locations/{id}/gateways", authenticated, s.listGateways),
		r("POST", v1+"/locations/{id}/gateways", authenticated, s.createGateway),
		r("GET", v1+"/locations/{id}/gateways/{gid}", authenticated, s.getGateway),
		r("PATCH", v1+"/locations/{id}/gateways/{gid}", authenticated, s.updateGateway),
		r("DELETE", v1+"/locations/{id}/gateways/{gid}", authenticated, s.deleteGateway),
		r("POST", v1+"/locations/{id}/gateways/{gid}/join-token", authenticated, s.issueJoinToken),
		r("GET", v1+"/locations/{id}/stats", authenticated, s.locationStats),
		r("GET", v1+"/devices/{id}/stats", authenticated, s.deviceStats),

		r("GET", v1+"/proxies", authenticated, s.listProxies),
		r("POST", v1+"/proxies", authenticated, s.createProxy),
		r("GET", v1+"/proxies/{id}", authenticated, s.getProxy),
		r("PATCH", v1+"/proxies/{id}", authenticated, s.updateProxy),
		r("DELETE", v1+"/proxies/{id}", authenticated, s.deleteProxy),
		r("POST", v1+"/proxies/{id}/join-token", authenticated, s.issueProxyJoinToken),

		r("GET", v1+"/settings", authenticated, s.getSettings),
		r("PATCH", v1+"/settings", authenticated, s.updateSettings),
		r("POST", v1+"/settings/test-mail", authenticated, s.testMail),

		r("GET", v1+"/audit", authenticated, s.listAudit),
		r("GET", v1+"/cluster", authenticated, s.getCluster),
	}, s.webauthnRoutes()...)
}

// Operations.

func (s *Server) livez(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	if err := s.Ready(r.Context()); err != nil {
		s.log.Warn("not ready: database unreachable", "err", err)
		return &apiError{status: http.StatusServiceUnavailable, code: "database_unavailable", message: "the database does not answer"}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "database": string(s.db.Engine)})
	return nil
}

func (s *Server) metricsHandler() handlerFunc {
	var h http.Handler = http.NotFoundHandler()
	if s.metrics != nil {
		h = promhttp.HandlerFor(s.metricsGatherer(), promhttp.HandlerOpts{})
	}
	return func(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
		h.ServeHTTP(w, r)
		return nil
	}
}

func (s *Server) metricsGatherer() prometheus.Gatherer { return s.metrics.gatherer }

// Auth.

type loginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

type loginResponse struct {
	User      identity.User `json:"user"`
	CSRFToken string        `json:"csrf_token"`
	ExpiresAt int64         `json:"expires_at"`
	// SecondFactorRequired: the session only lets POST /auth/mfa (one of
	// SecondFactors) or logout through until the second factor is given.
	SecondFactorRequired bool     `json:"second_factor_required"`
	SecondFactors        []string `json:"second_factors"`
}

func (s *Server) setSessionCookie(w http.ResponseWriter, r *http.Request, sess identity.Session) {
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: sess.Token, Path: "/", Expires: sess.ExpiresAt,
		HttpOnly: true, Secure: s.secure || r.TLS != nil, SameSite: http.SameSiteStrictMode})
}

func newLoginResponse(sess identity.Session) loginResponse {
	return loginResponse{User: sess.User, CSRFToken: sess.CSRFToken, ExpiresAt: sess.ExpiresAt.UnixMilli(),
		SecondFactorRequired: len(sess.MFAMethods) > 0, SecondFactors: append([]string{}, sess.MFAMethods...)}
}

func (s *Server) login(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	var in loginRequest
	if err := decode(w, r, &in); err != nil {
		return err
	}
	sess, err := s.ident.Login(r.Context(), in.Username, in.Password, c.ip, r.UserAgent())
	if err != nil {
		return err
	}
	s.setSessionCookie(w, r, sess)
	writeJSON(w, http.StatusOK, newLoginResponse(sess))
	return nil
}

// loginSecondFactor completes a login waiting for its second factor with a
// TOTP code or a recovery code; the session gets a new token (cookie) and
// CSRF token.
func (s *Server) loginSecondFactor(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	var in codeRequest
	if err := decode(w, r, &in); err != nil {
		return err
	}
	if !c.principal.MFAPending {
		return identity.ErrNoSecondFactorDue
	}
	if in.Code == "" {
		return badRequest("missing_field", "code", "code is required: a TOTP code or a recovery code")
	}
	if s.mfa == nil {
		return &core.Error{Kind: core.KindUnavailable, Code: "mfa_unavailable", Message: "second factors are unavailable"}
	}
	if err := s.mfa.Verify(r.Context(), c.actor(), c.principal.UserID, in.Code); err != nil {
		return err
	}
	sess, err := s.ident.CompleteSecondFactor(r.Context(), c.principal, mfa.CodeMethod(in.Code), c.ip)
	if err != nil {
		return err
	}
	s.setSessionCookie(w, r, sess)
	writeJSON(w, http.StatusOK, newLoginResponse(sess))
	return nil
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := s.ident.Logout(r.Context(), c.principal, c.ip); err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", Expires: time.Unix(0, 0), MaxAge: -1,
		HttpOnly: true, Secure: s.secure || r.TLS != nil, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type meResponse struct {
	identity.User
	CSRFToken string `json:"csrf_token,omitempty"`
	// TOTPEnabled and RecoveryCodesLeft describe the caller's second factor.
	TOTPEnabled       bool `json:"totp_enabled"`
	RecoveryCodesLeft int  `json:"recovery_codes_left"`
}

func (s *Server) me(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	u, err := s.ident.GetUser(r.Context(), c.actor(), c.principal.UserID)
	if err != nil {
		return err
	}
	var st mfa.Status
	if s.mfa != nil {
		if st, err = s.mfa.Status(r.Context(), u.ID); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, meResponse{User: u, CSRFToken: c.principal.CSRFToken, TOTPEnabled: st.TOTPEnabled, RecoveryCodesLeft: st.RecoveryCodesLeft})
	return nil
}

type passwordChange struct {
	CurrentPassword string `json:"current_password"`
	NewPassword     string `json:"new_password"`
}

// changePassword sets the caller's own password; their other sessions end.
func (s *Server) changePassword(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	var in passwordChange
	if err := decode(w, r, &in); err != nil {
		return err
	}
	if c.principal.TokenID != "" {
		return core.Forbidden("change the password in a login session, not with an API token")
	}
	if err := s.ident.ChangePassword(r.Context(), c.principal, in.CurrentPassword, in.NewPassword, c.ip); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	ts, err := s.ident.ListAPITokens(r.Context(), c.actor())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page[identity.APIToken]{Items: ts, Total: len(ts), Limit: len(ts)})
	return nil
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	var in identity.NewAPIToken
	if err := decode(w, r, &in); err != nil {
		return err
	}
	t, err := s.ident.CreateAPIToken(r.Context(), c.actor(), in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, t)
	return nil
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := s.ident.RevokeAPIToken(r.Context(), c.actor(), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// Users.

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	limit, offset, err := pagination(r)
	if err != nil {
		return err
	}
	users, total, err := s.ident.ListUsers(r.Context(), c.actor(), identity.ListParams{Search: r.URL.Query().Get("search"), Limit: limit, Offset: offset})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page[identity.User]{Items: users, Total: total, Limit: limit, Offset: offset})
	return nil
}

func (s *Server) createUser(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	var in identity.NewUser
	if err := decode(w, r, &in); err != nil {
		return err
	}
	u, err := s.ident.CreateUser(r.Context(), c.actor(), in)
	return created(w, u, err)
}

func (s *Server) getUser(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	u, err := s.ident.GetUser(r.Context(), c.actor(), r.PathValue("id"))
	return ok(w, u, err)
}

func (s *Server) updateUser(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	var in identity.UserPatch
	if err := decode(w, r, &in); err != nil {
		return err
	}
	u, err := s.ident.UpdateUser(r.Context(), c.actor(), r.PathValue("id"), in)
	return ok(w, u, err)
}

func (s *Server) deleteUser(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	return noContent(w, s.ident.DeleteUser(r.Context(), c.actor(), r.PathValue("id")))
}

// Groups.

func (s *Server) listGroups(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	limit, offset, err := pagination(r)
	if err != nil {
		return err
	}
	gs, total, err := s.ident.ListGroups(r.Context(), c.actor(), identity.ListParams{Limit: limit, Offset: offset})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page[identity.Group]{Items: gs, Total: total, Limit: limit, Offset: offset})
	return nil
}

func (s *Server) createGroup(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	var in identity.NewGroup
	if err := decode(w, r, &in); err != nil {
		return err
	}
	g, err := s.ident.CreateGroup(r.Context(), c.actor(), in)
	return created(w, g, err)
}

func (s *Server) getGroup(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	g, err := s.ident.GetGroup(r.Context(), c.actor(), r.PathValue("id"))
	return ok(w, g, err)
}

func (s *Server) updateGroup(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	var in identity.GroupPatch
	if err := decode(w, r, &in); err != nil {
		return err
	}
	g, err := s.ident.UpdateGroup(r.Context(), c.actor(), r.PathValue("id"), in)
	return ok(w, g, err)
}

func (s *Server) deleteGroup(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	return noContent(w, s.ident.DeleteGroup(r.Context(), c.actor(), r.PathValue("id")))
}

// Devices.

func (s *Server) listDevices(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	limit, offset, err := pagination(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	ds, total, err := s.vpn.ListDevices(r.Context(), c.actor(), vpn.DeviceFilter{
		ListParams: vpn.ListParams{Search: q.Get("search"), Limit: limit, Offset: offset},
		UserID:     q.Get("user_id"), LocationID: q.Get("location_id"),
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page[vpn.Device]{Items: ds, Total: total, Limit: limit, Offset: offset})
	return nil
}

// createdDeviceResponse adds, for a server-generated key, the ready config
// of every location: the only time the private key is ever shown.
type createdDeviceResponse struct {
	vpn.CreatedDevice
	Configs map[string]string `json:"configs,omitempty"`
}

func (s *Server) createDevice(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	var in vpn.NewDevice
	if err := decode(w, r, &in); err != nil {
		return err
	}
	d, err := s.vpn.CreateDevice(r.Context(), c.actor(), in)
	if err != nil {
		return err
	}
	resp := createdDeviceResponse{CreatedDevice: d}
	if d.PrivateKey != "" {
		resp.Configs = map[string]string{}
		for _, a := range d.Addresses {
			if _, done := resp.Configs[a.LocationID]; done {
				continue
			}
			cfg, err := s.vpn.DeviceConfig(r.Context(), c.actor(), d.ID, a.LocationID, d.PrivateKey)
			if err != nil {
				return err
			}
			resp.Configs[a.LocationID] = cfg
		}
	}
	writeJSON(w, http.StatusCreated, resp)
	return nil
}

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	d, err := s.vpn.GetDevice(r.Context(), c.actor(), r.PathValue("id"))
	return ok(w, d, err)
}

func (s *Server) updateDevice(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	var in vpn.DevicePatch
	if err := decode(w, r, &in); err != nil {
		return err
	}
	d, err := s.vpn.UpdateDevice(r.Context(), c.actor(), r.PathValue("id"), in)
	return ok(w, d, err)
}

func (s *Server) deleteDevice(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	return noContent(w, s.vpn.DeleteDevice(r.Context(), c.actor(), r.PathValue("id")))
}

func (s *Server) deviceConfig(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	cfg, err := s.vpn.DeviceConfig(r.Context(), c.actor(), r.PathValue("id"), r.URL.Query().Get("location"), "")
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(cfg))
	return nil
}

// Locations.

func (s *Server) listLocations(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	limit, offset, err := pagination(r)
	if err != nil {
		return err
	}
	ls, total, err := s.vpn.ListLocations(r.Context(), c.actor(), vpn.ListParams{Limit: limit, Offset: offset})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page[vpn.Location]{Items: ls, Total: total, Limit: limit, Offset: offset})
	return nil
}

func (s *Server) createLocation(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	var in vpn.LocationInput
	if err := decode(w, r, &in); err != nil {
		return err
	}
	if in.Name == nil {
		return badRequest("missing_field", "name", "name is required")
	}
	if in.Endpoint == nil {
		return badRequest("missing_field", "endpoint", "endpoint is required")
	}
	l, err := s.vpn.CreateLocation(r.Context(), c.actor(), in)
	return created(w, l, err)
}

func (s *Server) getLocation(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	l, err := s.vpn.GetLocation(r.Context(), c.actor(), r.PathValue("id"))
	return ok(w, l, err)
}

func (s *Server) updateLocation(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	var in vpn.LocationInput
	if err := decode(w, r, &in); err != nil {
		return err
	}
	l, err := s.vpn.UpdateLocation(r.Context(), c.actor(), r.PathValue("id"), in)
	return ok(w, l, err)
}

func (s *Server) deleteLocation(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	return noContent(w, s.vpn.DeleteLocation(r.Context(), c.actor(), r.PathValue("id")))
}

// Gateways and proxies.

func (s *Server) listGateways(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	limit, offset, err := pagination(r)
	if err != nil {
		return err
	}
	gs, total, err := s.vpn.ListGateways(r.Context(), c.actor(), r.PathValue("id"), vpn.ListParams{Limit: limit, Offset: offset})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page[vpn.Component]{Items: gs, Total: total, Limit: limit, Offset: offset})
	return nil
}

func (s *Server) createGateway(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	var in vpn.ComponentInput
	if err := decode(w, r, &in); err != nil {
		return err
	}
	g, err := s.vpn.CreateGateway(r.Context(), c.actor(), r.PathValue("id"), in)
	return created(w, g, err)
}

func (s *Server) issueJoinToken(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	t, err := s.vpn.IssueJoinToken(r.Context(), c.actor(), r.PathValue("id"), r.PathValue("gid"))
	return created(w, t, err)
}

func (s *Server) getGateway(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	g, err := s.vpn.GetGateway(r.Context(), c.actor(), r.PathValue("id"), r.PathValue("gid"))
	return ok(w, g, err)
}

func (s *Server) updateGateway(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	var in vpn.ComponentInput
	if err := decode(w, r, &in); err != nil {
		return err
	}
	g, err := s.vpn.UpdateGateway(r.Context(), c.actor(), r.PathValue("id"), r.PathValue("gid"), in)
	return ok(w, g, err)
}

func (s *Server) deleteGateway(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	return noContent(w, s.vpn.DeleteGateway(r.Context(), c.actor(), r.PathValue("id"), r.PathValue("gid")))
}

func (s *Server) listProxies(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	limit, offset, err := pagination(r)
	if err != nil {
		return err
	}
	ps, total, err := s.vpn.ListProxies(r.Context(), c.actor(), vpn.ListParams{Limit: limit, Offset: offset})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page[vpn.Component]{Items: ps, Total: total, Limit: limit, Offset: offset})
	return nil
}

func (s *Server) createProxy(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	var in vpn.ComponentInput
	if err := decode(w, r, &in); err != nil {
		return err
	}
	p, err := s.vpn.CreateProxy(r.Context(), c.actor(), in)
	return created(w, p, err)
}

func (s *Server) issueProxyJoinToken(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	t, err := s.vpn.IssueProxyJoinToken(r.Context(), c.actor(), r.PathValue("id"))
	return created(w, t, err)
}

func (s *Server) getProxy(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	p, err := s.vpn.GetProxy(r.Context(), c.actor(), r.PathValue("id"))
	return ok(w, p, err)
}

func (s *Server) updateProxy(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	var in vpn.ComponentInput
	if err := decode(w, r, &in); err != nil {
		return err
	}
	p, err := s.vpn.UpdateProxy(r.Context(), c.actor(), r.PathValue("id"), in)
	return ok(w, p, err)
}

func (s *Server) deleteProxy(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	return noContent(w, s.vpn.DeleteProxy(r.Context(), c.actor(), r.PathValue("id")))
}

// Settings and audit.

func (s *Server) getSettings(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if !c.principal.IsAdmin {
		return core.Forbidden("only admins can read settings")
	}
	st, err := core.LoadSettings(r.Context(), s.db)
	return ok(w, st, err)
}

func (s *Server) updateSettings(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	var in core.SettingsPatch
	if err := decode(w, r, &in); err != nil {
		return err
	}
	st, err := core.UpdateSettings(r.Context(), s.db, c.actor(), in)
	return ok(w, st, err)
}

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if !c.principal.IsAdmin {
		return core.Forbidden("only admins can read the audit log")
	}
	limit, offset, err := pagination(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	f := core.AuditFilter{Action: q.Get("action"), ActorID: q.Get("actor_id"), TargetID: q.Get("target_id"), Limit: limit, Offset: offset}
	for name, dst := range map[string]*int64{"from": &f.From, "to": &f.To} {
		if v := q.Get(name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				ms, err2 := strconv.ParseInt(v, 10, 64)
				if err2 != nil {
					return badRequest("invalid_query", name, "%s must be RFC 3339 or Unix milliseconds", name)
				}
				*dst = ms
				continue
			}
			*dst = t.UnixMilli()
		}
	}
	entries, total, err := core.ListAudit(r.Context(), s.db, f)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page[core.AuditEntry]{Items: entries, Total: total, Limit: limit, Offset: offset})
	return nil
}

// Response helpers.

func ok(w http.ResponseWriter, v any, err error) error {
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func created(w http.ResponseWriter, v any, err error) error {
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, v)
	return nil
}

func noContent(w http.ResponseWriter, err error) error {
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) getCluster(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if !c.principal.IsAdmin {
		return core.Forbidden("only admins can read the cluster state")
	}
	view, err := s.cluster.Cluster(r.Context(), time.Now())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, view)
	return nil
}
