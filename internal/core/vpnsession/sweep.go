package vpnsession

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/vpn"
)

// SweepResult counts what one sweep changed.
type SweepResult struct {
	Connected int `json:"connected"`
	Closed    int `json:"closed"`
}

// sweepAction is the transition one active session is due for.
type sweepAction struct {
	id, deviceID, userID, publicKey, state string
	createdAt, handshake                   int64
	// reason empty: new -> connected; else close with this reason.
	reason string
}

// newestHandshake is the newest handshake of the session's key in its
// location over every gateway (liveness is never taken from one gateway).
const newestHandshake = `COALESCE((SELECT MAX(h.last_handshake) FROM peer_handshakes h
	WHERE h.location_id = vpn_sessions.location_id AND h.public_key = vpn_sessions.public_key), 0)`

// Sweep applies the disconnect threshold at time now: a new session that saw
// a handshake since its creation becomes connected; a new session without
// one for longer than the threshold is closed (never_connected); a session
// whose newest handshake is older than the threshold is closed (inactive).
// Sessions of locations that no longer use MFA, and of devices that lost
// access or changed key, are closed too. Every closing bumps the location's
// revision with the key, so gateways remove the peer (a connection bumps it
// as well: the peer's expiry changes). Each transition is a conditional
// UPDATE, so sweeps running at once on several replicas make it once.
func (s *Service) Sweep(ctx context.Context, now time.Time) (SweepResult, error) {
	nowMs := now.UnixMilli()
	var res SweepResult
	if _, err := s.db.ExecContext(ctx, `DELETE FROM vpn_mfa_challenges WHERE expires_at < $1`, now.Add(-ChallengeRetention).UnixMilli()); err != nil {
		return res, fmt.Errorf("purge challenges: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT vpn_sessions.id, vpn_sessions.location_id, vpn_sessions.device_id, vpn_sessions.user_id,
		vpn_sessions.public_key, vpn_sessions.state, vpn_sessions.created_at, l.mfa_mode, l.disconnect_threshold, `+newestHandshake+`,
		CASE WHEN EXISTS (SELECT 1 FROM devices d JOIN users u ON u.id = d.user_id
			JOIN device_addresses a ON a.device_id = d.id AND a.location_id = vpn_sessions.location_id
			WHERE d.id = vpn_sessions.device_id AND d.public_key = vpn_sessions.public_key AND u.active = TRUE) THEN 1 ELSE 0 END
		FROM vpn_sessions JOIN locations l ON l.id = vpn_sessions.location_id
		WHERE vpn_sessions.state IN ('new', 'connected') ORDER BY vpn_sessions.location_id, vpn_sessions.id`)
	if err != nil {
		return res, fmt.Errorf("active sessions: %w", err)
	}
	byLocation := map[string][]sweepAction{}
	thresholds := map[string]int64{}
	var order []string
	for rows.Next() {
		var a sweepAction
		var loc, mode string
		var threshold, access int
		if err := rows.Scan(&a.id, &loc, &a.deviceID, &a.userID, &a.publicKey, &a.state, &a.createdAt, &mode, &threshold, &a.handshake, &access); err != nil {
			rows.Close()
			return res, err
		}
		cutoff := nowMs - int64(threshold)*1000
		seen := a.handshake >= a.createdAt // a handshake of this session, not an older one of the key
		alive := a.handshake >= cutoff
		switch {
		case mode != vpn.MFAInternal:
			a.reason = ReasonMFADisabled
		case access == 0:
			a.reason = ReasonAccessRevoked
		case a.state == StateNew && seen && alive:
			// connect
		case a.state == StateNew && seen:
			a.reason = ReasonInactive // connected, then went quiet before a sweep saw it
		case a.state == StateNew && a.createdAt < cutoff:
			a.reason = ReasonNeverConnected
		case a.state == StateConnected && !alive:
			a.reason = ReasonInactive
		default:
			continue // alive, or new and still within its time to connect
		}
		if byLocation[loc] == nil {
			order = append(order, loc)
		}
		byLocation[loc] = append(byLocation[loc], a)
		thresholds[loc] = cutoff
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return res, err
	}
	var errs []error
	for _, loc := range order {
		r, err := s.sweepLocation(ctx, loc, byLocation[loc], nowMs, thresholds[loc])
		res.Connected += r.Connected
		res.Closed += r.Closed
		if err != nil {
			if ctx.Err() != nil {
				return res, err
			}
			errs = append(errs, fmt.Errorf("sweep location %s: %w", loc, err))
		}
	}
	return res, errors.Join(errs...)
}

// errNothingChanged rolls back a location's sweep whose transitions another
// replica made first, so the revision is not bumped for nothing.
var errNothingChanged = errors.New("nothing changed")

func (s *Service) sweepLocation(ctx context.Context, locationID string, actions []sweepAction, now, cutoff int64) (SweepResult, error) {
	var res SweepResult
	actor := core.SystemActor("vpn-session-sweep")
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		res = SweepResult{}
		keys := make([]string, len(actions))
		for i, a := range actions {
			keys[i] = a.publicKey
		}
		// The bump first: it takes the location's row lock, in the same
		// order as logins do.
		if _, err := s.vpn.TouchPeers(ctx, tx, locationID, "mfa.sweep", locationID, keys...); err != nil {
			return err
		}
		for _, a := range actions {
			var r sql.Result
			var err error
			switch a.reason {
			case "":
				r, err = tx.ExecContext(ctx, `UPDATE vpn_sessions SET state = 'connected', connected_at = $2 WHERE id = $1 AND state = 'new'`, a.id, a.handshake)
			case ReasonInactive:
				// Re-checked in the statement: a handshake that arrived since
				// the read keeps the session.
				r, err = tx.ExecContext(ctx, `UPDATE vpn_sessions SET state = 'disconnected', closed_at = $2, close_reason = $3, preshared_key = '',
					connected_at = CASE WHEN connected_at = 0 THEN $5 ELSE connected_at END
					WHERE id = $1 AND state = $4 AND `+newestHandshake+` < $6`, a.id, now, a.reason, a.state, a.handshake, cutoff)
			case ReasonNeverConnected:
				r, err = tx.ExecContext(ctx, `UPDATE vpn_sessions SET state = 'disconnected', closed_at = $2, close_reason = $3, preshared_key = ''
					WHERE id = $1 AND state = 'new' AND created_at < $4 AND `+newestHandshake+` < created_at`, a.id, now, a.reason, cutoff)
			default:
				r, err = tx.ExecContext(ctx, `UPDATE vpn_sessions SET state = 'disconnected', closed_at = $2, close_reason = $3, preshared_key = ''
					WHERE id = $1 AND state = $4`, a.id, now, a.reason, a.state)
			}
			if err != nil {
				return fmt.Errorf("session %s: %w", a.id, err)
			}
			if n, _ := r.RowsAffected(); n == 0 {
				continue // another sweep or login got there first
			}
			details := map[string]any{"location_id": locationID, "device_id": a.deviceID, "user_id": a.userID, "public_key": a.publicKey}
			action := "vpn_session.connected"
			if a.reason == "" {
				res.Connected++
				details["handshake_at"] = a.handshake
			} else {
				res.Closed++
				action = "vpn_session.closed"
				details["reason"], details["previous_state"] = a.reason, a.state
				if a.handshake > 0 {
					details["last_handshake_at"] = a.handshake
				}
			}
			if err := core.Audit(ctx, tx, actor, action, "vpn_session", a.id, details); err != nil {
				return err
			}
		}
		if res.Connected+res.Closed == 0 {
			return errNothingChanged
		}
		return nil
	})
	if errors.Is(err, errNothingChanged) {
		return SweepResult{}, nil
	}
	if err != nil {
		return SweepResult{}, err
	}
	if res.Closed > 0 || res.Connected > 0 {
		s.log.Info("vpn sessions swept", "location_id", locationID, "connected", res.Connected, "closed", res.Closed)
	}
	return res, nil
}
