package web

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/mfa"
	"github.com/wardvpn/ward/internal/core/vpn"
)

// accountRoutes: the signed-in user's own page — password, TOTP and
// recovery codes, API tokens, their devices. Security keys have their own
// page (webauthn.go).
func (s *Server) accountRoutes() []route {
	return []route{
		{pattern: "GET /account", handle: s.account},
		{pattern: "POST /account/password", handle: s.accountPassword},
		{pattern: "POST /account/totp", handle: s.accountTOTPSetup},
		{pattern: "POST /account/totp/confirm", handle: s.accountTOTPConfirm},
		{pattern: "POST /account/totp/disable", handle: s.accountTOTPDisable},
		{pattern: "POST /account/recovery-codes", handle: s.accountRecoveryCodes},
		{pattern: "POST /account/tokens", handle: s.accountTokenCreate},
		{pattern: "POST /account/tokens/{id}/revoke", handle: s.accountTokenRevoke},
	}
}

type accountData struct {
	User    identity.User
	MFA     mfa.Status
	Tokens  []identity.APIToken
	Devices []vpn.Device
	// DeviceTotal counts all the user's devices (Devices is the first page).
	DeviceTotal int
	// Shown once, in the answer of the request that made them:
	TOTPSetup     *mfa.Setup
	RecoveryCodes []string
	NewToken      *identity.APIToken
}

const accountDevices = 20

func (s *Server) accountData(r *http.Request, c *reqCtx) (*accountData, error) {
	ctx := r.Context()
	u, err := s.o.Identity.GetUser(ctx, c.actor(), c.principal.UserID)
	if err != nil {
		return nil, err
	}
	d := &accountData{User: u}
	if d.MFA, err = s.o.MFA.Status(ctx, u.ID); err != nil {
		return nil, err
	}
	if d.Tokens, err = s.o.Identity.ListAPITokens(ctx, c.actor()); err != nil {
		return nil, err
	}
	if d.Devices, d.DeviceTotal, err = s.o.VPN.ListDevices(ctx, c.actor(), vpn.DeviceFilter{UserID: u.ID,
		ListParams: vpn.ListParams{Limit: accountDevices}}); err != nil {
		return nil, err
	}
	return d, nil
}

// renderAccount shows the account page with data (and an error from the
// form that was sent, if any).
func (s *Server) renderAccount(w http.ResponseWriter, r *http.Request, c *reqCtx, d *accountData, status int, notice string) {
	p := s.page(c, "My account", "account", d)
	p.Notice = notice
	s.render(w, status, "account.html", p)
}

func (s *Server) account(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	d, err := s.accountData(r, c)
	if err != nil {
		return err
	}
	notice := ""
	switch r.URL.Query().Get("done") {
	case "password":
		notice = "Your password was changed; your other sessions were logged out."
	case "totp-off":
		notice = "Two-factor authentication with an app is off."
	case "token-revoked":
		notice = "The token was revoked."
	}
	s.renderAccount(w, r, c, d, http.StatusOK, notice)
	return nil
}

// accountFormError re-renders the account page with a form's error.
func (s *Server) accountFormError(w http.ResponseWriter, r *http.Request, c *reqCtx, err error, keep func(*accountData)) error {
	d, derr := s.accountData(r, c)
	if derr != nil {
		return derr
	}
	if keep != nil {
		keep(d)
	}
	s.formError(w, r, s.page(c, "My account", "account", d), "account.html", err)
	return nil
}

func (s *Server) accountPassword(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	current, next := r.PostFormValue("current_password"), r.PostFormValue("new_password")
	if next != r.PostFormValue("confirm_password") {
		return s.accountFormError(w, r, c, fieldError("new_password", "the two new passwords differ"), nil)
	}
	if err := s.o.Identity.ChangePassword(r.Context(), c.principal, current, next, c.ip); err != nil {
		r.PostForm.Del("current_password")
		r.PostForm.Del("new_password")
		r.PostForm.Del("confirm_password")
		return s.accountFormError(w, r, c, err, nil)
	}
	redirect(w, r, "/account?done=password")
	return nil
}

// accountTOTPSetup starts (or restarts) TOTP enrollment: the secret and its
// QR code are shown in this answer; the confirm form completes it.
func (s *Server) accountTOTPSetup(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	setup, err := s.o.MFA.Setup(r.Context(), c.actor(), c.principal.UserID)
	if err != nil {
		return s.accountFormError(w, r, c, err, nil)
	}
	d, err := s.accountData(r, c)
	if err != nil {
		return err
	}
	d.TOTPSetup = &setup
	s.renderAccount(w, r, c, d, http.StatusOK, "Scan the QR code with your authenticator app, then enter the code it shows.")
	return nil
}

func (s *Server) accountTOTPConfirm(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	codes, err := s.o.MFA.Confirm(r.Context(), c.actor(), c.principal.UserID, r.PostFormValue("code"))
	if err != nil {
		r.PostForm.Del("code")
		return s.accountFormError(w, r, c, err, nil)
	}
	d, err := s.accountData(r, c)
	if err != nil {
		return err
	}
	d.RecoveryCodes = codes.Codes
	s.renderAccount(w, r, c, d, http.StatusOK, "Two-factor authentication is on. Keep the recovery codes below somewhere safe: they are shown only now.")
	return nil
}

func (s *Server) accountTOTPDisable(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := s.o.MFA.Disable(r.Context(), c.actor(), c.principal.UserID, r.PostFormValue("code")); err != nil {
		r.PostForm.Del("code")
		return s.accountFormError(w, r, c, err, nil)
	}
	redirect(w, r, "/account?done=totp-off")
	return nil
}

func (s *Server) accountRecoveryCodes(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	codes, err := s.o.MFA.RegenerateRecoveryCodes(r.Context(), c.actor(), c.principal.UserID, r.PostFormValue("code"))
	if err != nil {
		r.PostForm.Del("code")
		return s.accountFormError(w, r, c, err, nil)
	}
	d, err := s.accountData(r, c)
	if err != nil {
		return err
	}
	d.RecoveryCodes = codes.Codes
	s.renderAccount(w, r, c, d, http.StatusOK, "New recovery codes; the old ones no longer work. They are shown only now.")
	return nil
}

func (s *Server) accountTokenCreate(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	days := 0
	if v := strings.TrimSpace(r.PostFormValue("expires_in_days")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return s.accountFormError(w, r, c, fieldError("expires_in_days", "enter a number of days (0: never)"), nil)
		}
		days = n
	}
	tok, err := s.o.Identity.CreateAPIToken(r.Context(), c.actor(), identity.NewAPIToken{Name: r.PostFormValue("name"), ExpiresInDays: days})
	if err != nil {
		return s.accountFormError(w, r, c, err, nil)
	}
	d, err := s.accountData(r, c)
	if err != nil {
		return err
	}
	d.NewToken = &tok
	s.renderAccount(w, r, c, d, http.StatusCreated, "Token created. Copy it now: it is shown only once.")
	return nil
}

func (s *Server) accountTokenRevoke(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := s.o.Identity.RevokeAPIToken(r.Context(), c.actor(), r.PathValue("id")); err != nil {
		return err
	}
	redirect(w, r, "/account?done=token-revoked")
	return nil
}
