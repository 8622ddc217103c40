package identity

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/store"
)

// BootstrapResult tells what EnsureAdmin did.
type BootstrapResult struct {
	Created  bool
	Password string // the generated password, set only when one was generated
}

// EnsureAdmin creates group "admin" and user "admin" when the instance has no
// users yet. The password is the given one, or a generated one returned to the
// caller to show once. Several replicas starting together create it once.
func (s *Service) EnsureAdmin(ctx context.Context, password string) (BootstrapResult, error) {
	var res BootstrapResult
	var existing int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM users`).Scan(&existing); err != nil {
		return res, fmt.Errorf("count users: %w", err)
	}
	if existing > 0 {
		return res, nil // the common case: skip hashing a password nobody needs
	}
	generated := false
	if password == "" {
		password = core.RandomToken(18)
		generated = true
	}
	hash := HashPassword(s.params, password)
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM users`).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		now := store.Now()
		actor := core.SystemActor("ward bootstrap")
		gid, uid := core.NewID(), core.NewID()
		if _, err := tx.ExecContext(ctx, `INSERT INTO groups (id, name, is_admin, description, created_at, updated_at) VALUES ($1, 'admin', TRUE, 'Administrators', $2, $2)
			ON CONFLICT (name) DO NOTHING`, gid, now); err != nil {
			return fmt.Errorf("create admin group: %w", err)
		}
		if err := tx.QueryRowContext(ctx, `SELECT id FROM groups WHERE name = 'admin'`).Scan(&gid); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO users (id, username, email, first_name, last_name, active, password_hash, created_at, updated_at)
			VALUES ($1, 'admin', 'admin@localhost', 'Admin', '', TRUE, $2, $3, $3)`, uid, hash, now); err != nil {
			return fmt.Errorf("create admin user: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO group_members (group_id, user_id) VALUES ($1, $2)`, gid, uid); err != nil {
			return err
		}
		if err := core.SaveSettings(ctx, tx, core.DefaultSettings()); err != nil {
			return err
		}
		res.Created = true
		return core.Audit(ctx, tx, actor, "user.create", "user", uid, map[string]any{"username": "admin", "groups": []string{"admin"}, "bootstrap": true})
	})
	if store.UniqueViolationOn(err, "username") {
		return BootstrapResult{}, nil // another replica starting at the same time created it
	}
	if err != nil {
		return BootstrapResult{}, err
	}
	if res.Created && generated {
		res.Password = password
	}
	return res, nil
}
