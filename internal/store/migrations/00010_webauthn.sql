-- +goose Up
-- WebAuthn security keys and passkeys, a second factor at login.

-- A registered credential. credential_id is the authenticator's raw id and
-- public_key its COSE public key, both base64url (no padding), so the table
-- reads the same on SQLite and PostgreSQL. sign_count is the newest counter
-- the authenticator reported: an assertion is accepted only by an UPDATE
-- that moves it forward (or keeps both at 0, for authenticators without a
-- counter), so a cloned key is refused on every replica. flags are the
-- authenticator flags (UP, UV, BE, BS) of the last ceremony.
CREATE TABLE webauthn_credentials (
    id                 TEXT PRIMARY KEY,
    user_id            TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id      TEXT NOT NULL UNIQUE,
    public_key         TEXT NOT NULL,
    attestation_type   TEXT NOT NULL DEFAULT '',
    attestation_format TEXT NOT NULL DEFAULT '',
    aaguid             TEXT NOT NULL DEFAULT '',
    transports         TEXT NOT NULL DEFAULT '',
    attachment         TEXT NOT NULL DEFAULT '',
    sign_count         BIGINT NOT NULL DEFAULT 0,
    flags              INTEGER NOT NULL DEFAULT 0,
    name               TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    last_used_at       BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX webauthn_credentials_user ON webauthn_credentials (user_id);

-- A registration or login ceremony between its begin and finish calls,
-- which may reach different core replicas. data is go-webauthn's session
-- data (JSON, holding the challenge); a finish consumes the row with a
-- DELETE, so each ceremony completes at most once. session_id binds a login
-- ceremony to the session waiting for its second factor.
CREATE TABLE webauthn_ceremonies (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id TEXT NOT NULL DEFAULT '',
    data       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX webauthn_ceremonies_user ON webauthn_ceremonies (user_id, kind, created_at);
CREATE INDEX webauthn_ceremonies_expires ON webauthn_ceremonies (expires_at);

-- +goose Down
DROP TABLE webauthn_ceremonies;
DROP TABLE webauthn_credentials;
