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

// APIToken describes a bearer token; the secret itself is shown only once.
type APIToken struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	Prefix     string `json:"prefix"`
	CreatedAt  int64  `json:"created_at"`
	ExpiresAt  int64  `json:"expires_at"`
	LastUsedAt int64  `json:"last_used_at"`
	// Token is set only in the response that creates it.
	Token string `json:"token,omitempty"`
}

// NewAPIToken is the input for creating a token.
type NewAPIToken struct {
	Name          string `json:"name"`
	ExpiresInDays int    `json:"expires_in_days"`
}

const tokenPrefix = "ward_"

// CreateAPIToken issues a bearer token for the acting user. Only its HMAC is
// stored; the token is returned once.
func (s *Service) CreateAPIToken(ctx context.Context, a core.Actor, in NewAPIToken) (APIToken, error) {
	if a.UserID == "" {
		return APIToken{}, core.ErrUnauthenticated
	}
	in.Name = strings.TrimSpace(in.Name)
	if in.Name == "" || len(in.Name) > 64 {
		return APIToken{}, core.Invalid("invalid_name", "name", "token name must be 1 to 64 characters")
	}
	if in.ExpiresInDays < 0 || in.ExpiresInDays > 3650 {
		return APIToken{}, core.Invalid("invalid_value", "expires_in_days", "must be between 0 (never) and 3650")
	}
	secret := tokenPrefix + core.RandomToken(32)
	t := APIToken{ID: core.NewID(), Name: in.Name, Prefix: secret[:12], CreatedAt: store.Now(), Token: secret}
	if in.ExpiresInDays > 0 {
		t.ExpiresAt = time.Now().Add(time.Duration(in.ExpiresInDays) * 24 * time.Hour).UnixMilli()
	}
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO api_tokens (id, user_id, name, token_hash, prefix, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			t.ID, a.UserID, t.Name, s.hashToken(secret), t.Prefix, t.CreatedAt, t.ExpiresAt)
		if store.UniqueViolationOn(err, "name") {
			return core.Conflict("duplicate_name", "name", "you already have a token with this name")
		}
		if err != nil {
			return fmt.Errorf("create token: %w", err)
		}
		return core.Audit(ctx, tx, a, "token.create", "api_token", t.ID, map[string]any{"name": t.Name, "prefix": t.Prefix})
	})
	if err != nil {
		return APIToken{}, err
	}
	return t, nil
}

// ListAPITokens lists the acting user's tokens.
func (s *Service) ListAPITokens(ctx context.Context, a core.Actor) ([]APIToken, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, name, prefix, created_at, expires_at, last_used_at FROM api_tokens WHERE user_id = $1 ORDER BY id`, a.UserID)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	out := []APIToken{}
	for rows.Next() {
		var t APIToken
		if err := rows.Scan(&t.ID, &t.Name, &t.Prefix, &t.CreatedAt, &t.ExpiresAt, &t.LastUsedAt); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// RevokeAPIToken deletes one of the acting user's tokens.
func (s *Service) RevokeAPIToken(ctx context.Context, a core.Actor, id string) error {
	return s.db.Tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM api_tokens WHERE id = $1 AND user_id = $2`, id, a.UserID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return core.NotFound("token")
		}
		return core.Audit(ctx, tx, a, "token.revoke", "api_token", id, nil)
	})
}

// AuthenticateToken resolves a bearer token.
func (s *Service) AuthenticateToken(ctx context.Context, token string) (Principal, error) {
	if !strings.HasPrefix(token, tokenPrefix) || len(token) > 128 {
		return Principal{}, core.ErrUnauthenticated
	}
	var p Principal
	var expires, lastUsed int64
	now := store.Now()
	err := s.db.QueryRowContext(ctx, `SELECT t.id, t.expires_at, t.last_used_at, u.id, u.username FROM api_tokens t JOIN users u ON u.id = t.user_id
		WHERE t.token_hash = $1 AND u.active = TRUE`, s.hashToken(token)).Scan(&p.TokenID, &expires, &lastUsed, &p.UserID, &p.Username)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && expires != 0 && expires <= now) {
		return Principal{}, core.ErrUnauthenticated
	}
	if err != nil {
		return Principal{}, fmt.Errorf("authenticate token: %w", err)
	}
	if now-lastUsed > 60_000 {
		_, _ = s.db.ExecContext(ctx, `UPDATE api_tokens SET last_used_at = $1 WHERE id = $2`, now, p.TokenID)
	}
	p.IsAdmin, err = s.isAdmin(ctx, p.UserID)
	return p, err
}
