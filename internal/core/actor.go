package core

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"

	"github.com/google/uuid"
)

// Actor is who performs an operation, carried into every service call so the
// audit log can say who did what from where.
type Actor struct {
	UserID   string
	Username string
	IsAdmin  bool
	IP       string
	// System marks work done by ward itself (bootstrap, CLI on the database).
	System bool
}

// SystemActor is ward acting on its own, e.g. at first start.
func SystemActor(what string) Actor {
	return Actor{Username: what, IsAdmin: true, System: true}
}

// NewID returns a time-ordered unique id (UUIDv7), so lists sorted by id are
// sorted by creation.
func NewID() string {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return id.String()
}

// RandomToken returns n random bytes, URL-safe base64 encoded.
func RandomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// RandomHex returns n random bytes, hex encoded.
func RandomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
