// Package mfa manages a user's second factor: TOTP (RFC 6238; 6 digits,
// 30 s, SHA-1, the parameters every authenticator app and oathtool use) and
// single-use recovery codes.
//
// All state is in the database so that every core replica agrees:
//   - replay protection: the last accepted time step is stored, and a code
//     is accepted only by an UPDATE that moves it forward, so the same code
//     (or an older one) is refused the second time on any replica;
//   - failed attempts are counted in the database and lock verification for
//     a while (the lockout_* settings, shared with password logins);
//   - recovery codes are stored as HMACs under the instance token key and
//     consumed by a conditional UPDATE, so each works exactly once.
package mfa

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"image/png"
	"log/slog"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
	"github.com/pquerna/otp/totp"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/store"
)

// TOTP parameters.
const (
	Period = 30 // seconds per time step
	Digits = 6
	// Skew is how many steps before and after the current one are
	// accepted, for clocks that are a little off.
	Skew = 1
	// RecoveryCodeCount is how many recovery codes a user gets.
	RecoveryCodeCount = 10
	// qrSize is the width and height of the QR code image in pixels.
	qrSize = 256
)

// Errors callers can test with errors.Is.
var (
	ErrInvalidCode    = &core.Error{Kind: core.KindInvalid, Code: "invalid_code", Field: "code", Message: "wrong or expired code"}
	ErrCodeUsed       = &core.Error{Kind: core.KindInvalid, Code: "code_used", Field: "code", Message: "this code was already used; wait for the next one"}
	ErrNotEnabled     = &core.Error{Kind: core.KindConflict, Code: "totp_not_enabled", Message: "TOTP is not enabled for this user"}
	ErrNotSetUp       = &core.Error{Kind: core.KindConflict, Code: "totp_not_set_up", Message: "start the TOTP setup first"}
	ErrAlreadyEnabled = &core.Error{Kind: core.KindConflict, Code: "totp_enabled", Message: "TOTP is already enabled; disable it first"}
)

// Service is the MFA domain service.
type Service struct {
	db       *store.DB
	tokenKey []byte
	log      *slog.Logger
	now      func() time.Time
	// others list the user's further second factors (WebAuthn keys).
	others []SecondFactorLister
}

// SecondFactorLister names further second factors a user has, e.g.
// ["webauthn"] (see AddSecondFactors).
type SecondFactorLister interface {
	SecondFactors(ctx context.Context, userID string) ([]string, error)
}

// AddSecondFactors makes SecondFactors also name what l lists. Call it
// while wiring the services, before they serve requests.
func (s *Service) AddSecondFactors(l SecondFactorLister) { s.others = append(s.others, l) }

// New builds the service; recovery codes are keyed with the instance token key.
func New(db *store.DB, inst core.Instance, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{db: db, tokenKey: inst.TokenKey, log: log, now: time.Now}
}

// SetClock replaces the clock, for tests.
func (s *Service) SetClock(now func() time.Time) { s.now = now }

// Setup is a new, not yet confirmed TOTP secret, shown once.
type Setup struct {
	// Secret is the base32 secret for manual entry.
	Secret string `json:"secret"`
	// URL is the otpauth:// URL the QR code encodes.
	URL string `json:"otpauth_url"`
	// QRPNG is a PNG image of the QR code, base64 (standard encoding).
	QRPNG string `json:"qr_png"`
	// Period and Digits describe the codes.
	Period int `json:"period"`
	Digits int `json:"digits"`
}

// RecoveryCodes are shown once, when they are generated.
type RecoveryCodes struct {
	Codes []string `json:"recovery_codes"`
}

// Status says what second factors a user has.
type Status struct {
	TOTPEnabled       bool `json:"totp_enabled"`
	RecoveryCodesLeft int  `json:"recovery_codes_left"`
}

func requireSelf(a core.Actor, userID, what string) error {
	if a.UserID == "" || a.UserID != userID {
		return core.Forbidden("only the user themself can %s", what)
	}
	return nil
}

type totpRow struct {
	secret      string
	enabled     bool
	lastStep    int64
	lockedUntil int64
}

func (s *Service) load(ctx context.Context, q store.Querier, userID string) (totpRow, bool, error) {
	var r totpRow
	err := q.QueryRowContext(ctx, `SELECT secret, enabled, last_step, locked_until FROM user_totp WHERE user_id = $1`, userID).
		Scan(&r.secret, &r.enabled, &r.lastStep, &r.lockedUntil)
	if errors.Is(err, sql.ErrNoRows) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("load totp: %w", err)
	}
	return r, true, nil
}

// Setup generates a new secret for the user, replacing an unconfirmed one.
// TOTP is enabled only once Confirm receives a valid code for it.
func (s *Service) Setup(ctx context.Context, a core.Actor, userID string) (Setup, error) {
	if err := requireSelf(a, userID, "set up TOTP"); err != nil {
		return Setup{}, err
	}
	settings, err := core.LoadSettings(ctx, s.db)
	if err != nil {
		return Setup{}, err
	}
	var username string
	err = s.db.QueryRowContext(ctx, `SELECT username FROM users WHERE id = $1`, userID).Scan(&username)
	if errors.Is(err, sql.ErrNoRows) {
		return Setup{}, core.NotFound("user")
	}
	if err != nil {
		return Setup{}, err
	}
	key, err := totp.Generate(totp.GenerateOpts{Issuer: settings.InstanceName, AccountName: username, Period: Period,
		SecretSize: 20, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		return Setup{}, fmt.Errorf("generate totp secret: %w", err)
	}
	out, err := render(key)
	if err != nil {
		return Setup{}, err
	}
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		row, found, err := s.load(ctx, tx, userID)
		if err != nil {
			return err
		}
		if found && row.enabled {
			return ErrAlreadyEnabled
		}
		now := s.now().UnixMilli()
		if _, err := tx.ExecContext(ctx, `INSERT INTO user_totp (user_id, secret, enabled, last_step, failures, first_failure_at, locked_until, created_at, enabled_at)
			VALUES ($1, $2, FALSE, 0, 0, 0, 0, $3, 0)
			ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret, enabled = FALSE, last_step = 0, failures = 0,
			  first_failure_at = 0, locked_until = 0, created_at = excluded.created_at, enabled_at = 0`, userID, key.Secret(), now); err != nil {
			return fmt.Errorf("store totp secret: %w", err)
		}
		return core.Audit(ctx, tx, a, "mfa.totp_setup", "user", userID, nil)
	})
	if err != nil {
		return Setup{}, err
	}
	return out, nil
}

func render(key *otp.Key) (Setup, error) {
	img, err := key.Image(qrSize, qrSize)
	if err != nil {
		return Setup{}, fmt.Errorf("totp qr code: %w", err)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return Setup{}, fmt.Errorf("encode qr code: %w", err)
	}
	return Setup{Secret: key.Secret(), URL: key.URL(), QRPNG: base64.StdEncoding.EncodeToString(buf.Bytes()), Period: Period, Digits: Digits}, nil
}

// RenderSetup rebuilds the display of a setup from its otpauth URL, e.g. to
// show the QR code again on a page whose confirmation failed. It stores
// nothing and trusts nothing: a code is only ever checked against the
// secret in the database.
func RenderSetup(otpauthURL string) (Setup, error) {
	key, err := otp.NewKeyFromURL(otpauthURL)
	if err != nil || key.Type() != "totp" || key.Secret() == "" || len(otpauthURL) > 1024 {
		return Setup{}, core.Invalid("invalid_value", "otpauth_url", "not a TOTP setup")
	}
	return render(key)
}

// Confirm enables TOTP with a code from the new secret and returns fresh
// recovery codes (shown only now).
func (s *Service) Confirm(ctx context.Context, a core.Actor, userID, code string) (RecoveryCodes, error) {
	if err := requireSelf(a, userID, "confirm TOTP"); err != nil {
		return RecoveryCodes{}, err
	}
	row, found, err := s.load(ctx, s.db, userID)
	if err != nil {
		return RecoveryCodes{}, err
	}
	if !found {
		return RecoveryCodes{}, ErrNotSetUp
	}
	if row.enabled {
		return RecoveryCodes{}, ErrAlreadyEnabled
	}
	now := s.now()
	if row.lockedUntil > now.UnixMilli() {
		return RecoveryCodes{}, lockedError(row.lockedUntil, now)
	}
	step, ok := matchStep(row.secret, normalizeTOTP(code), now)
	if !ok {
		return RecoveryCodes{}, s.fail(ctx, a, userID, ErrInvalidCode, "setup_code")
	}
	var codes []string
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		// The secret must still be the one the code was checked against:
		// a concurrent Setup replaces it.
		res, err := tx.ExecContext(ctx, `UPDATE user_totp SET enabled = TRUE, last_step = $1, failures = 0, first_failure_at = 0, enabled_at = $2
			WHERE user_id = $3 AND enabled = FALSE AND secret = $4`, step, now.UnixMilli(), userID, row.secret)
		if err != nil {
			return fmt.Errorf("enable totp: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return core.Conflict("totp_changed", "code", "the TOTP setup changed meanwhile; start again")
		}
		if codes, err = s.replaceRecoveryCodes(ctx, tx, userID, now.UnixMilli()); err != nil {
			return err
		}
		return core.Audit(ctx, tx, a, "mfa.totp_enable", "user", userID, nil)
	})
	if err != nil {
		return RecoveryCodes{}, err
	}
	return RecoveryCodes{Codes: codes}, nil
}

// Disable turns TOTP off for the acting user, who proves possession with a
// current code or a recovery code: a stolen password alone must not be
// enough to remove (and then replace) the second factor.
func (s *Service) Disable(ctx context.Context, a core.Actor, userID, code string) error {
	if err := requireSelf(a, userID, "disable TOTP"); err != nil {
		return err
	}
	if err := s.verify(ctx, a, userID, code, true); err != nil {
		return err
	}
	return s.db.Tx(ctx, func(tx *sql.Tx) error {
		if err := s.remove(ctx, tx, userID); err != nil {
			return err
		}
		return core.Audit(ctx, tx, a, "mfa.totp_disable", "user", userID, nil)
	})
}

// Reset removes a user's TOTP and recovery codes; admins only, for a user
// who lost their authenticator.
func (s *Service) Reset(ctx context.Context, a core.Actor, userID string) error {
	if !a.IsAdmin {
		return core.Forbidden("only admins can reset another user's MFA")
	}
	return s.db.Tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM users WHERE id = $1`, userID).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return core.NotFound("user")
		}
		_, found, err := s.load(ctx, tx, userID)
		if err != nil {
			return err
		}
		if !found {
			return core.NotFound("TOTP of this user")
		}
		if err := s.remove(ctx, tx, userID); err != nil {
			return err
		}
		return core.Audit(ctx, tx, a, "mfa.totp_reset", "user", userID, nil)
	})
}

func (s *Service) remove(ctx context.Context, tx *sql.Tx, userID string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM user_totp WHERE user_id = $1`, userID); err != nil {
		return fmt.Errorf("remove totp: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM recovery_codes WHERE user_id = $1`, userID); err != nil {
		return fmt.Errorf("remove recovery codes: %w", err)
	}
	return nil
}

// RegenerateRecoveryCodes replaces the acting user's recovery codes, after
// proof of possession (a current TOTP code or a recovery code).
func (s *Service) RegenerateRecoveryCodes(ctx context.Context, a core.Actor, userID, code string) (RecoveryCodes, error) {
	if err := requireSelf(a, userID, "regenerate recovery codes"); err != nil {
		return RecoveryCodes{}, err
	}
	if err := s.verify(ctx, a, userID, code, true); err != nil {
		return RecoveryCodes{}, err
	}
	var codes []string
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		var err error
		if codes, err = s.replaceRecoveryCodes(ctx, tx, userID, s.now().UnixMilli()); err != nil {
			return err
		}
		return core.Audit(ctx, tx, a, "mfa.recovery_codes_regenerate", "user", userID, nil)
	})
	if err != nil {
		return RecoveryCodes{}, err
	}
	return RecoveryCodes{Codes: codes}, nil
}

// HasTOTP tells whether the user has confirmed TOTP.
func (s *Service) HasTOTP(ctx context.Context, userID string) (bool, error) {
	row, found, err := s.load(ctx, s.db, userID)
	if err != nil {
		return false, err
	}
	return found && row.enabled, nil
}

// SecondFactors names what the user can present at login after the
// password: "totp" and "recovery" once TOTP is confirmed, plus what the
// listers added with AddSecondFactors name (e.g. "webauthn"); identity asks
// for one of them (see identity.SetSecondFactor).
func (s *Service) SecondFactors(ctx context.Context, userID string) ([]string, error) {
	has, err := s.HasTOTP(ctx, userID)
	if err != nil {
		return nil, err
	}
	var out []string
	if has {
		out = []string{"totp", "recovery"}
	}
	for _, l := range s.others {
		more, err := l.SecondFactors(ctx, userID)
		if err != nil {
			return nil, err
		}
		out = append(out, more...)
	}
	return out, nil
}

// Status reports the user's second factors.
func (s *Service) Status(ctx context.Context, userID string) (Status, error) {
	var st Status
	var err error
	if st.TOTPEnabled, err = s.HasTOTP(ctx, userID); err != nil {
		return st, err
	}
	err = s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at = 0`, userID).Scan(&st.RecoveryCodesLeft)
	return st, err
}

// VerifyTOTP checks a TOTP code of the user's confirmed secret. A code is
// accepted once: the same code, or one of an earlier time step, is refused
// afterwards on every replica. Failures count towards the lockout.
func (s *Service) VerifyTOTP(ctx context.Context, userID, code string) error {
	// The username for the audit entry is looked up only on a failure.
	return s.verify(ctx, core.Actor{UserID: userID}, userID, code, false)
}

// CodeMethod names the second factor a code that Verify accepted was:
// "totp" for a TOTP code, "recovery" for a recovery code (the same test
// Verify branches on).
func CodeMethod(code string) string {
	if isDigits(normalizeTOTP(code), Digits) {
		return "totp"
	}
	return "recovery"
}

// Verify checks a TOTP code or, failing that, consumes a recovery code.
// a is who presents the code (for the audit log: user and IP).
func (s *Service) Verify(ctx context.Context, a core.Actor, userID, code string) error {
	return s.verify(ctx, a, userID, code, true)
}

func (s *Service) verify(ctx context.Context, a core.Actor, userID, code string, allowRecovery bool) error {
	row, found, err := s.load(ctx, s.db, userID)
	if err != nil {
		return err
	}
	if !found || !row.enabled {
		return ErrNotEnabled
	}
	now := s.now()
	if row.lockedUntil > now.UnixMilli() {
		return lockedError(row.lockedUntil, now)
	}
	if c := normalizeTOTP(code); isDigits(c, Digits) {
		step, ok := matchStep(row.secret, c, now)
		if !ok {
			return s.fail(ctx, a, userID, ErrInvalidCode, "wrong_code")
		}
		// Moving last_step forward is the one atomic act that accepts the
		// code: a concurrent or later use of the same step updates nothing.
		res, err := s.db.ExecContext(ctx, `UPDATE user_totp SET last_step = $1, failures = 0, first_failure_at = 0
			WHERE user_id = $2 AND enabled = TRUE AND last_step < $1 AND locked_until <= $3`, step, userID, now.UnixMilli())
		if err != nil {
			return fmt.Errorf("record totp step: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return nil
		}
		// Either the step was used already or a lock started meanwhile.
		row, _, err := s.load(ctx, s.db, userID)
		if err != nil {
			return err
		}
		if row.lockedUntil > now.UnixMilli() {
			return lockedError(row.lockedUntil, now)
		}
		return s.fail(ctx, a, userID, ErrCodeUsed, "code_reused")
	}
	if allowRecovery {
		if rc := normalizeRecovery(code); len(rc) == recoveryLen {
			res, err := s.db.ExecContext(ctx, `UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at = 0`,
				now.UnixMilli(), userID, s.hashRecovery(userID, rc))
			if err != nil {
				return fmt.Errorf("use recovery code: %w", err)
			}
			if n, _ := res.RowsAffected(); n == 1 {
				if _, err := s.db.ExecContext(ctx, `UPDATE user_totp SET failures = 0, first_failure_at = 0 WHERE user_id = $1`, userID); err != nil {
					return err
				}
				left := 0
				_ = s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at = 0`, userID).Scan(&left)
				return core.Audit(ctx, s.db, a, "mfa.recovery_code_used", "user", userID, map[string]any{"codes_left": left})
			}
		}
	}
	return s.fail(ctx, a, userID, ErrInvalidCode, "wrong_code")
}

// fail counts a failed attempt atomically, locks verification when the
// threshold is crossed, audits the failure and returns the error to show.
func (s *Service) fail(ctx context.Context, a core.Actor, userID string, cause error, reason string) error {
	st, err := core.LoadSettings(ctx, s.db)
	if err != nil {
		return err
	}
	now := s.now()
	nowMs := now.UnixMilli()
	windowStart := nowMs - int64(st.LockoutWindowSeconds)*1000
	var failures int
	err = s.db.QueryRowContext(ctx, `UPDATE user_totp SET
		  failures = CASE WHEN first_failure_at < $2 THEN 1 ELSE failures + 1 END,
		  first_failure_at = CASE WHEN first_failure_at < $2 THEN $3 ELSE first_failure_at END
		WHERE user_id = $1 RETURNING failures`, userID, windowStart, nowMs).Scan(&failures)
	if errors.Is(err, sql.ErrNoRows) {
		return cause // removed meanwhile
	}
	if err != nil {
		return fmt.Errorf("count failed mfa attempt: %w", err)
	}
	var locked int64
	if failures >= st.LockoutThreshold {
		locked = nowMs + int64(st.LockoutDurationSeconds)*1000
		if _, err := s.db.ExecContext(ctx, `UPDATE user_totp SET locked_until = $1, failures = 0, first_failure_at = $2 WHERE user_id = $3`,
			locked, nowMs, userID); err != nil {
			return fmt.Errorf("lock mfa: %w", err)
		}
	}
	if a.Username == "" && a.UserID != "" {
		_ = s.db.QueryRowContext(ctx, `SELECT username FROM users WHERE id = $1`, a.UserID).Scan(&a.Username)
	}
	if err := core.Audit(ctx, s.db, a, "mfa.verify_failed", "user", userID, map[string]any{"reason": reason, "locked": locked > 0}); err != nil {
		return err
	}
	if locked > 0 {
		return lockedError(locked, now)
	}
	return cause
}

func lockedError(until int64, now time.Time) error {
	secs := int((until-now.UnixMilli())/1000) + 1
	return &core.Error{Kind: core.KindTooManyAttempts, Code: "mfa_locked",
		Message: fmt.Sprintf("too many wrong codes; try again in %d seconds", secs), RetryAfterSeconds: secs}
}

// matchStep returns the newest time step within the skew whose code equals
// code. Every step is computed, so timing does not tell which one matched.
func matchStep(secret, code string, now time.Time) (int64, bool) {
	if !isDigits(code, Digits) {
		return 0, false
	}
	cur := now.Unix() / Period
	found, best := false, int64(0)
	for step := cur - Skew; step <= cur+Skew; step++ {
		if step < 0 {
			continue
		}
		want, err := hotp.GenerateCodeCustom(secret, uint64(step), hotp.ValidateOpts{Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
		if err != nil {
			return 0, false
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			found, best = true, step
		}
	}
	return best, found
}

// GenerateCode returns the TOTP code of a secret at t (for tests and tools).
func GenerateCode(secret string, t time.Time) (string, error) {
	return totp.GenerateCodeCustom(secret, t, totp.ValidateOpts{Period: Period, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
}

func normalizeTOTP(code string) string {
	return strings.NewReplacer(" ", "", "-", "", "\t", "").Replace(strings.TrimSpace(code))
}

func isDigits(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// Recovery codes: 10 characters of an alphabet without look-alikes (about
// 49 bits), shown as xxxxx-xxxxx.
const (
	recoveryAlphabet = "abcdefghjkmnpqrstuvwxyz23456789"
	recoveryLen      = 10
)

func newRecoveryCode() string {
	b := make([]byte, recoveryLen)
	out := make([]byte, 0, recoveryLen+1)
	for i := 0; i < recoveryLen; {
		if _, err := rand.Read(b[:1]); err != nil {
			panic(err)
		}
		// Rejection sampling keeps the distribution uniform.
		if int(b[0]) >= 256-256%len(recoveryAlphabet) {
			continue
		}
		if i == recoveryLen/2 {
			out = append(out, '-')
		}
		out = append(out, recoveryAlphabet[int(b[0])%len(recoveryAlphabet)])
		i++
	}
	return string(out)
}

func normalizeRecovery(code string) string {
	return strings.ToLower(strings.NewReplacer(" ", "", "-", "", "\t", "").Replace(strings.TrimSpace(code)))
}

func (s *Service) hashRecovery(userID, normalized string) string {
	m := hmac.New(sha256.New, s.tokenKey)
	m.Write([]byte("ward-recovery-code\x00" + userID + "\x00" + normalized))
	return hex.EncodeToString(m.Sum(nil))
}

func (s *Service) replaceRecoveryCodes(ctx context.Context, tx *sql.Tx, userID string, now int64) ([]string, error) {
	if _, err := tx.ExecContext(ctx, `DELETE FROM recovery_codes WHERE user_id = $1`, userID); err != nil {
		return nil, fmt.Errorf("remove recovery codes: %w", err)
	}
	codes := make([]string, 0, RecoveryCodeCount)
	seen := map[string]bool{}
	for len(codes) < RecoveryCodeCount {
		c := newRecoveryCode()
		if seen[c] {
			continue
		}
		seen[c] = true
		if _, err := tx.ExecContext(ctx, `INSERT INTO recovery_codes (user_id, code_hash, used_at, created_at) VALUES ($1, $2, 0, $3)`,
			userID, s.hashRecovery(userID, normalizeRecovery(c)), now); err != nil {
			return nil, fmt.Errorf("store recovery code: %w", err)
		}
		codes = append(codes, c)
	}
	return codes, nil
}

// TOTPEnabled tells, for a page of users, which have confirmed TOTP (one
// query for the whole page).
func (s *Service) TOTPEnabled(ctx context.Context, userIDs []string) (map[string]bool, error) {
	out := map[string]bool{}
	if len(userIDs) == 0 {
		return out, nil
	}
	var args []any
	rows, err := s.db.QueryContext(ctx, `SELECT user_id FROM user_totp WHERE enabled = TRUE AND user_id IN (`+store.InList(&args, userIDs...)+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("totp of users: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out[id] = true
	}
	return out, rows.Err()
}
