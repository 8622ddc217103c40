-- +goose Up
-- The audit log is filtered by actor and by target (UI and API); without
-- these a filter scans the whole log.
CREATE INDEX audit_log_actor ON audit_log (actor_id, at);
CREATE INDEX audit_log_target ON audit_log (target_id, at);

-- +goose Down
DROP INDEX audit_log_target;
DROP INDEX audit_log_actor;
