// Package core holds what every domain service shares: the error model, the
// acting principal, the audit log and instance settings. Domain packages never
// import transport code; transports map Kind to their own status codes.
package core

import (
	"errors"
	"fmt"
)

// Kind classifies domain errors so transports can choose a status without
// knowing every code. Callers branch with errors.Is(err, core.ErrNotFound).
type Kind int

const (
	KindInvalid Kind = iota + 1
	KindNotFound
	KindConflict
	KindForbidden
	KindUnauthenticated
	KindTooManyAttempts
	KindUnavailable
)

// Sentinels for errors.Is.
var (
	ErrInvalid         = &Error{Kind: KindInvalid, Code: "invalid"}
	ErrNotFound        = &Error{Kind: KindNotFound, Code: "not_found"}
	ErrConflict        = &Error{Kind: KindConflict, Code: "conflict"}
	ErrForbidden       = &Error{Kind: KindForbidden, Code: "forbidden"}
	ErrUnauthenticated = &Error{Kind: KindUnauthenticated, Code: "unauthenticated"}
	ErrTooManyAttempts = &Error{Kind: KindTooManyAttempts, Code: "too_many_attempts"}
	ErrUnavailable     = &Error{Kind: KindUnavailable, Code: "unavailable"}
)

// Error is a domain error with a stable machine-readable code, a message
// safe to show to the caller and, for validation errors, the offending field.
type Error struct {
	Kind    Kind
	Code    string
	Message string
	Field   string
	// RetryAfterSeconds is set on KindTooManyAttempts.
	RetryAfterSeconds int
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s (field %s)", e.Code, e.Message, e.Field)
	}
	if e.Message == "" {
		return e.Code
	}
	return e.Code + ": " + e.Message
}

// Is makes every *Error match the sentinel of its kind.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok {
		return false
	}
	if t.Code != "" && t == sentinelFor(t.Kind) {
		return e.Kind == t.Kind
	}
	return e.Kind == t.Kind && e.Code == t.Code
}

func sentinelFor(k Kind) *Error {
	switch k {
	case KindInvalid:
		return ErrInvalid
	case KindNotFound:
		return ErrNotFound
	case KindConflict:
		return ErrConflict
	case KindForbidden:
		return ErrForbidden
	case KindUnauthenticated:
		return ErrUnauthenticated
	case KindTooManyAttempts:
		return ErrTooManyAttempts
	case KindUnavailable:
		return ErrUnavailable
	}
	return nil
}

// Invalid reports bad input in one field.
func Invalid(code, field, format string, args ...any) *Error {
	return &Error{Kind: KindInvalid, Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

// NotFound reports a missing object; what is e.g. "device".
func NotFound(what string) *Error {
	return &Error{Kind: KindNotFound, Code: "not_found", Message: what + " not found"}
}

// Conflict reports a clash with existing state.
func Conflict(code, field, format string, args ...any) *Error {
	return &Error{Kind: KindConflict, Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

// Forbidden reports an authenticated caller acting beyond its rights.
func Forbidden(format string, args ...any) *Error {
	return &Error{Kind: KindForbidden, Code: "forbidden", Message: fmt.Sprintf(format, args...)}
}

// AsError extracts a domain error, if err carries one.
func AsError(err error) (*Error, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e, true
	}
	return nil, false
}
