-- +goose Up
-- One dialect for SQLite and PostgreSQL: TEXT ids (UUIDv7), BIGINT Unix
-- milliseconds for times, BOOLEAN flags, no engine-specific defaults.

CREATE TABLE instance (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    email         TEXT NOT NULL UNIQUE,
    first_name    TEXT NOT NULL DEFAULT '',
    last_name     TEXT NOT NULL DEFAULT '',
    phone         TEXT NOT NULL DEFAULT '',
    active        BOOLEAN NOT NULL DEFAULT TRUE,
    password_hash TEXT NOT NULL DEFAULT '',
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE groups (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    is_admin    BOOLEAN NOT NULL DEFAULT FALSE,
    description TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id  TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members (user_id);

CREATE TABLE locations (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    ipv4_cidr            TEXT NOT NULL DEFAULT '',
    ipv6_cidr            TEXT NOT NULL DEFAULT '',
    listen_port          INTEGER NOT NULL,
    endpoint             TEXT NOT NULL,
    extra_endpoints      TEXT NOT NULL DEFAULT '',
    allowed_ips          TEXT NOT NULL DEFAULT '',
    dns                  TEXT NOT NULL DEFAULT '',
    keepalive            INTEGER NOT NULL,
    mtu                  INTEGER NOT NULL,
    fwmark               INTEGER NOT NULL DEFAULT 0,
    mfa_mode             TEXT NOT NULL,
    disconnect_threshold INTEGER NOT NULL,
    all_groups           BOOLEAN NOT NULL,
    private_key          TEXT NOT NULL,
    public_key           TEXT NOT NULL,
    revision             BIGINT NOT NULL,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);

CREATE TABLE location_groups (
    location_id TEXT NOT NULL REFERENCES locations (id) ON DELETE CASCADE,
    group_id    TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    PRIMARY KEY (location_id, group_id)
);
CREATE INDEX location_groups_group ON location_groups (group_id);

CREATE TABLE devices (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    location_id TEXT REFERENCES locations (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    public_key  TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (user_id, name)
);
CREATE INDEX devices_location ON devices (location_id);

-- One address per device, location and address family. host_index is the
-- offset inside the location's network, which makes "lowest free" and
-- uniqueness cheap index operations on both engines.
CREATE TABLE device_addresses (
    device_id   TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    location_id TEXT NOT NULL REFERENCES locations (id) ON DELETE CASCADE,
    family      INTEGER NOT NULL,
    host_index  BIGINT NOT NULL,
    address     TEXT NOT NULL,
    PRIMARY KEY (device_id, location_id, family),
    UNIQUE (location_id, family, host_index)
);
CREATE INDEX device_addresses_location ON device_addresses (location_id, family);

-- Every change that affects a location's gateways appends a row here in the
-- same transaction that bumps locations.revision, so gateways can be sent the
-- ordered changes since the revision they have applied.
CREATE TABLE location_changes (
    location_id TEXT NOT NULL REFERENCES locations (id) ON DELETE CASCADE,
    revision    BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    subject_id  TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (location_id, revision)
);

CREATE TABLE gateways (
    id              TEXT PRIMARY KEY,
    location_id     TEXT NOT NULL REFERENCES locations (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    control_address TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (location_id, name)
);

CREATE TABLE proxies (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    control_address TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE settings (
    id         INTEGER PRIMARY KEY,
    data       TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL DEFAULT 0,
    last_used_at BIGINT NOT NULL DEFAULT 0,
    UNIQUE (user_id, name)
);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    token_hash   TEXT NOT NULL UNIQUE,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token   TEXT NOT NULL,
    ip           TEXT NOT NULL DEFAULT '',
    user_agent   TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE login_attempts (
    login_key        TEXT PRIMARY KEY,
    failures         INTEGER NOT NULL,
    first_failure_at BIGINT NOT NULL,
    locked_until     BIGINT NOT NULL
);

CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor_id    TEXT NOT NULL DEFAULT '',
    actor       TEXT NOT NULL DEFAULT '',
    action      TEXT NOT NULL,
    target_type TEXT NOT NULL DEFAULT '',
    target_id   TEXT NOT NULL DEFAULT '',
    ip          TEXT NOT NULL DEFAULT '',
    details     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_action ON audit_log (action, at);

-- +goose Down
DROP TABLE audit_log;
DROP TABLE login_attempts;
DROP TABLE sessions;
DROP TABLE api_tokens;
DROP TABLE settings;
DROP TABLE proxies;
DROP TABLE gateways;
DROP TABLE location_changes;
DROP TABLE device_addresses;
DROP TABLE devices;
DROP TABLE location_groups;
DROP TABLE locations;
DROP TABLE group_members;
DROP TABLE groups;
DROP TABLE users;
DROP TABLE instance;
