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
	targets, err := loadTargets(ctx, q, locationID, publicKey)
	if err != nil {
		return targets[publicKey], err
	}
	t := targets[publicKey]
	return t, t.check()
}

// loadTargets reads the location and the devices with the given keys, in
// one query. Keys without a device map to a target whose deviceID is empty.
// Only a missing location or SQL errors fail it; check judges each target.
func loadTargets(ctx context.Context, q store.Querier, locationID string, publicKeys ...string) (map[string]target, error) {
	args := []any{locationID}
	rows, err := q.QueryContext(ctx, `SELECT l.name, l.mfa_mode, l.disconnect_threshold, COALESCE(d.public_key, ''), COALESCE(d.id, ''),
		COALESCE(d.name, ''), COALESCE(d.kind, ''), COALESCE(d.user_id, ''), COALESCE(u.username, ''), COALESCE(u.email, ''), COALESCE(u.active, FALSE),
		(SELECT COUNT(*) FROM device_addresses a WHERE a.device_id = d.id AND a.location_id = l.id)
		FROM locations l LEFT JOIN devices d ON d.public_key IN (`+store.InList(&args, publicKeys...)+`)
		LEFT JOIN users u ON u.id = d.user_id WHERE l.id = $1`, args...)
	if err != nil {
		return nil, fmt.Errorf("load location and devices: %w", err)
	}
	defer rows.Close()
	out := make(map[string]target, len(publicKeys))
	var loc target
	found := false
	for rows.Next() {
		var t target
		var key string
		var addrs int
		if err := rows.Scan(&t.locationName, &t.mfaMode, &t.threshold, &key, &t.deviceID, &t.deviceName, &t.deviceKind,
			&t.userID, &t.username, &t.email, &t.active, &addrs); err != nil {
			return nil, err
		}
		found, loc = true, t
		if key != "" {
			t.locationID, t.publicKey, t.hasAddress = locationID, key, addrs > 0
			out[key] = t
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if !found {
		return out, core.NotFound("location")
	}
	for _, k := range publicKeys {
		if _, ok := out[k]; !ok {
			out[k] = target{locationID: locationID, locationName: loc.locationName, mfaMode: loc.mfaMode, threshold: loc.threshold, publicKey: k}
		}
	}
	return out, nil
}

// check tells whether the target's device may log in to its location.
func (t target) check() error {
	switch {
	case t.mfaMode != vpn.MFAInternal:
		return core.Invalid(CodeMFANotEnabled, "location_id", "location %q does not use internal MFA", t.locationName)
	case t.deviceID == "":
		return core.NotFound("device")
	case !t.active:
		return domainError(core.KindForbidden, CodeAccountDisabled, "the owner of this device is disabled")
	case t.deviceKind != vpn.KindUser:
		return domainError(core.KindForbidden, CodeNoAccess, "network devices cannot log in with MFA")
	case !t.hasAddress:
		return domainError(core.KindForbidden, CodeNoAccess, "this device has no access to location %q", t.locationName)
	}
	return nil
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
	err = s.starts.Do(ctx, "", startRequest{t: t, id: id, tokenHash: s.tokenHash(ch.Token), method: method, codeHash: codeHash,
		createdAt: now.UnixMilli(), expiresAt: ch.ExpiresAt}).err
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
	username                                                      string
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
	if c.username == "" {
		_ = s.db.QueryRowContext(ctx, `SELECT username FROM users WHERE id = $1`, c.userID).Scan(&c.username)
	}
	if err := core.Audit(context.WithoutCancel(ctx), s.db, core.Actor{UserID: c.userID, Username: c.username}, action, "device", c.deviceID, details); err != nil {
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
	now := s.now()
	// Reserve the attempt before checking the code, so parallel guesses
	// cannot exceed the limit; the same statement reads the challenge.
	var c challengeRow
	err := s.db.QueryRowContext(ctx, `UPDATE vpn_mfa_challenges SET attempts = attempts + 1
		WHERE token_hash = $1 AND completed_at = 0 AND attempts < $2 AND expires_at > $3
		RETURNING id, location_id, device_id, user_id, public_key, method, code_hash, attempts, expires_at, completed_at`,
		s.tokenHash(token), s.opts.MaxAttempts, now).
		Scan(&c.id, &c.locationID, &c.deviceID, &c.userID, &c.publicKey, &c.method, &c.codeHash, &c.attempts, &c.expiresAt, &c.completedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return Session{}, s.refuse(ctx, token, now)
	}
	if err != nil {
		return Session{}, fmt.Errorf("count attempt: %w", err)
	}
	if err := s.verify(ctx, c, strings.TrimSpace(code)); err != nil {
		remaining := s.opts.MaxAttempts - c.attempts
		s.auditChallenge(ctx, c, "vpn_mfa.failed", map[string]any{"attempt": c.attempts, "remaining": remaining})
		return Session{}, wrongCode(err, remaining)
	}

	sess, username, err := s.authorize(ctx, c)
	if username != "" {
		c.username = username
	}
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

// refuse explains why a challenge takes no code (unknown, completed,
// expired or out of attempts) and audits the refusal.
func (s *Service) refuse(ctx context.Context, token string, now int64) error {
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
