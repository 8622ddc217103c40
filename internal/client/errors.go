package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
)

// Exit codes of `ward client`.
const (
	ExitOK          = 0
	ExitError       = 1 // unexpected error
	ExitUsage       = 2 // bad command line or input
	ExitAuth        = 3 // authentication or MFA refused (wrong code, expired token)
	ExitNotEnrolled = 4 // not enrolled, or unknown location
	ExitUnavailable = 5 // proxy or core unavailable (503, timeouts)
	ExitTunnel      = 6 // the tunnel could not be brought up
)

// Error is a failure with its exit code and a hint naming what to do next.
type Error struct {
	Code int
	Msg  string
	Hint string
	Err  error
}

func (e *Error) Error() string {
	s := e.Msg
	if e.Err != nil {
		if s != "" {
			s += ": "
		}
		s += e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// fail builds an *Error.
func fail(code int, hint string, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...), Hint: hint}
}

// wrap attaches a message and hint to err, keeping err's exit code when it
// has one (an *Error or an *APIError), else using code.
func wrap(err error, code int, hint, format string, args ...any) *Error {
	if c := exitCodeOf(err); c != ExitError {
		code = c
	}
	if hint == "" {
		var ce *Error
		if errors.As(err, &ce) {
			hint = ce.Hint
		}
	}
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...), Hint: hint, Err: err}
}

// usagef is a command-line mistake (exit code 2).
func usagef(format string, args ...any) *Error {
	return &Error{Code: ExitUsage, Msg: fmt.Sprintf(format, args...), Hint: "run `ward client help` for the commands and flags"}
}

// ExitCode maps any error to the exit code of `ward client`.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	return exitCodeOf(err)
}

func exitCodeOf(err error) int {
	var ce *Error
	if errors.As(err, &ce) {
		return ce.Code
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.ExitCode()
	}
	if isUnavailable(err) {
		return ExitUnavailable
	}
	return ExitError
}

// APIError is an error answer of the public API: {"error":{"code","message"}}.
type APIError struct {
	Status  int
	Code    string
	Message string
	Field   string
}

func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	if e.Code != "" {
		return fmt.Sprintf("%s (HTTP %d, %s)", msg, e.Status, e.Code)
	}
	return fmt.Sprintf("%s (HTTP %d)", msg, e.Status)
}

// authCodes are error codes that mean "you are not let in": a wrong or
// reused code, a used or expired token, a disabled account.
var authCodes = map[string]bool{
	"invalid_code": true, "code_used": true, "invalid_token": true, "token_expired": true, "token_used": true,
	"challenge_expired": true, "challenge_used": true, "too_many_attempts": true, "invalid_client_token": true,
	"account_disabled": true, "no_access": true, "method_not_configured": true, "mfa_not_enabled": true,
	"mfa_locked": true, "unauthenticated": true,
}

// ExitCode classifies the answer.
func (e *APIError) ExitCode() int {
	switch {
	case e.Status == http.StatusServiceUnavailable || e.Status == http.StatusBadGateway || e.Status == http.StatusGatewayTimeout,
		e.Code == "rate_limited":
		return ExitUnavailable
	case e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden || e.Status == http.StatusTooManyRequests:
		return ExitAuth
	case authCodes[e.Code]:
		return ExitAuth
	case e.Status == http.StatusNotFound:
		return ExitNotEnrolled
	case e.Code == "weak_password":
		return ExitUsage
	}
	return ExitError
}

// isUnavailable: the proxy could not be reached or did not answer in time.
func isUnavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return true // refused, unreachable, reset
	}
	var de *net.DNSError
	return errors.As(err, &de) || strings.Contains(err.Error(), "connection refused")
}

// hintFor proposes the next step for an API error.
func hintFor(e *APIError, what string) string {
	switch {
	case e.Code == "rate_limited":
		return "the proxy limits requests from your address; wait a few seconds and try again"
	case e.ExitCode() == ExitUnavailable:
		return "the VPN server is not reachable right now; try again in a minute, or ask your administrator whether it is down"
	case e.Code == "invalid_code" || e.Code == "code_used":
		return "wait for the next code of your authenticator app and run the command again"
	case e.Code == "too_many_attempts" || e.Status == http.StatusTooManyRequests:
		return "too many attempts: wait a few minutes before trying again"
	case e.Code == "challenge_expired" || e.Code == "challenge_used":
		return "run the command again to start a new MFA login"
	case e.Code == "invalid_client_token":
		return "this device is no longer enrolled (it may have been deleted); ask your administrator for a new enrollment token and run `ward client enroll --force ...`"
	case e.Code == "invalid_token" || e.Code == "token_expired" || e.Code == "token_used":
		return "ask your administrator for a new enrollment token"
	case e.Code == "method_not_configured":
		return "set up TOTP first (enroll with --totp), or use --method email"
	case e.Code == "account_disabled":
		return "your account is disabled; contact your administrator"
	case e.Code == "weak_password":
		return "choose a longer password that mixes letters, digits or symbols"
	case e.Status == http.StatusNotFound && what == "location":
		return "run `ward client sync` to refresh the list of locations"
	}
	return ""
}
