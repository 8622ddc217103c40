package identity

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/crypto/argon2"

	"github.com/wardvpn/ward/internal/core"
)

// cheap keeps the tests fast; the format is the same as with the defaults.
var cheap = PasswordParams{MemoryKiB: 64, Time: 1, Threads: 1}

func TestHashVerifyRoundTrip(t *testing.T) {
	passwords := []string{"correct horse battery staple", "x", "", "pässwörd-ünïcödé-🔑", strings.Repeat("long", 256), "with$dollar$signs"}
	for _, pw := range passwords {
		h := HashPassword(cheap, pw)
		if !strings.HasPrefix(h, fmt.Sprintf("$argon2id$v=%d$m=64,t=1,p=1$", argon2.Version)) {
			t.Fatalf("hash %q has an unexpected prefix", h)
		}
		if !VerifyPassword(h, pw) {
			t.Errorf("VerifyPassword(HashPassword(%q)) = false", pw)
		}
		for _, wrong := range []string{pw + "x", strings.ToUpper(pw) + "!", " " + pw, "wrong"} {
			if wrong != pw && VerifyPassword(h, wrong) {
				t.Errorf("hash of %q verified %q", pw, wrong)
			}
		}
	}
	// The default parameters produce a verifiable hash too.
	h := HashPassword(DefaultPasswordParams, "Default-params-1")
	if !strings.Contains(h, "$m=19456,t=2,p=1$") || !VerifyPassword(h, "Default-params-1") || VerifyPassword(h, "Default-params-2") {
		t.Fatalf("default parameters: hash %q", h)
	}
}

func TestHashIsSalted(t *testing.T) {
	a, b := HashPassword(cheap, "same password"), HashPassword(cheap, "same password")
	if a == b {
		t.Fatal("two hashes of one password are equal: no random salt")
	}
	salt := strings.Split(a, "$")[4]
	raw, err := base64.RawStdEncoding.DecodeString(salt)
	if err != nil || len(raw) != 16 {
		t.Fatalf("salt %q: %d bytes, %v", salt, len(raw), err)
	}
}

// phc builds a hash by hand, the way another implementation or an older
// version of ward would store it.
func phc(m, tm uint32, p uint8, keyLen uint32, password string) string {
	salt := []byte("0123456789abcdef")
	key := argon2.IDKey([]byte(password), salt, tm, m, p, keyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, m, tm, p, b64.EncodeToString(salt), b64.EncodeToString(key))
}

func TestVerifyHonoursEmbeddedParameters(t *testing.T) {
	tests := []struct {
		m      uint32
		t      uint32
		p      uint8
		keyLen uint32
	}{
		{8, 1, 1, 32},
		{32, 3, 1, 32},
		{64, 1, 2, 32},
		{128, 2, 4, 16},
		{64, 1, 1, 64},
	}
	for _, tt := range tests {
		name := fmt.Sprintf("m=%d,t=%d,p=%d,len=%d", tt.m, tt.t, tt.p, tt.keyLen)
		t.Run(name, func(t *testing.T) {
			h := phc(tt.m, tt.t, tt.p, tt.keyLen, "S3cret-password")
			if !VerifyPassword(h, "S3cret-password") {
				t.Fatalf("hash with %s does not verify", name)
			}
			if VerifyPassword(h, "S3cret-passwore") {
				t.Fatal("wrong password verified")
			}
			// Changing a parameter in the string changes the derived key.
			for _, mod := range []string{
				fmt.Sprintf("m=%d,t=%d,p=%d", tt.m*2, tt.t, tt.p),
				fmt.Sprintf("m=%d,t=%d,p=%d", tt.m, tt.t+1, tt.p),
				fmt.Sprintf("m=%d,t=%d,p=%d", tt.m, tt.t, tt.p+1),
			} {
				parts := strings.Split(h, "$")
				parts[3] = mod
				if VerifyPassword(strings.Join(parts, "$"), "S3cret-password") {
					t.Errorf("hash with parameters changed to %s still verifies", mod)
				}
			}
		})
	}
	// Hashes made with other parameters keep working after the defaults change.
	old := HashPassword(PasswordParams{MemoryKiB: 16, Time: 4, Threads: 2}, "Older-hash-1")
	if !VerifyPassword(old, "Older-hash-1") {
		t.Fatal("a hash with non-default parameters does not verify")
	}
}

func TestVerifyRejectsMalformedHashes(t *testing.T) {
	const pw = "S3cret-password"
	good := phc(16, 1, 1, 32, pw)
	if !VerifyPassword(good, pw) {
		t.Fatal("fixture does not verify")
	}
	parts := strings.Split(good, "$") // "", argon2id, v=19, m=..., salt, key
	with := func(i int, v string) string {
		p := append([]string(nil), parts...)
		p[i] = v
		return strings.Join(p, "$")
	}
	bad := map[string]string{
		"empty":                 "",
		"plain text":            pw,
		"bcrypt":                "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy",
		"argon2i":               with(1, "argon2i"),
		"argon2d":               with(1, "argon2d"),
		"upper-case algorithm":  with(1, "ARGON2ID"),
		"version 16":            with(2, "v=16"),
		"no version":            with(2, "v="),
		"garbled version":       with(2, "version=19"),
		"memory 0":              with(3, "m=0,t=1,p=1"),
		"time 0":                with(3, "m=16,t=0,p=1"),
		"threads 0":             with(3, "m=16,t=1,p=0"),
		"threads over 255":      with(3, "m=16,t=1,p=256"),
		"memory over 4 GiB cap": with(3, "m=4194305,t=1,p=1"),
		"negative memory":       with(3, "m=-1,t=1,p=1"),
		"parameters reordered":  with(3, "t=1,m=16,p=1"),
		"parameters missing":    with(3, "m=16"),
		"salt not base64":       with(4, "!!!!"),
		"salt padded base64":    with(4, parts[4]+"=="),
		"key not base64":        with(5, "@@@@"),
		"empty key":             with(5, ""),
		"truncated key":         with(5, parts[5][:len(parts[5])-4]),
		"other key":             with(5, base64.RawStdEncoding.EncodeToString(make([]byte, 32))),
		"missing field":         strings.Join(parts[:5], "$"),
		"extra field":           good + "$extra",
		"no leading dollar":     strings.TrimPrefix(good, "$"),
	}
	for name, h := range bad {
		t.Run(name, func(t *testing.T) {
			if VerifyPassword(h, pw) {
				t.Fatalf("malformed hash %q verified", h)
			}
			if VerifyPassword(h, "") {
				t.Fatalf("malformed hash %q verified the empty password", h)
			}
		})
	}
}

func TestCheckPasswordStrength(t *testing.T) {
	tests := []struct {
		name     string
		password string
		minLen   int
		wantCode string // "" = accepted
	}{
		{"lower and digits", "abcdefgh1234", 12, ""},
		{"lower and upper", "abcdefGHIJKL", 12, ""},
		{"lower and symbol", "abcdefghijk!", 12, ""},
		{"space counts as symbol", "correct horse battery", 12, ""},
		{"upper and digits", "ABCDEFGH1234", 12, ""},
		{"four classes", "Ab1!Ab1!Ab1!", 12, ""},
		{"only lower", "abcdefghijklmnop", 12, "weak_password"},
		{"only upper", "ABCDEFGHIJKLMNOP", 12, "weak_password"},
		{"only digits", "1234567890123456", 12, "weak_password"},
		{"only symbols", "!@#$%^&*()_+-=[]", 12, "weak_password"},
		{"too short", "Ab1!Ab1!Ab1", 12, "weak_password"},
		{"empty", "", 8, "weak_password"},
		{"exactly the minimum", "Abcdefgh", 8, ""},
		{"one below the minimum", "Abcdefg", 8, "weak_password"},
		{"length counts characters, not bytes", "ääääääää", 8, "weak_password"},
		{"non-ASCII letters are symbols", "ääääääääa", 9, ""},
		{"multi-byte short", "äÄ1äÄ1", 8, "weak_password"},
		{"1024 bytes", strings.Repeat("a", 1023) + "1", 12, ""},
		{"1025 bytes", strings.Repeat("a", 1024) + "1", 12, "invalid_value"},
		{"too long multi-byte", strings.Repeat("ä", 600), 12, "invalid_value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckPasswordStrength(tt.password, tt.minLen)
			if tt.wantCode == "" {
				if err != nil {
					t.Fatalf("CheckPasswordStrength(%q, %d) = %v, want accepted", tt.password, tt.minLen, err)
				}
				return
			}
			de, ok := core.AsError(err)
			if !ok || de.Kind != core.KindInvalid || de.Code != tt.wantCode || de.Field != "password" {
				t.Fatalf("CheckPasswordStrength(%q, %d) = %v, want invalid %s on field password", tt.password, tt.minLen, err, tt.wantCode)
			}
		})
	}
}
