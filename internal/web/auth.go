package web

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/mfa"
)

func (s *Server) authRoutes() []route {
	return []route{
		{pattern: "GET /login", anonymous: true, handle: s.loginPage},
		{pattern: "POST /login", anonymous: true, handle: s.login},
		{pattern: "GET /login/mfa", anonymous: true, handle: s.secondFactorPage},
		{pattern: "POST /login/mfa", anonymous: true, handle: s.secondFactor},
		{pattern: "POST /logout", anonymous: true, handle: s.logout},
	}
}

type loginData struct {
	Next string
	// Methods are the second factors the user can use (second step).
	Methods []string
	// Username of the login waiting for its second factor.
	Username string
}

func (l loginData) Has(method string) bool {
	for _, m := range l.Methods {
		if m == method {
			return true
		}
	}
	return false
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	p := s.page(c, "Log in", "", loginData{Next: localPath(r.URL.Query().Get("next"))})
	s.render(w, http.StatusOK, "login.html", p)
	return nil
}

func (s *Server) login(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := r.ParseForm(); err != nil {
		return err
	}
	next := localPath(r.PostFormValue("next"))
	sess, err := s.o.Identity.Login(r.Context(), r.PostFormValue("username"), r.PostFormValue("password"), c.ip, r.UserAgent())
	if err != nil {
		p := s.page(c, "Log in", "", loginData{Next: next})
		r.PostForm.Del("password")
		s.formError(w, r, p, "login.html", err)
		return nil
	}
	s.setSessionCookie(w, r, sess)
	if len(sess.MFAMethods) > 0 {
		redirect(w, r, "/login/mfa?next="+url.QueryEscape(next))
		return nil
	}
	redirect(w, r, next)
	return nil
}

// pending authenticates a session waiting for its second factor.
func (s *Server) pending(w http.ResponseWriter, r *http.Request, c *reqCtx) bool {
	var err error
	if c.principal, err = s.cookiePrincipal(r); err != nil {
		redirect(w, r, "/login")
		return false
	}
	if !c.principal.MFAPending {
		redirect(w, r, "/")
		return false
	}
	c.csrf = c.principal.CSRFToken
	return true
}

func (s *Server) secondFactorData(r *http.Request, c *reqCtx, next string) (loginData, error) {
	methods, err := s.o.MFA.SecondFactors(r.Context(), c.principal.UserID)
	return loginData{Next: next, Methods: methods, Username: c.principal.Username}, err
}

func (s *Server) secondFactorPage(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if !s.pending(w, r, c) {
		return nil
	}
	data, err := s.secondFactorData(r, c, localPath(r.URL.Query().Get("next")))
	if err != nil {
		return err
	}
	s.render(w, http.StatusOK, "login_mfa.html", s.page(c, "Second factor", "", data))
	return nil
}

func (s *Server) secondFactor(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if !s.pending(w, r, c) {
		return nil
	}
	if err := r.ParseForm(); err != nil {
		return err
	}
	if !validCSRF(r, c.csrf) {
		s.renderError(w, r, c, http.StatusForbidden, "The form expired. Log in again.")
		return nil
	}
	next := localPath(r.PostFormValue("next"))
	code := strings.TrimSpace(r.PostFormValue("code"))
	err := s.o.MFA.Verify(r.Context(), c.actor(), c.principal.UserID, code)
	if err == nil {
		var sess identity.Session
		if sess, err = s.o.Identity.CompleteSecondFactor(r.Context(), c.principal, mfa.CodeMethod(code), c.ip); err == nil {
			s.setSessionCookie(w, r, sess)
			redirect(w, r, next)
			return nil
		}
	}
	data, derr := s.secondFactorData(r, c, next)
	if derr != nil {
		return derr
	}
	r.PostForm.Del("code")
	s.formError(w, r, s.page(c, "Second factor", "", data), "login_mfa.html", err)
	return nil
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if p, err := s.cookiePrincipal(r); err == nil {
		if !validCSRF(r, p.CSRFToken) {
			s.renderError(w, r, c, http.StatusForbidden, "The form expired. Reload the page and try again.")
			return nil
		}
		if err := s.o.Identity.Logout(r.Context(), p, c.ip); err != nil {
			return err
		}
	}
	s.clearSessionCookie(w, r)
	redirect(w, r, "/login")
	return nil
}
