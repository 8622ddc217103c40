package vpnsession

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/store"
)

// target is what an MFA login is about: a location, a device and its owner.
type target struct {
	locationID, locationName, mfaMode string
	threshold                         int
	deviceID, deviceName, deviceKind  string
	publicKey                         string
	userID, username, email           string
	active, hasAddress                bool
}

func (t target) actor() core.Actor { return core.Actor{UserID: t.userID, Username: t.username} }

// loadTarget reads the location and the device with the given key and
// checks that the device may log in to the location.
func loadTarget(ctx context.Context, q store.Querier, locationID, publicKey string) (target, error) {
	t := target{locationID: locationID, publicKey: publicKey}
	err := q.QueryRowContext(ctx, `SELECT name, mfa_mode, disconnect_threshold FROM locations WHERE id = $1`, locationID).
		Scan(&t.locationName, &t.mfaMode, &t.threshold)
	if errors.Is(err, sql.ErrNoRows) {
		return t, core.NotFound("location")
	}
	if err != nil {
		return t, fmt.Errorf("load location: %w", err)
	}
	if t.mfaMode != vpn.MFAInternal {
		return t, core.Invalid(CodeMFANotEnabled, "location_id", "location %q does not use internal MFA", t.locationName)
	}
	var addrs int
	err = q.QueryRowContext(ctx, `SELECT d.id, d.name, d.kind, d.user_id, u.username, u.email, u.active,
		(SELECT COUNT(*) FROM device_addresses a WHERE a.device_id = d.id AND a.location_id = $2)
		FROM devices d JOIN users u ON u.id = d.user_id WHERE d.public_key = $1`, publicKey, locationID).
		Scan(&t.deviceID, &t.deviceName, &t.deviceKind, &t.userID, &t.username, &t.email, &t.active, &addrs)
	if errors.Is(err, sql.ErrNoRows) {
		return t, core.NotFound("device")
	}
	if err != nil {
		return t, fmt.Errorf("load device: %w", err)
	}
	t.hasAddress = addrs > 0
	switch {
	case !t.active:
		return t, domainError(core.KindForbidden, CodeAccountDisabled, "the owner of this device is disabled")
	case t.deviceKind != vpn.KindUser:
		return t, domainError(core.KindForbidden, CodeNoAccess, "network devices cannot log in with MFA")
	case !t.hasAddress:
		return t, domainError(core.KindForbidden, CodeNoAccess, "this device has no access to location %q", t.locationName)
	}
	return t, nil
}

// Start begins an MFA login of the device with the given public key for a
// location: method totp, or email (a 6-digit code is sent to the owner). The
// returned token finishes it within the challenge TTL.
func (s *Service) Start(ctx context.Context, locationID, devicePublicKey, method string) (Challenge, error) {
	switch method {
	case MethodTOTP:
		if s.opts.Verifier == nil {
			return Challenge{}, domainError(core.KindUnavailable, CodeMethodUnavailable, "TOTP verification is not available on this server")
		}
	case MethodEmail:
		if s.opts.Mailer == nil {
			return Challenge{}, domainError(core.KindUnavailable, CodeMethodUnavailable, "e-mail codes are not available: no mail server is configured")
		}
	default:
		return Challenge{}, core.Invalid("invalid_method", "method", "must be %q or %q", MethodTOTP, MethodEmail)
	}
	key, err := vpn.ParsePublicKey("public_key", devicePublicKey)
	if err != nil {
		return Challenge{}, err
	}
	t, err := loadTarget(ctx, s.db, locationID, key)
	if err == nil {
		err = s.methodConfigured(ctx, t, method)
	}
	if err != nil {
		if e, ok := core.AsError(err); ok && t.deviceID != "" && e.Kind != core.KindNotFound {
			s.auditStart(ctx, t, method, "vpn_mfa.start_refused", map[string]any{"reason": e.Code})
		}
		return Challenge{}, err
	}

	now := s.opts.Now()
	id := core.NewID()
	ch := Challenge{Token: "wvm_" + core.RandomToken(32), Method: method, ExpiresAt: now.Add(s.opts.ChallengeTTL).UnixMilli()}
	var code, codeHash string
	if method == MethodEmail {
		if code, err = randomCode(); err != nil {
			return Challenge{}, err
		}
		codeHash = s.codeHash(id, code)
	}
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		var recent int
		var oldest sql.NullInt64
		windowStart := now.Add(-s.opts.ChallengeTTL).UnixMilli()
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*), MIN(created_at) FROM vpn_mfa_challenges WHERE device_id = $1 AND location_id = $2 AND created_at > $3`,
			t.deviceID, locationID, windowStart).Scan(&recent, &oldest); err != nil {
			return fmt.Errorf("count challenges: %w", err)
		}
		if recent >= s.opts.MaxStarts {
			retry := int((oldest.Int64-windowStart)/1000) + 1
			return &core.Error{Kind: core.KindTooManyAttempts, Code: CodeTooManyAttempts, RetryAfterSeconds: retry,
				Message: fmt.Sprintf("too many MFA logins started for this device; try again in %d seconds", retry)}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO vpn_mfa_challenges (id, token_hash, location_id, device_id, user_id, public_key, method, code_hash, created_at, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			id, s.tokenHash(ch.Token), locationID, t.deviceID, t.userID, key, method, codeHash, now.UnixMilli(), ch.ExpiresAt); err != nil {
			return fmt.Errorf("create challenge: %w", err)
		}
		return core.Audit(ctx, tx, t.actor(), "vpn_mfa.start", "device", t.deviceID,
			map[string]any{"location_id": locationID, "method": method, "challenge_id": id})
	})
	if err != nil {
		if e, ok := core.AsError(err); ok && e.Code == CodeTooManyAttempts {
			s.auditStart(ctx, t, method, "vpn_mfa.start_refused", map[string]any{"reason": e.Code})
		}
		return Challenge{}, err
	}
	if method == MethodEmail {
		mail := CodeMail{UserID: t.userID, Username: t.username, Email: t.email, LocationID: locationID, LocationName: t.locationName,
			DeviceName: t.deviceName, Code: code, ExpiresAt: time.UnixMilli(ch.ExpiresAt)}
		if err := s.opts.Mailer.SendVPNCode(ctx, mail); err != nil {
			s.log.Warn("cannot send VPN MFA code", "user", t.username, "err", err)
			// The code never arrived: the challenge must not stay usable
			// (it still counts towards the start limit).
			cctx := context.WithoutCancel(ctx)
			cerr := s.db.Tx(cctx, func(tx *sql.Tx) error {
				if _, err := tx.ExecContext(cctx, `UPDATE vpn_mfa_challenges SET attempts = $2 WHERE id = $1`, id, s.opts.MaxAttempts); err != nil {
					return err
				}
				return core.Audit(cctx, tx, t.actor(), "vpn_mfa.email_failed", "device", t.deviceID,
					map[string]any{"location_id": locationID, "challenge_id": id})
			})
			return Challenge{}, errors.Join(domainError(core.KindUnavailable, CodeEmailNotSent, "the e-mail code could not be sent; try again later"), cerr)
		}
	}
	return ch, nil
}

func (s *Service) methodConfigured(ctx context.Context, t target, method string) error {
	switch method {
	case MethodTOTP:
		if c, ok := s.opts.Verifier.(totpConfigured); ok {
			enabled, err := c.HasTOTP(ctx, t.userID)
			if err != nil {
				return err
			}
			if !enabled {
				return core.Invalid(CodeMethodNotConfigured, "method", "TOTP is not set up for this account")
			}
		}
	case MethodEmail:
		if t.email == "" {
			return core.Invalid(CodeMethodNotConfigured, "method", "this account has no e-mail address")
		}
	}
	return nil
}

// auditStart writes an audit entry about a start outside of any
// transaction (for refusals, whose transaction did not commit).
func (s *Service) auditStart(ctx context.Context, t target, method, action string, details map[string]any) {
	details["location_id"], details["method"] = t.locationID, method
	if err := core.Audit(context.WithoutCancel(ctx), s.db, t.actor(), action, "device", t.deviceID, details); err != nil {
		s.log.Warn("cannot write audit entry", "action", action, "err", err)
	}
}

func randomCode() (string, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%06d", n.Int64()), nil
}

func newPresharedKey() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return base64.StdEncoding.EncodeToString(b)
}

type challengeRow struct {
	id, locationID, deviceID, userID, publicKey, method, codeHash string
	attempts                                                      int
	expiresAt, completedAt                                        int64
}

func (s *Service) loadChallenge(ctx context.Context, q store.Querier, tokenHash string) (challengeRow, error) {
	var c challengeRow
	err := q.QueryRowContext(ctx, `SELECT id, location_id, device_id, user_id, public_key, method, code_hash, attempts, expires_at, completed_at
		FROM vpn_mfa_challenges WHERE token_hash = $1`, tokenHash).
		Scan(&c.id, &c.locationID, &c.deviceID, &c.userID, &c.publicKey, &c.method, &c.codeHash, &c.attempts, &c.expiresAt, &c.completedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return c, domainError(core.KindUnauthenticated, CodeInvalidToken, "unknown MFA login; start again")
	}
	if err != nil {
		return c, fmt.Errorf("load challenge: %w", err)
	}
	return c, nil
}

// unusable tells why a challenge cannot take a code, or nil.
func (s *Service) unusable(c challengeRow, now int64) *core.Error {
	switch {
	case c.completedAt > 0:
		return domainError(core.KindUnauthenticated, CodeChallengeUsed, "this MFA login was already completed; start again")
	case now >= c.expiresAt:
		return domainError(core.KindUnauthenticated, CodeChallengeExpired, "this MFA login has expired; start again")
	case c.attempts >= s.opts.MaxAttempts:
		return &core.Error{Kind: core.KindTooManyAttempts, Code: CodeTooManyAttempts, Message: "too many wrong codes for this MFA login; start again"}
	}
	return nil
}

func (s *Service) auditChallenge(ctx context.Context, c challengeRow, action string, details map[string]any) {
	if details == nil {
		details = map[string]any{}
	}
	details["location_id"], details["method"], details["challenge_id"] = c.locationID, c.method, c.id
	var username string
	_ = s.db.QueryRowContext(ctx, `SELECT username FROM users WHERE id = $1`, c.userID).Scan(&username)
	if err := core.Audit(context.WithoutCancel(ctx), s.db, core.Actor{UserID: c.userID, Username: username}, action, "device", c.deviceID, details); err != nil {
		s.log.Warn("cannot write audit entry", "action", action, "err", err)
	}
}

// Finish completes an MFA login with the code. On success the device's
// previous session in the location is closed, a new session with a fresh
// preshared key is created and its peer is pushed to every gateway of the
// location; Finish then waits until every connected gateway has applied that
// revision. When they do not (or none is connected) it returns the session
// together with an *AckError: the session stays valid and the client may
// still try to connect.
func (s *Service) Finish(ctx context.Context, token, code string) (Session, error) {
	c, err := s.loadChallenge(ctx, s.db, s.tokenHash(token))
	if err != nil {
		return Session{}, err
	}
	now := s.now()
	if e := s.unusable(c, now); e != nil {
		s.auditChallenge(ctx, c, "vpn_mfa.refused", map[string]any{"reason": e.Code})
		return Session{}, e
	}
	// Reserve the attempt before checking the code, so parallel guesses
	// cannot exceed the limit.
	err = s.db.QueryRowContext(ctx, `UPDATE vpn_mfa_challenges SET attempts = attempts + 1
		WHERE id = $1 AND completed_at = 0 AND attempts < $2 AND expires_at > $3 RETURNING attempts`,
		c.id, s.opts.MaxAttempts, now).Scan(&c.attempts)
	if errors.Is(err, sql.ErrNoRows) {
		return Session{}, s.refuseRaced(ctx, token, now)
	}
	if err != nil {
		return Session{}, fmt.Errorf("count attempt: %w", err)
	}
	if err := s.verify(ctx, c, strings.TrimSpace(code)); err != nil {
		remaining := s.opts.MaxAttempts - c.attempts
		s.auditChallenge(ctx, c, "vpn_mfa.failed", map[string]any{"attempt": c.attempts, "remaining": remaining})
		return Session{}, wrongCode(err, remaining)
	}

	sess, err := s.authorize(ctx, c)
	if err != nil {
		if e, ok := core.AsError(err); ok {
			s.auditChallenge(ctx, c, "vpn_mfa.refused", map[string]any{"reason": e.Code})
		}
		return Session{}, err
	}
	if err := s.waitAck(ctx, sess.LocationID, sess.Revision); err != nil {
		var ae *AckError
		if errors.As(err, &ae) {
			lag := make([]string, len(ae.Lagging))
			for i, g := range ae.Lagging {
				lag[i] = g.ID
			}
			s.auditChallenge(ctx, c, "vpn_session.not_acknowledged", map[string]any{"session_id": sess.ID, "revision": sess.Revision,
				"reason": ae.Err.Code, "lagging_gateways": lag})
		}
		return sess, err
	}
	return sess, nil
}

// wrongCode is the error for a code that was not accepted.
func wrongCode(err error, remaining int) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	e, ok := core.AsError(err)
	if ok && (e.Kind == core.KindUnavailable || e.Kind == core.KindTooManyAttempts) {
		return err
	}
	if remaining <= 0 {
		return &core.Error{Kind: core.KindTooManyAttempts, Code: CodeTooManyAttempts, Message: "code not accepted; too many attempts for this MFA login, start again"}
	}
	if ok {
		// Keep the verifier's reason (e.g. a reused code), with the count.
		return &core.Error{Kind: e.Kind, Code: e.Code, Field: e.Field, Message: fmt.Sprintf("%s; %d attempts left", e.Message, remaining)}
	}
	return core.Invalid(CodeInvalidCode, "code", "wrong code; %d attempts left", remaining)
}

// refuseRaced explains why reserving an attempt failed: the challenge
// changed since it was read (completed, expired or out of attempts).
func (s *Service) refuseRaced(ctx context.Context, token string, now int64) error {
	c, err := s.loadChallenge(ctx, s.db, s.tokenHash(token))
	if err != nil {
		return err
	}
	e := s.unusable(c, now)
	if e == nil {
		e = domainError(core.KindUnauthenticated, CodeChallengeUsed, "this MFA login changed meanwhile; start again")
	}
	s.auditChallenge(ctx, c, "vpn_mfa.refused", map[string]any{"reason": e.Code})
	return e
}

func (s *Service) verify(ctx context.Context, c challengeRow, code string) error {
	switch c.method {
	case MethodEmail:
		if len(code) != 6 || !hmac.Equal([]byte(s.codeHash(c.id, code)), []byte(c.codeHash)) {
			return errors.New("wrong e-mail code")
		}
		return nil
	case MethodTOTP:
		if s.opts.Verifier == nil {
			return domainError(core.KindUnavailable, CodeMethodUnavailable, "TOTP verification is not available on this server")
		}
		if code == "" {
			return errors.New("empty code")
		}
		return s.opts.Verifier.VerifyTOTP(ctx, c.userID, code)
	}
	return fmt.Errorf("unknown method %q", c.method)
}

// authorize turns a verified challenge into a session, in one transaction:
// the challenge is consumed, the device's previous session closed, the new
// one created and the location's revision bumped with the device's key.
func (s *Service) authorize(ctx context.Context, c challengeRow) (Session, error) {
	var sess Session
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		t, err := loadTarget(ctx, tx, c.locationID, c.publicKey)
		if err != nil {
			return err
		}
		if t.deviceID != c.deviceID {
			return core.NotFound("device")
		}
		now := s.now()
		sess = Session{ID: core.NewID(), LocationID: c.locationID, DeviceID: c.deviceID, UserID: c.userID, PublicKey: c.publicKey,
			Method: c.method, State: StateNew, PresharedKey: newPresharedKey(), CreatedAt: now,
			DisconnectThreshold: t.threshold, ConnectBy: now + int64(t.threshold)*1000}
		// The bump comes first: it takes the location's row lock, which
		// serialises logins and sweeps of the location (same lock order).
		if sess.Revision, err = s.vpn.TouchPeers(ctx, tx, c.locationID, "mfa.session", sess.ID, c.publicKey); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE vpn_mfa_challenges SET completed_at = $2, session_id = $3
			WHERE id = $1 AND completed_at = 0 AND expires_at > $2`, c.id, now, sess.ID)
		if err != nil {
			return fmt.Errorf("complete challenge: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return domainError(core.KindUnauthenticated, CodeChallengeUsed, "this MFA login was already completed; start again")
		}
		replaced, err := closeActive(ctx, tx, c.locationID, c.deviceID, now)
		if err != nil {
			return err
		}
		var otherKeys []string
		for _, r := range replaced {
			if r.publicKey != c.publicKey {
				otherKeys = append(otherKeys, r.publicKey)
			}
			if err := core.Audit(ctx, tx, t.actor(), "vpn_session.closed", "vpn_session", r.id, map[string]any{
				"location_id": c.locationID, "device_id": c.deviceID, "reason": ReasonReplaced, "previous_state": r.state, "replaced_by": sess.ID}); err != nil {
				return err
			}
		}
		if len(otherKeys) > 0 {
			// The replaced session was authorized for a key the device no
			// longer has: make sure gateways drop that key too.
			if sess.Revision, err = s.vpn.TouchPeers(ctx, tx, c.locationID, "mfa.session", sess.ID, otherKeys...); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO vpn_sessions (id, location_id, device_id, user_id, public_key, method, state, preshared_key, revision, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			sess.ID, sess.LocationID, sess.DeviceID, sess.UserID, sess.PublicKey, sess.Method, StateNew, sess.PresharedKey, sess.Revision, now); err != nil {
			return fmt.Errorf("create session: %w", err)
		}
		if err := core.Audit(ctx, tx, t.actor(), "vpn_mfa.success", "device", c.deviceID, map[string]any{
			"location_id": c.locationID, "method": c.method, "challenge_id": c.id, "session_id": sess.ID}); err != nil {
			return err
		}
		return core.Audit(ctx, tx, t.actor(), "vpn_session.created", "vpn_session", sess.ID, map[string]any{
			"location_id": c.locationID, "device_id": c.deviceID, "public_key": c.publicKey, "method": c.method, "revision": sess.Revision})
	})
	return sess, err
}

type closedSession struct{ id, state, publicKey string }

// closeActive closes the device's active sessions in the location as
// replaced and returns them. The caller holds the location's row lock (it
// bumped the revision), which keeps other logins and sweeps of the location
// out between the read and the update.
func closeActive(ctx context.Context, tx *sql.Tx, locationID, deviceID string, now int64) ([]closedSession, error) {
	rows, err := tx.QueryContext(ctx, `SELECT id, state, public_key FROM vpn_sessions
		WHERE location_id = $1 AND device_id = $2 AND state IN ('new', 'connected')`, locationID, deviceID)
	if err != nil {
		return nil, fmt.Errorf("previous session: %w", err)
	}
	var out []closedSession
	for rows.Next() {
		var c closedSession
		if err := rows.Scan(&c.id, &c.state, &c.publicKey); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, c := range out {
		if _, err := tx.ExecContext(ctx, `UPDATE vpn_sessions SET state = 'disconnected', closed_at = $2, close_reason = $3, preshared_key = ''
			WHERE id = $1 AND state = $4`, c.id, now, ReasonReplaced, c.state); err != nil {
			return nil, fmt.Errorf("close previous session: %w", err)
		}
	}
	return out, nil
}

// gatewayState is a gateway of a location merged over all core replicas'
// links: connected on any, applied the highest revision any reported.
type gatewayState struct {
	GatewayLag
	connected bool
}

func (s *Service) gateways(ctx context.Context, locationID string) ([]gatewayState, error) {
	// A link whose replica stopped refreshing it (killed) is not waited for.
	fresh := time.Now().Add(-vpn.LinkStaleAfter).UnixMilli()
	rows, err := s.db.QueryContext(ctx, `SELECT g.id, g.name, MAX(l.applied_revision), MAX(CASE WHEN l.connected AND l.last_contact > $2 THEN 1 ELSE 0 END)
		FROM gateways g JOIN gateway_links l ON l.gateway_id = g.id
		WHERE g.location_id = $1 AND g.revoked_at = 0 GROUP BY g.id, g.name ORDER BY g.name, g.id`, locationID, fresh)
	if err != nil {
		return nil, fmt.Errorf("gateway links: %w", err)
	}
	defer rows.Close()
	var out []gatewayState
	for rows.Next() {
		var g gatewayState
		var connected int
		if err := rows.Scan(&g.ID, &g.Name, &g.AppliedRevision, &connected); err != nil {
			return nil, err
		}
		g.connected = connected > 0
		out = append(out, g)
	}
	return out, rows.Err()
}

// waitAck polls until every connected gateway of the location has applied
// revision, no gateway is connected, or the timeout passes.
func (s *Service) waitAck(ctx context.Context, locationID string, revision int64) error {
	deadline := time.Now().Add(s.opts.AckTimeout)
	tick := time.NewTicker(s.opts.AckPoll)
	defer tick.Stop()
	for {
		gws, err := s.gateways(ctx, locationID)
		if err != nil {
			return err
		}
		var lagging []GatewayLag
		connected := 0
		for _, g := range gws {
			if !g.connected {
				continue
			}
			connected++
			if g.AppliedRevision < revision {
				lagging = append(lagging, g.GatewayLag)
			}
		}
		switch {
		case connected == 0:
			return &AckError{Revision: revision, Err: domainError(core.KindUnavailable, CodeNoGatewayConnected,
				"no gateway of this location is connected to core; the session is authorized and will be installed when a gateway connects")}
		case len(lagging) == 0:
			return nil
		case !time.Now().Before(deadline):
			names := make([]string, len(lagging))
			for i, g := range lagging {
				names[i] = fmt.Sprintf("%s (%s, at revision %d)", g.Name, g.ID, g.AppliedRevision)
			}
			return &AckError{Revision: revision, Lagging: lagging, Err: domainError(core.KindUnavailable, CodeGatewaysNotAcknowledged,
				"gateways did not confirm revision %d within %s: %s; the session is authorized, try connecting again shortly",
				revision, s.opts.AckTimeout, strings.Join(names, ", "))}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
