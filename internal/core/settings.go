package core

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"net/netip"
	"net/url"
	"strings"

	"github.com/wardvpn/ward/internal/store"
)

// SMTP transport security modes.
const (
	SMTPTLSNone     = "none"     // plain SMTP (only sensible on a trusted network)
	SMTPTLSStartTLS = "starttls" // STARTTLS required
	SMTPTLSImplicit = "tls"      // TLS from the first byte (SMTPS, usually port 465)
)

// Secret is a string that never shows itself: formatting, logging and JSON
// encoding all print a placeholder. Use string(s) where the value is needed.
type Secret string

const redacted = "[redacted]"

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString keeps %#v from printing the value.
func (s Secret) GoString() string { return s.String() }

// LogValue keeps log/slog from printing the value.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON keeps encoding/json from printing the value.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

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

	// SMTP server for enrollment, password-reset and test mails. Mail is
	// off while SMTPHost or SMTPFrom is empty.
	SMTPHost     string `json:"smtp_host"`
	SMTPPort     int    `json:"smtp_port"`
	SMTPUsername string `json:"smtp_username"`
	// SMTPPassword is write-only: it is stored, but never encoded into the
	// settings document that GET /settings returns, nor logged.
	SMTPPassword    Secret `json:"-"`
	SMTPPasswordSet bool   `json:"smtp_password_set"`
	SMTPFrom        string `json:"smtp_from"`
	SMTPTLS         string `json:"smtp_tls"`

	// ProxyPublicURL is where users reach the public proxy; enrollment and
	// password-reset links point there.
	ProxyPublicURL string `json:"proxy_public_url"`
	// EnrollmentTokenLifetimeSeconds is how long an enrollment (or new
	// client) link stays valid.
	EnrollmentTokenLifetimeSeconds int `json:"enrollment_token_lifetime_seconds"`
}

// MailConfigured tells whether an SMTP server and sender are set.
func (s Settings) MailConfigured() bool { return s.SMTPHost != "" && s.SMTPFrom != "" }

// storedSettings is the document kept in the database: the settings plus
// the write-only secrets, which the Settings encoding leaves out.
type storedSettings struct {
	Settings
	StoredSMTPPassword string `json:"smtp_password,omitempty"`
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

		SMTPPort:                       587,
		SMTPTLS:                        SMTPTLSStartTLS,
		EnrollmentTokenLifetimeSeconds: 24 * 3600,
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

	SMTPHost     *string `json:"smtp_host"`
	SMTPPort     *int    `json:"smtp_port"`
	SMTPUsername *string `json:"smtp_username"`
	// SMTPPassword replaces the stored password; "" removes it.
	SMTPPassword                   *string `json:"smtp_password"`
	SMTPFrom                       *string `json:"smtp_from"`
	SMTPTLS                        *string `json:"smtp_tls"`
	ProxyPublicURL                 *string `json:"proxy_public_url"`
	EnrollmentTokenLifetimeSeconds *int    `json:"enrollment_token_lifetime_seconds"`
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
		{"smtp_port", s.SMTPPort, 1, 65535},
		{"enrollment_token_lifetime_seconds", s.EnrollmentTokenLifetimeSeconds, 600, 86400 * 30},
	} {
		if r.v < r.lo || r.v > r.hi {
			return Invalid("invalid_value", r.field, "must be between %d and %d", r.lo, r.hi)
		}
	}
	if s.InstanceName == "" || len(s.InstanceName) > 64 {
		return Invalid("invalid_value", "instance_name", "must be 1 to 64 characters")
	}
	if len(s.SMTPHost) > 253 || strings.ContainsAny(s.SMTPHost, " \t\r\n\x00/[]") {
		return Invalid("invalid_value", "smtp_host", "must be a host name or IP address, without port")
	}
	if strings.Contains(s.SMTPHost, ":") {
		if _, err := netip.ParseAddr(s.SMTPHost); err != nil {
			return Invalid("invalid_value", "smtp_host", "must be a host name or IP address, without port (set smtp_port)")
		}
	}
	if len(s.SMTPUsername) > 256 || strings.ContainsAny(s.SMTPUsername, "\r\n\x00") {
		return Invalid("invalid_value", "smtp_username", "must be at most 256 characters on one line")
	}
	if len(s.SMTPPassword) > 1024 || strings.ContainsAny(string(s.SMTPPassword), "\r\n\x00") {
		return Invalid("invalid_value", "smtp_password", "must be at most 1024 bytes on one line")
	}
	if s.SMTPFrom != "" {
		if a, err := mail.ParseAddress(s.SMTPFrom); err != nil || len(s.SMTPFrom) > 320 || !strings.Contains(a.Address, "@") {
			return Invalid("invalid_email", "smtp_from", "must be an e-mail address, optionally with a name: Name <addr@example.com>")
		}
	}
	switch s.SMTPTLS {
	case SMTPTLSNone, SMTPTLSStartTLS, SMTPTLSImplicit:
	default:
		return Invalid("invalid_value", "smtp_tls", "must be %q, %q or %q", SMTPTLSNone, SMTPTLSStartTLS, SMTPTLSImplicit)
	}
	if s.ProxyPublicURL != "" {
		u, err := url.Parse(s.ProxyPublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" ||
			len(s.ProxyPublicURL) > 512 {
			return Invalid("invalid_url", "proxy_public_url", "must be an http:// or https:// URL without credentials, query or fragment")
		}
	}
	return nil
}

// normalizeURL drops trailing slashes so links join with one "/".
func normalizeURL(u string) string { return strings.TrimRight(strings.TrimSpace(u), "/") }

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
	stored := storedSettings{Settings: s}
	if err := json.Unmarshal([]byte(raw), &stored); err != nil {
		return s, fmt.Errorf("decode settings: %w", err)
	}
	s = stored.Settings
	s.SMTPPassword = Secret(stored.StoredSMTPPassword)
	s.SMTPPasswordSet = s.SMTPPassword != ""
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
		if p.SMTPHost != nil {
			v := strings.TrimSpace(*p.SMTPHost)
			setStr(&s.SMTPHost, &v, "smtp_host")
		}
		setInt(&s.SMTPPort, p.SMTPPort, "smtp_port")
		setStr(&s.SMTPUsername, p.SMTPUsername, "smtp_username")
		if p.SMTPPassword != nil && Secret(*p.SMTPPassword) != s.SMTPPassword {
			// The audit log says that the password changed, never what to.
			s.SMTPPassword = Secret(*p.SMTPPassword)
			changed["smtp_password"] = "set"
			if s.SMTPPassword == "" {
				changed["smtp_password"] = "removed"
			}
		}
		s.SMTPPasswordSet = s.SMTPPassword != ""
		if p.SMTPFrom != nil {
			v := strings.TrimSpace(*p.SMTPFrom)
			setStr(&s.SMTPFrom, &v, "smtp_from")
		}
		setStr(&s.SMTPTLS, p.SMTPTLS, "smtp_tls")
		if p.ProxyPublicURL != nil {
			v := normalizeURL(*p.ProxyPublicURL)
			setStr(&s.ProxyPublicURL, &v, "proxy_public_url")
		}
		setInt(&s.EnrollmentTokenLifetimeSeconds, p.EnrollmentTokenLifetimeSeconds, "enrollment_token_lifetime_seconds")
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

// SaveSettings writes the whole settings document, secrets included.
func SaveSettings(ctx context.Context, q store.Querier, s Settings) error {
	s.SMTPPasswordSet = s.SMTPPassword != ""
	raw, err := json.Marshal(storedSettings{Settings: s, StoredSMTPPassword: string(s.SMTPPassword)})
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
