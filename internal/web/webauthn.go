package web

import (
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"net/url"
	"slices"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/webauthn"
	"github.com/wardvpn/ward/internal/store"
)

// Security keys and passkeys: My account → Security keys lists, adds,
// renames and deletes them; the second-factor step of the login offers
// them. The browser part (navigator.credentials) is static/webauthn.js; it
// talks JSON to the begin/finish endpoints here, with the session's CSRF
// token in X-CSRF-Token.
func (s *Server) webauthnRoutes() []route {
	return []route{
		{pattern: "GET /account/security-keys", handle: s.securityKeys},
		{pattern: "POST /account/security-keys/register/begin", handle: s.securityKeyBegin},
		{pattern: "POST /account/security-keys/register/finish", handle: s.securityKeyFinish},
		{pattern: "POST /account/security-keys/{id}/rename", handle: s.securityKeyRename},
		{pattern: "POST /account/security-keys/{id}/delete", handle: s.securityKeyDelete},
		// The login's second step: the session only waits for its second
		// factor, so these authenticate it themselves (like POST /login/mfa).
		{pattern: "POST /login/mfa/webauthn/begin", anonymous: true, handle: s.webauthnLoginBegin},
		{pattern: "POST /login/mfa/webauthn/finish", anonymous: true, handle: s.webauthnLoginFinish},
	}
}

// maxWebAuthnBody bounds the JSON the browser posts.
const maxWebAuthnBody = 128 << 10

var errWebAuthnDisabled = &core.Error{Kind: core.KindUnavailable, Code: "webauthn_unavailable",
	Message: "security keys are not available: core's public URL must be https:// (or http://localhost)"}

type securityKeysData struct {
	Enabled bool
	Keys    []keyRow
	// OnlyFactor: the user has no TOTP, so deleting the last key leaves
	// the password alone.
	OnlyFactor bool
	// RenameID is the key whose rename form shows an error.
	RenameID string
	Max      int
}

func (s *Server) securityKeysPage(r *http.Request, c *reqCtx) (*Page, error) {
	data := securityKeysData{Enabled: s.o.WebAuthn != nil, Max: webauthn.MaxCredentials}
	p := s.page(c, "Security keys", "account", &data)
	if s.o.WebAuthn == nil {
		return p, nil
	}
	keys, err := s.o.WebAuthn.List(r.Context(), c.actor(), c.principal.UserID)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		data.Keys = append(data.Keys, keyRow{Credential: k, Kind: keyKind(k)})
	}
	if s.o.MFA != nil {
		hasTOTP, err := s.o.MFA.HasTOTP(r.Context(), c.principal.UserID)
		if err != nil {
			return nil, err
		}
		data.OnlyFactor = !hasTOTP
	}
	return p, nil
}

// keyRow is a key as the list shows it.
type keyRow struct {
	webauthn.Credential
	Kind string
}

// keyKind names what kind of authenticator holds a key.
func keyKind(k webauthn.Credential) string {
	switch {
	case k.BackupEligible:
		return "Passkey (synced)"
	case slices.Contains(k.Transports, "internal"):
		return "Passkey on a device"
	}
	return "Security key"
}

func (s *Server) securityKeys(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	p, err := s.securityKeysPage(r, c)
	if err != nil {
		return err
	}
	data := p.Data.(*securityKeysData)
	q := r.URL.Query()
	for _, k := range data.Keys {
		switch k.ID {
		case q.Get("added"):
			p.Notice = "Security key “" + k.Name + "” added. You will be asked for a security key or passkey when you log in."
		case q.Get("renamed"):
			p.Notice = "Security key renamed to “" + k.Name + "”."
		}
	}
	if q.Get("deleted") != "" {
		p.Notice = "Security key deleted."
	}
	s.render(w, http.StatusOK, "security_keys.html", p)
	return nil
}

// waFinishInput is what webauthn.js posts to a finish endpoint.
type waFinishInput struct {
	CeremonyID string          `json:"ceremony_id"`
	Name       string          `json:"name"`
	Next       string          `json:"next"`
	Credential json.RawMessage `json:"credential"`
}

// waAnswer is the JSON webauthn.js reads: options of a begun ceremony,
// where to go next, or an error message (with the field it is about).
type waAnswer struct {
	CeremonyID string `json:"ceremony_id,omitempty"`
	Options    any    `json:"options,omitempty"`
	Redirect   string `json:"redirect,omitempty"`
	Error      string `json:"error,omitempty"`
	Field      string `json:"field,omitempty"`
}

func waWrite(w http.ResponseWriter, status int, v waAnswer) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// waFail answers an error as JSON: its message for people and the field.
func (s *Server) waFail(w http.ResponseWriter, r *http.Request, err error) {
	status, msg, field := describe(err)
	if status == http.StatusInternalServerError {
		s.log.Error("webauthn request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	waWrite(w, status, waAnswer{Error: msg, Field: field})
}

// waDecode reads the JSON body of a finish call.
func waDecode(w http.ResponseWriter, r *http.Request) (waFinishInput, error) {
	var in waFinishInput
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return in, core.Invalid("invalid_json", "", "send the answer as JSON")
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxWebAuthnBody))
	if err := dec.Decode(&in); err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return in, core.Invalid("body_too_large", "", "the answer is too large")
		}
		return in, core.Invalid("invalid_json", "", "the answer is not valid JSON")
	}
	if len(in.Credential) == 0 || string(in.Credential) == "null" {
		return in, core.Invalid("missing_field", "credential", "the answer of the security key is missing")
	}
	return in, nil
}

func (s *Server) securityKeyBegin(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if s.o.WebAuthn == nil {
		s.waFail(w, r, errWebAuthnDisabled)
		return nil
	}
	start, err := s.o.WebAuthn.BeginRegistration(r.Context(), c.actor(), c.principal.UserID)
	if err != nil {
		s.waFail(w, r, err)
		return nil
	}
	waWrite(w, http.StatusOK, waAnswer{CeremonyID: start.CeremonyID, Options: start.Options})
	return nil
}

func (s *Server) securityKeyFinish(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if s.o.WebAuthn == nil {
		s.waFail(w, r, errWebAuthnDisabled)
		return nil
	}
	in, err := waDecode(w, r)
	if err != nil {
		s.waFail(w, r, err)
		return nil
	}
	cred, err := s.o.WebAuthn.FinishRegistration(r.Context(), c.actor(), c.principal.UserID, in.CeremonyID, in.Name, in.Credential)
	if err != nil {
		s.waFail(w, r, err)
		return nil
	}
	waWrite(w, http.StatusOK, waAnswer{Redirect: "/account/security-keys?added=" + url.QueryEscape(cred.ID)})
	return nil
}

func (s *Server) securityKeyRename(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if s.o.WebAuthn == nil {
		return errWebAuthnDisabled
	}
	if err := r.ParseForm(); err != nil {
		return err
	}
	id := r.PathValue("id")
	if _, err := s.o.WebAuthn.Rename(r.Context(), c.actor(), c.principal.UserID, id, r.PostFormValue("name")); err != nil {
		p, perr := s.securityKeysPage(r, c)
		if perr != nil {
			return perr
		}
		p.Data.(*securityKeysData).RenameID = id
		s.formError(w, r, p, "security_keys.html", err)
		return nil
	}
	redirect(w, r, "/account/security-keys?renamed="+url.QueryEscape(id))
	return nil
}

func (s *Server) securityKeyDelete(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if s.o.WebAuthn == nil {
		return errWebAuthnDisabled
	}
	if err := s.o.WebAuthn.Delete(r.Context(), c.actor(), c.principal.UserID, r.PathValue("id")); err != nil {
		return err
	}
	redirect(w, r, "/account/security-keys?deleted=1")
	return nil
}

// waPending authenticates a session waiting for its second factor for the
// JSON login endpoints (answering JSON, not redirects).
func (s *Server) waPending(w http.ResponseWriter, r *http.Request, c *reqCtx) bool {
	var err error
	c.principal, err = s.cookiePrincipal(r)
	switch {
	case err != nil && store.IsUnavailable(err):
		s.waFail(w, r, err)
		return false
	case err != nil:
		waWrite(w, http.StatusUnauthorized, waAnswer{Error: "Your login expired. Log in again.", Redirect: "/login"})
		return false
	case !c.principal.MFAPending:
		waWrite(w, http.StatusConflict, waAnswer{Error: "You are logged in already.", Redirect: "/"})
		return false
	}
	c.csrf = c.principal.CSRFToken
	if !validCSRF(r, c.csrf) {
		waWrite(w, http.StatusForbidden, waAnswer{Error: "The page expired. Log in again.", Redirect: "/login"})
		return false
	}
	if s.o.WebAuthn == nil {
		s.waFail(w, r, errWebAuthnDisabled)
		return false
	}
	return true
}

func (s *Server) webauthnLoginBegin(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if !s.waPending(w, r, c) {
		return nil
	}
	start, err := s.o.WebAuthn.BeginLogin(r.Context(), c.principal.UserID, c.principal.SessionID)
	if err != nil {
		s.waFail(w, r, err)
		return nil
	}
	waWrite(w, http.StatusOK, waAnswer{CeremonyID: start.CeremonyID, Options: start.Options})
	return nil
}

func (s *Server) webauthnLoginFinish(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if !s.waPending(w, r, c) {
		return nil
	}
	in, err := waDecode(w, r)
	if err != nil {
		s.waFail(w, r, err)
		return nil
	}
	if _, err := s.o.WebAuthn.FinishLogin(r.Context(), c.actor(), c.principal.UserID, c.principal.SessionID, in.CeremonyID, in.Credential); err != nil {
		s.waFail(w, r, err)
		return nil
	}
	sess, err := s.o.Identity.CompleteSecondFactor(r.Context(), c.principal, webauthn.Method, c.ip)
	if err != nil {
		s.waFail(w, r, err)
		return nil
	}
	s.setSessionCookie(w, r, sess)
	waWrite(w, http.StatusOK, waAnswer{Redirect: localPath(in.Next)})
	return nil
}
