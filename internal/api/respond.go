// Package api is ward core's REST transport: JSON over net/http, session
// cookies with CSRF tokens or bearer API tokens, and a stable error shape
// {"error":{"code","message","field"}}.
package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/store"
)

// MaxBodyBytes bounds every request body.
const MaxBodyBytes = 1 << 20

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// apiError is a transport-level error with its own status.
type apiError struct {
	status  int
	code    string
	message string
	field   string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func badRequest(code, field, format string, args ...any) error {
	return &apiError{status: http.StatusBadRequest, code: code, field: field, message: fmt.Sprintf(format, args...)}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if v != nil {
		_ = json.NewEncoder(w).Encode(v)
	}
}

// WriteJSON writes v as a JSON response with the status, uncached. It is
// exported for the other HTTP transports of core (internal/public), so that
// every JSON API of ward answers alike.
func WriteJSON(w http.ResponseWriter, status int, v any) { writeJSON(w, status, v) }

// WriteError answers err in the JSON error shape, as the REST API does.
func WriteError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	writeError(w, r, log, err)
}

// Decode reads a JSON request body as the REST API does: JSON content type
// only, at most MaxBodyBytes, unknown fields rejected, exactly one value.
func Decode(w http.ResponseWriter, r *http.Request, v any) error { return decode(w, r, v) }

// StatusOf is the HTTP status of a kind of domain error; the web UI
// answers with the same ones.
func StatusOf(k core.Kind) int {
	switch k {
	case core.KindInvalid:
		return http.StatusBadRequest
	case core.KindNotFound:
		return http.StatusNotFound
	case core.KindConflict:
		return http.StatusConflict
	case core.KindForbidden:
		return http.StatusForbidden
	case core.KindUnauthenticated:
		return http.StatusUnauthorized
	case core.KindTooManyAttempts:
		return http.StatusTooManyRequests
	case core.KindUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// MessageOf is a domain error's message for people (its code, spelled out,
// when it has none).
func MessageOf(de *core.Error) string {
	if de.Message != "" {
		return de.Message
	}
	return strings.ReplaceAll(de.Code, "_", " ")
}

// writeError maps any error to a status and the JSON error shape. Unknown
// errors are logged and answered without detail: they may carry internals.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	var ae *apiError
	if errors.As(err, &ae) {
		writeJSON(w, ae.status, errorBody{errorDetail{Code: ae.code, Message: ae.message, Field: ae.field}})
		return
	}
	if de, ok := core.AsError(err); ok {
		status := StatusOf(de.Kind)
		if status == http.StatusTooManyRequests && de.RetryAfterSeconds > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(de.RetryAfterSeconds))
		}
		writeJSON(w, status, errorBody{errorDetail{Code: de.Code, Message: MessageOf(de), Field: de.Field}})
		return
	}
	if store.IsUnavailable(err) {
		// Not a bug: the database is away. Clients and load balancers retry.
		log.Warn("request failed: database unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, errorBody{errorDetail{Code: "database_unavailable", Message: "the database is unavailable; try again shortly"}})
		return
	}
	log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeJSON(w, http.StatusInternalServerError, errorBody{errorDetail{Code: "internal", Message: "internal error; see the core log"}})
}

// decode reads a JSON body into v: JSON content type only, bounded size,
// unknown fields rejected, exactly one value.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		return &apiError{status: http.StatusUnsupportedMediaType, code: "unsupported_media_type", message: "send the body as Content-Type: application/json"}
	}
	body := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return jsonError(err)
		}
		return badRequest("invalid_json", "", "the body must hold exactly one JSON value")
	}
	return nil
}

func jsonError(err error) error {
	var maxErr *http.MaxBytesError
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &maxErr):
		return &apiError{status: http.StatusRequestEntityTooLarge, code: "body_too_large", message: fmt.Sprintf("the body exceeds %d bytes", MaxBodyBytes)}
	case errors.Is(err, io.EOF):
		return badRequest("invalid_json", "", "the body is empty")
	case errors.As(err, &syntaxErr), errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("invalid_json", "", "malformed JSON: %v", err)
	case errors.As(err, &typeErr):
		return badRequest("invalid_json", typeErr.Field, "field %q must be %s", typeErr.Field, typeErr.Type.String())
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return badRequest("unknown_field", field, "unknown field %q", field)
	}
	return badRequest("invalid_json", "", "malformed JSON: %v", err)
}

// page is the envelope of every list response.
type page[T any] struct {
	Items  []T `json:"items"`
	Total  int `json:"total"`
	Limit  int `json:"limit"`
	Offset int `json:"offset"`
}

// pagination reads ?limit= (1-500, default 50) and ?offset= (>= 0).
func pagination(r *http.Request) (limit, offset int, err error) {
	limit, offset = 50, 0
	q := r.URL.Query()
	if s := q.Get("limit"); s != "" {
		limit, err = strconv.Atoi(s)
		if err != nil || limit < 1 || limit > 500 {
			return 0, 0, badRequest("invalid_query", "limit", "limit must be between 1 and 500")
		}
	}
	if s := q.Get("offset"); s != "" {
		offset, err = strconv.Atoi(s)
		if err != nil || offset < 0 {
			return 0, 0, badRequest("invalid_query", "offset", "offset must be 0 or more")
		}
	}
	return limit, offset, nil
}

func forbidden(msg string) error {
	return &apiError{status: http.StatusForbidden, code: "forbidden", message: msg}
}
