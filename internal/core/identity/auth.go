package identity

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/store"
)

// Principal is an authenticated caller.
type Principal struct {
	UserID    string
	Username  string
	IsAdmin   bool
	SessionID string // set for cookie sessions
	CSRFToken string // set for cookie sessions
	TokenID   string // set for API tokens
	// MFAPending: the password was right but the second factor is still
	// due; such a session may only complete it or log out.
	MFAPending bool
}

// Actor turns the principal into the actor of a service call.
func (p Principal) Actor(ip string) core.Actor {
	return core.Actor{UserID: p.UserID, Username: p.Username, IsAdmin: p.IsAdmin, IP: ip}
}

// Session is what a successful login returns. Token goes into the cookie and
// is never stored; CSRFToken must accompany every state-changing request.
type Session struct {
	Token     string
	CSRFToken string
	ExpiresAt time.Time
	User      User
	// MFAMethods is set when the session waits for a second factor: the
	// methods the user can present (see CompleteSecondFactor).
	MFAMethods []string
}

// MFAPendingLifetime is how long a password-only session waits for the
// second factor.
const MFAPendingLifetime = 5 * time.Minute

var errBadCredentials = &core.Error{Kind: core.KindUnauthenticated, Code: "invalid_credentials", Message: "wrong username or password"}

// Login checks a username-or-email and password. Failures are counted per
// account in the database, so the lockout holds across core replicas.
func (s *Service) Login(ctx context.Context, login, password, ip, userAgent string) (Session, error) {
	login = strings.ToLower(strings.TrimSpace(login))
	if login == "" || password == "" || len(login) > 254 || len(password) > 1024 {
		return Session{}, errBadCredentials
	}
	settings, err := core.LoadSettings(ctx, s.db)
	if err != nil {
		return Session{}, err
	}
	var userID, hash string
	var active bool
	err = s.db.QueryRowContext(ctx, `SELECT id, password_hash, active FROM users WHERE username = $1 OR email = $1`, login).Scan(&userID, &hash, &active)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return Session{}, fmt.Errorf("find user: %w", err)
	}
	// Unknown logins are counted too, under their own key, so probing
	// usernames costs the same as guessing passwords.
	key := userID
	if key == "" {
		key = "unknown:" + login
	}
	now := time.Now()
	var lockedUntil int64
	err = s.db.QueryRowContext(ctx, `SELECT locked_until FROM login_attempts WHERE login_key = $1`, key).Scan(&lockedUntil)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return Session{}, fmt.Errorf("read lockout: %w", err)
	}
	if lockedUntil > now.UnixMilli() {
		return Session{}, lockedError(lockedUntil, now)
	}
	ok := false
	if hash != "" {
		ok = VerifyPassword(hash, password)
	} else {
		// Spend the same time as a real check so response timing does not
		// tell which usernames exist.
		VerifyPassword(s.dummy, password)
	}
	actor := core.Actor{UserID: userID, Username: login, IP: ip}
	if !ok {
		locked, err := s.recordFailure(ctx, key, settings, now)
		if err != nil {
			return Session{}, err
		}
		if err := core.Audit(ctx, s.db, actor, "auth.login_failed", "user", userID, map[string]any{"login": login, "locked": locked > 0}); err != nil {
			return Session{}, err
		}
		if locked > 0 {
			return Session{}, lockedError(locked, now)
		}
		return Session{}, errBadCredentials
	}
	if !active {
		return Session{}, &core.Error{Kind: core.KindUnauthenticated, Code: "account_disabled", Message: "this account is disabled"}
	}
	sess := Session{Token: "ws_" + core.RandomToken(32), CSRFToken: core.RandomToken(24),
		ExpiresAt: now.Add(time.Duration(settings.SessionLifetimeSeconds) * time.Second)}
	if s.secondFactor != nil {
		if sess.MFAMethods, err = s.secondFactor.SecondFactors(ctx, userID); err != nil {
			return Session{}, fmt.Errorf("second factors: %w", err)
		}
	}
	pending := len(sess.MFAMethods) > 0
	var details map[string]any
	if pending {
		sess.ExpiresAt = now.Add(MFAPendingLifetime)
		details = map[string]any{"second_factor_due": sess.MFAMethods}
	}
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		// A right password ends the failure count only when it is all the
		// login needs; otherwise the second factor's own counter applies.
		if !pending {
			if _, err := tx.ExecContext(ctx, `DELETE FROM login_attempts WHERE login_key = $1`, key); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO sessions (id, token_hash, user_id, csrf_token, ip, user_agent, created_at, expires_at, last_seen_at, mfa_pending)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $7, $9)`,
			core.NewID(), s.hashToken(sess.Token), userID, sess.CSRFToken, ip, truncate(userAgent, 256), now.UnixMilli(), sess.ExpiresAt.UnixMilli(), pending); err != nil {
			return fmt.Errorf("create session: %w", err)
		}
		action := "auth.login"
		if pending {
			action = "auth.login_password"
		}
		return core.Audit(ctx, tx, actor, action, "user", userID, details)
	})
	if err != nil {
		return Session{}, err
	}
	sess.User, err = s.getUser(ctx, s.db, userID)
	return sess, err
}

func lockedError(until int64, now time.Time) error {
	secs := int((until-now.UnixMilli())/1000) + 1
	return &core.Error{Kind: core.KindTooManyAttempts, Code: "account_locked",
		Message: fmt.Sprintf("too many failed logins; try again in %d seconds", secs), RetryAfterSeconds: secs}
}

// recordFailure counts a failed login atomically and returns the lock
// deadline when this failure crossed the threshold.
func (s *Service) recordFailure(ctx context.Context, key string, st core.Settings, now time.Time) (int64, error) {
	nowMs := now.UnixMilli()
	windowStart := nowMs - int64(st.LockoutWindowSeconds)*1000
	lockUntil := nowMs + int64(st.LockoutDurationSeconds)*1000
	var failures int
	var locked int64
	err := s.db.QueryRowContext(ctx, `INSERT INTO login_attempts (login_key, failures, first_failure_at, locked_until) VALUES ($1, 1, $2, 0)
		ON CONFLICT (login_key) DO UPDATE SET
		  failures = CASE WHEN login_attempts.first_failure_at < $3 THEN 1 ELSE login_attempts.failures + 1 END,
		  first_failure_at = CASE WHEN login_attempts.first_failure_at < $3 THEN $2 ELSE login_attempts.first_failure_at END
		RETURNING failures, locked_until`, key, nowMs, windowStart).Scan(&failures, &locked)
	if err != nil {
		return 0, fmt.Errorf("count failed login: %w", err)
	}
	if failures >= st.LockoutThreshold {
		if _, err := s.db.ExecContext(ctx, `UPDATE login_attempts SET locked_until = $1, failures = 0, first_failure_at = $2 WHERE login_key = $3`, lockUntil, nowMs, key); err != nil {
			return 0, fmt.Errorf("lock account: %w", err)
		}
		return lockUntil, nil
	}
	return 0, nil
}

// Authenticate resolves a session token from a cookie.
func (s *Service) Authenticate(ctx context.Context, token string) (Principal, error) {
	if !strings.HasPrefix(token, "ws_") || len(token) > 128 {
		return Principal{}, core.ErrUnauthenticated
	}
	var p Principal
	var lastSeen int64
	now := store.Now()
	err := s.db.QueryRowContext(ctx, `SELECT s.id, s.csrf_token, s.last_seen_at, s.mfa_pending, u.id, u.username FROM sessions s JOIN users u ON u.id = s.user_id
		WHERE s.token_hash = $1 AND s.expires_at > $2 AND u.active = TRUE`, s.hashToken(token), now).
		Scan(&p.SessionID, &p.CSRFToken, &lastSeen, &p.MFAPending, &p.UserID, &p.Username)
	if errors.Is(err, sql.ErrNoRows) {
		return Principal{}, core.ErrUnauthenticated
	}
	if err != nil {
		return Principal{}, fmt.Errorf("authenticate session: %w", err)
	}
	// Touch at most once a minute: a write per request would serialize
	// every read on SQLite.
	if now-lastSeen > 60_000 {
		_, _ = s.db.ExecContext(ctx, `UPDATE sessions SET last_seen_at = $1 WHERE id = $2`, now, p.SessionID)
	}
	p.IsAdmin, err = s.isAdmin(ctx, p.UserID)
	return p, err
}

func (s *Service) isAdmin(ctx context.Context, userID string) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM group_members m JOIN groups g ON g.id = m.group_id WHERE m.user_id = $1 AND g.is_admin = TRUE`, userID).Scan(&n)
	return n > 0, err
}

// ErrNoSecondFactorDue: the session is not waiting for a second factor.
var ErrNoSecondFactorDue = &core.Error{Kind: core.KindConflict, Code: "no_second_factor_due", Message: "this session is not waiting for a second factor"}

// CompleteSecondFactor turns a session that waited for the second factor
// (which the caller verified, by method) into a full session under a new
// token and CSRF token, so a token seen before the second factor is worth
// nothing after it.
func (s *Service) CompleteSecondFactor(ctx context.Context, p Principal, method, ip string) (Session, error) {
	if !p.MFAPending || p.SessionID == "" {
		return Session{}, ErrNoSecondFactorDue
	}
	settings, err := core.LoadSettings(ctx, s.db)
	if err != nil {
		return Session{}, err
	}
	now := time.Now()
	sess := Session{Token: "ws_" + core.RandomToken(32), CSRFToken: core.RandomToken(24),
		ExpiresAt: now.Add(time.Duration(settings.SessionLifetimeSeconds) * time.Second)}
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE sessions SET token_hash = $1, csrf_token = $2, expires_at = $3, last_seen_at = $4, mfa_pending = FALSE
			WHERE id = $5 AND mfa_pending = TRUE AND expires_at > $4`, s.hashToken(sess.Token), sess.CSRFToken, sess.ExpiresAt.UnixMilli(), now.UnixMilli(), p.SessionID)
		if err != nil {
			return fmt.Errorf("complete session: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrNoSecondFactorDue
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM login_attempts WHERE login_key = $1`, p.UserID); err != nil {
			return err
		}
		return core.Audit(ctx, tx, p.Actor(ip), "auth.login", "user", p.UserID, map[string]any{"second_factor": method})
	})
	if err != nil {
		return Session{}, err
	}
	sess.User, err = s.getUser(ctx, s.db, p.UserID)
	return sess, err
}

// Logout ends a session.
func (s *Service) Logout(ctx context.Context, p Principal, ip string) error {
	if p.SessionID == "" {
		return nil
	}
	return s.db.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE id = $1`, p.SessionID); err != nil {
			return err
		}
		return core.Audit(ctx, tx, p.Actor(ip), "auth.logout", "user", p.UserID, nil)
	})
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// ChangePassword sets the caller's own password after checking the current
// one (a wrong one counts towards the login lockout, so this is no way
// around it). Every other session of the user ends; the caller's stays.
func (s *Service) ChangePassword(ctx context.Context, p Principal, current, next, ip string) error {
	settings, err := core.LoadSettings(ctx, s.db)
	if err != nil {
		return err
	}
	now := time.Now()
	var hash string
	var lockedUntil int64
	if err := s.db.QueryRowContext(ctx, `SELECT u.password_hash, COALESCE((SELECT locked_until FROM login_attempts WHERE login_key = u.id), 0)
		FROM users u WHERE u.id = $1`, p.UserID).Scan(&hash, &lockedUntil); err != nil {
		return fmt.Errorf("read password: %w", err)
	}
	if lockedUntil > now.UnixMilli() {
		return lockedError(lockedUntil, now)
	}
	if hash == "" || !VerifyPassword(hash, current) {
		locked, err := s.recordFailure(ctx, p.UserID, settings, now)
		if err != nil {
			return err
		}
		if err := core.Audit(ctx, s.db, p.Actor(ip), "user.password_change_failed", "user", p.UserID, map[string]any{"locked": locked > 0}); err != nil {
			return err
		}
		if locked > 0 {
			return lockedError(locked, now)
		}
		return core.Invalid("wrong_password", "current_password", "the current password is wrong")
	}
	if err := CheckPasswordStrength(next, settings.MinPasswordLength); err != nil {
		if de, ok := core.AsError(err); ok {
			e := *de
			e.Field = "new_password"
			return &e
		}
		return err
	}
	if next == current {
		return core.Invalid("same_password", "new_password", "the new password must differ from the current one")
	}
	newHash := HashPassword(s.params, next)
	return s.db.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3`, newHash, now.UnixMilli(), p.UserID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE user_id = $1 AND id <> $2`, p.UserID, p.SessionID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM login_attempts WHERE login_key = $1`, p.UserID); err != nil {
			return err
		}
		return core.Audit(ctx, tx, p.Actor(ip), "user.password_change", "user", p.UserID, nil)
	})
}
