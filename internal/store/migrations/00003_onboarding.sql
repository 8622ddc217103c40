-- +goose Up
-- Onboarding: TOTP, recovery codes, enrollment / new-client / password-reset
-- tokens, client sync tokens and rate-limit counters. Every secret is stored
-- as an HMAC under the instance token key, except the TOTP secret, which the
-- server needs in clear to compute codes.

-- A user's TOTP secret. enabled is FALSE between setup and confirmation.
-- last_step is the newest accepted time step: a code is accepted only by an
-- UPDATE that moves it forward (replay protection across core replicas).
-- failures / first_failure_at / locked_until count wrong codes like
-- login_attempts does for passwords.
CREATE TABLE user_totp (
    user_id          TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret           TEXT NOT NULL,
    enabled          BOOLEAN NOT NULL,
    last_step        BIGINT NOT NULL DEFAULT 0,
    failures         INTEGER NOT NULL DEFAULT 0,
    first_failure_at BIGINT NOT NULL DEFAULT 0,
    locked_until     BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    enabled_at       BIGINT NOT NULL DEFAULT 0
);

-- Single-use recovery codes (HMAC); used_at > 0 once consumed.
CREATE TABLE recovery_codes (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  TEXT NOT NULL,
    used_at    BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, code_hash)
);

-- Enrollment, new-client and password-reset links. The token itself is
-- never stored. used_at > 0 once the flow completed (or the token was
-- replaced by a newer one); device_id is the device registered through it.
CREATE TABLE onboarding_tokens (
    id           TEXT PRIMARY KEY,
    token_hash   TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_by   TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    used_at      BIGINT NOT NULL DEFAULT 0,
    password_set BOOLEAN NOT NULL DEFAULT FALSE,
    device_id    TEXT REFERENCES devices (id) ON DELETE SET NULL
);
CREATE INDEX onboarding_tokens_user ON onboarding_tokens (user_id, kind);
CREATE INDEX onboarding_tokens_expires ON onboarding_tokens (expires_at);

-- The token a ward client uses to sync its device's locations; one per
-- device, gone with the device.
CREATE TABLE client_tokens (
    id           TEXT PRIMARY KEY,
    token_hash   TEXT NOT NULL UNIQUE,
    device_id    TEXT NOT NULL UNIQUE REFERENCES devices (id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL DEFAULT 0
);

-- Fixed-window counters for public endpoints (e.g. password-reset requests
-- per IP and per account), shared by every core replica.
CREATE TABLE rate_limits (
    key          TEXT PRIMARY KEY,
    hits         INTEGER NOT NULL,
    window_start BIGINT NOT NULL
);
CREATE INDEX rate_limits_window ON rate_limits (window_start);

-- +goose Down
DROP TABLE rate_limits;
DROP TABLE client_tokens;
DROP TABLE onboarding_tokens;
DROP TABLE recovery_codes;
DROP TABLE user_totp;
