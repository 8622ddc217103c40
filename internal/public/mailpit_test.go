package public_test

import (
	"bytes"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/enroll"
	"github.com/wardvpn/ward/internal/mail"
	"github.com/wardvpn/ward/internal/mail/mailtest"
	"github.com/wardvpn/ward/internal/store"
)

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestMailpitEnrollmentAndReset sends the enrollment and reset mails through
// a real SMTP server (mailpit), reads them back through mailpit's API and
// follows their links on the public handler.
func TestMailpitEnrollmentAndReset(t *testing.T) {
	env.ForEach(t, func(t *testing.T, db *store.DB) {
		mp := mailtest.Start(t)
		var logs syncBuffer
		log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		f := newFixture(t, db, mail.New(db, log))
		const smtpPassword = "mailpit-Secret-42"
		f.settings(core.SettingsPatch{InstanceName: ptr("Acme VPN"), SMTPHost: ptr(mp.SMTPHost), SMTPPort: ptr(mp.SMTPPort), SMTPTLS: ptr("none"),
			SMTPUsername: ptr("ward"), SMTPPassword: ptr(smtpPassword), SMTPFrom: ptr("Acme VPN <vpn@example.com>"), ProxyPublicURL: ptr(f.ts.URL + "/")})

		u := f.pendingUser("zoe", "Zoe")
		st, err := f.enroll.Start(f.ctx, f.admin, u.ID, enroll.StartInput{})
		if err != nil {
			t.Fatal(err)
		}
		if !st.EmailSent || st.EmailError != "" {
			t.Fatalf("enrollment mail not sent: %+v", st)
		}
		msg := mp.WaitFor(t, "zoe@example.com", "Acme VPN: set up your account", 10*time.Second)
		if msg.From.Address != "vpn@example.com" || msg.From.Name != "Acme VPN" || !strings.Contains(msg.Text, "Hello Zoe") {
			t.Fatalf("enrollment mail: from %+v, text %q", msg.From, msg.Text)
		}
		link := regexp.MustCompile(regexp.QuoteMeta(f.ts.URL) + `/enroll/([A-Za-z0-9_-]+)`).FindStringSubmatch(msg.Text)
		if link == nil || link[0] != st.URL {
			t.Fatalf("no enrollment link (%s) in the mail: %q", st.URL, msg.Text)
		}

		// The link opens the enrollment page; the flow runs through it.
		wantPage(t, "enrollment page", f.do("GET", link[0], "", nil, nil), 200, "<b>zoe</b>", "Acme VPN")
		page := "/enroll/" + link[1]
		want(t, "password", f.form(page, url.Values{"action": {"password"}, "password": {"Zoe-password-1"}, "password2": {"Zoe-password-1"}}), 303)
		wantPage(t, "device", f.form(page, url.Values{"action": {"device"}, "name": {"laptop"}, "public_key": {newKey(t)}}), 201, "wardc_")
		wantPage(t, "complete", f.form(page, url.Values{"action": {"complete"}}), 200, "is ready and active")
		if _, err := f.ident.Login(f.ctx, "zoe", "Zoe-password-1", "", ""); err != nil {
			t.Fatal(err)
		}

		// Password reset from the public page, by e-mail address.
		for _, login := range []string{"nobody@example.com", "ZOE@example.com"} {
			wantPage(t, "reset request", f.form("/reset", url.Values{"login": {login}}), 200, "Check your mail")
		}
		f.enroll.WaitMail()
		msg = mp.WaitFor(t, "zoe@example.com", "Acme VPN: reset your password", 10*time.Second)
		if mp.Count(t, "nobody@example.com") != 0 {
			t.Fatal("a mail went to an address without account")
		}
		link = regexp.MustCompile(regexp.QuoteMeta(f.ts.URL) + `/reset/([A-Za-z0-9_-]+)`).FindStringSubmatch(msg.Text)
		if link == nil {
			t.Fatalf("no reset link in the mail: %q", msg.Text)
		}
		wantPage(t, "reset page", f.do("GET", link[0], "", nil, nil), 200, "Choose a new password for <b>zoe</b>")
		wantPage(t, "reset", f.form("/reset/"+link[1], url.Values{"password": {"Zoe-new-password-2"}, "password2": {"Zoe-new-password-2"}}), 200,
			"Your password is changed")
		wantPage(t, "reset link again", f.do("GET", link[0], "", nil, nil), 404, "already used")
		if _, err := f.ident.Login(f.ctx, "zoe", "Zoe-new-password-2", "", ""); err != nil {
			t.Fatal(err)
		}
		if n := mp.Count(t, "zoe@example.com"); n != 2 {
			t.Fatalf("zoe got %d mails, want 2", n)
		}

		// Neither the SMTP password nor a link token reaches the log.
		out := logs.String()
		if !strings.Contains(out, "mail sent") {
			t.Fatalf("the mailer logged nothing: %q", out)
		}
		for _, secret := range []string{smtpPassword, st.Token, link[1]} {
			if strings.Contains(out, secret) {
				t.Fatalf("a secret reached the log: %q", out)
			}
		}
	})
}
