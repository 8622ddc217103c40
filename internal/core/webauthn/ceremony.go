package webauthn

// The two ceremonies (registration, login as a second factor) and their state,
// kept in the database so a ceremony begun on one core replica finishes on
// another, once.

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/go-webauthn/webauthn/protocol"
	gowebauthn "github.com/go-webauthn/webauthn/webauthn"
	"github.com/google/uuid"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/store"
)

// saveCeremony stores a begun ceremony, dropping expired ones and the
// oldest open ones of the same user, kind and session beyond a few.
func (s *Service) saveCeremony(ctx context.Context, kind, userID, sessionID string, data *gowebauthn.SessionData) (string, int64, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return "", 0, fmt.Errorf("encode webauthn session: %w", err)
	}
	now := s.now()
	id, expires := core.NewID(), now.Add(s.ttl).UnixMilli()
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM webauthn_ceremonies WHERE expires_at <= $1`, now.UnixMilli()); err != nil {
			return fmt.Errorf("drop expired webauthn ceremonies: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM webauthn_ceremonies WHERE user_id = $1 AND kind = $2 AND session_id = $3 AND id NOT IN
			(SELECT id FROM webauthn_ceremonies WHERE user_id = $1 AND kind = $2 AND session_id = $3 ORDER BY created_at DESC, id DESC LIMIT $4)`,
			userID, kind, sessionID, keptCeremonies-1); err != nil {
			return fmt.Errorf("drop old webauthn ceremonies: %w", err)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO webauthn_ceremonies (id, kind, user_id, session_id, data, created_at, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, id, kind, userID, sessionID, string(raw), now.UnixMilli(), expires)
		if err != nil {
			return fmt.Errorf("store webauthn ceremony: %w", err)
		}
		return nil
	})
	return id, expires, err
}

// takeCeremony consumes a ceremony: whoever deletes the row finishes it.
func (s *Service) takeCeremony(ctx context.Context, id, kind, userID, sessionID string) (gowebauthn.SessionData, error) {
	var data gowebauthn.SessionData
	if id == "" || len(id) > 64 {
		return data, ErrCeremonyExpired
	}
	var raw string
	var expires int64
	err := s.db.QueryRowContext(ctx, `DELETE FROM webauthn_ceremonies WHERE id = $1 AND kind = $2 AND user_id = $3 AND session_id = $4
		RETURNING data, expires_at`, id, kind, userID, sessionID).Scan(&raw, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return data, ErrCeremonyExpired
	}
	if err != nil {
		return data, fmt.Errorf("take webauthn ceremony: %w", err)
	}
	if expires <= s.now().UnixMilli() {
		return data, ErrCeremonyExpired
	}
	if err := json.Unmarshal([]byte(raw), &data); err != nil {
		return data, fmt.Errorf("decode webauthn session: %w", err)
	}
	return data, nil
}

// BeginRegistration opens the registration of a new key for the acting
// user.
func (s *Service) BeginRegistration(ctx context.Context, a core.Actor, userID string) (RegistrationStart, error) {
	if err := requireSelf(a, userID, "register a security key"); err != nil {
		return RegistrationStart{}, err
	}
	u, rows, err := s.loadUser(ctx, userID)
	if err != nil {
		return RegistrationStart{}, err
	}
	if len(rows) >= MaxCredentials {
		return RegistrationStart{}, ErrTooManyCredentials
	}
	opts := []gowebauthn.RegistrationOption{
		// A key that is registered already is refused by the browser,
		// before the user touches it.
		gowebauthn.WithExclusions(gowebauthn.Credentials(u.creds).CredentialDescriptors()),
		gowebauthn.WithRegistrationRelyingPartyName(s.displayName(ctx)),
	}
	creation, data, err := s.wa.BeginRegistration(u, opts...)
	if err != nil {
		return RegistrationStart{}, fmt.Errorf("begin webauthn registration: %w", err)
	}
	id, expires, err := s.saveCeremony(ctx, kindRegister, userID, "", data)
	if err != nil {
		return RegistrationStart{}, err
	}
	return RegistrationStart{CeremonyID: id, ExpiresAt: expires, Options: creation}, nil
}

// displayName is the relying party name browsers show: the instance name.
func (s *Service) displayName(ctx context.Context) string {
	if st, err := core.LoadSettings(ctx, s.db); err == nil && strings.TrimSpace(st.InstanceName) != "" {
		return st.InstanceName
	}
	return s.rpName
}

// FinishRegistration verifies the browser's answer (the JSON of the
// PublicKeyCredential navigator.credentials.create returned) and stores the
// new key under name.
func (s *Service) FinishRegistration(ctx context.Context, a core.Actor, userID, ceremonyID, name string, response []byte) (Credential, error) {
	if err := requireSelf(a, userID, "register a security key"); err != nil {
		return Credential{}, err
	}
	name, err := NormalizeName(name)
	if err != nil {
		return Credential{}, err
	}
	if len(response) == 0 || len(response) > maxResponseBytes {
		return Credential{}, core.Invalid("invalid_value", "credential", "credential must be the answer of the browser (at most %d bytes)", maxResponseBytes)
	}
	data, err := s.takeCeremony(ctx, ceremonyID, kindRegister, userID, "")
	if err != nil {
		return Credential{}, err
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(response)
	if err != nil {
		return Credential{}, s.failRegistration(ctx, a, userID, err)
	}
	u, _, err := s.loadUser(ctx, userID)
	if err != nil {
		return Credential{}, err
	}
	cred, err := s.wa.CreateCredential(u, data, parsed)
	if err != nil {
		return Credential{}, s.failRegistration(ctx, a, userID, err)
	}
	now := s.now().UnixMilli()
	row := credRow{Credential: Credential{ID: core.NewID(), Name: name, CredentialID: base64.RawURLEncoding.EncodeToString(cred.ID),
		AAGUID: aaguidString(cred.Authenticator.AAGUID), Transports: knownTransports(cred.Transport),
		BackupEligible: cred.Flags.BackupEligible, SignCount: cred.Authenticator.SignCount, CreatedAt: now},
		publicKey: base64.RawURLEncoding.EncodeToString(cred.PublicKey), attType: cred.AttestationType, attFormat: cred.AttestationFormat,
		attachment: string(cred.Authenticator.Attachment), flags: int(cred.Flags.ProtocolValue())}
	if len(cred.ID) > 1023 || len(row.publicKey) > 4096 {
		return Credential{}, s.failRegistration(ctx, a, userID, errors.New("credential id or public key too long"))
	}
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM webauthn_credentials WHERE user_id = $1`, userID).Scan(&n); err != nil {
			return err
		}
		if n >= MaxCredentials {
			return ErrTooManyCredentials
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO webauthn_credentials (id, user_id, credential_id, public_key, attestation_type, attestation_format,
			aaguid, transports, attachment, sign_count, flags, name, created_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 0)`,
			row.ID, userID, row.CredentialID, row.publicKey, row.attType, row.attFormat, row.AAGUID, strings.Join(row.Transports, ","),
			row.attachment, int64(row.SignCount), row.flags, row.Name, now)
		if store.IsUniqueViolation(err) {
			return ErrCredentialExists
		}
		if err != nil {
			return fmt.Errorf("store webauthn credential: %w", err)
		}
		return core.Audit(ctx, tx, a, "webauthn.register", "user", userID, map[string]any{"credential": row.ID, "name": row.Name,
			"aaguid": row.AAGUID, "user_verified": cred.Flags.UserVerified, "backup_eligible": cred.Flags.BackupEligible})
	})
	if err != nil {
		return Credential{}, err
	}
	return row.Credential, nil
}

func (s *Service) failRegistration(ctx context.Context, a core.Actor, userID string, cause error) error {
	reason := describe(cause)
	s.log.Info("webauthn registration refused", "user_id", userID, "reason", reason, "err", cause)
	if err := core.Audit(ctx, s.db, a, "webauthn.register_failed", "user", userID, map[string]any{"reason": reason}); err != nil {
		return err
	}
	return verificationError(cause)
}

// BeginLogin opens a login ceremony for a session waiting for its second
// factor (sessionID), offering the user's keys.
func (s *Service) BeginLogin(ctx context.Context, userID, sessionID string) (LoginStart, error) {
	if userID == "" || sessionID == "" {
		return LoginStart{}, core.ErrUnauthenticated
	}
	u, _, err := s.loadUser(ctx, userID)
	if err != nil {
		return LoginStart{}, err
	}
	if len(u.creds) == 0 {
		return LoginStart{}, ErrNoCredentials
	}
	assertion, data, err := s.wa.BeginLogin(u)
	if err != nil {
		return LoginStart{}, fmt.Errorf("begin webauthn login: %w", err)
	}
	id, expires, err := s.saveCeremony(ctx, kindLogin, userID, sessionID, data)
	if err != nil {
		return LoginStart{}, err
	}
	return LoginStart{CeremonyID: id, ExpiresAt: expires, Options: assertion}, nil
}

// FinishLogin verifies the browser's answer (the JSON of the
// PublicKeyCredential navigator.credentials.get returned) for the login
// ceremony of sessionID. On success the caller completes the login (see
// identity.CompleteSecondFactor with Method). a is who answers (user and
// IP, for the audit log); every success and failure is audited.
func (s *Service) FinishLogin(ctx context.Context, a core.Actor, userID, sessionID, ceremonyID string, response []byte) (Credential, error) {
	if userID == "" || sessionID == "" {
		return Credential{}, core.ErrUnauthenticated
	}
	if len(response) == 0 || len(response) > maxResponseBytes {
		return Credential{}, core.Invalid("invalid_value", "credential", "credential must be the answer of the browser (at most %d bytes)", maxResponseBytes)
	}
	data, err := s.takeCeremony(ctx, ceremonyID, kindLogin, userID, sessionID)
	if err != nil {
		if errors.Is(err, ErrCeremonyExpired) {
			return Credential{}, s.failLogin(ctx, a, userID, "", "ceremony_expired", err)
		}
		return Credential{}, err
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(response)
	if err != nil {
		return Credential{}, s.failLogin(ctx, a, userID, "", describe(err), verificationError(err))
	}
	u, rows, err := s.loadUser(ctx, userID)
	if err != nil {
		return Credential{}, err
	}
	cred, err := s.wa.ValidateLogin(u, data, parsed)
	if err != nil {
		return Credential{}, s.failLogin(ctx, a, userID, "", describe(err), verificationError(err))
	}
	var row credRow
	for _, r := range rows {
		if id, _ := base64.RawURLEncoding.DecodeString(r.CredentialID); string(id) == string(cred.ID) {
			row = r
		}
	}
	if row.ID == "" {
		return Credential{}, s.failLogin(ctx, a, userID, "", "unknown_credential", ErrVerification)
	}
	if cred.Authenticator.CloneWarning {
		return Credential{}, s.failLogin(ctx, a, userID, row.ID, "sign_count_regression", ErrSignCount)
	}
	now := s.now().UnixMilli()
	newCount := int64(cred.Authenticator.SignCount)
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		// The counter moves forward here or not at all: of two answers with
		// the same count (a clone, a replay) only one gets through.
		res, err := tx.ExecContext(ctx, `UPDATE webauthn_credentials SET sign_count = $1, flags = $2, last_used_at = $3
			WHERE id = $4 AND user_id = $5 AND (sign_count < $1 OR (sign_count = 0 AND $1 = 0))`,
			newCount, int(cred.Flags.ProtocolValue()), now, row.ID, userID)
		if err != nil {
			return fmt.Errorf("record webauthn sign count: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrSignCount
		}
		return core.Audit(ctx, tx, a, "webauthn.login", "user", userID, map[string]any{"credential": row.ID, "name": row.Name,
			"user_verified": cred.Flags.UserVerified, "sign_count": newCount})
	})
	if errors.Is(err, ErrSignCount) {
		return Credential{}, s.failLogin(ctx, a, userID, row.ID, "sign_count_regression", ErrSignCount)
	}
	if err != nil {
		return Credential{}, err
	}
	row.SignCount, row.LastUsedAt = uint32(newCount), now
	row.BackupEligible = cred.Flags.BackupEligible
	return row.Credential, nil
}

func (s *Service) failLogin(ctx context.Context, a core.Actor, userID, credID, reason string, ret error) error {
	if a.Username == "" && a.UserID != "" {
		_ = s.db.QueryRowContext(ctx, `SELECT username FROM users WHERE id = $1`, a.UserID).Scan(&a.Username)
	}
	details := map[string]any{"reason": reason}
	if credID != "" {
		details["credential"] = credID
	}
	s.log.Info("webauthn login refused", "user_id", userID, "reason", reason)
	if err := core.Audit(ctx, s.db, a, "webauthn.login_failed", "user", userID, details); err != nil {
		return err
	}
	return ret
}

// describe names why go-webauthn refused an answer, for the log and the
// audit entry (never secret: these are the library's fixed messages).
func describe(err error) string {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		parts := []string{}
		for _, p := range []string{pe.Type, pe.Details, pe.DevInfo} {
			if p != "" {
				parts = append(parts, p)
			}
		}
		msg := strings.Join(parts, ": ")
		if len(msg) > 300 {
			msg = msg[:300]
		}
		return msg
	}
	return err.Error()
}

// verificationError is what the caller sees of a refused answer: the fixed
// message plus the library's short reason.
func verificationError(cause error) error {
	var pe *protocol.Error
	if errors.As(cause, &pe) && pe.Details != "" && len(pe.Details) < 200 {
		return &core.Error{Kind: ErrVerification.Kind, Code: ErrVerification.Code, Field: ErrVerification.Field,
			Message: ErrVerification.Message + " (" + strings.TrimSuffix(pe.Details, ".") + ")"}
	}
	return ErrVerification
}

func aaguidString(b []byte) string {
	g, err := uuid.FromBytes(b)
	if err != nil {
		return uuid.Nil.String()
	}
	return g.String()
}

var transportNames = []string{"usb", "nfc", "ble", "smart-card", "hybrid", "internal"}

// knownTransports keeps the transports WebAuthn defines, once each.
func knownTransports(ts []protocol.AuthenticatorTransport) []string {
	out := []string{}
	for _, t := range ts {
		if name := string(t); slices.Contains(transportNames, name) && !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}
