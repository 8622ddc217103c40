-- +goose Up
-- Proxies are adopted like gateways: join token, issued certificate,
-- tombstone until the revocation is delivered.
ALTER TABLE proxies ADD COLUMN join_key TEXT NOT NULL DEFAULT '';
ALTER TABLE proxies ADD COLUMN join_expires_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE proxies ADD COLUMN cert_serial TEXT NOT NULL DEFAULT '';
ALTER TABLE proxies ADD COLUMN adopted_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE proxies ADD COLUMN revoked_at BIGINT NOT NULL DEFAULT 0;

CREATE TABLE proxy_links (
    proxy_id         TEXT NOT NULL REFERENCES proxies (id) ON DELETE CASCADE,
    core_id          TEXT NOT NULL,
    connected        BOOLEAN NOT NULL,
    since            BIGINT NOT NULL,
    version          TEXT NOT NULL DEFAULT '',
    boot_id          TEXT NOT NULL DEFAULT '',
    applied_revision BIGINT NOT NULL DEFAULT 0,
    last_contact     BIGINT NOT NULL DEFAULT 0,
    last_error       TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (proxy_id, core_id)
);

-- +goose Down
DROP TABLE proxy_links;
ALTER TABLE proxies DROP COLUMN revoked_at;
ALTER TABLE proxies DROP COLUMN adopted_at;
ALTER TABLE proxies DROP COLUMN cert_serial;
ALTER TABLE proxies DROP COLUMN join_expires_at;
ALTER TABLE proxies DROP COLUMN join_key;
