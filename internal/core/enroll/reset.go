package enroll

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/mail"
)

// RequestReset starts a password reset for the account named by username or
// e-mail. It answers the same whether or not such an account exists (the
// mail goes out in the background), so the endpoint cannot be used to probe
// for accounts. Requests are limited per client IP (that limit does answer
// with an error, which says nothing about accounts) and mails per account
// (silently).
func (s *Service) RequestReset(ctx context.Context, login, ip string) error {
	login = strings.ToLower(strings.TrimSpace(login))
	if login == "" || len(login) > 254 || strings.ContainsAny(login, "\r\n\x00") {
		return core.Invalid("invalid_value", "login", "give your username or e-mail address")
	}
	defer s.purgeRateLimits(ctx)
	if ip != "" {
		ok, retry, err := s.hit(ctx, "reset:ip:"+ip, resetPerIPLimit, resetPerIPWindow)
		if err != nil {
			return err
		}
		if !ok {
			return &core.Error{Kind: core.KindTooManyAttempts, Code: "too_many_requests",
				Message: fmt.Sprintf("too many password-reset requests from your address; try again in %d seconds", retry), RetryAfterSeconds: retry}
		}
	}
	anon := core.Actor{Username: login, IP: ip}
	acct, err := loadAccount(ctx, s.db, "username = $1 OR email = $1", login)
	if errors.Is(err, core.ErrNotFound) || (err == nil && !acct.active) {
		// No mail, same answer. Inactive users are onboarded by enrollment.
		return core.Audit(ctx, s.db, anon, "password_reset.request", "user", "", map[string]any{"login": login, "sent": false})
	}
	if err != nil {
		return err
	}
	ok, _, err := s.hit(ctx, "reset:user:"+acct.id, resetPerAccountLimit, resetPerAccountWin)
	if err != nil {
		return err
	}
	if !ok {
		return core.Audit(ctx, s.db, anon, "password_reset.request", "user", acct.id, map[string]any{"login": login, "sent": false, "throttled": true})
	}
	st, err := core.LoadSettings(ctx, s.db)
	if err != nil {
		return err
	}
	why := s.mailReady(ctx, st)
	var token string
	var expires int64
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		if why != "" {
			return core.Audit(ctx, tx, anon, "password_reset.request", "user", acct.id, map[string]any{"login": login, "sent": false, "reason": why})
		}
		var err error
		if token, expires, err = s.issue(ctx, tx, KindPasswordReset, acct.id, "", ResetTokenLifetime); err != nil {
			return err
		}
		return core.Audit(ctx, tx, anon, "password_reset.request", "user", acct.id, map[string]any{"login": login, "sent": true, "expires_at": expires})
	})
	if err != nil {
		return err
	}
	if why != "" {
		s.log.Warn("password reset requested but no mail can be sent", "user_id", acct.id, "reason", why)
		return nil
	}
	s.sendAsync(resetMail(st, acct, s.link(st, "/reset/"+token), ip, expires))
	return nil
}

// ResetInfo is what a reset link shows.
type ResetInfo struct {
	InstanceName string `json:"instance_name"`
	Username     string `json:"username"`
	ExpiresAt    int64  `json:"expires_at"`
}

// ResetInfo checks a reset link.
func (s *Service) ResetInfo(ctx context.Context, token string) (ResetInfo, error) {
	tok, err := s.lookup(ctx, s.db, token, KindPasswordReset)
	if err != nil {
		return ResetInfo{}, err
	}
	acct, err := loadAccount(ctx, s.db, "id = $1", tok.userID)
	if err != nil {
		return ResetInfo{}, err
	}
	if !acct.active {
		return ResetInfo{}, ErrInvalidToken
	}
	st, err := core.LoadSettings(ctx, s.db)
	if err != nil {
		return ResetInfo{}, err
	}
	return ResetInfo{InstanceName: st.InstanceName, Username: acct.username, ExpiresAt: tok.expiresAt}, nil
}

// CompleteReset sets the new password (strength-checked), uses up the link,
// ends every session of the user and lifts a login lockout.
func (s *Service) CompleteReset(ctx context.Context, token, password, ip string) error {
	if _, err := s.lookup(ctx, s.db, token, KindPasswordReset); err != nil {
		return err
	}
	hash, err := s.hashPassword(ctx, password)
	if err != nil {
		return err
	}
	return s.db.Tx(ctx, func(tx *sql.Tx) error {
		tok, err := s.lookup(ctx, tx, token, KindPasswordReset)
		if err != nil {
			return err
		}
		if err := s.consume(ctx, tx, tok.id); err != nil {
			return err
		}
		acct, err := loadAccount(ctx, tx, "id = $1", tok.userID)
		if err != nil {
			return err
		}
		if !acct.active {
			return ErrInvalidToken
		}
		now := s.now().UnixMilli()
		if _, err := tx.ExecContext(ctx, `UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3`, hash, now, acct.id); err != nil {
			return fmt.Errorf("set password: %w", err)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE user_id = $1`, acct.id)
		if err != nil {
			return fmt.Errorf("end sessions: %w", err)
		}
		ended, _ := res.RowsAffected()
		if _, err := tx.ExecContext(ctx, `DELETE FROM login_attempts WHERE login_key = $1`, acct.id); err != nil {
			return err
		}
		// Any other reset link of the user is void now.
		if _, err := tx.ExecContext(ctx, `UPDATE onboarding_tokens SET used_at = $1 WHERE user_id = $2 AND kind = $3 AND used_at = 0`,
			now, acct.id, KindPasswordReset); err != nil {
			return err
		}
		return core.Audit(ctx, tx, acct.actor(ip), "password_reset.complete", "user", acct.id, map[string]any{"sessions_ended": ended})
	})
}

func resetMail(st core.Settings, acct account, url, ip string, expires int64) mail.Message {
	from := ""
	if ip != "" {
		from = " from the address " + ip
	}
	text := fmt.Sprintf(`Hello %s,

someone (hopefully you) asked%s to reset the password of your %s account %s.
Choose a new password here:

%s

The link works once and expires on %s. Setting a new password logs you out everywhere.

If you did not ask for this, ignore this mail; your password stays unchanged.
`, acct.greeting(), from, st.InstanceName, acct.username, url, formatTime(expires))
	return mail.Message{To: acct.email, Subject: st.InstanceName + ": reset your password", Text: text}
}
