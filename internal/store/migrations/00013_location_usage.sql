-- +goose Up
-- Traffic per location, gateway and minute, kept beside the per-device
-- rows at ingestion: a location's graph reads one row per gateway and
-- minute however many devices it has (with 50,000 devices the per-device
-- table made an hour's graph read ~250,000 rows). Rolled up into hours
-- after 48 hours like usage_minutes.
CREATE TABLE location_usage_minutes (
    location_id TEXT NOT NULL REFERENCES locations (id) ON DELETE CASCADE,
    gateway_id  TEXT NOT NULL,
    minute      BIGINT NOT NULL,
    rx          BIGINT NOT NULL,
    tx          BIGINT NOT NULL,
    PRIMARY KEY (location_id, minute, gateway_id)
);
INSERT INTO location_usage_minutes (location_id, gateway_id, minute, rx, tx)
    SELECT location_id, gateway_id, minute, SUM(rx), SUM(tx) FROM usage_minutes GROUP BY location_id, gateway_id, minute;

-- Who is connected: handshakes of a location newer than its threshold.
CREATE INDEX peer_handshakes_recent ON peer_handshakes (location_id, last_handshake);

-- +goose Down
DROP INDEX peer_handshakes_recent;
DROP TABLE location_usage_minutes;
