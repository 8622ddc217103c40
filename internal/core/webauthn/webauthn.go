// Package webauthn manages WebAuthn security keys and passkeys, a second
// factor at login, with github.com/go-webauthn/webauthn.
//
// All state is in the database so that any core replica can finish what
// another began:
//   - a ceremony (registration or login) is a row holding go-webauthn's
//     session data, with an expiry; finishing consumes it with a DELETE, so
//     each challenge is answered at most once;
//   - a login ceremony is bound to the session waiting for its second
//     factor, so no other session can finish it;
//   - the signature counter of a credential only moves forward, by an
//     UPDATE that requires the new count to be higher: a regression (a
//     cloned key, or a replay racing the original) is refused everywhere.
//
// The transports (internal/web, internal/api) read the browser's JSON and
// pass it here as bytes; this package never sees an HTTP request.
package webauthn

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-webauthn/webauthn/protocol"
	gowebauthn "github.com/go-webauthn/webauthn/webauthn"
	"github.com/google/uuid"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/store"
)

// Method is the name of this second factor in login answers, audit entries
// and identity.CompleteSecondFactor.
const Method = "webauthn"

const (
	// DefaultCeremonyTTL is how long a begun ceremony can be finished.
	DefaultCeremonyTTL = 5 * time.Minute
	// MaxCredentials bounds the keys of one user.
	MaxCredentials = 20
	// MaxNameLength bounds a key's name, in characters.
	MaxNameLength = 64
	// DefaultName names a key registered without a name.
	DefaultName = "Security key"
	// maxResponseBytes bounds the browser's answer to a ceremony.
	maxResponseBytes = 64 << 10
	// keptCeremonies is how many open ceremonies of one kind a user (or a
	// waiting session) may have; older ones are dropped.
	keptCeremonies = 4
)

const (
	kindRegister = "register"
	kindLogin    = "login"
)

// Errors callers can test with errors.Is.
var (
	ErrCeremonyExpired = &core.Error{Kind: core.KindConflict, Code: "ceremony_expired", Field: "ceremony_id",
		Message: "the security key request expired or was used already; start again"}
	ErrVerification = &core.Error{Kind: core.KindInvalid, Code: "webauthn_failed", Field: "credential",
		Message: "the security key's answer could not be verified"}
	ErrSignCount = &core.Error{Kind: core.KindInvalid, Code: "sign_count_regression", Field: "credential",
		Message: "this security key's signature counter went backwards, so it may have been cloned; use another key or ask an administrator"}
	ErrNoCredentials = &core.Error{Kind: core.KindConflict, Code: "no_webauthn_credentials",
		Message: "no security key or passkey is registered for this account"}
	ErrTooManyCredentials = &core.Error{Kind: core.KindConflict, Code: "too_many_credentials",
		Message: fmt.Sprintf("an account can have at most %d security keys; delete one first", MaxCredentials)}
	ErrCredentialExists = &core.Error{Kind: core.KindConflict, Code: "credential_exists", Field: "credential",
		Message: "this security key is registered already"}
)

// Config configures the relying party.
type Config struct {
	// PublicURL is where users reach core (scheme://host[:port]): its host
	// is the relying party ID and its origin the one origin accepted.
	PublicURL string
	// RPName is shown by browsers when no instance name is set ("ward").
	RPName string
	// CeremonyTTL is how long a ceremony stays open (DefaultCeremonyTTL).
	CeremonyTTL time.Duration
	Log         *slog.Logger
}

// Service is the WebAuthn domain service.
type Service struct {
	db     *store.DB
	wa     *gowebauthn.WebAuthn
	rpID   string
	origin string
	rpName string
	ttl    time.Duration
	log    *slog.Logger
	now    func() time.Time
}

// New builds the service. It fails when the public URL cannot be a
// WebAuthn relying party (an IP address, for one: browsers refuse those).
func New(db *store.DB, cfg Config) (*Service, error) {
	u, err := url.Parse(cfg.PublicURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return nil, fmt.Errorf("webauthn: public URL %q is not an http(s) URL", cfg.PublicURL)
	}
	rpID := strings.ToLower(u.Hostname())
	if err := protocol.ValidateRPID(rpID); err != nil {
		return nil, fmt.Errorf("webauthn: the host of the public URL %q cannot be a relying party ID: %v", cfg.PublicURL, err)
	}
	if u.Scheme == "http" && rpID != "localhost" && !strings.HasSuffix(rpID, ".localhost") {
		return nil, fmt.Errorf("webauthn: browsers allow security keys only on https:// sites (or http://localhost); the public URL is %q", cfg.PublicURL)
	}
	origin := u.Scheme + "://" + strings.ToLower(u.Host)
	if cfg.RPName == "" {
		cfg.RPName = "ward"
	}
	if cfg.CeremonyTTL <= 0 {
		cfg.CeremonyTTL = DefaultCeremonyTTL
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	wa, err := gowebauthn.New(&gowebauthn.Config{
		RPID:          rpID,
		RPDisplayName: cfg.RPName,
		RPOrigins:     []string{origin},
		// No attestation: ward does not restrict authenticator models, and
		// "none" spares users the browser's privacy prompt.
		AttestationPreference: protocol.PreferNoAttestation,
		AuthenticatorSelection: protocol.AuthenticatorSelection{
			// Passkeys (discoverable credentials) are welcome, not required.
			ResidentKey:        protocol.ResidentKeyRequirementPreferred,
			RequireResidentKey: new(false),
			UserVerification:   protocol.VerificationPreferred,
		},
		// ward requests no extension; outputs some clients add unasked
		// (credProps, say) are ignored rather than failing the ceremony.
		ExtensionsUnsolicitedOutputPolicy: protocol.UnsolicitedOutputPolicyIgnore,
		Timeouts: gowebauthn.TimeoutsConfig{
			Login:        gowebauthn.TimeoutConfig{Timeout: cfg.CeremonyTTL, TimeoutUVD: cfg.CeremonyTTL},
			Registration: gowebauthn.TimeoutConfig{Timeout: cfg.CeremonyTTL, TimeoutUVD: cfg.CeremonyTTL},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("webauthn: %w", err)
	}
	return &Service{db: db, wa: wa, rpID: rpID, origin: origin, rpName: cfg.RPName, ttl: cfg.CeremonyTTL,
		log: cfg.Log.With("component", "webauthn"), now: time.Now}, nil
}

// SetClock replaces the clock, for tests.
func (s *Service) SetClock(now func() time.Time) { s.now = now }

// RPID is the relying party ID (the public URL's host).
func (s *Service) RPID() string { return s.rpID }

// Origin is the one origin accepted in ceremonies.
func (s *Service) Origin() string { return s.origin }

// Credential is a registered security key or passkey (without its key
// material).
type Credential struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// CredentialID is the authenticator's credential id, base64url.
	CredentialID string `json:"credential_id"`
	// AAGUID names the authenticator model (all zeros when it does not
	// tell).
	AAGUID string `json:"aaguid"`
	// Transports are how the browser reaches the key (usb, nfc, ble,
	// hybrid, internal, smart-card).
	Transports []string `json:"transports"`
	// BackupEligible: a passkey that its provider may sync between devices.
	BackupEligible bool   `json:"backup_eligible"`
	SignCount      uint32 `json:"sign_count"`
	CreatedAt      int64  `json:"created_at"`
	LastUsedAt     int64  `json:"last_used_at"`
}

// RegistrationStart opens a registration: Options go to the browser's
// navigator.credentials.create (binary fields are base64url), and its
// answer comes back to FinishRegistration with CeremonyID.
type RegistrationStart struct {
	CeremonyID string                       `json:"ceremony_id"`
	ExpiresAt  int64                        `json:"expires_at"`
	Options    *protocol.CredentialCreation `json:"options"`
}

// LoginStart opens a login: Options go to navigator.credentials.get, and
// its answer comes back to FinishLogin with CeremonyID.
type LoginStart struct {
	CeremonyID string                        `json:"ceremony_id"`
	ExpiresAt  int64                         `json:"expires_at"`
	Options    *protocol.CredentialAssertion `json:"options"`
}

func requireSelf(a core.Actor, userID, what string) error {
	if a.UserID == "" || a.UserID != userID {
		return core.Forbidden("only the user themself can %s", what)
	}
	return nil
}

func requireSelfOrAdmin(a core.Actor, userID, what string) error {
	if a.IsAdmin || (a.UserID != "" && a.UserID == userID) {
		return nil
	}
	return core.Forbidden("only the user themself or an administrator can %s", what)
}

// NormalizeName trims a key's name and checks it; empty becomes
// DefaultName.
func NormalizeName(name string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return DefaultName, nil
	}
	if !utf8.ValidString(name) || utf8.RuneCountInString(name) > MaxNameLength {
		return "", core.Invalid("invalid_value", "name", "the name must have at most %d characters", MaxNameLength)
	}
	if strings.ContainsFunc(name, unicode.IsControl) {
		return "", core.Invalid("invalid_value", "name", "the name must not contain control characters")
	}
	return name, nil
}

// user adapts an account to go-webauthn. Its handle is the user id (a
// random UUID; no personal data).
type user struct {
	id, name, display string
	creds             []gowebauthn.Credential
}

func (u *user) WebAuthnID() []byte                           { return []byte(u.id) }
func (u *user) WebAuthnName() string                         { return u.name }
func (u *user) WebAuthnDisplayName() string                  { return u.display }
func (u *user) WebAuthnCredentials() []gowebauthn.Credential { return u.creds }

// credRow is a credential as stored.
type credRow struct {
	Credential
	publicKey, attType, attFormat, attachment string
	flags                                     int
}

const credColumns = `id, name, credential_id, aaguid, transports, sign_count, created_at, last_used_at, public_key, attestation_type, attestation_format, attachment, flags`

func scanCred(sc interface{ Scan(...any) error }) (credRow, error) {
	var r credRow
	var transports string
	var signCount int64
	err := sc.Scan(&r.ID, &r.Name, &r.CredentialID, &r.AAGUID, &transports, &signCount, &r.CreatedAt, &r.LastUsedAt,
		&r.publicKey, &r.attType, &r.attFormat, &r.attachment, &r.flags)
	if err != nil {
		return r, err
	}
	r.SignCount = uint32(signCount)
	r.Transports = []string{}
	if transports != "" {
		r.Transports = strings.Split(transports, ",")
	}
	r.BackupEligible = protocol.AuthenticatorFlags(r.flags).HasBackupEligible()
	return r, nil
}

// toLibrary rebuilds go-webauthn's view of a stored credential.
func (r credRow) toLibrary() (gowebauthn.Credential, error) {
	id, err := base64.RawURLEncoding.DecodeString(r.CredentialID)
	if err != nil {
		return gowebauthn.Credential{}, fmt.Errorf("stored credential id %s: %w", r.ID, err)
	}
	pk, err := base64.RawURLEncoding.DecodeString(r.publicKey)
	if err != nil {
		return gowebauthn.Credential{}, fmt.Errorf("stored public key %s: %w", r.ID, err)
	}
	var aaguid []byte
	if g, err := uuid.Parse(r.AAGUID); err == nil {
		aaguid = g[:]
	}
	c := gowebauthn.Credential{ID: id, PublicKey: pk, AttestationType: r.attType, AttestationFormat: r.attFormat,
		Flags:         gowebauthn.NewCredentialFlags(protocol.AuthenticatorFlags(r.flags)),
		Authenticator: gowebauthn.Authenticator{AAGUID: aaguid, SignCount: r.SignCount, Attachment: protocol.AuthenticatorAttachment(r.attachment)}}
	for _, t := range r.Transports {
		c.Transport = append(c.Transport, protocol.AuthenticatorTransport(t))
	}
	return c, nil
}

func (s *Service) credentials(ctx context.Context, q store.Querier, userID string) ([]credRow, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+credColumns+` FROM webauthn_credentials WHERE user_id = $1 ORDER BY created_at, id LIMIT $2`,
		userID, MaxCredentials+1)
	if err != nil {
		return nil, fmt.Errorf("list webauthn credentials: %w", err)
	}
	defer rows.Close()
	var out []credRow
	for rows.Next() {
		r, err := scanCred(rows)
		if err != nil {
			return nil, fmt.Errorf("read webauthn credential: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// loadUser reads the account and its credentials for a ceremony.
func (s *Service) loadUser(ctx context.Context, userID string) (*user, []credRow, error) {
	var username, first, last string
	var active bool
	err := s.db.QueryRowContext(ctx, `SELECT username, first_name, last_name, active FROM users WHERE id = $1`, userID).
		Scan(&username, &first, &last, &active)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, core.NotFound("user")
	}
	if err != nil {
		return nil, nil, fmt.Errorf("load user: %w", err)
	}
	if !active {
		return nil, nil, core.Forbidden("this account is disabled")
	}
	rows, err := s.credentials(ctx, s.db, userID)
	if err != nil {
		return nil, nil, err
	}
	u := &user{id: userID, name: username, display: strings.TrimSpace(first + " " + last)}
	if u.display == "" {
		u.display = username
	}
	for _, r := range rows {
		c, err := r.toLibrary()
		if err != nil {
			return nil, nil, err
		}
		u.creds = append(u.creds, c)
	}
	return u, rows, nil
}

// List returns a user's keys, oldest first (at most MaxCredentials).
func (s *Service) List(ctx context.Context, a core.Actor, userID string) ([]Credential, error) {
	if err := requireSelfOrAdmin(a, userID, "list security keys"); err != nil {
		return nil, err
	}
	rows, err := s.credentials(ctx, s.db, userID)
	if err != nil {
		return nil, err
	}
	out := make([]Credential, 0, len(rows))
	for _, r := range rows {
		out = append(out, r.Credential)
	}
	return out, nil
}

// Get returns one of a user's keys.
func (s *Service) Get(ctx context.Context, a core.Actor, userID, id string) (Credential, error) {
	if err := requireSelfOrAdmin(a, userID, "see security keys"); err != nil {
		return Credential{}, err
	}
	r, err := scanCred(s.db.QueryRowContext(ctx, `SELECT `+credColumns+` FROM webauthn_credentials WHERE id = $1 AND user_id = $2`, id, userID))
	if errors.Is(err, sql.ErrNoRows) {
		return Credential{}, core.NotFound("security key")
	}
	if err != nil {
		return Credential{}, fmt.Errorf("get webauthn credential: %w", err)
	}
	return r.Credential, nil
}

// HasCredentials tells whether the user has at least one key.
func (s *Service) HasCredentials(ctx context.Context, userID string) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM webauthn_credentials WHERE user_id = $1`, userID).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("count webauthn credentials: %w", err)
	}
	return n > 0, nil
}

// SecondFactors names this factor when the user has a key (see
// mfa.Service.AddSecondFactors and identity.SetSecondFactor).
func (s *Service) SecondFactors(ctx context.Context, userID string) ([]string, error) {
	has, err := s.HasCredentials(ctx, userID)
	if err != nil || !has {
		return nil, err
	}
	return []string{Method}, nil
}

// Rename changes a key's name; only its owner can.
func (s *Service) Rename(ctx context.Context, a core.Actor, userID, id, name string) (Credential, error) {
	if err := requireSelf(a, userID, "rename a security key"); err != nil {
		return Credential{}, err
	}
	name, err := NormalizeName(name)
	if err != nil {
		return Credential{}, err
	}
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		var old string
		err := tx.QueryRowContext(ctx, `SELECT name FROM webauthn_credentials WHERE id = $1 AND user_id = $2`, id, userID).Scan(&old)
		if errors.Is(err, sql.ErrNoRows) {
			return core.NotFound("security key")
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE webauthn_credentials SET name = $1 WHERE id = $2`, name, id); err != nil {
			return fmt.Errorf("rename webauthn credential: %w", err)
		}
		return core.Audit(ctx, tx, a, "webauthn.rename", "user", userID, map[string]any{"credential": id, "name": name, "old_name": old})
	})
	if err != nil {
		return Credential{}, err
	}
	return s.Get(ctx, a, userID, id)
}

// Delete removes a key: its owner can, and an administrator (for a user
// who lost it).
func (s *Service) Delete(ctx context.Context, a core.Actor, userID, id string) error {
	if err := requireSelfOrAdmin(a, userID, "delete a security key"); err != nil {
		return err
	}
	return s.db.Tx(ctx, func(tx *sql.Tx) error {
		var name string
		err := tx.QueryRowContext(ctx, `DELETE FROM webauthn_credentials WHERE id = $1 AND user_id = $2 RETURNING name`, id, userID).Scan(&name)
		if errors.Is(err, sql.ErrNoRows) {
			return core.NotFound("security key")
		}
		if err != nil {
			return fmt.Errorf("delete webauthn credential: %w", err)
		}
		return core.Audit(ctx, tx, a, "webauthn.delete", "user", userID, map[string]any{"credential": id, "name": name})
	})
}

// Reset removes all of a user's keys; administrators only, for a user who
// lost them. It reports how many were removed.
func (s *Service) Reset(ctx context.Context, a core.Actor, userID string) (int, error) {
	if !a.IsAdmin {
		return 0, core.Forbidden("only admins can reset another user's security keys")
	}
	var n int64
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM webauthn_credentials WHERE user_id = $1`, userID)
		if err != nil {
			return fmt.Errorf("reset webauthn credentials: %w", err)
		}
		if n, err = res.RowsAffected(); err != nil || n == 0 {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM webauthn_ceremonies WHERE user_id = $1`, userID); err != nil {
			return err
		}
		return core.Audit(ctx, tx, a, "webauthn.reset", "user", userID, map[string]any{"removed": n})
	})
	return int(n), err
}
