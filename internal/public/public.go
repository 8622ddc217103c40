// Package public is the HTTP handler for everything the public proxies relay
// to core: enrollment, password reset and client config sync, as a JSON API
// under /api/v1/public/ and as plain server-rendered HTML pages (/enroll/,
// /reset/) that work without JavaScript; and VPN MFA for `ward client`.
//
// Core answers these requests over the streams it opened to the proxies; the
// handler is never exposed directly. The proxy is trusted: the client
// address is the last entry of X-Forwarded-For, which the proxy sets (it
// appends the address it saw, so entries a client forged come before it).
// Without the header the connection's remote address is used.
//
// Links carry single-use tokens in their path, so every response says
// Referrer-Policy: no-referrer and Cache-Control: no-store, and nothing here
// logs a request path: errors are logged with the route pattern instead.
package public

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/wardvpn/ward/internal/api"
	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/enroll"
	"github.com/wardvpn/ward/internal/core/vpnsession"
)

// Prefix is where the JSON API lives.
const Prefix = "/api/v1/public"

// Options configure the handler.
type Options struct {
	Log *slog.Logger
	// Sessions serves VPN MFA; nil answers its endpoints with 503.
	Sessions *vpnsession.Service
}

// Handler serves the public API and pages.
type Handler struct {
	enroll   *enroll.Service
	sessions *vpnsession.Service
	log      *slog.Logger
	mux      *http.ServeMux
}

// New builds the handler on the onboarding service.
func New(enrollSvc *enroll.Service, opts Options) *Handler {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{enroll: enrollSvc, sessions: opts.Sessions, log: opts.Log, mux: http.NewServeMux()}
	j := func(pattern string, fn func(w http.ResponseWriter, r *http.Request, ip string) error) {
		h.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			if err := fn(w, r, ClientIP(r)); err != nil {
				api.WriteError(w, safeRequest(r), h.log, err)
			}
		})
	}
	j("GET "+Prefix+"/enrollment/{token}", h.enrollmentInfo)
	j("POST "+Prefix+"/enrollment/{token}/password", h.enrollmentPassword)
	j("POST "+Prefix+"/enrollment/{token}/totp", h.enrollmentTOTP)
	j("POST "+Prefix+"/enrollment/{token}/totp/confirm", h.enrollmentTOTPConfirm)
	j("POST "+Prefix+"/enrollment/{token}/device", h.enrollmentDevice)
	j("POST "+Prefix+"/enrollment/{token}/complete", h.enrollmentComplete)
	j("POST "+Prefix+"/password-reset", h.resetRequest)
	j("GET "+Prefix+"/password-reset/{token}", h.resetInfo)
	j("POST "+Prefix+"/password-reset/{token}", h.resetComplete)
	j("POST "+Prefix+"/client/sync", h.clientSync)
	j("POST "+Prefix+"/vpn-mfa/start", h.vpnMFAStart)
	j("POST "+Prefix+"/vpn-mfa/finish", h.vpnMFAFinish)
	j(Prefix+"/", func(w http.ResponseWriter, r *http.Request, _ string) error {
		return &core.Error{Kind: core.KindNotFound, Code: "not_found", Message: "no such endpoint: " + r.Method + " " + patternPath(r)}
	})

	h.mux.HandleFunc("GET /{$}", h.pageIndex)
	h.mux.HandleFunc("GET /enroll/{token}", h.pageEnroll)
	h.mux.HandleFunc("POST /enroll/{token}", h.pageEnrollPost)
	h.mux.HandleFunc("GET /reset", h.pageResetRequest)
	h.mux.HandleFunc("POST /reset", h.pageResetRequestPost)
	h.mux.HandleFunc("GET /reset/{token}", h.pageReset)
	h.mux.HandleFunc("POST /reset/{token}", h.pageResetPost)
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.renderError(w, r, http.StatusNotFound, "There is nothing here.")
	})
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.mux.ServeHTTP(w, r)
}

// ClientIP is the address of the client as the proxy saw it: the last
// X-Forwarded-For entry, else the remote address of the connection.
func ClientIP(r *http.Request) string {
	if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
		parts := strings.Split(xff[len(xff)-1], ",")
		if ip := strings.TrimSpace(parts[len(parts)-1]); ip != "" && net.ParseIP(ip) != nil {
			return ip
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// patternPath is the route pattern's path ("/enroll/{token}"), which is safe
// to log, unlike the request path that holds the token.
func patternPath(r *http.Request) string {
	p := r.Pattern
	if i := strings.IndexByte(p, ' '); i >= 0 {
		p = p[i+1:]
	}
	if p == "" {
		return "(unmatched)"
	}
	return p
}

// safeRequest is r with the route pattern in place of its path, for the
// error log of api.WriteError.
func safeRequest(r *http.Request) *http.Request {
	c := *r
	u := *r.URL
	u.Path, u.RawPath, u.RawQuery = patternPath(r), "", ""
	c.URL = &u
	return &c
}

// statusOf maps an error to the status the JSON API would answer with.
func statusOf(err error) int {
	de, ok := core.AsError(err)
	if !ok {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return http.StatusRequestEntityTooLarge
		}
		return http.StatusInternalServerError
	}
	switch de.Kind {
	case core.KindInvalid:
		return http.StatusBadRequest
	case core.KindNotFound:
		return http.StatusNotFound
	case core.KindConflict:
		return http.StatusConflict
	case core.KindForbidden:
		return http.StatusForbidden
	case core.KindUnauthenticated:
		return http.StatusUnauthorized
	case core.KindTooManyAttempts:
		return http.StatusTooManyRequests
	case core.KindUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}
