// Package vpnsession implements VPN MFA for locations with MFA mode
// "internal": a device starts a challenge (TOTP or an e-mailed code), finishes
// it with a valid code and gets a VPN session with a fresh preshared key that
// every gateway of the location installs as the device's peer; the answer
// comes once the connected gateways have acknowledged that revision. The
// disconnect-threshold sweep closes sessions that never connected or went
// quiet, which removes their peers again.
//
// Every piece of login state (challenges, attempt counters, sessions) lives
// in the database, so any core replica can finish what another started, and
// every transition is a conditional UPDATE, so replicas running the same work
// at once do it once.
package vpnsession

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"time"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/groupcommit"
	"github.com/wardvpn/ward/internal/store"
)

// MFA methods.
const (
	MethodTOTP  = "totp"
	MethodEmail = "email"
)

// Session states.
const (
	StateNew          = "new"
	StateConnected    = "connected"
	StateDisconnected = "disconnected"
)

// Close reasons.
const (
	ReasonReplaced       = "replaced"        // a newer MFA login of the device
	ReasonNeverConnected = "never_connected" // no handshake within the threshold
	ReasonInactive       = "inactive"        // newest handshake older than the threshold
	ReasonMFADisabled    = "mfa_disabled"    // the location no longer requires MFA
	ReasonAccessRevoked  = "access_revoked"  // user disabled, device lost its address or changed key
)

// Error codes specific to this package (see core.Error.Code).
const (
	CodeGatewaysNotAcknowledged = "gateways_not_acknowledged"
	CodeNoGatewayConnected      = "no_gateway_connected"
	CodeInvalidCode             = "invalid_code"
	CodeInvalidToken            = "invalid_token"
	CodeChallengeExpired        = "challenge_expired"
	CodeChallengeUsed           = "challenge_used"
	CodeTooManyAttempts         = "too_many_attempts"
	CodeMFANotEnabled           = "mfa_not_enabled"
	CodeMethodUnavailable       = "method_unavailable"
	CodeMethodNotConfigured     = "method_not_configured"
	CodeEmailNotSent            = "email_not_sent"
	CodeNoAccess                = "no_access"
	CodeAccountDisabled         = "account_disabled"
)

// Defaults of Options.
const (
	DefaultChallengeTTL = 5 * time.Minute
	DefaultMaxAttempts  = 5
	DefaultMaxStarts    = 10
	DefaultAckTimeout   = 10 * time.Second
	DefaultAckPoll      = 20 * time.Millisecond
	// ChallengeRetention is how long finished or expired challenges are kept
	// (for the start rate limit and for inspection) before the sweep purges
	// them.
	ChallengeRetention = 24 * time.Hour
)

// CodeVerifier checks a user's TOTP code. It returns nil when the code is
// valid and has not been used before (the implementation keeps replay
// protection, in the database); any error means the code is not accepted,
// and the attempt counts against the challenge either way. Domain errors
// (*core.Error) reach the caller with their code (e.g. a replayed code, a
// lockout); any other error is reported as a wrong code, except context
// errors.
//
// An implementation may also offer HasTOTP(ctx, userID) (bool, error) (as
// core/mfa does): then Start refuses method totp for users without TOTP.
type CodeVerifier interface {
	VerifyTOTP(ctx context.Context, userID, code string) error
}

// totpConfigured is the optional extension of CodeVerifier.
type totpConfigured interface {
	HasTOTP(ctx context.Context, userID string) (bool, error)
}

// CodeMail is an e-mail MFA code to deliver.
type CodeMail struct {
	UserID       string
	Username     string
	Email        string
	LocationID   string
	LocationName string
	DeviceName   string
	Code         string
	ExpiresAt    time.Time
}

// Mailer delivers e-mail MFA codes.
type Mailer interface {
	SendVPNCode(ctx context.Context, m CodeMail) error
}

// Options configure a Service; zero fields take the defaults.
type Options struct {
	// Verifier checks TOTP codes; nil makes method totp unavailable.
	Verifier CodeVerifier
	// Mailer sends e-mail codes; nil makes method email unavailable.
	Mailer Mailer
	// ChallengeTTL is how long a started challenge can be finished.
	ChallengeTTL time.Duration
	// MaxAttempts is how many codes one challenge accepts before it is dead.
	MaxAttempts int
	// MaxStarts limits the challenges of one device and location within one
	// ChallengeTTL (bounds e-mails sent and codes guessed).
	MaxStarts int
	// AckTimeout bounds how long Finish waits for the gateways.
	AckTimeout time.Duration
	// AckPoll is how often Finish reads the gateways' applied revisions.
	AckPoll time.Duration
	Log     *slog.Logger
	// Now is the clock for challenges and sessions (tests); nil = time.Now.
	Now func() time.Time
}

// Service runs VPN MFA logins and the session sweep.
type Service struct {
	db       *store.DB
	vpn      *vpn.Service
	tokenKey []byte
	opts     Options
	log      *slog.Logger
	auth     *groupcommit.Queue[challengeRow, authResult]
	starts   *groupcommit.Queue[startRequest, startResult]
}

// New builds the service. vpnSvc must be the process's VPN service, so that
// revision bumps wake this process's gateway streams; inst supplies the key
// under which challenge tokens and codes are stored.
func New(db *store.DB, vpnSvc *vpn.Service, inst core.Instance, opts Options) *Service {
	if opts.ChallengeTTL <= 0 {
		opts.ChallengeTTL = DefaultChallengeTTL
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if opts.MaxStarts <= 0 {
		opts.MaxStarts = DefaultMaxStarts
	}
	if opts.AckTimeout <= 0 {
		opts.AckTimeout = DefaultAckTimeout
	}
	if opts.AckPoll <= 0 {
		opts.AckPoll = DefaultAckPoll
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{db: db, vpn: vpnSvc, tokenKey: inst.TokenKey, opts: opts, log: log}
	s.auth, s.starts = s.newAuthQueue(), s.newStartQueue()
	return s
}

func (s *Service) now() int64 { return s.opts.Now().UnixMilli() }

// mac is how tokens and codes are stored: HMAC-SHA256 under the instance key,
// with a purpose prefix so a value of one kind never matches another.
func (s *Service) mac(parts ...string) string {
	m := hmac.New(sha256.New, s.tokenKey)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return hex.EncodeToString(m.Sum(nil))
}

func (s *Service) tokenHash(token string) string { return s.mac("vpn-mfa-token", token) }

func (s *Service) codeHash(challengeID, code string) string {
	return s.mac("vpn-mfa-email-code", challengeID, code)
}

func domainError(kind core.Kind, code, format string, args ...any) *core.Error {
	return &core.Error{Kind: kind, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Session is a VPN session of a device in a location.
type Session struct {
	ID         string `json:"id"`
	LocationID string `json:"location_id"`
	DeviceID   string `json:"device_id"`
	UserID     string `json:"user_id"`
	PublicKey  string `json:"public_key"`
	Method     string `json:"method"`
	State      string `json:"state"`
	// PresharedKey is only returned by Finish, to the client it belongs to.
	PresharedKey string `json:"preshared_key,omitempty"`
	// Revision is the location revision that installed the session's peer.
	Revision    int64  `json:"revision"`
	CreatedAt   int64  `json:"created_at"`
	ConnectedAt int64  `json:"connected_at,omitempty"`
	ClosedAt    int64  `json:"closed_at,omitempty"`
	CloseReason string `json:"close_reason,omitempty"`
	// DisconnectThreshold is the location's threshold in seconds: a session
	// whose newest handshake is older is closed.
	DisconnectThreshold int `json:"disconnect_threshold"`
	// ConnectBy (Unix ms) is, for a new session, the deadline for its first
	// handshake; 0 once connected or closed.
	ConnectBy int64 `json:"connect_by,omitempty"`
}

// Challenge is a started MFA login.
type Challenge struct {
	// Token identifies the challenge in Finish; it is shown once.
	Token     string `json:"token"`
	Method    string `json:"method"`
	ExpiresAt int64  `json:"expires_at"`
}

// GatewayLag names a connected gateway that has not applied a revision.
type GatewayLag struct {
	ID              string `json:"id"`
	Name            string `json:"name"`
	AppliedRevision int64  `json:"applied_revision"`
}

// AckError is returned by Finish together with a valid session when the
// gateways did not confirm the session's peer: no gateway is connected
// (CodeNoGatewayConnected) or some lagged past the timeout
// (CodeGatewaysNotAcknowledged). It unwraps to a *core.Error of kind
// core.KindUnavailable.
type AckError struct {
	Err      *core.Error
	Revision int64
	Lagging  []GatewayLag
}

func (e *AckError) Error() string { return e.Err.Error() }

// Unwrap exposes the domain error.
func (e *AckError) Unwrap() error { return e.Err }
