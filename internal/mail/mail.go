// Package mail sends e-mail through the SMTP server configured in the
// instance settings (smtp_host, smtp_port, smtp_tls, smtp_username,
// smtp_password, smtp_from). Settings are read for every message, so a
// change made on one core replica applies to all of them at once. The SMTP
// password is never logged and never part of an error.
package mail

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	netmail "net/mail"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/store"
)

// Message is one plain-text e-mail to one recipient.
type Message struct {
	To      string
	Subject string
	Text    string
}

// Sender is what domain services need from a mailer.
type Sender interface {
	// Configured tells whether an SMTP server and sender are set.
	Configured(ctx context.Context) (bool, error)
	// Send delivers one message, or returns ErrNotConfigured.
	Send(ctx context.Context, m Message) error
}

// ErrNotConfigured is returned while no SMTP server or sender is set.
var ErrNotConfigured = &core.Error{Kind: core.KindConflict, Code: "smtp_not_configured",
	Message: "no SMTP server is configured; set smtp_host and smtp_from in the settings"}

// DefaultTimeout bounds connecting to and talking with the SMTP server.
const DefaultTimeout = 15 * time.Second

// Mailer sends through the SMTP server of the settings.
type Mailer struct {
	db      *store.DB
	log     *slog.Logger
	timeout time.Duration
}

// New builds a mailer on the settings in db.
func New(db *store.DB, log *slog.Logger) *Mailer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Mailer{db: db, log: log, timeout: DefaultTimeout}
}

// Configured tells whether mail can be sent.
func (m *Mailer) Configured(ctx context.Context) (bool, error) {
	s, err := core.LoadSettings(ctx, m.db)
	if err != nil {
		return false, err
	}
	return s.MailConfigured(), nil
}

// Send delivers msg with the current settings.
func (m *Mailer) Send(ctx context.Context, msg Message) error {
	s, err := core.LoadSettings(ctx, m.db)
	if err != nil {
		return err
	}
	start := time.Now()
	err = SendWith(ctx, s, msg, m.timeout)
	if err != nil {
		// The subject says what kind of mail it was; bodies carry links
		// with tokens and are never logged.
		m.log.Warn("mail not sent", "to", msg.To, "subject", msg.Subject, "smtp_host", s.SMTPHost, "err", err)
		return err
	}
	m.log.Info("mail sent", "to", msg.To, "subject", msg.Subject, "smtp_host", s.SMTPHost, "duration", time.Since(start))
	return nil
}

// SendTest sends a test message to check the SMTP settings; admins only.
// The attempt and its outcome are audited.
func (m *Mailer) SendTest(ctx context.Context, a core.Actor, to string) error {
	if !a.IsAdmin {
		return core.Forbidden("only admins can send test mails")
	}
	addr, err := ParseRecipient("to", to)
	if err != nil {
		return err
	}
	s, err := core.LoadSettings(ctx, m.db)
	if err != nil {
		return err
	}
	if !s.MailConfigured() {
		return ErrNotConfigured
	}
	sendErr := m.Send(ctx, Message{To: addr, Subject: s.InstanceName + ": test mail",
		Text: "This is a test mail from ward (" + s.InstanceName + ").\n\nIf you can read it, the SMTP settings work.\n"})
	details := map[string]any{"to": addr, "smtp_host": s.SMTPHost, "ok": sendErr == nil}
	if err := core.Audit(ctx, m.db, a, "settings.test_mail", "settings", "1", details); err != nil {
		return err
	}
	if sendErr != nil {
		return &core.Error{Kind: core.KindUnavailable, Code: "smtp_failed", Message: "sending the test mail failed: " + sendErr.Error()}
	}
	return nil
}

// ParseRecipient validates one bare e-mail address.
func ParseRecipient(field, to string) (string, error) {
	to = strings.TrimSpace(to)
	a, err := netmail.ParseAddress(to)
	if err != nil || a.Address != to || len(to) > 254 || !strings.Contains(to, "@") {
		return "", core.Invalid("invalid_email", field, "not a valid e-mail address")
	}
	return to, nil
}

// SendWith delivers msg through the SMTP server described by s.
func SendWith(ctx context.Context, s core.Settings, msg Message, timeout time.Duration) error {
	if !s.MailConfigured() {
		return ErrNotConfigured
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	m := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	if err := m.From(s.SMTPFrom); err != nil {
		return fmt.Errorf("sender %q: %w", s.SMTPFrom, err)
	}
	if err := m.To(msg.To); err != nil {
		return fmt.Errorf("recipient %q: %w", msg.To, err)
	}
	m.Subject(msg.Subject)
	m.SetDate()
	m.SetMessageID()
	m.SetUserAgent("ward")
	m.SetBodyString(gomail.TypeTextPlain, msg.Text)

	opts := []gomail.Option{gomail.WithPort(s.SMTPPort), gomail.WithTimeout(timeout)}
	switch s.SMTPTLS {
	case core.SMTPTLSNone:
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	case core.SMTPTLSImplicit:
		opts = append(opts, gomail.WithSSL())
	default:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	}
	if s.SMTPUsername != "" {
		auth := gomail.SMTPAuthAutoDiscover
		if s.SMTPTLS == core.SMTPTLSNone {
			// PLAIN, which go-mail refuses over an unencrypted connection
			// to anything but localhost: a password never crosses the
			// network in the clear.
			auth = gomail.SMTPAuthPlain
		}
		opts = append(opts, gomail.WithSMTPAuth(auth), gomail.WithUsername(s.SMTPUsername), gomail.WithPassword(string(s.SMTPPassword)))
	}
	c, err := gomail.NewClient(s.SMTPHost, opts...)
	if err != nil {
		return fmt.Errorf("smtp client: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := c.DialAndSendWithContext(ctx, m); err != nil {
		return fmt.Errorf("smtp %s:%d: %w", s.SMTPHost, s.SMTPPort, scrub(err, string(s.SMTPPassword)))
	}
	return nil
}

// scrub makes sure an error never carries the SMTP password, whatever the
// library or server put into it.
func scrub(err error, password string) error {
	if password == "" || !strings.Contains(err.Error(), password) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), password, "[redacted]"))
}
