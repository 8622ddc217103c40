-- +goose Up
-- A batch of MFA logins looks up the active sessions of many devices at once
-- (device_id IN (...)). With the device first, that list is the index
-- condition; with the location first PostgreSQL scanned every active session
-- of the location and filtered (measured: 4-7 ms per batch at 7,500 sessions).
DROP INDEX vpn_sessions_active;
CREATE UNIQUE INDEX vpn_sessions_active ON vpn_sessions (device_id, location_id) WHERE state IN ('new', 'connected');

-- +goose Down
DROP INDEX vpn_sessions_active;
CREATE UNIQUE INDEX vpn_sessions_active ON vpn_sessions (location_id, device_id) WHERE state IN ('new', 'connected');
