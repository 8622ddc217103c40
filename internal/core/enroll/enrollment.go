package enroll

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/mfa"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/mail"
)

// StartInput is what an admin chooses when starting an enrollment.
type StartInput struct {
	// Kind is "enrollment" (default) for a user without a password, or
	// "new_client" to configure another VPN client of an active user.
	Kind string `json:"kind"`
	// SendEmail mails the link to the user (default true) when SMTP is
	// configured.
	SendEmail *bool `json:"send_email"`
}

// Started is a new enrollment link, shown to the admin once.
type Started struct {
	Kind      string `json:"kind"`
	Token     string `json:"token"`
	URL       string `json:"url"`
	ExpiresAt int64  `json:"expires_at"`
	// EmailSent tells whether the link was handed to the SMTP server;
	// EmailError says why not, when a mail was asked for.
	EmailSent  bool   `json:"email_sent"`
	EmailError string `json:"email_error,omitempty"`
}

// Start issues an enrollment or new-client link for a user; admins only.
// Earlier unused links of the same kind for the user stop working.
func (s *Service) Start(ctx context.Context, a core.Actor, userID string, in StartInput) (Started, error) {
	if !a.IsAdmin {
		return Started{}, core.Forbidden("only admins can start an enrollment")
	}
	if in.Kind == "" {
		in.Kind = KindEnrollment
	}
	if in.Kind != KindEnrollment && in.Kind != KindNewClient {
		return Started{}, core.Invalid("invalid_kind", "kind", "must be %q or %q", KindEnrollment, KindNewClient)
	}
	sendEmail := in.SendEmail == nil || *in.SendEmail
	st, err := core.LoadSettings(ctx, s.db)
	if err != nil {
		return Started{}, err
	}
	out := Started{Kind: in.Kind}
	var acct account
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		var err error
		if acct, err = loadAccount(ctx, tx, "id = $1", userID); err != nil {
			return err
		}
		switch in.Kind {
		case KindEnrollment:
			if acct.hasPassword {
				return core.Conflict("already_enrolled", "kind", "the user already has a password; start a %q enrollment to add a client, or let them reset the password", KindNewClient)
			}
		case KindNewClient:
			if !acct.active {
				return core.Conflict("user_inactive", "", "the user is inactive; activate them or start an enrollment")
			}
			if !st.UsersCanManageDevices {
				return core.Conflict("device_management_disabled", "kind", "users may not add devices (settings: users_can_manage_devices)")
			}
		}
		ttl := time.Duration(st.EnrollmentTokenLifetimeSeconds) * time.Second
		if out.Token, out.ExpiresAt, err = s.issue(ctx, tx, in.Kind, userID, a.UserID, ttl); err != nil {
			return err
		}
		return core.Audit(ctx, tx, a, "enrollment.start", "user", userID, map[string]any{"kind": in.Kind, "send_email": sendEmail, "expires_at": out.ExpiresAt})
	})
	if err != nil {
		return Started{}, err
	}
	out.URL = s.link(st, "/enroll/"+out.Token)
	if !sendEmail {
		return out, nil
	}
	if why := s.mailReady(ctx, st); why != "" {
		out.EmailError = why
		return out, nil
	}
	sendErr := s.mail.Send(ctx, enrollmentMail(st, acct, in.Kind, out.URL, out.ExpiresAt))
	out.EmailSent = sendErr == nil
	if sendErr != nil {
		out.EmailError = sendErr.Error()
	}
	if err := core.Audit(ctx, s.db, a, "enrollment.email", "user", userID, map[string]any{"kind": in.Kind, "to": acct.email, "ok": sendErr == nil}); err != nil {
		return Started{}, err
	}
	return out, nil
}

// Step is one part of an enrollment.
type Step struct {
	// Name is "password", "totp" or "device".
	Name      string `json:"name"`
	Required  bool   `json:"required"`
	Done      bool   `json:"done"`
	Available bool   `json:"available"`
}

// Info is what an enrollment link shows.
type Info struct {
	Kind         string      `json:"kind"`
	InstanceName string      `json:"instance_name"`
	Username     string      `json:"username"`
	FirstName    string      `json:"first_name"`
	LastName     string      `json:"last_name"`
	Email        string      `json:"email"`
	ExpiresAt    int64       `json:"expires_at"`
	Steps        []Step      `json:"steps"`
	Remaining    []string    `json:"remaining"`
	Device       *vpn.Device `json:"device,omitempty"`
}

// Step returns the named step.
func (i Info) Step(name string) Step {
	for _, st := range i.Steps {
		if st.Name == name {
			return st
		}
	}
	return Step{Name: name}
}

// Info describes an enrollment link: whose it is and which steps remain.
func (s *Service) Info(ctx context.Context, token string) (Info, error) {
	tok, err := s.lookup(ctx, s.db, token, KindEnrollment, KindNewClient)
	if err != nil {
		return Info{}, err
	}
	return s.info(ctx, tok)
}

func (s *Service) info(ctx context.Context, tok tokenRow) (Info, error) {
	acct, err := loadAccount(ctx, s.db, "id = $1", tok.userID)
	if err != nil {
		return Info{}, err
	}
	st, err := core.LoadSettings(ctx, s.db)
	if err != nil {
		return Info{}, err
	}
	hasTOTP, err := s.mfa.HasTOTP(ctx, acct.id)
	if err != nil {
		return Info{}, err
	}
	info := Info{Kind: tok.kind, InstanceName: st.InstanceName, Username: acct.username, FirstName: acct.firstName, LastName: acct.lastName,
		Email: acct.email, ExpiresAt: tok.expiresAt, Remaining: []string{}}
	deviceDone := tok.deviceID != ""
	if deviceDone {
		d, err := s.vpn.GetDevice(ctx, acct.actor(""), tok.deviceID)
		if err != nil {
			return Info{}, err
		}
		info.Device = &d
	}
	if tok.kind == KindEnrollment {
		info.Steps = append(info.Steps, Step{Name: "password", Required: true, Done: acct.hasPassword, Available: true})
	}
	info.Steps = append(info.Steps,
		Step{Name: "totp", Done: hasTOTP, Available: !hasTOTP},
		Step{Name: "device", Required: tok.kind == KindNewClient, Done: deviceDone,
			Available: !deviceDone && st.UsersCanManageDevices && (tok.kind == KindNewClient || acct.hasPassword)})
	for _, step := range info.Steps {
		if step.Required && !step.Done {
			info.Remaining = append(info.Remaining, step.Name)
		}
	}
	return info, nil
}

// SetPassword sets the enrolling user's password (strength-checked against
// the settings). It may be set again until the enrollment completes.
func (s *Service) SetPassword(ctx context.Context, token, password, ip string) error {
	tok, err := s.lookup(ctx, s.db, token, KindEnrollment, KindNewClient)
	if err != nil {
		return err
	}
	if tok.kind != KindEnrollment {
		return core.Conflict("not_allowed", "password", "this link configures a client; it does not set a password")
	}
	hash, err := s.hashPassword(ctx, password)
	if err != nil {
		return err
	}
	return s.db.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := s.lookup(ctx, tx, token, KindEnrollment); err != nil {
			return err
		}
		acct, err := loadAccount(ctx, tx, "id = $1", tok.userID)
		if err != nil {
			return err
		}
		now := s.now().UnixMilli()
		if _, err := tx.ExecContext(ctx, `UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3`, hash, now, acct.id); err != nil {
			return fmt.Errorf("set password: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE onboarding_tokens SET password_set = TRUE WHERE id = $1`, tok.id); err != nil {
			return err
		}
		return core.Audit(ctx, tx, acct.actor(ip), "enrollment.password_set", "user", acct.id, nil)
	})
}

func (s *Service) hashPassword(ctx context.Context, password string) (string, error) {
	st, err := core.LoadSettings(ctx, s.db)
	if err != nil {
		return "", err
	}
	if err := identity.CheckPasswordStrength(password, st.MinPasswordLength); err != nil {
		return "", err
	}
	return identity.HashPassword(s.params, password), nil
}

// SetupTOTP starts the optional TOTP step.
func (s *Service) SetupTOTP(ctx context.Context, token, ip string) (mfa.Setup, error) {
	tok, err := s.lookup(ctx, s.db, token, KindEnrollment, KindNewClient)
	if err != nil {
		return mfa.Setup{}, err
	}
	acct, err := loadAccount(ctx, s.db, "id = $1", tok.userID)
	if err != nil {
		return mfa.Setup{}, err
	}
	return s.mfa.Setup(ctx, acct.actor(ip), acct.id)
}

// ConfirmTOTP enables TOTP with a code and returns the recovery codes, shown
// only now.
func (s *Service) ConfirmTOTP(ctx context.Context, token, code, ip string) (mfa.RecoveryCodes, error) {
	tok, err := s.lookup(ctx, s.db, token, KindEnrollment, KindNewClient)
	if err != nil {
		return mfa.RecoveryCodes{}, err
	}
	acct, err := loadAccount(ctx, s.db, "id = $1", tok.userID)
	if err != nil {
		return mfa.RecoveryCodes{}, err
	}
	return s.mfa.Confirm(ctx, acct.actor(ip), acct.id, code)
}

// DeviceInput registers the device the user is enrolling. Only the public
// key is sent: the private key never leaves the device.
type DeviceInput struct {
	Name      string `json:"name"`
	PublicKey string `json:"public_key"`
}

// Registered is the outcome of the device step: the device, its
// configuration in every location it may use, and the token its client
// syncs with (shown only now).
type Registered struct {
	Device      vpn.Device       `json:"device"`
	Locations   []LocationConfig `json:"locations"`
	ClientToken string           `json:"client_token"`
}

// RegisterDevice creates the user's device (as the user, so the usual rules
// apply) with an address in every location the user may use, and a client
// sync token tied to it. One device per link.
func (s *Service) RegisterDevice(ctx context.Context, token string, in DeviceInput, ip string) (Registered, error) {
	tok, err := s.lookup(ctx, s.db, token, KindEnrollment, KindNewClient)
	if err != nil {
		return Registered{}, err
	}
	if tok.deviceID != "" {
		return Registered{}, core.Conflict("device_registered", "", "a device was already registered with this link")
	}
	acct, err := loadAccount(ctx, s.db, "id = $1", tok.userID)
	if err != nil {
		return Registered{}, err
	}
	if tok.kind == KindEnrollment && !acct.hasPassword {
		return Registered{}, core.Conflict("password_required", "", "set a password first")
	}
	if strings.TrimSpace(in.Name) == "" {
		return Registered{}, core.Invalid("missing_field", "name", "give the device a name")
	}
	if _, err := vpn.ParsePublicKey("public_key", in.PublicKey); err != nil {
		return Registered{}, err
	}
	actor := acct.actor(ip)
	dev, err := s.vpn.CreateDevice(ctx, actor, vpn.NewDevice{Name: in.Name, PublicKey: in.PublicKey, UserID: acct.id, Kind: vpn.KindUser})
	if err != nil {
		return Registered{}, err
	}
	clientToken := clientTokenPrefix + core.RandomToken(32)
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		now := s.now().UnixMilli()
		// The link claims the device only if no other request did first
		// and the link is still good.
		res, err := tx.ExecContext(ctx, `UPDATE onboarding_tokens SET device_id = $1 WHERE id = $2 AND device_id IS NULL AND used_at = 0 AND expires_at > $3`,
			dev.ID, tok.id, now)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return core.Conflict("device_registered", "", "a device was already registered with this link, or the link expired")
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO client_tokens (id, token_hash, device_id, created_at) VALUES ($1, $2, $3, $4)`,
			core.NewID(), s.hash("client", clientToken), dev.ID, now); err != nil {
			return fmt.Errorf("store client token: %w", err)
		}
		return core.Audit(ctx, tx, actor, "enrollment.device", "device", dev.ID, map[string]any{"name": dev.Name, "public_key": dev.PublicKey, "kind": tok.kind})
	})
	if err != nil {
		// vpn.CreateDevice committed on its own; take the device back so
		// nothing half-done remains.
		if derr := s.vpn.DeleteDevice(context.WithoutCancel(ctx), core.SystemActor("enrollment rollback"), dev.ID); derr != nil && !errors.Is(derr, core.ErrNotFound) {
			s.log.Error("could not remove the device of a failed enrollment step", "device_id", dev.ID, "err", derr)
		}
		return Registered{}, err
	}
	locs, err := s.locationConfigs(ctx, actor, dev.Device)
	if err != nil {
		return Registered{}, err
	}
	return Registered{Device: dev.Device, Locations: locs, ClientToken: clientToken}, nil
}

// Completed is the end of an enrollment.
type Completed struct {
	Kind      string `json:"kind"`
	Username  string `json:"username"`
	Activated bool   `json:"activated"`
	DeviceID  string `json:"device_id,omitempty"`
}

// Complete finishes the enrollment: the required steps must be done; the
// user is activated (their devices join the gateways) and the link is used up.
func (s *Service) Complete(ctx context.Context, token, ip string) (Completed, error) {
	tok, err := s.lookup(ctx, s.db, token, KindEnrollment, KindNewClient)
	if err != nil {
		return Completed{}, err
	}
	info, err := s.info(ctx, tok)
	if err != nil {
		return Completed{}, err
	}
	if len(info.Remaining) > 0 {
		return Completed{}, core.Conflict("steps_remaining", "", "finish these steps first: %s", strings.Join(info.Remaining, ", "))
	}
	out := Completed{Kind: tok.kind, Username: info.Username, DeviceID: tok.deviceID}
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		if err := s.consume(ctx, tx, tok.id); err != nil {
			return err
		}
		acct, err := loadAccount(ctx, tx, "id = $1", tok.userID)
		if err != nil {
			return err
		}
		if tok.kind == KindEnrollment && !acct.hasPassword {
			return core.Conflict("steps_remaining", "", "finish these steps first: password")
		}
		if !acct.active && tok.kind == KindEnrollment {
			if _, err := tx.ExecContext(ctx, `UPDATE users SET active = TRUE, updated_at = $1 WHERE id = $2`, s.now().UnixMilli(), acct.id); err != nil {
				return fmt.Errorf("activate user: %w", err)
			}
			// The user's devices become peers of their locations.
			if err := s.vpn.SyncUserAccess(ctx, tx, acct.id, true); err != nil {
				return err
			}
			out.Activated = true
		}
		return core.Audit(ctx, tx, acct.actor(ip), "enrollment.complete", "user", acct.id, map[string]any{"kind": tok.kind, "activated": out.Activated, "device_id": tok.deviceID})
	})
	if err != nil {
		return Completed{}, err
	}
	return out, nil
}

func enrollmentMail(st core.Settings, acct account, kind, url string, expires int64) mail.Message {
	var subject, what string
	if kind == KindNewClient {
		subject = st.InstanceName + ": configure a new VPN client"
		what = "An administrator of " + st.InstanceName + " invited you to configure a new VPN client for your account " + acct.username + "."
	} else {
		subject = st.InstanceName + ": set up your account"
		what = "An administrator of " + st.InstanceName + " created the account " + acct.username + " for you. Set a password and configure your VPN client:"
	}
	text := fmt.Sprintf(`Hello %s,

%s

%s

The link works once and expires on %s.
With the ward command-line client:  ward client enroll %s

If you did not expect this mail, ignore it.
`, acct.greeting(), what, url, formatTime(expires), url)
	return mail.Message{To: acct.email, Subject: subject, Text: text}
}
