package vpnsession

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/groupcommit"
	"github.com/wardvpn/ward/internal/store"
)

// Verified logins of one location are committed together (groupcommit):
// every login bumps the location's revision, and on PostgreSQL that row is
// the one all logins of the location queue on. One transaction per batch
// takes the row once for the whole batch, runs a fixed number of statements
// whatever the batch's size, and gateways receive one change listing all its
// keys. A second login of a device waits for the next batch, where it
// replaces the session the first one got.

type authResult struct {
	sess Session
	// username of the device's owner, for the caller's audit entries.
	username string
	err      error
}

func (s *Service) newAuthQueue() *groupcommit.Queue[challengeRow, authResult] {
	return &groupcommit.Queue[challengeRow, authResult]{
		Run:      s.authorizeBatch,
		Distinct: func(c challengeRow) string { return c.deviceID },
	}
}

// authorize turns a verified challenge into a session: the challenge is
// consumed, the device's previous session in the location closed, the new
// one created and the location's revision bumped with the device's key. It
// returns once that is committed (or refused), whatever ctx does meanwhile.
func (s *Service) authorize(ctx context.Context, c challengeRow) (Session, string, error) {
	r := s.auth.Do(ctx, c.locationID, c)
	return r.sess, r.username, r.err
}

// authorizeBatch commits the batch in one transaction. When a statement of
// one login fails (say, a login of the same device committed meanwhile
// through another replica), the transaction is lost for every login in it:
// each is then committed alone, so only the login at fault is refused.
func (s *Service) authorizeBatch(ctx context.Context, locationID string, batch []challengeRow) []authResult {
	return groupcommit.Split(batch,
		func(b []challengeRow) ([]authResult, error) { return s.authorizeTx(ctx, locationID, b) },
		func(err error) authResult { return authResult{err: err} },
		func(err error) {
			s.log.Warn("batch of MFA logins failed; committing them one by one", "location_id", locationID, "logins", len(batch), "err", err)
		})
}

// errNoLogin rolls back a batch in which every login was refused, so the
// revision is not bumped for nothing.
var errNoLogin = errors.New("no login of the batch was authorized")

func (s *Service) authorizeTx(ctx context.Context, locationID string, batch []challengeRow) ([]authResult, error) {
	var results []authResult
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		results = make([]authResult, len(batch))
		now := s.now()
		// The bump comes first: it takes the location's row lock, which
		// serialises logins and sweeps of the location (the sweep takes it
		// first too) between the read of the previous sessions and their
		// update.
		change, err := s.vpn.BeginPeerChange(ctx, tx, locationID, "mfa.session", locationID)
		if err != nil {
			return err
		}
		live, err := s.newSessions(ctx, tx, batch, results, change.Revision, now)
		if err != nil || len(live) == 0 {
			return err
		}
		if live, err = completeChallenges(ctx, tx, batch, results, live, now); err != nil || len(live) == 0 {
			return err
		}
		replaced, err := closePrevious(ctx, tx, locationID, batch, live, now)
		if err != nil {
			return err
		}
		var sessions [][]any
		var audits []core.AuditRecord
		var keys []string
		for _, i := range live {
			c, sess, actor := batch[i], results[i].sess, core.Actor{UserID: batch[i].userID, Username: results[i].username}
			sessions = append(sessions, []any{sess.ID, sess.LocationID, sess.DeviceID, sess.UserID, sess.PublicKey, sess.Method, StateNew,
				sess.PresharedKey, sess.Revision, now})
			keys = append(keys, c.publicKey)
			for _, r := range replaced[c.deviceID] {
				if r.publicKey != c.publicKey {
					// The replaced session authorized a key the device no
					// longer has: gateways drop that key in this revision.
					keys = append(keys, r.publicKey)
				}
				audits = append(audits, core.AuditRecord{Actor: actor, Action: "vpn_session.closed", TargetType: "vpn_session", TargetID: r.id,
					Details: map[string]any{"location_id": locationID, "device_id": c.deviceID, "reason": ReasonReplaced,
						"previous_state": r.state, "replaced_by": sess.ID}})
			}
			audits = append(audits,
				core.AuditRecord{Actor: actor, Action: "vpn_mfa.success", TargetType: "device", TargetID: c.deviceID,
					Details: map[string]any{"location_id": locationID, "method": c.method, "challenge_id": c.id, "session_id": sess.ID}},
				core.AuditRecord{Actor: actor, Action: "vpn_session.created", TargetType: "vpn_session", TargetID: sess.ID,
					Details: map[string]any{"location_id": locationID, "device_id": c.deviceID, "public_key": c.publicKey, "method": c.method,
						"revision": sess.Revision}})
		}
		if err := store.BulkExec(ctx, tx, `INSERT INTO vpn_sessions (id, location_id, device_id, user_id, public_key, method, state, preshared_key,
			revision, created_at) VALUES `, "", sessions); err != nil {
			return fmt.Errorf("create sessions: %w", err)
		}
		if err := core.AuditMany(ctx, tx, audits...); err != nil {
			return err
		}
		return change.AddPeers(ctx, keys...)
	})
	if errors.Is(err, errNoLogin) {
		return results, nil
	}
	return results, err
}

// newSessions checks each login's device against the location and fills in
// the session it will get; it returns the indexes of the logins still
// going. A refusal is recorded in results (the batch goes on); only SQL
// errors fail it. With no login left it returns errNoLogin.
func (s *Service) newSessions(ctx context.Context, tx *sql.Tx, batch []challengeRow, results []authResult, revision, now int64) ([]int, error) {
	keys := make([]string, len(batch))
	for i, r := range batch {
		keys[i] = r.publicKey
	}
	targets, err := loadTargets(ctx, tx, batch[0].locationID, keys...)
	if err != nil {
		if _, refused := core.AsError(err); !refused {
			return nil, err
		}
		for i := range results {
			results[i].err = err
		}
		return nil, errNoLogin
	}
	var live []int
	for i, r := range batch {
		c, t := r, targets[r.publicKey]
		err := t.check()
		if err == nil && t.deviceID != c.deviceID {
			err = core.NotFound("device") // the key moved to another device since the start
		}
		if err != nil {
			results[i].err = err
			continue
		}
		results[i] = authResult{username: t.username, sess: Session{ID: core.NewID(), LocationID: c.locationID, DeviceID: c.deviceID,
			UserID: c.userID, PublicKey: c.publicKey, Method: c.method, State: StateNew, PresharedKey: newPresharedKey(), Revision: revision,
			CreatedAt: now, DisconnectThreshold: t.threshold, ConnectBy: now + int64(t.threshold)*1000}}
		live = append(live, i)
	}
	if len(live) == 0 {
		return nil, errNoLogin
	}
	return live, nil
}

// completeChallenges marks the live logins' challenges completed, each with
// its session, in one statement; a challenge completed or expired meanwhile
// refuses its login. It returns the logins still going.
func completeChallenges(ctx context.Context, tx *sql.Tx, batch []challengeRow, results []authResult, live []int, now int64) ([]int, error) {
	args := []any{now}
	var cases strings.Builder
	ids := make([]string, len(live))
	for n, i := range live {
		args = append(args, batch[i].id, results[i].sess.ID)
		fmt.Fprintf(&cases, " WHEN $%d THEN $%d", len(args)-1, len(args))
		ids[n] = batch[i].id
	}
	rows, err := tx.QueryContext(ctx, `UPDATE vpn_mfa_challenges SET completed_at = $1, session_id = CASE id`+cases.String()+` END
		WHERE id IN (`+store.InList(&args, ids...)+`) AND completed_at = 0 AND expires_at > $1 RETURNING id`, args...)
	if err != nil {
		return nil, fmt.Errorf("complete challenges: %w", err)
	}
	done := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		done[id] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	kept := live[:0]
	for _, i := range live {
		if done[batch[i].id] {
			kept = append(kept, i)
			continue
		}
		results[i] = authResult{username: results[i].username,
			err: domainError(core.KindUnauthenticated, CodeChallengeUsed, "this MFA login was already completed; start again")}
	}
	if len(kept) == 0 {
		return nil, errNoLogin
	}
	return kept, nil
}

type closedSession struct{ id, state, publicKey string }

// closePrevious closes the active sessions in the location of the live
// logins' devices as replaced and returns them per device. The caller holds
// the location's row lock (it bumped the revision), which keeps other logins
// and sweeps of the location out between the read and the update.
func closePrevious(ctx context.Context, tx *sql.Tx, locationID string, batch []challengeRow, live []int, now int64) (map[string][]closedSession, error) {
	devices := make([]string, len(live))
	for n, i := range live {
		devices[n] = batch[i].deviceID
	}
	args := []any{locationID}
	rows, err := tx.QueryContext(ctx, `SELECT id, device_id, state, public_key FROM vpn_sessions
		WHERE location_id = $1 AND state IN ('new', 'connected') AND device_id IN (`+store.InList(&args, devices...)+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("previous sessions: %w", err)
	}
	out := map[string][]closedSession{}
	var ids []string
	for rows.Next() {
		var c closedSession
		var device string
		if err := rows.Scan(&c.id, &device, &c.state, &c.publicKey); err != nil {
			rows.Close()
			return nil, err
		}
		out[device] = append(out[device], c)
		ids = append(ids, c.id)
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(ids) == 0 {
		return out, err
	}
	args = []any{now, ReasonReplaced}
	if _, err := tx.ExecContext(ctx, `UPDATE vpn_sessions SET state = 'disconnected', closed_at = $1, close_reason = $2, preshared_key = ''
		WHERE id IN (`+store.InList(&args, ids...)+`)`, args...); err != nil {
		return nil, fmt.Errorf("close previous sessions: %w", err)
	}
	return out, nil
}
