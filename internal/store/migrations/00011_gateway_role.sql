-- +goose Up
-- The active/standby role each gateway reports on each core replica's link
-- ('' until it reports one: a gateway older than the report), and since
-- when it holds it (Unix ms, the gateway's clock; 0 when not reported).
ALTER TABLE gateway_links ADD COLUMN role TEXT NOT NULL DEFAULT '';
ALTER TABLE gateway_links ADD COLUMN role_since BIGINT NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE gateway_links DROP COLUMN role_since;
ALTER TABLE gateway_links DROP COLUMN role;
