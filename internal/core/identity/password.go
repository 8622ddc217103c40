package identity

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"

	"github.com/wardvpn/ward/internal/core"
)

// PasswordParams are the argon2id cost parameters for new hashes. Existing
// hashes carry their own parameters, so changing these never locks anyone out.
type PasswordParams struct {
	MemoryKiB uint32
	Time      uint32
	Threads   uint8
}

// DefaultPasswordParams follow OWASP's argon2id minimum (19 MiB, t=2, p=1),
// which keeps a burst of concurrent logins within the core's memory budget.
var DefaultPasswordParams = PasswordParams{MemoryKiB: 19 * 1024, Time: 2, Threads: 1}

// HashPassword returns a PHC-format argon2id hash.
func HashPassword(p PasswordParams, password string) string {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	key := argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, 32)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.MemoryKiB, p.Time, p.Threads,
		b64.EncodeToString(salt), b64.EncodeToString(key))
}

// VerifyPassword checks a password against a PHC argon2id hash in constant
// time. An empty or malformed hash never matches.
func VerifyPassword(hash, password string) bool {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || m == 0 || t == 0 || p == 0 || m > 1<<22 {
		return false
	}
	b64 := base64.RawStdEncoding
	salt, err := b64.DecodeString(parts[4])
	if err != nil {
		return false
	}
	want, err := b64.DecodeString(parts[5])
	if err != nil || len(want) == 0 {
		return false
	}
	got := argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// CheckPasswordStrength enforces the minimum length and rejects passwords
// made of a single character class; what counts is length more than symbols.
func CheckPasswordStrength(password string, minLen int) error {
	if len([]rune(password)) < minLen {
		return core.Invalid("weak_password", "password", "password must be at least %d characters", minLen)
	}
	if len(password) > 1024 {
		return core.Invalid("invalid_value", "password", "password must be at most 1024 bytes")
	}
	classes := 0
	for _, set := range []string{"abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789"} {
		if strings.ContainsAny(password, set) {
			classes++
		}
	}
	if strings.IndexFunc(password, func(r rune) bool {
		return !strings.ContainsRune("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", r)
	}) >= 0 {
		classes++
	}
	if classes < 2 {
		return core.Invalid("weak_password", "password", "password must mix at least two of: lower case, upper case, digits, symbols")
	}
	return nil
}
