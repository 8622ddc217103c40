package vpnsession

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/groupcommit"
	"github.com/wardvpn/ward/internal/store"
)

// Started challenges are written in batches (groupcommit) too: a start is a
// small write transaction (limit check, challenge, audit entry) whose cost
// is mostly round trips, which a batch shares. One start per device and
// location per batch, so the limit check sees the starts before it.

type startRequest struct {
	t                               target
	id, tokenHash, method, codeHash string
	createdAt, expiresAt            int64
}

type startResult struct{ err error }

func (s *Service) newStartQueue() *groupcommit.Queue[startRequest, startResult] {
	return &groupcommit.Queue[startRequest, startResult]{
		Run:      s.startBatch,
		Distinct: func(r startRequest) string { return r.t.deviceID + "\x00" + r.t.locationID },
	}
}

// startBatch writes the batch's challenges in one transaction; should a
// statement fail, each start is written alone so only the faulty one fails.
func (s *Service) startBatch(ctx context.Context, _ string, batch []startRequest) []startResult {
	return groupcommit.Split(batch,
		func(b []startRequest) ([]startResult, error) { return s.startTx(ctx, b) },
		func(err error) startResult { return startResult{err: err} },
		func(err error) {
			s.log.Warn("batch of MFA starts failed; writing them one by one", "starts", len(batch), "err", err)
		})
}

// errNoStart rolls back a batch whose every start was over the limit.
var errNoStart = errors.New("no start of the batch was accepted")

func (s *Service) startTx(ctx context.Context, batch []startRequest) ([]startResult, error) {
	var results []startResult
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		results = make([]startResult, len(batch))
		recent, err := s.recentStarts(ctx, tx, batch)
		if err != nil {
			return err
		}
		var challenges [][]any
		var audits []core.AuditRecord
		for i, r := range batch {
			windowStart := r.createdAt - s.opts.ChallengeTTL.Milliseconds()
			count, oldest := 0, int64(0)
			for _, at := range recent[r.t.deviceID+"\x00"+r.t.locationID] {
				if at > windowStart {
					count++
					if oldest == 0 || at < oldest {
						oldest = at
					}
				}
			}
			if count >= s.opts.MaxStarts {
				retry := int((oldest-windowStart)/1000) + 1
				results[i].err = &core.Error{Kind: core.KindTooManyAttempts, Code: CodeTooManyAttempts, RetryAfterSeconds: retry,
					Message: fmt.Sprintf("too many MFA logins started for this device; try again in %d seconds", retry)}
				continue
			}
			challenges = append(challenges, []any{r.id, r.tokenHash, r.t.locationID, r.t.deviceID, r.t.userID, r.t.publicKey, r.method,
				r.codeHash, r.createdAt, r.expiresAt})
			audits = append(audits, core.AuditRecord{Actor: r.t.actor(), Action: "vpn_mfa.start", TargetType: "device", TargetID: r.t.deviceID,
				Details: map[string]any{"location_id": r.t.locationID, "method": r.method, "challenge_id": r.id}})
		}
		if len(challenges) == 0 {
			return errNoStart
		}
		if err := store.BulkExec(ctx, tx, `INSERT INTO vpn_mfa_challenges (id, token_hash, location_id, device_id, user_id, public_key, method,
			code_hash, created_at, expires_at) VALUES `, "", challenges); err != nil {
			return fmt.Errorf("create challenges: %w", err)
		}
		return core.AuditMany(ctx, tx, audits...)
	})
	if errors.Is(err, errNoStart) {
		return results, nil
	}
	return results, err
}

// recentStarts returns the creation times of the challenges started within
// the last TTL for the batch's devices, per device and location.
func (s *Service) recentStarts(ctx context.Context, tx *sql.Tx, batch []startRequest) (map[string][]int64, error) {
	since := batch[0].createdAt
	devices := make([]string, len(batch))
	for i, r := range batch {
		since = min(since, r.createdAt)
		devices[i] = r.t.deviceID
	}
	args := []any{since - s.opts.ChallengeTTL.Milliseconds()}
	rows, err := tx.QueryContext(ctx, `SELECT device_id, location_id, created_at FROM vpn_mfa_challenges
		WHERE created_at > $1 AND device_id IN (`+store.InList(&args, devices...)+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("count challenges: %w", err)
	}
	defer rows.Close()
	out := map[string][]int64{}
	for rows.Next() {
		var device, location string
		var at int64
		if err := rows.Scan(&device, &location, &at); err != nil {
			return nil, err
		}
		out[device+"\x00"+location] = append(out[device+"\x00"+location], at)
	}
	return out, rows.Err()
}
