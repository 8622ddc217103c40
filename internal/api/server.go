package api

import (
	"context"
	"crypto/subtle"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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

// SessionCookie is the name of the session cookie.
const SessionCookie = "ward_session"

// Options configure the REST server.
type Options struct {
	// SecureCookies marks the session cookie Secure; set it when ward is
	// reached over HTTPS (the public URL is https://).
	SecureCookies bool
	Registry      *prometheus.Registry
	Log           *slog.Logger
	// Stats answers usage queries; nil builds one on the same database.
	Stats *stats.Service
	// MFA, Enroll and Mail serve the onboarding endpoints; nil builds them
	// on the same database (Enroll then hashes passwords with
	// PasswordParams, or identity.DefaultPasswordParams when zero).
	MFA            *mfa.Service
	Enroll         *enroll.Service
	Mail           *mail.Mailer
	PasswordParams identity.PasswordParams
	// Cluster answers GET /api/v1/cluster; nil reads it from the same
	// database.
	Cluster ClusterView
	// WebAuthn serves security keys (/api/v1/me/webauthn/...,
	// /api/v1/auth/webauthn/...); nil answers them with 503.
	WebAuthn *webauthn.Service
}

// ClusterView reads the core replicas and leases.
type ClusterView interface {
	Cluster(ctx context.Context, now time.Time) (lease.Cluster, error)
}

// Server serves the REST API and the operational endpoints.
type Server struct {
	db      *store.DB
	ident   *identity.Service
	vpn     *vpn.Service
	stats   *stats.Service
	mfa     *mfa.Service
	enroll  *enroll.Service
	mail    *mail.Mailer
	cluster ClusterView
	log     *slog.Logger
	secure  bool
	metrics *httpMetrics
	mux     *http.ServeMux
	routes  []Route

	// webauthn may be nil (see Options.WebAuthn).
	webauthn *webauthn.Service
}

// Route is one registered endpoint; the OpenAPI test compares these with
// the document.
type Route struct {
	Method, Path string
	auth         authMode
	handle       handlerFunc
}

type authMode int

const (
	public authMode = iota
	authenticated
	// secondFactor routes also take a session still waiting for its second
	// factor (completing it, logging out); every other route refuses one.
	secondFactor
)

// handlerFunc serves an authenticated (or public) request.
type handlerFunc func(w http.ResponseWriter, r *http.Request, c *reqCtx) error

// reqCtx is what the middleware learned about a request.
type reqCtx struct {
	principal identity.Principal
	ip        string
}

func (c *reqCtx) actor() core.Actor { return c.principal.Actor(c.ip) }

// New builds the server and its routes.
func New(db *store.DB, ident *identity.Service, vpnSvc *vpn.Service, opts Options) *Server {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{db: db, ident: ident, vpn: vpnSvc, stats: opts.Stats, log: log, secure: opts.SecureCookies, mux: http.NewServeMux()}
	if s.stats == nil {
		s.stats = stats.New(db)
	}
	s.mfa, s.enroll, s.mail, s.cluster = opts.MFA, opts.Enroll, opts.Mail, opts.Cluster
	s.webauthn = opts.WebAuthn
	if s.cluster == nil {
		s.cluster = lease.NewRegistry(db, "", "")
	}
	if s.mail == nil {
		s.mail = mail.New(db, log)
	}
	if s.mfa == nil || s.enroll == nil {
		// The instance secrets exist by now (core created them before it
		// built the services); this only reads them.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		inst, err := core.EnsureInstance(ctx, db)
		cancel()
		switch {
		case err != nil:
			// The onboarding endpoints answer 503 (see onboarding()).
			log.Error("onboarding endpoints disabled: cannot load the instance secrets", "err", err)
		default:
			if s.mfa == nil {
				s.mfa = mfa.New(db, inst, log)
			}
			if s.enroll == nil {
				s.enroll = enroll.New(db, inst, vpnSvc, s.mfa, enroll.Options{PasswordParams: opts.PasswordParams, Mail: s.mail, Log: log})
			}
		}
	}
	if opts.Registry != nil {
		s.metrics = newHTTPMetrics(opts.Registry, db)
	}
	s.routes = s.buildRoutes()
	for _, rt := range s.routes {
		s.mux.Handle(rt.Method+" "+rt.Path, s.wrap(rt))
	}
	s.mux.Handle("/", s.instrument("unmatched", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, errorBody{errorDetail{Code: "not_found", Message: "no such endpoint: " + r.Method + " " + r.URL.Path}})
	})))
	return s
}

// Handler returns the root handler.
func (s *Server) Handler() http.Handler { return s.mux }

// Routes lists every registered endpoint.
func (s *Server) Routes() []Route { return s.routes }

func (s *Server) wrap(rt Route) http.Handler {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := &reqCtx{ip: clientIP(r)}
		if rt.auth != public {
			p, err := s.authenticate(r)
			if err == nil && p.MFAPending && rt.auth != secondFactor {
				err = errSecondFactorDue
			}
			if err != nil {
				writeError(w, r, s.log, err)
				return
			}
			c.principal = p
		}
		if err := rt.handle(w, r, c); err != nil {
			writeError(w, r, s.log, err)
		}
	})
	return s.instrument(rt.Method+" "+rt.Path, h)
}

var errSecondFactorDue = &apiError{status: http.StatusUnauthorized, code: "second_factor_required",
	message: "complete the login with your second factor first (POST /api/v1/auth/mfa with a code, or /api/v1/auth/webauthn/begin and /finish with a security key)"}

var errCSRF = &apiError{status: http.StatusForbidden, code: "csrf_failed", message: "missing or wrong X-CSRF-Token header for a cookie session"}

// authenticate accepts a bearer API token, or a session cookie plus, for
// state-changing methods, the session's CSRF token in X-CSRF-Token.
func (s *Server) authenticate(r *http.Request) (identity.Principal, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		token, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			return identity.Principal{}, &apiError{status: http.StatusUnauthorized, code: "unauthenticated", message: "Authorization must be 'Bearer <token>'"}
		}
		p, err := s.ident.AuthenticateToken(r.Context(), strings.TrimSpace(token))
		if err != nil {
			return p, unauthenticated(err)
		}
		return p, nil
	}
	cookie, err := r.Cookie(SessionCookie)
	if err != nil {
		return identity.Principal{}, &apiError{status: http.StatusUnauthorized, code: "unauthenticated", message: "log in or send a bearer token"}
	}
	p, err := s.ident.Authenticate(r.Context(), cookie.Value)
	if err != nil {
		return p, unauthenticated(err)
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		got := r.Header.Get("X-CSRF-Token")
		if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(p.CSRFToken)) != 1 {
			return identity.Principal{}, errCSRF
		}
	}
	return p, nil
}

func unauthenticated(err error) error {
	if de, ok := core.AsError(err); ok && de.Kind == core.KindUnauthenticated {
		return &apiError{status: http.StatusUnauthorized, code: "unauthenticated", message: "the session or token is invalid or expired"}
	}
	return err
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Ready reports whether the database answers, for /readyz.
func (s *Server) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return s.db.Ping(ctx)
}
