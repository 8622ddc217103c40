package core

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/wardvpn/ward/internal/store"
)

// AuditEntry is one line of the audit log.
type AuditEntry struct {
	ID         string         `json:"id"`
	At         int64          `json:"at"`
	ActorID    string         `json:"actor_id,omitempty"`
	Actor      string         `json:"actor"`
	Action     string         `json:"action"`
	TargetType string         `json:"target_type,omitempty"`
	TargetID   string         `json:"target_id,omitempty"`
	IP         string         `json:"ip,omitempty"`
	Details    map[string]any `json:"details,omitempty"`
}

// Audit appends an entry inside the caller's transaction, so the log holds
// exactly the changes that were committed. Details must never hold secrets.
func Audit(ctx context.Context, q store.Querier, a Actor, action, targetType, targetID string, details map[string]any) error {
	return AuditMany(ctx, q, AuditRecord{Actor: a, Action: action, TargetType: targetType, TargetID: targetID, Details: details})
}

// AuditRecord is one entry for AuditMany.
type AuditRecord struct {
	Actor      Actor
	Action     string
	TargetType string
	TargetID   string
	Details    map[string]any
}

// AuditMany appends entries like Audit, in multi-row statements.
func AuditMany(ctx context.Context, q store.Querier, records ...AuditRecord) error {
	if len(records) == 0 {
		return nil
	}
	now := store.Now()
	rows := make([][]any, len(records))
	for i, r := range records {
		raw := []byte("{}")
		if len(r.Details) > 0 {
			var err error
			if raw, err = json.Marshal(r.Details); err != nil {
				return fmt.Errorf("audit details: %w", err)
			}
		}
		rows[i] = []any{NewID(), now, r.Actor.UserID, r.Actor.Username, r.Action, r.TargetType, r.TargetID, r.Actor.IP, string(raw)}
	}
	err := store.BulkExec(ctx, q, `INSERT INTO audit_log (id, at, actor_id, actor, action, target_type, target_id, ip, details) VALUES `, "", rows)
	if err != nil {
		return fmt.Errorf("write audit entry %s: %w", records[0].Action, err)
	}
	return nil
}

// AuditFilter selects audit entries; zero fields match everything.
type AuditFilter struct {
	Action   string // exact, or a prefix ending in "." (e.g. "device.")
	ActorID  string
	TargetID string
	From, To int64 // Unix ms, inclusive / exclusive
	Limit    int
	Offset   int
}

// ListAudit returns entries newest first, plus the total matching count.
func ListAudit(ctx context.Context, q store.Querier, f AuditFilter) ([]AuditEntry, int, error) {
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.Action != "" {
		if strings.HasSuffix(f.Action, ".") {
			add("action LIKE $%d", f.Action+"%")
		} else {
			add("action = $%d", f.Action)
		}
	}
	if f.ActorID != "" {
		add("actor_id = $%d", f.ActorID)
	}
	if f.TargetID != "" {
		add("target_id = $%d", f.TargetID)
	}
	if f.From > 0 {
		add("at >= $%d", f.From)
	}
	if f.To > 0 {
		add("at < $%d", f.To)
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	var total int
	if err := q.QueryRowContext(ctx, "SELECT COUNT(*) FROM audit_log"+cond, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count audit: %w", err)
	}
	args = append(args, f.Limit, f.Offset)
	rows, err := q.QueryContext(ctx, fmt.Sprintf(`SELECT id, at, actor_id, actor, action, target_type, target_id, ip, details
		FROM audit_log%s ORDER BY at DESC, id DESC LIMIT $%d OFFSET $%d`, cond, len(args)-1, len(args)), args...)
	if err != nil {
		return nil, 0, fmt.Errorf("list audit: %w", err)
	}
	defer rows.Close()
	out := []AuditEntry{}
	for rows.Next() {
		var e AuditEntry
		var details string
		if err := rows.Scan(&e.ID, &e.At, &e.ActorID, &e.Actor, &e.Action, &e.TargetType, &e.TargetID, &e.IP, &details); err != nil {
			return nil, 0, err
		}
		if details != "" && details != "{}" {
			_ = json.Unmarshal([]byte(details), &e.Details)
		}
		out = append(out, e)
	}
	return out, total, rows.Err()
}
