// Package identity manages users, groups, passwords, sessions, API tokens and
// login lockout. All state lives in the database so any core replica can
// serve any request.
package identity

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"log/slog"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/store"
)

// AccessSyncer is told, inside the same transaction, when a user's VPN access
// may have changed (groups, active flag, deletion), so device addresses and
// location revisions move together with the identity change.
type AccessSyncer interface {
	SyncUserAccess(ctx context.Context, tx *sql.Tx, userID string, forceBump bool) error
}

// Service is the identity domain service.
type Service struct {
	db       *store.DB
	params   PasswordParams
	tokenKey []byte
	access   AccessSyncer
	log      *slog.Logger
	// dummy is verified against when a login names no password, so that
	// unknown users cost the same time as known ones.
	dummy string
	// secondFactor tells which second factors a user must present at login
	// (nil: none; see SetSecondFactor).
	secondFactor SecondFactorLister
}

// SecondFactorLister names the second factors a user has enrolled, e.g.
// ["totp", "recovery"] or ["webauthn"]; empty means password only.
type SecondFactorLister interface {
	SecondFactors(ctx context.Context, userID string) ([]string, error)
}

// SetSecondFactor makes Login ask users with a second factor for it.
func (s *Service) SetSecondFactor(l SecondFactorLister) { s.secondFactor = l }

// New builds the service. access may be nil in tests of identity alone.
func New(db *store.DB, inst core.Instance, params PasswordParams, access AccessSyncer, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{db: db, params: params, tokenKey: inst.TokenKey, access: access, log: log,
		dummy: HashPassword(params, "ward-timing-equaliser")}
}

// hashToken is how session ids and API tokens are stored.
func (s *Service) hashToken(token string) string {
	m := hmac.New(sha256.New, s.tokenKey)
	m.Write([]byte(token))
	return hex.EncodeToString(m.Sum(nil))
}

func (s *Service) syncUser(ctx context.Context, tx *sql.Tx, userID string, force bool) error {
	if s.access == nil {
		return nil
	}
	return s.access.SyncUserAccess(ctx, tx, userID, force)
}

// ListParams bounds a list query.
type ListParams struct {
	Search string
	Limit  int
	Offset int
}
