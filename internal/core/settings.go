package core

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/wardvpn/ward/internal/store"
)

// Settings are instance-wide options kept in the database, so every core
// replica sees the same values.
type Settings struct {
	InstanceName           string `json:"instance_name"`
	UsersCanManageDevices  bool   `json:"users_can_manage_devices"`
	LockoutThreshold       int    `json:"lockout_threshold"`
	LockoutWindowSeconds   int    `json:"lockout_window_seconds"`
	LockoutDurationSeconds int    `json:"lockout_duration_seconds"`
	SessionLifetimeSeconds int    `json:"session_lifetime_seconds"`
	MinPasswordLength      int    `json:"min_password_length"`
}

// DefaultSettings are what a new instance starts with.
func DefaultSettings() Settings {
	return Settings{
		InstanceName:           "ward",
		UsersCanManageDevices:  true,
		LockoutThreshold:       5,
		LockoutWindowSeconds:   15 * 60,
		LockoutDurationSeconds: 15 * 60,
		SessionLifetimeSeconds: 12 * 3600,
		MinPasswordLength:      12,
	}
}

// SettingsPatch changes the fields that are set.
type SettingsPatch struct {
	InstanceName           *string `json:"instance_name"`
	UsersCanManageDevices  *bool   `json:"users_can_manage_devices"`
	LockoutThreshold       *int    `json:"lockout_threshold"`
	LockoutWindowSeconds   *int    `json:"lockout_window_seconds"`
	LockoutDurationSeconds *int    `json:"lockout_duration_seconds"`
	SessionLifetimeSeconds *int    `json:"session_lifetime_seconds"`
	MinPasswordLength      *int    `json:"min_password_length"`
}

func (s Settings) validate() error {
	type rng struct {
		field     string
		v, lo, hi int
	}
	for _, r := range []rng{
		{"lockout_threshold", s.LockoutThreshold, 1, 1000},
		{"lockout_window_seconds", s.LockoutWindowSeconds, 10, 86400 * 7},
		{"lockout_duration_seconds", s.LockoutDurationSeconds, 1, 86400 * 7},
		{"session_lifetime_seconds", s.SessionLifetimeSeconds, 300, 86400 * 90},
		{"min_password_length", s.MinPasswordLength, 8, 128},
	} {
		if r.v < r.lo || r.v > r.hi {
			return Invalid("invalid_value", r.field, "must be between %d and %d", r.lo, r.hi)
		}
	}
	if s.InstanceName == "" || len(s.InstanceName) > 64 {
		return Invalid("invalid_value", "instance_name", "must be 1 to 64 characters")
	}
	return nil
}

// LoadSettings reads the settings, falling back to defaults for fields a
// newer version added.
func LoadSettings(ctx context.Context, q store.Querier) (Settings, error) {
	s := DefaultSettings()
	var raw string
	err := q.QueryRowContext(ctx, `SELECT data FROM settings WHERE id = 1`).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("load settings: %w", err)
	}
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return s, fmt.Errorf("decode settings: %w", err)
	}
	return s, nil
}

// UpdateSettings applies a patch; only admins may call it.
func UpdateSettings(ctx context.Context, db *store.DB, a Actor, p SettingsPatch) (Settings, error) {
	if !a.IsAdmin {
		return Settings{}, Forbidden("only admins can change settings")
	}
	var out Settings
	err := db.Tx(ctx, func(tx *sql.Tx) error {
		s, err := LoadSettings(ctx, tx)
		if err != nil {
			return err
		}
		changed := map[string]any{}
		setStr := func(dst *string, v *string, name string) {
			if v != nil && *v != *dst {
				*dst = *v
				changed[name] = *v
			}
		}
		setInt := func(dst *int, v *int, name string) {
			if v != nil && *v != *dst {
				*dst = *v
				changed[name] = *v
			}
		}
		setStr(&s.InstanceName, p.InstanceName, "instance_name")
		if p.UsersCanManageDevices != nil && *p.UsersCanManageDevices != s.UsersCanManageDevices {
			s.UsersCanManageDevices = *p.UsersCanManageDevices
			changed["users_can_manage_devices"] = s.UsersCanManageDevices
		}
		setInt(&s.LockoutThreshold, p.LockoutThreshold, "lockout_threshold")
		setInt(&s.LockoutWindowSeconds, p.LockoutWindowSeconds, "lockout_window_seconds")
		setInt(&s.LockoutDurationSeconds, p.LockoutDurationSeconds, "lockout_duration_seconds")
		setInt(&s.SessionLifetimeSeconds, p.SessionLifetimeSeconds, "session_lifetime_seconds")
		setInt(&s.MinPasswordLength, p.MinPasswordLength, "min_password_length")
		if err := s.validate(); err != nil {
			return err
		}
		if err := SaveSettings(ctx, tx, s); err != nil {
			return err
		}
		out = s
		if len(changed) == 0 {
			return nil
		}
		return Audit(ctx, tx, a, "settings.update", "settings", "1", changed)
	})
	return out, err
}

// SaveSettings writes the whole settings document.
func SaveSettings(ctx context.Context, q store.Querier, s Settings) error {
	raw, err := json.Marshal(s)
	if err != nil {
		return err
	}
	_, err = q.ExecContext(ctx, `INSERT INTO settings (id, data, updated_at) VALUES (1, $1, $2)
		ON CONFLICT (id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at`, string(raw), store.Now())
	if err != nil {
		return fmt.Errorf("save settings: %w", err)
	}
	return nil
}
