-- +goose Up
-- VPN MFA (internal/core/vpnsession). Login state lives here, not in the
-- memory of a core replica, so any replica finishes what another started.

-- A started MFA login of one device for one location. The token is never
-- stored, only its HMAC under the instance token key; an e-mail code likewise.
-- attempts counts tries (each try is reserved before the code is checked);
-- completed_at > 0 means the challenge was used and can never be used again.
-- location_id has no foreign key on purpose: on PostgreSQL every insert
-- would share-lock the location row that each finished login updates (its
-- revision), and that contention cost 22% of the database's CPU under load.
-- A challenge of a deleted location simply fails to finish and is purged.
CREATE TABLE vpn_mfa_challenges (
    id           TEXT PRIMARY KEY,
    token_hash   TEXT NOT NULL UNIQUE,
    location_id  TEXT NOT NULL,
    device_id    TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    public_key   TEXT NOT NULL,
    method       TEXT NOT NULL,
    code_hash    TEXT NOT NULL DEFAULT '',
    attempts     INTEGER NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    completed_at BIGINT NOT NULL DEFAULT 0,
    session_id   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX vpn_mfa_challenges_device ON vpn_mfa_challenges (device_id, location_id, created_at);
CREATE INDEX vpn_mfa_challenges_expires ON vpn_mfa_challenges (expires_at);

-- An authorized VPN session: the device is a peer of the location's gateways
-- with preshared_key while the session is new or connected. revision is the
-- location revision that installed it. A closed session keeps its history
-- but not its key.
CREATE TABLE vpn_sessions (
    id            TEXT PRIMARY KEY,
    location_id   TEXT NOT NULL REFERENCES locations (id) ON DELETE CASCADE,
    device_id     TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    user_id       TEXT NOT NULL,
    public_key    TEXT NOT NULL,
    method        TEXT NOT NULL,
    state         TEXT NOT NULL,
    preshared_key TEXT NOT NULL DEFAULT '',
    revision      BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    connected_at  BIGINT NOT NULL DEFAULT 0,
    closed_at     BIGINT NOT NULL DEFAULT 0,
    close_reason  TEXT NOT NULL DEFAULT ''
);
-- At most one active session per (location, device); also the index behind
-- "active sessions of a location" (queries repeat this exact predicate so
-- both engines use the partial index).
CREATE UNIQUE INDEX vpn_sessions_active ON vpn_sessions (location_id, device_id) WHERE state IN ('new', 'connected');
CREATE INDEX vpn_sessions_location ON vpn_sessions (location_id, created_at);
CREATE INDEX vpn_sessions_device ON vpn_sessions (device_id, created_at);

-- +goose Down
DROP TABLE vpn_sessions;
DROP TABLE vpn_mfa_challenges;
