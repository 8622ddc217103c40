// Package webauthntest is a software WebAuthn authenticator and client for
// tests: it answers the options ward's begin calls return the way a browser
// with a security key would (ES256 keys, "none" attestation), producing the
// JSON a browser posts to the finish calls.
package webauthntest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/go-webauthn/webauthn/protocol/webauthncbor"
	"github.com/go-webauthn/webauthn/protocol/webauthncose"
)

// Authenticator holds credentials like a security key and plays the
// browser's part for one origin.
type Authenticator struct {
	// Origin is what the "browser" puts into clientDataJSON.
	Origin string
	// AAGUID names the authenticator model.
	AAGUID [16]byte
	// UserVerified sets the UV flag (a PIN or biometric was checked).
	UserVerified bool
	// BackupEligible sets the BE flag (a syncable passkey).
	BackupEligible bool
	// Transports are reported at registration.
	Transports []string

	mu    sync.Mutex
	creds map[string]*credential // by base64url id
	last  string
}

type credential struct {
	id         []byte
	key        *ecdsa.PrivateKey
	rpID       string
	userHandle []byte
	count      uint32
}

// New returns an authenticator for origin (e.g. "http://localhost:8000")
// with user verification and a fixed AAGUID.
func New(origin string) *Authenticator {
	return &Authenticator{Origin: origin, UserVerified: true, Transports: []string{"usb"},
		AAGUID: [16]byte{0x77, 0x61, 0x72, 0x64, 0x2d, 0x74, 0x65, 0x73, 0x74, 0x2d, 0x6b, 0x65, 0x79, 0x00, 0x00, 0x01},
		creds:  map[string]*credential{}}
}

var b64 = base64.RawURLEncoding

// creationOptions is the part of PublicKeyCredentialCreationOptions used.
type creationOptions struct {
	PublicKey struct {
		RP struct {
			ID string `json:"id"`
		} `json:"rp"`
		User struct {
			ID string `json:"id"`
		} `json:"user"`
		Challenge          string `json:"challenge"`
		ExcludeCredentials []struct {
			ID string `json:"id"`
		} `json:"excludeCredentials"`
	} `json:"publicKey"`
}

// requestOptions is the part of PublicKeyCredentialRequestOptions used.
type requestOptions struct {
	PublicKey struct {
		RPID             string `json:"rpId"`
		Challenge        string `json:"challenge"`
		AllowCredentials []struct {
			ID string `json:"id"`
		} `json:"allowCredentials"`
	} `json:"publicKey"`
}

// Create answers registration options (the JSON {"publicKey": {...}} a
// begin call returns) like navigator.credentials.create, returning the
// PublicKeyCredential as JSON.
func (a *Authenticator) Create(optionsJSON []byte) ([]byte, error) {
	var o creationOptions
	if err := json.Unmarshal(optionsJSON, &o); err != nil {
		return nil, fmt.Errorf("creation options: %w", err)
	}
	challenge, err := b64.DecodeString(o.PublicKey.Challenge)
	if err != nil || len(challenge) == 0 {
		return nil, fmt.Errorf("creation options: bad challenge %q", o.PublicKey.Challenge)
	}
	handle, err := b64.DecodeString(o.PublicKey.User.ID)
	if err != nil {
		return nil, fmt.Errorf("creation options: bad user id %q", o.PublicKey.User.ID)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ex := range o.PublicKey.ExcludeCredentials {
		if _, ok := a.creds[ex.ID]; ok {
			return nil, errors.New("InvalidStateError: this authenticator holds an excluded credential")
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	c := &credential{id: make([]byte, 32), key: key, rpID: o.PublicKey.RP.ID, userHandle: handle}
	if _, err := rand.Read(c.id); err != nil {
		return nil, err
	}
	cose, err := coseKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	// attested credential data: AAGUID, id length, id, COSE key
	att := append([]byte{}, a.AAGUID[:]...)
	att = binary.BigEndian.AppendUint16(att, uint16(len(c.id)))
	att = append(att, c.id...)
	att = append(att, cose...)
	authData := a.authData(c.rpID, 0x40, c.count, att)
	attObj, err := webauthncbor.Marshal(map[string]any{"fmt": "none", "attStmt": map[string]any{}, "authData": authData})
	if err != nil {
		return nil, err
	}
	clientData, err := a.clientData("webauthn.create", challenge)
	if err != nil {
		return nil, err
	}
	id := b64.EncodeToString(c.id)
	a.creds[id] = c
	a.last = id
	transports := a.Transports
	if transports == nil {
		transports = []string{}
	}
	return json.Marshal(map[string]any{
		"id": id, "rawId": id, "type": "public-key", "authenticatorAttachment": "cross-platform",
		"clientExtensionResults": map[string]any{},
		"response": map[string]any{
			"clientDataJSON":    b64.EncodeToString(clientData),
			"attestationObject": b64.EncodeToString(attObj),
			"transports":        transports,
		},
	})
}

// Get answers login options (the JSON {"publicKey": {...}} a begin call
// returns) like navigator.credentials.get, with the first allowed
// credential it holds.
func (a *Authenticator) Get(optionsJSON []byte) ([]byte, error) {
	var o requestOptions
	if err := json.Unmarshal(optionsJSON, &o); err != nil {
		return nil, fmt.Errorf("request options: %w", err)
	}
	challenge, err := b64.DecodeString(o.PublicKey.Challenge)
	if err != nil || len(challenge) == 0 {
		return nil, fmt.Errorf("request options: bad challenge %q", o.PublicKey.Challenge)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var c *credential
	for _, allowed := range o.PublicKey.AllowCredentials {
		if found, ok := a.creds[allowed.ID]; ok && found.rpID == o.PublicKey.RPID {
			c = found
			break
		}
	}
	if c == nil {
		return nil, errors.New("NotAllowedError: no credential of this authenticator is allowed")
	}
	c.count++
	authData := a.authData(c.rpID, 0, c.count, nil)
	clientData, err := a.clientData("webauthn.get", challenge)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(clientData)
	digest := sha256.Sum256(append(append([]byte{}, authData...), sum[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, c.key, digest[:])
	if err != nil {
		return nil, err
	}
	id := b64.EncodeToString(c.id)
	return json.Marshal(map[string]any{
		"id": id, "rawId": id, "type": "public-key", "authenticatorAttachment": "cross-platform",
		"clientExtensionResults": map[string]any{},
		"response": map[string]any{
			"clientDataJSON":    b64.EncodeToString(clientData),
			"authenticatorData": b64.EncodeToString(authData),
			"signature":         b64.EncodeToString(sig),
			"userHandle":        b64.EncodeToString(c.userHandle),
		},
	})
}

// LastCredentialID is the base64url id of the newest credential.
func (a *Authenticator) LastCredentialID() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

// SetSignCount sets a credential's counter (the next answer reports n+1),
// e.g. to play a cloned key.
func (a *Authenticator) SetSignCount(credentialID string, n uint32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c, ok := a.creds[credentialID]; ok {
		c.count = n
	}
}

func (a *Authenticator) authData(rpID string, extraFlags byte, count uint32, attested []byte) []byte {
	rpHash := sha256.Sum256([]byte(rpID))
	flags := byte(0x01) | extraFlags // UP
	if a.UserVerified {
		flags |= 0x04
	}
	if a.BackupEligible {
		flags |= 0x08
	}
	out := append([]byte{}, rpHash[:]...)
	out = append(out, flags)
	out = binary.BigEndian.AppendUint32(out, count)
	return append(out, attested...)
}

func (a *Authenticator) clientData(typ string, challenge []byte) ([]byte, error) {
	return json.Marshal(map[string]any{"type": typ, "challenge": b64.EncodeToString(challenge), "origin": a.Origin, "crossOrigin": false})
}

func coseKey(pub *ecdsa.PublicKey) ([]byte, error) {
	raw, err := pub.Bytes() // 0x04 || X || Y
	if err != nil {
		return nil, err
	}
	return webauthncbor.Marshal(webauthncose.EC2PublicKeyData{
		PublicKeyData: webauthncose.PublicKeyData{KeyType: int64(webauthncose.EllipticKey), Algorithm: int64(webauthncose.AlgES256)},
		Curve:         int64(webauthncose.P256), XCoord: raw[1:33], YCoord: raw[33:65],
	})
}
