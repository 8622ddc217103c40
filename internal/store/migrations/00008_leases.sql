-- +goose Up
-- Singleton work (sweeps, purges, rollups) runs on the replica holding a
-- lease. epoch grows by one at every change of holder; work commits only
-- while its epoch is still the row's (see internal/lease).
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL DEFAULT '',
    epoch       BIGINT NOT NULL DEFAULT 0,
    acquired_at BIGINT NOT NULL DEFAULT 0,
    expires_at  BIGINT NOT NULL DEFAULT 0
);

-- Core replicas seen recently, for operators (GET /api/v1/cluster).
CREATE TABLE core_replicas (
    id           TEXT PRIMARY KEY,
    version      TEXT NOT NULL DEFAULT '',
    started_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);

-- Change records up to this revision were purged: a gateway behind it gets
-- a snapshot instead of the changes since its revision.
ALTER TABLE locations ADD COLUMN changes_pruned_to BIGINT NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE locations DROP COLUMN changes_pruned_to;
DROP TABLE core_replicas;
DROP TABLE leases;
