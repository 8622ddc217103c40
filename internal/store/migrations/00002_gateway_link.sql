-- +goose Up
-- Gateway adoption: a one-time join key (HMAC key derived from the join
-- token; the token itself is never stored) and the issued certificate.
ALTER TABLE gateways ADD COLUMN join_key TEXT NOT NULL DEFAULT '';
ALTER TABLE gateways ADD COLUMN join_expires_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE gateways ADD COLUMN cert_serial TEXT NOT NULL DEFAULT '';
ALTER TABLE gateways ADD COLUMN adopted_at BIGINT NOT NULL DEFAULT 0;
-- A deleted gateway stays as a tombstone (revoked_at > 0) until a core
-- replica has told it so, even if it was offline at deletion time.
ALTER TABLE gateways ADD COLUMN revoked_at BIGINT NOT NULL DEFAULT 0;

-- One row per (gateway, core replica): the state of that replica's link.
CREATE TABLE gateway_links (
    gateway_id       TEXT NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    core_id          TEXT NOT NULL,
    connected        BOOLEAN NOT NULL,
    since            BIGINT NOT NULL,
    version          TEXT NOT NULL DEFAULT '',
    boot_id          TEXT NOT NULL DEFAULT '',
    applied_revision BIGINT NOT NULL DEFAULT 0,
    last_contact     BIGINT NOT NULL DEFAULT 0,
    last_error       TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (gateway_id, core_id)
);

-- The peers (public keys) each revision touched, so a gateway at revision R
-- can be sent exactly the peers changed since R, in their current state.
CREATE TABLE location_change_peers (
    location_id TEXT NOT NULL REFERENCES locations (id) ON DELETE CASCADE,
    revision    BIGINT NOT NULL,
    public_key  TEXT NOT NULL,
    PRIMARY KEY (location_id, revision, public_key)
);

-- Statistics. A batch is ingested once per (gateway, boot, seq).
CREATE TABLE stats_batches (
    gateway_id  TEXT NOT NULL,
    boot_id     TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (gateway_id, boot_id, seq)
);
CREATE INDEX stats_batches_received ON stats_batches (received_at);

-- The newest counters of the current series of each (gateway, peer). A
-- series is (boot, generation); deltas are only taken inside one series.
-- seq is the batch that set them: an older batch of the same boot arriving
-- late (through a lagging core replica) is skipped, not taken as a reset.
CREATE TABLE peer_series (
    gateway_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    boot_id    TEXT NOT NULL,
    generation BIGINT NOT NULL,
    seq        BIGINT NOT NULL,
    rx         BIGINT NOT NULL,
    tx         BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (gateway_id, public_key)
);

CREATE TABLE peer_handshakes (
    location_id    TEXT NOT NULL REFERENCES locations (id) ON DELETE CASCADE,
    public_key     TEXT NOT NULL,
    gateway_id     TEXT NOT NULL,
    last_handshake BIGINT NOT NULL,
    endpoint       TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (location_id, public_key, gateway_id)
);

-- Per-minute traffic rollups (bytes from the peer = rx at the gateway).
CREATE TABLE usage_minutes (
    location_id TEXT NOT NULL REFERENCES locations (id) ON DELETE CASCADE,
    device_id   TEXT NOT NULL,
    gateway_id  TEXT NOT NULL,
    minute      BIGINT NOT NULL,
    rx          BIGINT NOT NULL,
    tx          BIGINT NOT NULL,
    PRIMARY KEY (location_id, device_id, gateway_id, minute)
);
CREATE INDEX usage_minutes_location ON usage_minutes (location_id, minute);
CREATE INDEX usage_minutes_device ON usage_minutes (device_id, minute);

-- +goose Down
DROP TABLE usage_minutes;
DROP TABLE peer_handshakes;
DROP TABLE peer_series;
DROP TABLE stats_batches;
DROP TABLE location_change_peers;
DROP TABLE gateway_links;
ALTER TABLE gateways DROP COLUMN revoked_at;
ALTER TABLE gateways DROP COLUMN adopted_at;
ALTER TABLE gateways DROP COLUMN cert_serial;
ALTER TABLE gateways DROP COLUMN join_expires_at;
ALTER TABLE gateways DROP COLUMN join_key;
