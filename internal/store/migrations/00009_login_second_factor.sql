-- +goose Up
-- A login of a user with a second factor first creates a session that only
-- lets the second factor through (mfa_pending); it becomes a full session,
-- under a new token, when that succeeds. Any replica can finish it.
ALTER TABLE sessions ADD COLUMN mfa_pending BOOLEAN NOT NULL DEFAULT FALSE;

-- +goose Down
ALTER TABLE sessions DROP COLUMN mfa_pending;
