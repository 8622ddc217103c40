package vpn

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/pki"
	"github.com/wardvpn/ward/internal/store"
)

// DefaultJoinTokenTTL is how long a gateway join token stays valid.
const DefaultJoinTokenTTL = time.Hour

// GatewayStatus is what core knows about a gateway's control link, merged
// over every core replica.
type GatewayStatus struct {
	Adopted            bool          `json:"adopted"`
	AdoptedAt          int64         `json:"adopted_at"`
	Connected          bool          `json:"connected"`
	ConnectedSince     int64         `json:"connected_since"`
	Version            string        `json:"version"`
	AppliedRevision    int64         `json:"applied_revision"`
	LastContact        int64         `json:"last_contact"`
	LastError          string        `json:"last_error,omitempty"`
	JoinTokenExpiresAt int64         `json:"join_token_expires_at"`
	Links              []GatewayLink `json:"links"`
}

// GatewayLink is one core replica's link to a gateway.
type GatewayLink struct {
	CoreID          string `json:"core_id"`
	Connected       bool   `json:"connected"`
	Since           int64  `json:"since"`
	Version         string `json:"version"`
	BootID          string `json:"boot_id"`
	AppliedRevision int64  `json:"applied_revision"`
	LastContact     int64  `json:"last_contact"`
	LastError       string `json:"last_error,omitempty"`
}

// JoinToken is a one-time gateway join token, shown once.
type JoinToken struct {
	Token     string `json:"join_token"`
	ExpiresAt int64  `json:"join_token_expires_at"`
}

func newJoinToken(ttl time.Duration) (JoinToken, string) {
	exp := time.Now().Add(ttl).Truncate(time.Second)
	tok := "wgj1." + strconv.FormatInt(exp.Unix(), 10) + "." + core.RandomToken(32)
	return JoinToken{Token: tok, ExpiresAt: exp.UnixMilli()}, fmt.Sprintf("%x", pki.JoinKey(tok))
}

// IssueJoinToken gives a registered gateway a new join token. It revokes the
// gateway's current adoption: the gateway must be adopted again with it.
func (s *Service) IssueJoinToken(ctx context.Context, a core.Actor, locationID, gatewayID string) (JoinToken, error) {
	if err := requireAdmin(a, "issue gateway join tokens"); err != nil {
		return JoinToken{}, err
	}
	tok, key := newJoinToken(DefaultJoinTokenTTL)
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := s.getComponent(ctx, tx, gatewayRegistry, locationID, gatewayID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE gateways SET join_key = $1, join_expires_at = $2, cert_serial = '', adopted_at = 0, updated_at = $3 WHERE id = $4`,
			key, tok.ExpiresAt, store.Now(), gatewayID); err != nil {
			return err
		}
		return core.Audit(ctx, tx, a, "gateway.join_token", "gateway", gatewayID, map[string]any{"expires_at": tok.ExpiresAt})
	})
	if err != nil {
		return JoinToken{}, err
	}
	return tok, nil
}

// GatewayTarget is what a core replica needs to dial and adopt a gateway.
type GatewayTarget struct {
	ID, LocationID, Name, ControlAddress string
	CertSerial                           string
	JoinKey                              []byte
	JoinExpiresAt                        int64
	// Revoked: deleted in core; the gateway must be told, then forgotten.
	Revoked bool
}

// RevocationRetention is how long core keeps trying to tell a deleted
// gateway that it is revoked before forgetting it.
const RevocationRetention = 7 * 24 * time.Hour

// GatewayTargets lists every registered gateway for the link manager.
func (s *Service) GatewayTargets(ctx context.Context) ([]GatewayTarget, error) {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM gateways WHERE revoked_at > 0 AND (revoked_at < $1 OR cert_serial = '')`,
		time.Now().Add(-RevocationRetention).UnixMilli()); err != nil {
		return nil, fmt.Errorf("purge revoked gateways: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, location_id, name, control_address, cert_serial, join_key, join_expires_at, revoked_at FROM gateways ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("gateway targets: %w", err)
	}
	defer rows.Close()
	var out []GatewayTarget
	for rows.Next() {
		var t GatewayTarget
		var key string
		var revokedAt int64
		if err := rows.Scan(&t.ID, &t.LocationID, &t.Name, &t.ControlAddress, &t.CertSerial, &key, &t.JoinExpiresAt, &revokedAt); err != nil {
			return nil, err
		}
		t.Revoked = revokedAt > 0
		if key != "" {
			fmt.Sscanf(key, "%x", &t.JoinKey)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// ErrJoinKeyUsed means another replica completed the adoption first, or the
// token was replaced or expired meanwhile.
var ErrJoinKeyUsed = errors.New("join token already used, replaced or expired")

// CompleteAdoption records the certificate issued to a gateway and consumes
// its join token, atomically: a token adopts at most once.
func (s *Service) CompleteAdoption(ctx context.Context, a core.Actor, gatewayID string, joinKey []byte, certSerial string) error {
	return s.db.Tx(ctx, func(tx *sql.Tx) error {
		now := store.Now()
		res, err := tx.ExecContext(ctx, `UPDATE gateways SET cert_serial = $1, adopted_at = $2, join_key = '', join_expires_at = 0, updated_at = $2
			WHERE id = $3 AND join_key = $4 AND join_expires_at > $2 AND revoked_at = 0`, certSerial, now, gatewayID, fmt.Sprintf("%x", joinKey))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrJoinKeyUsed
		}
		return core.Audit(ctx, tx, a, "gateway.adopted", "gateway", gatewayID, map[string]any{"cert_serial": certSerial})
	})
}

// LinkEvent is a change of a core replica's link to a gateway.
type LinkEvent struct {
	GatewayID, CoreID, Version, BootID, Error string
	Connected                                 bool
	AppliedRevision                           int64
}

// RecordLink stores a link state; connect and disconnect are audit events.
func (s *Service) RecordLink(ctx context.Context, a core.Actor, ev LinkEvent, audit bool) error {
	return s.db.Tx(ctx, func(tx *sql.Tx) error {
		now := store.Now()
		_, err := tx.ExecContext(ctx, `INSERT INTO gateway_links (gateway_id, core_id, connected, since, version, boot_id, applied_revision, last_contact, last_error)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $4, $8)
			ON CONFLICT (gateway_id, core_id) DO UPDATE SET
			  since = CASE WHEN gateway_links.connected <> excluded.connected THEN excluded.since ELSE gateway_links.since END,
			  connected = excluded.connected, version = excluded.version, boot_id = excluded.boot_id,
			  applied_revision = excluded.applied_revision, last_contact = excluded.last_contact, last_error = excluded.last_error`,
			ev.GatewayID, ev.CoreID, ev.Connected, now, ev.Version, ev.BootID, ev.AppliedRevision, ev.Error)
		if store.IsForeignKeyViolation(err) {
			return nil // the gateway was deleted meanwhile
		}
		if err != nil {
			return fmt.Errorf("record gateway link: %w", err)
		}
		if !audit {
			return nil
		}
		action := "gateway.disconnected"
		if ev.Connected {
			action = "gateway.connected"
		}
		details := map[string]any{"core_id": ev.CoreID, "version": ev.Version, "applied_revision": ev.AppliedRevision}
		if ev.Error != "" {
			details["error"] = ev.Error
		}
		return core.Audit(ctx, tx, a, action, "gateway", ev.GatewayID, details)
	})
}

// TouchLink updates the applied revision and last contact of a link.
func (s *Service) TouchLink(ctx context.Context, gatewayID, coreID string, applied int64) error {
	_, err := s.db.ExecContext(ctx, `UPDATE gateway_links SET applied_revision = $1, last_contact = $2 WHERE gateway_id = $3 AND core_id = $4`,
		applied, store.Now(), gatewayID, coreID)
	return err
}

// gatewayStatus merges the links of a gateway.
func (s *Service) gatewayStatus(ctx context.Context, q store.Querier, c *Component) error {
	st := &GatewayStatus{Links: []GatewayLink{}}
	var serial string
	if err := q.QueryRowContext(ctx, `SELECT cert_serial, adopted_at, join_expires_at FROM gateways WHERE id = $1`, c.ID).Scan(&serial, &st.AdoptedAt, &st.JoinTokenExpiresAt); err != nil {
		return err
	}
	st.Adopted = serial != ""
	rows, err := q.QueryContext(ctx, `SELECT core_id, connected, since, version, boot_id, applied_revision, last_contact, last_error FROM gateway_links WHERE gateway_id = $1 ORDER BY core_id`, c.ID)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var l GatewayLink
		if err := rows.Scan(&l.CoreID, &l.Connected, &l.Since, &l.Version, &l.BootID, &l.AppliedRevision, &l.LastContact, &l.LastError); err != nil {
			return err
		}
		st.Links = append(st.Links, l)
		if l.Connected && (!st.Connected || l.Since < st.ConnectedSince) {
			st.ConnectedSince = l.Since
		}
		st.Connected = st.Connected || l.Connected
		if l.LastContact > st.LastContact {
			st.LastContact, st.Version = l.LastContact, l.Version
		}
		st.AppliedRevision = max(st.AppliedRevision, l.AppliedRevision)
		if !l.Connected && l.LastError != "" {
			st.LastError = l.LastError
		}
	}
	if !st.Connected && len(st.Links) > 0 {
		// "since" for a disconnected gateway is when the last link dropped.
		for _, l := range st.Links {
			st.ConnectedSince = max(st.ConnectedSince, l.Since)
		}
	}
	c.Status = st
	return rows.Err()
}

// RecordLinkError notes why a replica cannot reach a gateway, without an
// audit entry (retries would flood the log) and without changing "since".
func (s *Service) RecordLinkError(ctx context.Context, ev LinkEvent) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO gateway_links (gateway_id, core_id, connected, since, last_error) VALUES ($1, $2, FALSE, $3, $4)
		ON CONFLICT (gateway_id, core_id) DO UPDATE SET last_error = excluded.last_error`, ev.GatewayID, ev.CoreID, store.Now(), ev.Error)
	if store.IsForeignKeyViolation(err) {
		return nil
	}
	return err
}

// ForgetGateway removes a revoked gateway's tombstone once the gateway has
// been told.
func (s *Service) ForgetGateway(ctx context.Context, a core.Actor, gatewayID string) error {
	return s.db.Tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM gateways WHERE id = $1 AND revoked_at > 0`, gatewayID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		return core.Audit(ctx, tx, a, "gateway.revocation_delivered", "gateway", gatewayID, nil)
	})
}
