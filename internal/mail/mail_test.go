package mail_test

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/mail"
	"github.com/wardvpn/ward/internal/mail/mailtest"
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

// TestSendWithMailpit delivers through a real SMTP server, with and without
// SMTP AUTH, and reads the messages back.
func TestSendWithMailpit(t *testing.T) {
	mp := mailtest.Start(t)
	base := core.DefaultSettings()
	base.SMTPHost, base.SMTPPort, base.SMTPTLS, base.SMTPFrom = mp.SMTPHost, mp.SMTPPort, core.SMTPTLSNone, "ward <ward@example.com>"
	for _, tc := range []struct {
		name, user, password string
	}{
		{"no auth", "", ""},
		{"plain auth on localhost", "ward", "Secret-pass-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := base
			s.SMTPUsername, s.SMTPPassword = tc.user, core.Secret(tc.password)
			to := strings.ReplaceAll(tc.name, " ", "-") + "@example.com"
			body := "Grüße aus ward.\nSecond line.\n"
			if err := mail.SendWith(context.Background(), s, mail.Message{To: to, Subject: "Test " + tc.name, Text: body}, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			m := mp.WaitFor(t, to, "Test "+tc.name, 10*time.Second)
			if m.From.Address != "ward@example.com" || m.From.Name != "ward" || strings.TrimSpace(strings.ReplaceAll(m.Text, "\r\n", "\n")) != strings.TrimSpace(body) {
				t.Fatalf("message: %+v", m)
			}
		})
	}
}

func TestSendWithErrors(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := closed.Addr().(*net.TCPAddr).Port
	closed.Close()
	sink := mailtest.NewSink(t)

	s := core.DefaultSettings()
	msg := mail.Message{To: "a@example.com", Subject: "x", Text: "y"}
	if err := mail.SendWith(context.Background(), s, msg, time.Second); !errors.Is(err, mail.ErrNotConfigured) {
		t.Fatalf("unconfigured: %v", err)
	}
	s.SMTPHost, s.SMTPPort, s.SMTPFrom, s.SMTPTLS = "127.0.0.1", port, "ward@example.com", core.SMTPTLSNone
	if err := mail.SendWith(context.Background(), s, msg, 2*time.Second); err == nil {
		t.Fatal("sending to a closed port succeeded")
	}
	// STARTTLS is required but the sink offers none: refused, not sent in
	// the clear.
	s.SMTPPort, s.SMTPTLS = sink.Port, core.SMTPTLSStartTLS
	s.SMTPUsername, s.SMTPPassword = "ward", "Very-secret-9"
	err = mail.SendWith(context.Background(), s, msg, 2*time.Second)
	if err == nil || len(sink.Messages()) != 0 {
		t.Fatalf("starttls against a server without it: %v, %d messages", err, len(sink.Messages()))
	}
	if strings.Contains(err.Error(), "Very-secret-9") {
		t.Fatalf("the error holds the password: %v", err)
	}
	s.SMTPTLS = core.SMTPTLSNone
	if err := mail.SendWith(context.Background(), s, msg, 2*time.Second); err != nil || len(sink.Messages()) != 1 {
		t.Fatalf("plain to the sink: %v", err)
	}
}

func TestSendTest(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		admin := core.Actor{UserID: "admin-id", Username: "admin", IsAdmin: true, IP: "192.0.2.1"}
		m := mail.New(db, nil)
		if err := core.SaveSettings(ctx, db, core.DefaultSettings()); err != nil {
			t.Fatal(err)
		}
		if err := m.SendTest(ctx, core.Actor{UserID: "u"}, "a@example.com"); !errors.Is(err, core.ErrForbidden) {
			t.Fatalf("non-admin: %v", err)
		}
		for _, bad := range []string{"", "nope", "Name <a@example.com>", "a@example.com, b@example.com"} {
			if err := m.SendTest(ctx, admin, bad); !errors.Is(err, core.ErrInvalid) {
				t.Fatalf("recipient %q: %v", bad, err)
			}
		}
		if err := m.SendTest(ctx, admin, "ops@example.com"); !errors.Is(err, mail.ErrNotConfigured) {
			t.Fatalf("unconfigured: %v", err)
		}
		if ok, _ := m.Configured(ctx); ok {
			t.Fatal("configured without settings")
		}
		sink := mailtest.NewSink(t)
		if _, err := core.UpdateSettings(ctx, db, admin, core.SettingsPatch{SMTPHost: ptr("127.0.0.1"), SMTPPort: ptr(sink.Port),
			SMTPTLS: ptr("none"), SMTPFrom: ptr("ward@example.com")}); err != nil {
			t.Fatal(err)
		}
		if ok, _ := m.Configured(ctx); !ok {
			t.Fatal("not configured")
		}
		if err := m.SendTest(ctx, admin, "ops@example.com"); err != nil {
			t.Fatal(err)
		}
		if msgs := sink.Messages(); len(msgs) != 1 || msgs[0].To[0] != "ops@example.com" || !strings.Contains(msgs[0].Data, "Subject: ward: test mail") {
			t.Fatalf("sink: %+v", msgs)
		}
		// A server that cannot be reached: 503-kind error, audited as failed.
		if _, err := core.UpdateSettings(ctx, db, admin, core.SettingsPatch{SMTPPort: ptr(1)}); err != nil {
			t.Fatal(err)
		}
		err := m.SendTest(ctx, admin, "ops@example.com")
		if de, ok := core.AsError(err); !ok || de.Code != "smtp_failed" || de.Kind != core.KindUnavailable {
			t.Fatalf("unreachable: %v", err)
		}
		entries, _, err := core.ListAudit(ctx, db, core.AuditFilter{Action: "settings.test_mail", Limit: 10})
		if err != nil || len(entries) != 2 || entries[0].Details["ok"] != false || entries[1].Details["ok"] != true {
			t.Fatalf("audit: %+v %v", entries, err)
		}
	})
}
