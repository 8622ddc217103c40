// Package enroll onboards users: admin-started enrollment (set a password,
// optionally TOTP, register a device, activate), "configure a new client"
// for active users, self-service password reset, and the client sync that
// keeps a ward client's locations current.
//
// Every link carries a random token that is stored only as an HMAC under the
// instance token key; tokens are single use and expire. The flows are
// driven by the public handler (internal/public) that core serves through
// the proxies; nothing here knows about HTTP.
package enroll

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/mfa"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/groupcommit"
	"github.com/wardvpn/ward/internal/mail"
	"github.com/wardvpn/ward/internal/store"
)

// Token kinds.
const (
	KindEnrollment    = "enrollment"
	KindNewClient     = "new_client"
	KindPasswordReset = "password_reset"
)

// Lifetimes and limits.
const (
	// ResetTokenLifetime is how long a password-reset link works.
	ResetTokenLifetime = time.Hour
	// Password-reset requests: per client IP, and mails per account.
	resetPerIPLimit      = 10
	resetPerIPWindow     = 15 * time.Minute
	resetPerAccountLimit = 3
	resetPerAccountWin   = time.Hour
	// Used and expired tokens are kept this long for reference, then purged.
	tokenRetention = 30 * 24 * time.Hour
	// clientTokenPrefix marks client sync tokens.
	clientTokenPrefix = "wardc_"
	mailTimeout       = time.Minute
)

// Errors of the token flows.
var (
	ErrInvalidToken = &core.Error{Kind: core.KindNotFound, Code: "invalid_token", Message: "this link is not valid"}
	ErrTokenExpired = &core.Error{Kind: core.KindNotFound, Code: "token_expired", Message: "this link has expired; ask for a new one"}
	ErrTokenUsed    = &core.Error{Kind: core.KindNotFound, Code: "token_used", Message: "this link was already used"}
	ErrClientToken  = &core.Error{Kind: core.KindUnauthenticated, Code: "invalid_client_token", Message: "the client token is not valid; enroll the client again"}
)

// Options configure the service.
type Options struct {
	// PasswordParams are the argon2id costs for passwords set here.
	PasswordParams identity.PasswordParams
	// Mail sends enrollment and reset mails; nil sends none.
	Mail mail.Sender
	// FallbackURL is the base of links while the proxy_public_url setting
	// is empty (e.g. core's own public URL).
	FallbackURL string
	Log         *slog.Logger
}

// Service is the onboarding domain service.
type Service struct {
	db       *store.DB
	tokenKey []byte
	vpn      *vpn.Service
	mfa      *mfa.Service
	mail     mail.Sender
	params   identity.PasswordParams
	fallback string
	log      *slog.Logger
	now      func() time.Time
	mailWG   sync.WaitGroup
	// touches batches the last-use updates of client tokens: clients sync
	// in bursts, and one UPDATE for many tokens costs about what one costs.
	touches *groupcommit.Queue[tokenTouch, error]
}

// New builds the service.
func New(db *store.DB, inst core.Instance, vpnSvc *vpn.Service, mfaSvc *mfa.Service, opts Options) *Service {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.PasswordParams == (identity.PasswordParams{}) {
		opts.PasswordParams = identity.DefaultPasswordParams
	}
	s := &Service{db: db, tokenKey: inst.TokenKey, vpn: vpnSvc, mfa: mfaSvc, mail: opts.Mail, params: opts.PasswordParams,
		fallback: strings.TrimRight(opts.FallbackURL, "/"), log: opts.Log, now: time.Now}
	s.touches = &groupcommit.Queue[tokenTouch, error]{Run: s.touchTokens, Max: 200}
	return s
}

// InstanceName is the name pages and mails show.
func (s *Service) InstanceName(ctx context.Context) string {
	st, err := core.LoadSettings(ctx, s.db)
	if err != nil {
		return "ward"
	}
	return st.InstanceName
}

// MFA is the MFA service the flows use.
func (s *Service) MFA() *mfa.Service { return s.mfa }

// SetClock replaces the clock, for tests.
func (s *Service) SetClock(now func() time.Time) { s.now = now }

// WaitMail waits for mails sent in the background (password resets) to be
// handed to the SMTP server or to fail; for tests and shutdown.
func (s *Service) WaitMail() { s.mailWG.Wait() }

func (s *Service) hash(purpose, token string) string {
	m := hmac.New(sha256.New, s.tokenKey)
	m.Write([]byte("ward-" + purpose + "\x00" + token))
	return hex.EncodeToString(m.Sum(nil))
}

// tokenRow is an onboarding token as stored.
type tokenRow struct {
	id          string
	kind        string
	userID      string
	expiresAt   int64
	usedAt      int64
	passwordSet bool
	deviceID    string
}

// lookup resolves a token of one of the kinds and checks that it is still
// usable.
func (s *Service) lookup(ctx context.Context, q store.Querier, token string, kinds ...string) (tokenRow, error) {
	var r tokenRow
	if token == "" || len(token) > 128 {
		return r, ErrInvalidToken
	}
	var dev sql.NullString
	err := q.QueryRowContext(ctx, `SELECT id, kind, user_id, expires_at, used_at, password_set, device_id FROM onboarding_tokens WHERE token_hash = $1`,
		s.hash("onboarding", token)).Scan(&r.id, &r.kind, &r.userID, &r.expiresAt, &r.usedAt, &r.passwordSet, &dev)
	if errors.Is(err, sql.ErrNoRows) {
		return r, ErrInvalidToken
	}
	if err != nil {
		return r, fmt.Errorf("look up token: %w", err)
	}
	r.deviceID = dev.String
	ok := false
	for _, k := range kinds {
		ok = ok || r.kind == k
	}
	switch {
	case !ok:
		return r, ErrInvalidToken
	case r.usedAt > 0:
		return r, ErrTokenUsed
	case r.expiresAt <= s.now().UnixMilli():
		return r, ErrTokenExpired
	}
	return r, nil
}

// consume marks the token used inside tx; it fails when another request
// used it first.
func (s *Service) consume(ctx context.Context, tx *sql.Tx, id string) error {
	now := s.now().UnixMilli()
	res, err := tx.ExecContext(ctx, `UPDATE onboarding_tokens SET used_at = $1 WHERE id = $2 AND used_at = 0 AND expires_at > $1`, now, id)
	if err != nil {
		return fmt.Errorf("use token: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return ErrTokenUsed
	}
	return nil
}

// issue stores a new token of kind for the user, retiring the user's
// earlier unused tokens of the same kind so only the newest link works.
func (s *Service) issue(ctx context.Context, tx *sql.Tx, kind, userID, createdBy string, ttl time.Duration) (string, int64, error) {
	now := s.now()
	if _, err := tx.ExecContext(ctx, `UPDATE onboarding_tokens SET used_at = $1 WHERE user_id = $2 AND kind = $3 AND used_at = 0`,
		now.UnixMilli(), userID, kind); err != nil {
		return "", 0, fmt.Errorf("retire old tokens: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM onboarding_tokens WHERE expires_at < $1`, now.Add(-tokenRetention).UnixMilli()); err != nil {
		return "", 0, fmt.Errorf("purge old tokens: %w", err)
	}
	token := core.RandomToken(32)
	expires := now.Add(ttl).UnixMilli()
	if _, err := tx.ExecContext(ctx, `INSERT INTO onboarding_tokens (id, token_hash, kind, user_id, created_by, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, core.NewID(), s.hash("onboarding", token), kind, userID, createdBy, now.UnixMilli(), expires); err != nil {
		return "", 0, fmt.Errorf("store token: %w", err)
	}
	return token, expires, nil
}

// account is what the flows need to know about a user.
type account struct {
	id, username, email, firstName, lastName string
	active, hasPassword                      bool
}

func (a account) actor(ip string) core.Actor {
	return core.Actor{UserID: a.id, Username: a.username, IP: ip}
}

func (a account) greeting() string {
	if a.firstName != "" {
		return a.firstName
	}
	return a.username
}

func loadAccount(ctx context.Context, q store.Querier, where string, arg any) (account, error) {
	var a account
	err := q.QueryRowContext(ctx, `SELECT id, username, email, first_name, last_name, active, password_hash <> '' FROM users WHERE `+where, arg).
		Scan(&a.id, &a.username, &a.email, &a.firstName, &a.lastName, &a.active, &a.hasPassword)
	if errors.Is(err, sql.ErrNoRows) {
		return a, core.NotFound("user")
	}
	if err != nil {
		return a, fmt.Errorf("load user: %w", err)
	}
	return a, nil
}

// link joins the public base URL and a path.
func (s *Service) link(st core.Settings, path string) string {
	base := st.ProxyPublicURL
	if base == "" {
		base = s.fallback
	}
	return strings.TrimRight(base, "/") + path
}

func (s *Service) baseURL(st core.Settings) string {
	if st.ProxyPublicURL != "" {
		return st.ProxyPublicURL
	}
	return s.fallback
}

// mailReady tells why mail cannot be sent, or "" when it can.
func (s *Service) mailReady(ctx context.Context, st core.Settings) string {
	switch {
	case s.mail == nil:
		return "mail is not available in this core"
	case !st.MailConfigured():
		return "no SMTP server is configured (smtp_host, smtp_from)"
	case s.baseURL(st) == "":
		return "proxy_public_url is not set, so the mail could hold no working link"
	}
	return ""
}

// sendAsync hands a mail to the SMTP server in the background, so that the
// response time of a public request does not depend on it.
func (s *Service) sendAsync(msg mail.Message) {
	s.mailWG.Add(1)
	go func() {
		defer s.mailWG.Done()
		ctx, cancel := context.WithTimeout(context.Background(), mailTimeout)
		defer cancel()
		if err := s.mail.Send(ctx, msg); err != nil {
			s.log.Warn("background mail failed", "subject", msg.Subject, "to", msg.To, "err", err)
		}
	}()
}

// hit counts one event under key in a fixed window and tells whether the
// limit still holds, and if not, how many seconds until the window ends.
func (s *Service) hit(ctx context.Context, key string, limit int, window time.Duration) (bool, int, error) {
	now := s.now().UnixMilli()
	start := now - window.Milliseconds()
	var hits int
	var windowStart int64
	err := s.db.QueryRowContext(ctx, `INSERT INTO rate_limits (key, hits, window_start) VALUES ($1, 1, $2)
		ON CONFLICT (key) DO UPDATE SET
		  hits = CASE WHEN rate_limits.window_start <= $3 THEN 1 ELSE rate_limits.hits + 1 END,
		  window_start = CASE WHEN rate_limits.window_start <= $3 THEN $2 ELSE rate_limits.window_start END
		RETURNING hits, window_start`, key, now, start).Scan(&hits, &windowStart)
	if err != nil {
		return false, 0, fmt.Errorf("rate limit: %w", err)
	}
	if hits <= limit {
		return true, 0, nil
	}
	return false, int((windowStart+window.Milliseconds()-now)/1000) + 1, nil
}

func (s *Service) purgeRateLimits(ctx context.Context) {
	_, _ = s.db.ExecContext(ctx, `DELETE FROM rate_limits WHERE window_start < $1`, s.now().Add(-24*time.Hour).UnixMilli())
}

func formatTime(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04 UTC")
}

func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }
