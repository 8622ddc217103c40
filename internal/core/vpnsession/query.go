package vpnsession

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/store"
)

const sessionColumns = `vs.id, vs.location_id, vs.device_id, vs.user_id, vs.public_key, vs.method, vs.state, vs.revision,
	vs.created_at, vs.connected_at, vs.closed_at, vs.close_reason, l.disconnect_threshold`

func scanSession(row interface{ Scan(...any) error }) (Session, error) {
	var s Session
	err := row.Scan(&s.ID, &s.LocationID, &s.DeviceID, &s.UserID, &s.PublicKey, &s.Method, &s.State, &s.Revision,
		&s.CreatedAt, &s.ConnectedAt, &s.ClosedAt, &s.CloseReason, &s.DisconnectThreshold)
	if err == nil && s.State == StateNew {
		s.ConnectBy = s.CreatedAt + int64(s.DisconnectThreshold)*1000
	}
	return s, err
}

// ActiveSession returns the new or connected session of the device with the
// given public key in the location (without its preshared key).
func (s *Service) ActiveSession(ctx context.Context, locationID, devicePublicKey string) (Session, error) {
	return getSession(ctx, s.db, `vs.location_id = $1 AND vs.public_key = $2 AND vs.state IN ('new', 'connected')`, locationID, devicePublicKey)
}

// GetSession returns a session by id (without its preshared key).
func (s *Service) GetSession(ctx context.Context, id string) (Session, error) {
	return getSession(ctx, s.db, `vs.id = $1`, id)
}

func getSession(ctx context.Context, q store.Querier, cond string, args ...any) (Session, error) {
	sess, err := scanSession(q.QueryRowContext(ctx, `SELECT `+sessionColumns+` FROM vpn_sessions vs JOIN locations l ON l.id = vs.location_id WHERE `+cond, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return Session{}, core.NotFound("vpn session")
	}
	if err != nil {
		return Session{}, fmt.Errorf("get vpn session: %w", err)
	}
	return sess, nil
}

// SessionFilter narrows ListSessions; zero fields match everything.
type SessionFilter struct {
	// States to include; empty = all. "active" stands for new and connected.
	States   []string
	DeviceID string
	UserID   string
	Limit    int // default 100, at most 1000
	Offset   int
}

// ListSessions lists a location's sessions, newest first, with the total
// count matching the filter. Preshared keys are never listed.
func (s *Service) ListSessions(ctx context.Context, locationID string, f SessionFilter) ([]Session, int, error) {
	where := []string{"vs.location_id = $1"}
	args := []any{locationID}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if len(f.States) > 0 {
		var states []string
		for _, st := range f.States {
			switch st {
			case "active":
				states = append(states, StateNew, StateConnected)
			case StateNew, StateConnected, StateDisconnected:
				states = append(states, st)
			default:
				return nil, 0, core.Invalid("invalid_state", "state", "must be %q, %q, %q or \"active\"", StateNew, StateConnected, StateDisconnected)
			}
		}
		ph := make([]string, len(states))
		for i, st := range states {
			args = append(args, st)
			ph[i] = fmt.Sprintf("$%d", len(args))
		}
		where = append(where, "vs.state IN ("+strings.Join(ph, ", ")+")")
	}
	if f.DeviceID != "" {
		add("vs.device_id = $%d", f.DeviceID)
	}
	if f.UserID != "" {
		add("vs.user_id = $%d", f.UserID)
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	f.Limit = min(f.Limit, 1000)
	f.Offset = max(f.Offset, 0)
	cond := strings.Join(where, " AND ")
	var total int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM vpn_sessions vs WHERE `+cond, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count vpn sessions: %w", err)
	}
	args = append(args, f.Limit, f.Offset)
	rows, err := s.db.QueryContext(ctx, fmt.Sprintf(`SELECT %s FROM vpn_sessions vs JOIN locations l ON l.id = vs.location_id WHERE %s
		ORDER BY vs.created_at DESC, vs.id DESC LIMIT $%d OFFSET $%d`, sessionColumns, cond, len(args)-1, len(args)), args...)
	if err != nil {
		return nil, 0, fmt.Errorf("list vpn sessions: %w", err)
	}
	defer rows.Close()
	out := []Session{}
	for rows.Next() {
		sess, err := scanSession(rows)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, sess)
	}
	return out, total, rows.Err()
}
