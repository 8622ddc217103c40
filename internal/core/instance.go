package core

import (
	"context"
	"database/sql"
	"encoding/base64"
	"fmt"

	"github.com/wardvpn/ward/internal/store"
)

// Instance holds the secrets every replica must share. They live in the
// database so that a second core replica started on the same database
// accepts the sessions and tokens the first one issued.
type Instance struct {
	ID string
	// TokenKey keys the HMAC under which session and API tokens are stored,
	// so a read-only leak of the database does not yield usable hashes.
	TokenKey []byte
	// Created is true when this call initialised a new instance.
	Created bool
}

// EnsureInstance loads the instance secrets, creating them on first start.
// Concurrent first starts of several replicas agree on one set.
func EnsureInstance(ctx context.Context, db *store.DB) (Instance, error) {
	var inst Instance
	err := db.Tx(ctx, func(tx *sql.Tx) error {
		now := store.Now()
		for key, value := range map[string]string{
			"instance_id": NewID(),
			"token_key":   RandomToken(32),
		} {
			res, err := tx.ExecContext(ctx, `INSERT INTO instance (key, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING`, key, value, now)
			if err != nil {
				return fmt.Errorf("create instance secret: %w", err)
			}
			if n, _ := res.RowsAffected(); n > 0 && key == "instance_id" {
				inst.Created = true
			}
		}
		rows, err := tx.QueryContext(ctx, `SELECT key, value FROM instance`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var k, v string
			if err := rows.Scan(&k, &v); err != nil {
				return err
			}
			switch k {
			case "instance_id":
				inst.ID = v
			case "token_key":
				inst.TokenKey, err = base64.RawURLEncoding.DecodeString(v)
				if err != nil {
					return fmt.Errorf("decode token key: %w", err)
				}
			}
		}
		return rows.Err()
	})
	return inst, err
}
