-- +goose Up
-- Per-location policy for life without core: whether gateways keep the peers
-- of devices that need no MFA ('keep') or drop them after drop_peers_after
-- seconds without any core replica connected ('drop'). The defaults keep
-- today's behaviour for existing locations.
ALTER TABLE locations ADD COLUMN peers_without_core TEXT NOT NULL DEFAULT 'keep';
ALTER TABLE locations ADD COLUMN drop_peers_after INTEGER NOT NULL DEFAULT 3600;

-- +goose Down
ALTER TABLE locations DROP COLUMN drop_peers_after;
ALTER TABLE locations DROP COLUMN peers_without_core;
