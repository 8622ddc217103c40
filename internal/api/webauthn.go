package api

import (
	"encoding/json"
	"net/http"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/webauthn"
)

// WebAuthn security keys and passkeys: the caller's keys under
// /api/v1/me/webauthn, and the login's second step under
// /api/v1/auth/webauthn (for a session waiting for its second factor, like
// POST /api/v1/auth/mfa). A ceremony is begun and finished in two calls,
// which may reach different core replicas; the finish calls take the
// browser's PublicKeyCredential JSON as it is.
func (s *Server) webauthnRoutes() []Route {
	r := func(method, path string, auth authMode, h handlerFunc) Route {
		return Route{Method: method, Path: path, auth: auth, handle: h}
	}
	const v1 = "/api/v1"
	return []Route{
		r("GET", v1+"/me/webauthn/credentials", authenticated, s.listWebAuthn),
		r("POST", v1+"/me/webauthn/register/begin", authenticated, s.beginWebAuthnRegistration),
		r("POST", v1+"/me/webauthn/register/finish", authenticated, s.finishWebAuthnRegistration),
		r("PATCH", v1+"/me/webauthn/credentials/{id}", authenticated, s.renameWebAuthn),
		r("DELETE", v1+"/me/webauthn/credentials/{id}", authenticated, s.deleteWebAuthn),
		r("POST", v1+"/auth/webauthn/begin", secondFactor, s.beginWebAuthnLogin),
		r("POST", v1+"/auth/webauthn/finish", secondFactor, s.finishWebAuthnLogin),
	}
}

var errWebAuthnUnavailable = &core.Error{Kind: core.KindUnavailable, Code: "webauthn_unavailable",
	Message: "security keys are not available: core's public URL must be https:// (or http://localhost)"}

// webauthnRegisterFinish completes a registration.
type webauthnRegisterFinish struct {
	CeremonyID string `json:"ceremony_id"`
	// Name names the key (optional; "Security key" when empty).
	Name string `json:"name"`
	// Credential is the PublicKeyCredential navigator.credentials.create
	// returned, in its JSON form (binary fields base64url).
	Credential json.RawMessage `json:"credential"`
}

// webauthnLoginFinish completes the second factor of a login.
type webauthnLoginFinish struct {
	CeremonyID string `json:"ceremony_id"`
	// Credential is the PublicKeyCredential navigator.credentials.get
	// returned, in its JSON form.
	Credential json.RawMessage `json:"credential"`
}

type webauthnRename struct {
	Name string `json:"name"`
}

func (s *Server) webauthnReady() error {
	if s.webauthn == nil {
		return errWebAuthnUnavailable
	}
	return nil
}

func requireCeremony(id string, cred json.RawMessage) error {
	if id == "" {
		return badRequest("missing_field", "ceremony_id", "ceremony_id is required: the id the begin call returned")
	}
	if len(cred) == 0 || string(cred) == "null" {
		return badRequest("missing_field", "credential", "credential is required: the browser's PublicKeyCredential as JSON")
	}
	return nil
}

func (s *Server) listWebAuthn(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := s.webauthnReady(); err != nil {
		return err
	}
	keys, err := s.webauthn.List(r.Context(), c.actor(), c.principal.UserID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page[webauthn.Credential]{Items: keys, Total: len(keys), Limit: len(keys)})
	return nil
}

func (s *Server) beginWebAuthnRegistration(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := s.webauthnReady(); err != nil {
		return err
	}
	start, err := s.webauthn.BeginRegistration(r.Context(), c.actor(), c.principal.UserID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, start)
	return nil
}

func (s *Server) finishWebAuthnRegistration(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	var in webauthnRegisterFinish
	if err := decode(w, r, &in); err != nil {
		return err
	}
	if err := requireCeremony(in.CeremonyID, in.Credential); err != nil {
		return err
	}
	if err := s.webauthnReady(); err != nil {
		return err
	}
	cred, err := s.webauthn.FinishRegistration(r.Context(), c.actor(), c.principal.UserID, in.CeremonyID, in.Name, in.Credential)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, cred)
	return nil
}

func (s *Server) renameWebAuthn(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	var in webauthnRename
	if err := decode(w, r, &in); err != nil {
		return err
	}
	if err := s.webauthnReady(); err != nil {
		return err
	}
	cred, err := s.webauthn.Rename(r.Context(), c.actor(), c.principal.UserID, r.PathValue("id"), in.Name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, cred)
	return nil
}

func (s *Server) deleteWebAuthn(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := s.webauthnReady(); err != nil {
		return err
	}
	if err := s.webauthn.Delete(r.Context(), c.actor(), c.principal.UserID, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) beginWebAuthnLogin(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if !c.principal.MFAPending {
		return identity.ErrNoSecondFactorDue
	}
	if err := s.webauthnReady(); err != nil {
		return err
	}
	start, err := s.webauthn.BeginLogin(r.Context(), c.principal.UserID, c.principal.SessionID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, start)
	return nil
}

// finishWebAuthnLogin completes a login waiting for its second factor
// with a security key; the session gets a new token (cookie) and CSRF
// token, as with POST /api/v1/auth/mfa.
func (s *Server) finishWebAuthnLogin(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	var in webauthnLoginFinish
	if err := decode(w, r, &in); err != nil {
		return err
	}
	if !c.principal.MFAPending {
		return identity.ErrNoSecondFactorDue
	}
	if err := requireCeremony(in.CeremonyID, in.Credential); err != nil {
		return err
	}
	if err := s.webauthnReady(); err != nil {
		return err
	}
	if _, err := s.webauthn.FinishLogin(r.Context(), c.actor(), c.principal.UserID, c.principal.SessionID, in.CeremonyID, in.Credential); err != nil {
		return err
	}
	sess, err := s.ident.CompleteSecondFactor(r.Context(), c.principal, webauthn.Method, c.ip)
	if err != nil {
		return err
	}
	s.setSessionCookie(w, r, sess)
	writeJSON(w, http.StatusOK, newLoginResponse(sess))
	return nil
}
