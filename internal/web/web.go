// Package web is ward core's browser UI: server-rendered html/template
// pages enhanced with htmx (vendored, embedded; no Node build step). It is
// a transport like internal/api: it authenticates with the same session
// cookie (so a login through the UI works on every replica), calls the same
// domain services, and shows their validation errors next to the fields.
package web

import (
	"bytes"
	"context"
	"crypto/subtle"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/wardvpn/ward/internal/api"
	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/enroll"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/mfa"
	"github.com/wardvpn/ward/internal/core/stats"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/core/webauthn"
	"github.com/wardvpn/ward/internal/lease"
	"github.com/wardvpn/ward/internal/mail"
	"github.com/wardvpn/ward/internal/store"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// SessionCookie is the cookie the API sets too: one login serves both.
const SessionCookie = "ward_session"

// Options are the services the pages use.
type Options struct {
	DB       *store.DB
	Identity *identity.Service
	VPN      *vpn.Service
	Stats    *stats.Service
	MFA      *mfa.Service
	Enroll   *enroll.Service
	Mail     *mail.Mailer
	// WebAuthn serves security keys (nil: disabled, e.g. when the public
	// URL cannot be a WebAuthn relying party).
	WebAuthn *webauthn.Service
	// Cluster reads the core replicas and leases (optional).
	Cluster ClusterView
	// SecureCookies marks the session cookie Secure (https public URL).
	SecureCookies bool
	Log           *slog.Logger
	Version       string
}

// Server serves the UI.
type Server struct {
	o     Options
	log   *slog.Logger
	pages map[string]*template.Template
	mux   *http.ServeMux
	// assetVersion busts browser caches of /static when ward is upgraded.
	assetVersion string
}

// New parses the templates and registers the pages.
func New(o Options) (*Server, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{o: o, log: o.Log.With("component", "web"), mux: http.NewServeMux(), assetVersion: o.Version}
	if s.assetVersion == "" {
		s.assetVersion = "dev"
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	s.pages = pages
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	fileServer := http.FileServerFS(static)
	s.mux.Handle("GET /static/", http.StripPrefix("/static/", cacheForever(fileServer)))
	for _, area := range [][]route{s.authRoutes(), s.overviewRoutes(), s.accountRoutes(), s.userRoutes(), s.groupRoutes(),
		s.deviceRoutes(), s.locationRoutes(), s.proxyRoutes(), s.settingsRoutes(), s.auditRoutes(), s.webauthnRoutes()} {
		for _, rt := range area {
			s.mux.Handle(rt.pattern, s.wrap(rt))
		}
	}
	return s, nil
}

// Handler serves the UI (every path the REST API does not own).
func (s *Server) Handler() http.Handler { return securityHeaders(s.mux) }

// route is one page or fragment. Pages with anonymous set are served
// without a session (login); all others need a full session, and admin
// ones an admin.
type route struct {
	pattern   string
	anonymous bool
	admin     bool
	handle    func(w http.ResponseWriter, r *http.Request, c *reqCtx) error
}

// reqCtx is what wrap learned about the request.
type reqCtx struct {
	principal identity.Principal
	ip        string
	// csrf is the session's CSRF token, put into every form and sent by
	// htmx as X-CSRF-Token.
	csrf string
}

func (c *reqCtx) actor() core.Actor { return c.principal.Actor(c.ip) }

func (s *Server) wrap(rt route) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w := &timedWriter{ResponseWriter: rw, start: time.Now()}
		c := &reqCtx{ip: clientIP(r)}
		// Browsers mark requests another site's page makes (Fetch
		// Metadata); no state change may come from one. This also covers
		// the login form, which has no session (and CSRF token) yet.
		if !safeMethod(r.Method) && r.Header.Get("Sec-Fetch-Site") == "cross-site" {
			s.renderError(w, r, c, http.StatusForbidden, "This form was sent from another site.")
			return
		}
		if !rt.anonymous {
			p, ok := s.session(w, r)
			if !ok {
				return
			}
			c.principal, c.csrf = p, p.CSRFToken
			if !safeMethod(r.Method) && !validCSRF(r, p.CSRFToken) {
				s.renderError(w, r, c, http.StatusForbidden, "The form expired or came from another site. Reload the page and try again.")
				return
			}
			if rt.admin && !p.IsAdmin {
				s.renderError(w, r, c, http.StatusForbidden, "Only administrators can open this page.")
				return
			}
		}
		if err := rt.handle(w, r, c); err != nil {
			s.fail(w, r, c, err)
		}
	})
}

// timedWriter adds a Server-Timing header (the handler's time until the
// answer starts) to every page, for the browser's dev tools and the page
// benchmark.
type timedWriter struct {
	http.ResponseWriter
	start       time.Time
	wroteHeader bool
}

func (w *timedWriter) WriteHeader(status int) {
	if !w.wroteHeader {
		w.wroteHeader = true
		w.Header().Set("Server-Timing", fmt.Sprintf("app;dur=%.2f", float64(time.Since(w.start).Microseconds())/1000))
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *timedWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// session authenticates the cookie, sending the browser to the login (or
// to the second-factor step) when it has no full session.
func (s *Server) session(w http.ResponseWriter, r *http.Request) (identity.Principal, bool) {
	p, err := s.cookiePrincipal(r)
	switch {
	case err == nil && p.MFAPending:
		redirect(w, r, "/login/mfa")
		return p, false
	case err == nil:
		return p, true
	case store.IsUnavailable(err):
		s.fail(w, r, &reqCtx{}, err)
		return p, false
	default:
		if de, ok := core.AsError(err); !ok || de.Kind != core.KindUnauthenticated {
			s.log.Error("authenticate", "err", err)
		}
	}
	next := r.URL.RequestURI()
	if r.Header.Get("HX-Request") != "" {
		next = r.Header.Get("HX-Current-URL")
		if u, err := url.Parse(next); err == nil {
			next = u.RequestURI()
		}
	}
	redirect(w, r, "/login?next="+url.QueryEscape(localPath(next)))
	return identity.Principal{}, false
}

// cookiePrincipal authenticates the session cookie, full or still waiting
// for its second factor; no cookie is core.ErrUnauthenticated.
func (s *Server) cookiePrincipal(r *http.Request) (identity.Principal, error) {
	cookie, err := r.Cookie(SessionCookie)
	if err != nil {
		return identity.Principal{}, core.ErrUnauthenticated
	}
	return s.o.Identity.Authenticate(r.Context(), cookie.Value)
}

// redirect sends the browser to target; htmx requests get HX-Redirect so
// the whole page changes, not a fragment.
func redirect(w http.ResponseWriter, r *http.Request, target string) {
	if r.Header.Get("HX-Request") != "" {
		w.Header().Set("HX-Redirect", target)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	status := http.StatusSeeOther
	if safeMethod(r.Method) {
		status = http.StatusFound
	}
	http.Redirect(w, r, target, status)
}

// localPath keeps a post-login redirect on this site.
func localPath(p string) string {
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.HasPrefix(p, "/\\") || strings.HasPrefix(p, "/login") {
		return "/"
	}
	return p
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// validCSRF accepts the token from the X-CSRF-Token header (htmx) or the
// csrf_token form field (plain forms).
func validCSRF(r *http.Request, want string) bool {
	got := r.Header.Get("X-CSRF-Token")
	if got == "" {
		got = r.PostFormValue("csrf_token")
	}
	return got != "" && want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func (s *Server) setSessionCookie(w http.ResponseWriter, r *http.Request, sess identity.Session) {
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: sess.Token, Path: "/", Expires: sess.ExpiresAt,
		HttpOnly: true, Secure: s.o.SecureCookies || r.TLS != nil, SameSite: http.SameSiteStrictMode})
}

func (s *Server) clearSessionCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", Expires: time.Unix(0, 0), MaxAge: -1,
		HttpOnly: true, Secure: s.o.SecureCookies || r.TLS != nil, SameSite: http.SameSiteStrictMode})
}

// Page is what every page template gets.
type Page struct {
	Title string
	// Nav names the menu entry to highlight.
	Nav   string
	User  identity.Principal
	CSRF  string
	Asset string // asset version for cache busting
	// Error is shown at the top; FieldErrors next to their inputs.
	Error       string
	FieldErrors map[string]string
	Notice      string
	// Form holds submitted values to fill a form again after an error.
	Form url.Values
	Data any
}

// Field returns the submitted value of a form field (after an error).
func (p *Page) Field(name string) string {
	if p.Form == nil {
		return ""
	}
	return p.Form.Get(name)
}

// FieldError returns the error message of a field, if any.
func (p *Page) FieldError(name string) string { return p.FieldErrors[name] }

func (s *Server) page(c *reqCtx, title, nav string, data any) *Page {
	return &Page{Title: title, Nav: nav, User: c.principal, CSRF: c.csrf, Asset: s.assetVersion, Data: data}
}

// render executes a page template (or, with a "#block" suffix, one block of
// it, for htmx fragments) into a buffer first, so a template error never
// sends half a page.
func (s *Server) render(w http.ResponseWriter, status int, name string, p *Page) {
	file, block, _ := strings.Cut(name, "#")
	t, ok := s.pages[file]
	if !ok {
		s.log.Error("unknown template", "name", name)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	if block == "" {
		block = "layout"
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, block, p); err != nil {
		s.log.Error("render", "template", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

func (s *Server) renderError(w http.ResponseWriter, r *http.Request, c *reqCtx, status int, message string) {
	p := s.page(c, http.StatusText(status), "", nil)
	p.Error = message
	if r.Header.Get("HX-Request") != "" {
		// A fragment request: show the message where the fragment goes.
		s.render(w, status, "error.html#message", p)
		return
	}
	s.render(w, status, "error.html", p)
}

// fail answers an error no handler turned into a form message.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, c *reqCtx, err error) {
	status, msg, _ := describe(err)
	if status == http.StatusInternalServerError {
		s.log.Error("page failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	s.renderError(w, r, c, status, msg)
}

// describe maps an error to a status, a message for people and the field
// it is about (domain validation errors name one).
func describe(err error) (status int, message, field string) {
	if de, ok := core.AsError(err); ok {
		return api.StatusOf(de.Kind), capitalize(api.MessageOf(de)), de.Field
	}
	if store.IsUnavailable(err) {
		return http.StatusServiceUnavailable, "The database is unavailable; try again in a moment.", ""
	}
	if errors.Is(err, context.Canceled) {
		return 499, "Request cancelled.", ""
	}
	return http.StatusInternalServerError, "Something went wrong; the core log has the details.", ""
}

// formError re-renders the page of a form with the error of a submission:
// next to its field when the domain names one, else at the top.
func (s *Server) formError(w http.ResponseWriter, r *http.Request, p *Page, tmpl string, err error) {
	status, msg, field := describe(err)
	if status == http.StatusInternalServerError {
		s.log.Error("form failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	p.Form = r.PostForm
	if field != "" {
		p.FieldErrors = map[string]string{field: msg}
	}
	p.Error = msg
	s.render(w, status, tmpl, p)
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// parsePages builds one template set per page: the layout and shared
// partials (files starting with "_") plus the page itself, so every page
// can define its own "content" block.
func parsePages() (map[string]*template.Template, error) {
	base, err := template.New("").Funcs(funcs).ParseFS(templateFS, "templates/_*.html")
	if err != nil {
		return nil, fmt.Errorf("parse layout: %w", err)
	}
	files, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, f := range files {
		name := path.Base(f)
		if strings.HasPrefix(name, "_") {
			continue
		}
		t, err := template.Must(base.Clone()).ParseFS(templateFS, f)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

var funcs = template.FuncMap{
	// when formats Unix milliseconds; 0 is "never".
	"when": func(ms int64) string {
		if ms == 0 {
			return "never"
		}
		return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05 UTC")
	},
	// ago formats Unix milliseconds as a duration before now.
	"ago": func(ms int64) string {
		if ms == 0 {
			return "never"
		}
		d := time.Since(time.UnixMilli(ms))
		switch {
		case d < 0:
			return "just now"
		case d < time.Minute:
			return fmt.Sprintf("%ds ago", int(d.Seconds()))
		case d < time.Hour:
			return fmt.Sprintf("%dm ago", int(d.Minutes()))
		case d < 48*time.Hour:
			return fmt.Sprintf("%dh ago", int(d.Hours()))
		}
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	},
	"bytes": func(n uint64) string {
		const unit = 1024
		if n < unit {
			return fmt.Sprintf("%d B", n)
		}
		div, exp := uint64(unit), 0
		for m := n / unit; m >= unit; m /= unit {
			div *= unit
			exp++
		}
		return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
	},
	"join": strings.Join,
	"dataURL": func(mime, b64 string) template.URL {
		return template.URL("data:" + mime + ";base64," + b64)
	},
}

// securityHeaders: no framing, no inline scripts, nothing from elsewhere.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("X-Frame-Options", "DENY")
		h.ServeHTTP(w, r)
	})
}

func cacheForever(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Asset URLs carry ?v=<version>, so a cached copy is never stale.
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		h.ServeHTTP(w, r)
	})
}

// ClusterView reads the core replicas and leases.
type ClusterView interface {
	Cluster(ctx context.Context, now time.Time) (lease.Cluster, error)
}

// fieldError is a validation error the UI finds itself (before calling a
// service), shown at field like the services' own.
func fieldError(field, message string) error {
	return &core.Error{Kind: core.KindInvalid, Code: "invalid_value", Field: field, Message: message}
}
