package core_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/store"
	"github.com/wardvpn/ward/internal/store/storetest"
)

var env *storetest.Env

func TestMain(m *testing.M) {
	env = storetest.Setup()
	code := m.Run()
	env.Close()
	os.Exit(code)
}

func ptr[T any](v T) *T { return &v }

var admin = core.Actor{UserID: "admin-id", Username: "admin", IsAdmin: true}

func TestSettingsValidation(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		for _, tc := range []struct {
			name  string
			patch core.SettingsPatch
			field string // "" = accepted
		}{
			{"smtp host", core.SettingsPatch{SMTPHost: ptr("smtp.example.com")}, ""},
			{"smtp host IPv6", core.SettingsPatch{SMTPHost: ptr("2001:db8::25")}, ""},
			{"smtp host with port", core.SettingsPatch{SMTPHost: ptr("smtp.example.com:25")}, "smtp_host"},
			{"smtp host with space", core.SettingsPatch{SMTPHost: ptr("smtp example")}, "smtp_host"},
			{"smtp port 0", core.SettingsPatch{SMTPPort: ptr(0)}, "smtp_port"},
			{"smtp port 465", core.SettingsPatch{SMTPPort: ptr(465)}, ""},
			{"smtp tls tls", core.SettingsPatch{SMTPTLS: ptr("tls")}, ""},
			{"smtp tls ssl", core.SettingsPatch{SMTPTLS: ptr("ssl")}, "smtp_tls"},
			{"smtp from with name", core.SettingsPatch{SMTPFrom: ptr("Acme VPN <vpn@example.com>")}, ""},
			{"smtp from bad", core.SettingsPatch{SMTPFrom: ptr("vpn at example")}, "smtp_from"},
			{"smtp username newline", core.SettingsPatch{SMTPUsername: ptr("a\nb")}, "smtp_username"},
			{"proxy url", core.SettingsPatch{ProxyPublicURL: ptr("https://vpn.example.com/")}, ""},
			{"proxy url with path", core.SettingsPatch{ProxyPublicURL: ptr("https://example.com/vpn")}, ""},
			{"proxy url ftp", core.SettingsPatch{ProxyPublicURL: ptr("ftp://vpn.example.com")}, "proxy_public_url"},
			{"proxy url relative", core.SettingsPatch{ProxyPublicURL: ptr("/enroll")}, "proxy_public_url"},
			{"proxy url with query", core.SettingsPatch{ProxyPublicURL: ptr("https://vpn.example.com/?a=b")}, "proxy_public_url"},
			{"proxy url with credentials", core.SettingsPatch{ProxyPublicURL: ptr("https://u:p@vpn.example.com")}, "proxy_public_url"},
			{"token lifetime short", core.SettingsPatch{EnrollmentTokenLifetimeSeconds: ptr(60)}, "enrollment_token_lifetime_seconds"},
			{"token lifetime week", core.SettingsPatch{EnrollmentTokenLifetimeSeconds: ptr(7 * 86400)}, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := core.UpdateSettings(ctx, db, admin, tc.patch)
				if tc.field == "" {
					if err != nil {
						t.Fatal(err)
					}
					return
				}
				de, ok := core.AsError(err)
				if !ok || !errors.Is(err, core.ErrInvalid) || de.Field != tc.field {
					t.Fatalf("error %v, want invalid %s", err, tc.field)
				}
			})
		}
		s, err := core.LoadSettings(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if s.ProxyPublicURL != "https://example.com/vpn" || s.SMTPPort != 465 || s.SMTPTLS != "tls" {
			t.Fatalf("settings = %+v", s)
		}
	})
}

func TestSMTPPasswordIsWriteOnly(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		const secret = "Smtp-password-Secret-1"
		d := core.DefaultSettings()
		if d.SMTPPort != 587 || d.SMTPTLS != "starttls" || d.EnrollmentTokenLifetimeSeconds != 86400 || d.MailConfigured() {
			t.Fatalf("defaults = %+v", d)
		}
		out, err := core.UpdateSettings(ctx, db, admin, core.SettingsPatch{SMTPHost: ptr("smtp.example.com"), SMTPFrom: ptr("w@example.com"),
			SMTPUsername: ptr("ward"), SMTPPassword: ptr(secret)})
		if err != nil {
			t.Fatal(err)
		}
		if !out.SMTPPasswordSet || string(out.SMTPPassword) != secret || !out.MailConfigured() {
			t.Fatalf("after set: %+v", out)
		}
		loaded, err := core.LoadSettings(ctx, db)
		if err != nil || string(loaded.SMTPPassword) != secret || !loaded.SMTPPasswordSet {
			t.Fatalf("loaded: %v %v", loaded.SMTPPasswordSet, err)
		}
		// However the settings are shown, the password is not.
		raw, _ := json.Marshal(loaded)
		var logBuf bytes.Buffer
		slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("settings", "s", loaded, "p", loaded.SMTPPassword)
		slog.New(slog.NewTextHandler(&logBuf, nil)).Info("settings", "s", loaded, "p", loaded.SMTPPassword)
		for name, shown := range map[string]string{
			"json": string(raw), "%v": fmt.Sprintf("%v", loaded), "%+v": fmt.Sprintf("%+v", loaded), "%#v": fmt.Sprintf("%#v", loaded),
			"%s of the field": fmt.Sprintf("%s", loaded.SMTPPassword), "slog": logBuf.String(),
		} {
			if strings.Contains(shown, secret) {
				t.Errorf("%s shows the password: %s", name, shown)
			}
		}
		if !strings.Contains(string(raw), `"smtp_password_set":true`) || strings.Contains(string(raw), `"smtp_password"`) {
			t.Errorf("json: %s", raw)
		}
		// The audit log says it changed, not what to.
		entries, _, _ := core.ListAudit(ctx, db, core.AuditFilter{Action: "settings.update", Limit: 10})
		all, _ := json.Marshal(entries)
		if strings.Contains(string(all), secret) || !strings.Contains(string(all), `"smtp_password":"set"`) {
			t.Errorf("audit: %s", all)
		}
		// Another patch keeps it; an empty string removes it.
		if out, _ = core.UpdateSettings(ctx, db, admin, core.SettingsPatch{SMTPPort: ptr(2525)}); string(out.SMTPPassword) != secret {
			t.Fatal("an unrelated change dropped the password")
		}
		if out, _ = core.UpdateSettings(ctx, db, admin, core.SettingsPatch{SMTPPassword: ptr("")}); out.SMTPPassword != "" || out.SMTPPasswordSet {
			t.Fatal("the password was not removed")
		}
	})
}
