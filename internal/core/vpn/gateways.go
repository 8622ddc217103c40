package vpn

import (
	"context"
	"database/sql"
	"encoding/hex"
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

// GatewayStatus is what core knows about a gateway's (or proxy's) control
// link, merged over every core replica.
type GatewayStatus struct {
	Adopted            bool   `json:"adopted"`
	AdoptedAt          int64  `json:"adopted_at"`
	Connected          bool   `json:"connected"`
	ConnectedSince     int64  `json:"connected_since"`
	Version            string `json:"version"`
	AppliedRevision    int64  `json:"applied_revision"`
	LastContact        int64  `json:"last_contact"`
	LastError          string `json:"last_error,omitempty"`
	JoinTokenExpiresAt int64  `json:"join_token_expires_at"`
	// Role sums up what the live links report (gateways only): "active"
	// if any says active, "standby" if all say standby, else "unknown"
	// (no live link, or a gateway too old to report its role). RoleSince
	// is when the gateway took that role (its own clock, Unix ms); 0 while
	// unknown.
	Role      string        `json:"role,omitempty"`
	RoleSince int64         `json:"role_since,omitempty"`
	Links     []GatewayLink `json:"links"`
}

// Gateway roles as core shows them.
const (
	RoleActive  = "active"
	RoleStandby = "standby"
	RoleUnknown = "unknown"
)

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
	// Role is what the gateway last reported on this link (gateways only):
	// "active", "standby" or "unknown"; RoleSince since when (Unix ms, the
	// gateway's clock; 0 when unknown).
	Role      string `json:"role,omitempty"`
	RoleSince int64  `json:"role_since,omitempty"`
}

// JoinToken is a one-time gateway join token, shown once.
type JoinToken struct {
	Token     string `json:"join_token"`
	ExpiresAt int64  `json:"join_token_expires_at"`
}

func newJoinToken(ttl time.Duration) (JoinToken, string) {
	exp := time.Now().Add(ttl).Truncate(time.Second)
	tok := "wgj1." + strconv.FormatInt(exp.Unix(), 10) + "." + core.RandomToken(32)
	return JoinToken{Token: tok, ExpiresAt: exp.UnixMilli()}, hex.EncodeToString(pki.JoinKey(tok))
}

// IssueJoinToken gives a registered gateway a new join token. It revokes the
// gateway's current adoption: the gateway must be adopted again with it.
func (s *Service) IssueJoinToken(ctx context.Context, a core.Actor, locationID, gatewayID string) (JoinToken, error) {
	return s.issueJoinToken(ctx, gatewayRegistry, a, locationID, gatewayID)
}

// IssueProxyJoinToken is IssueJoinToken for a proxy.
func (s *Service) IssueProxyJoinToken(ctx context.Context, a core.Actor, proxyID string) (JoinToken, error) {
	return s.issueJoinToken(ctx, proxyRegistry, a, "", proxyID)
}

func (s *Service) issueJoinToken(ctx context.Context, r registry, a core.Actor, locationID, id string) (JoinToken, error) {
	if err := requireAdmin(a, "issue join tokens"); err != nil {
		return JoinToken{}, err
	}
	tok, key := newJoinToken(DefaultJoinTokenTTL)
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := s.getComponent(ctx, tx, r, locationID, id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE `+r.table+` SET join_key = $1, join_expires_at = $2, cert_serial = '', adopted_at = 0, updated_at = $3 WHERE id = $4`,
			key, tok.ExpiresAt, store.Now(), id); err != nil {
			return err
		}
		return core.Audit(ctx, tx, a, r.kind+".join_token", r.kind, id, map[string]any{"expires_at": tok.ExpiresAt})
	})
	if err != nil {
		return JoinToken{}, err
	}
	return tok, nil
}

// GatewayTarget is what a core replica needs to dial and adopt a gateway or
// a proxy (LocationID is empty for proxies).
type GatewayTarget struct {
	ID, LocationID, Name, ControlAddress string
	CertSerial                           string
	JoinKey                              []byte
	JoinExpiresAt                        int64
	// Revoked: deleted in core; the component must be told, then forgotten.
	Revoked bool
}

// LinkHeartbeat is how often a core replica refreshes last_contact of a
// live link; a link silent for LinkStaleAfter counts as down even if its
// row says connected (the replica that wrote it may have been killed).
const (
	LinkHeartbeat  = 10 * time.Second
	LinkStaleAfter = 3 * LinkHeartbeat
)

// LinkFresh tells whether a link row still counts as connected.
func LinkFresh(connected bool, lastContact int64, now time.Time) bool {
	return connected && now.Sub(time.UnixMilli(lastContact)) < LinkStaleAfter
}

// RevocationRetention is how long core keeps trying to tell a deleted
// gateway or proxy that it is revoked before forgetting it.
const RevocationRetention = 7 * 24 * time.Hour

// GatewayTargets lists every registered gateway for the link manager.
func (s *Service) GatewayTargets(ctx context.Context) ([]GatewayTarget, error) {
	return s.targets(ctx, gatewayRegistry)
}

// ProxyTargets lists every registered proxy for the link manager.
func (s *Service) ProxyTargets(ctx context.Context) ([]GatewayTarget, error) {
	return s.targets(ctx, proxyRegistry)
}

// PurgeRevoked forgets deleted gateways and proxies once their revocation
// was delivered or RevocationRetention has passed (a singleton job).
func (s *Service) PurgeRevoked(ctx context.Context, now time.Time) (int64, error) {
	var total int64
	for _, r := range []registry{gatewayRegistry, proxyRegistry} {
		res, err := s.db.ExecContext(ctx, `DELETE FROM `+r.table+` WHERE revoked_at > 0 AND (revoked_at < $1 OR cert_serial = '')`,
			now.Add(-RevocationRetention).UnixMilli())
		if err != nil {
			return total, fmt.Errorf("purge revoked %s: %w", r.table, err)
		}
		n, _ := res.RowsAffected()
		total += n
	}
	return total, nil
}

func (s *Service) targets(ctx context.Context, r registry) ([]GatewayTarget, error) {
	loc := "''"
	if r.scoped {
		loc = "location_id"
	}
	// Tombstones PurgeRevoked will delete are no longer targets.
	rows, err := s.db.QueryContext(ctx, `SELECT id, `+loc+`, name, control_address, cert_serial, join_key, join_expires_at, revoked_at FROM `+r.table+`
		WHERE NOT (revoked_at > 0 AND (revoked_at < $1 OR cert_serial = '')) ORDER BY id`, time.Now().Add(-RevocationRetention).UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("%s targets: %w", r.kind, err)
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
			if t.JoinKey, err = hex.DecodeString(key); err != nil {
				return nil, fmt.Errorf("stored join key of %s %s: %w", r.kind, t.ID, err)
			}
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
	return s.completeAdoption(ctx, gatewayRegistry, a, gatewayID, joinKey, certSerial)
}

// CompleteProxyAdoption is CompleteAdoption for a proxy.
func (s *Service) CompleteProxyAdoption(ctx context.Context, a core.Actor, proxyID string, joinKey []byte, certSerial string) error {
	return s.completeAdoption(ctx, proxyRegistry, a, proxyID, joinKey, certSerial)
}

func (s *Service) completeAdoption(ctx context.Context, r registry, a core.Actor, id string, joinKey []byte, certSerial string) error {
	return s.db.Tx(ctx, func(tx *sql.Tx) error {
		now := store.Now()
		res, err := tx.ExecContext(ctx, `UPDATE `+r.table+` SET cert_serial = $1, adopted_at = $2, join_key = '', join_expires_at = 0, updated_at = $2
			WHERE id = $3 AND join_key = $4 AND join_expires_at > $2 AND revoked_at = 0`, certSerial, now, id, hex.EncodeToString(joinKey))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrJoinKeyUsed
		}
		return core.Audit(ctx, tx, a, r.kind+".adopted", r.kind, id, map[string]any{"cert_serial": certSerial})
	})
}

// LinkEvent is a change of a core replica's link to a gateway or proxy.
type LinkEvent struct {
	GatewayID, CoreID, Version, BootID, Error string
	Connected                                 bool
	AppliedRevision                           int64
	// Role and RoleSince: what a gateway reported (RoleActive,
	// RoleStandby; anything else is stored as not reported). Ignored for
	// proxies.
	Role      string
	RoleSince int64
}

// storedRole is the role and role_since as gateway_links keeps them: an
// empty role and 0 when not reported. A since in the future (clock skew
// between the gateway and core) is taken as now.
func storedRole(role string, since, now int64) (string, int64) {
	if role != RoleActive && role != RoleStandby {
		return "", 0
	}
	return role, min(max(since, 0), now)
}

// shownRole is a stored role as the API shows it.
func shownRole(role string) string {
	if role == "" {
		return RoleUnknown
	}
	return role
}

// RecordLink stores a gateway link state; connect and disconnect are audit
// events.
func (s *Service) RecordLink(ctx context.Context, a core.Actor, ev LinkEvent, audit bool) error {
	return s.recordLink(ctx, gatewayRegistry, a, ev, audit)
}

// RecordProxyLink is RecordLink for a proxy (GatewayID holds the proxy id).
func (s *Service) RecordProxyLink(ctx context.Context, a core.Actor, ev LinkEvent, audit bool) error {
	return s.recordLink(ctx, proxyRegistry, a, ev, audit)
}

func (s *Service) recordLink(ctx context.Context, r registry, a core.Actor, ev LinkEvent, audit bool) error {
	return s.db.Tx(ctx, func(tx *sql.Tx) error {
		now := store.Now()
		args := []any{ev.GatewayID, ev.CoreID, ev.Connected, now, ev.Version, ev.BootID, ev.AppliedRevision, ev.Error}
		roleCols, roleVals, roleSet := "", "", ""
		role, since := storedRole(ev.Role, ev.RoleSince, now)
		if r.scoped { // gateways report a role, proxies do not
			roleCols, roleVals, roleSet = ", role, role_since", ", $9, $10", ", role = excluded.role, role_since = excluded.role_since"
			args = append(args, role, since)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO `+r.linkTable+` (`+r.linkColumn+`, core_id, connected, since, version, boot_id, applied_revision, last_contact, last_error`+roleCols+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $4, $8`+roleVals+`)
			ON CONFLICT (`+r.linkColumn+`, core_id) DO UPDATE SET
			  since = CASE WHEN `+r.linkTable+`.connected <> excluded.connected THEN excluded.since ELSE `+r.linkTable+`.since END,
			  connected = excluded.connected, version = excluded.version, boot_id = excluded.boot_id,
			  applied_revision = excluded.applied_revision, last_contact = excluded.last_contact, last_error = excluded.last_error`+roleSet,
			args...)
		if store.IsForeignKeyViolation(err) {
			return nil // deleted meanwhile
		}
		if err != nil {
			return fmt.Errorf("record %s link: %w", r.kind, err)
		}
		if !audit {
			return nil
		}
		action := r.kind + ".disconnected"
		if ev.Connected {
			action = r.kind + ".connected"
		}
		details := map[string]any{"core_id": ev.CoreID, "version": ev.Version}
		if r.scoped {
			details["applied_revision"] = ev.AppliedRevision
			if ev.Connected {
				details["role"] = shownRole(role)
			}
		}
		if ev.Error != "" {
			details["error"] = ev.Error
		}
		return core.Audit(ctx, tx, a, action, r.kind, ev.GatewayID, details)
	})
}

// TouchLink updates the applied revision and last contact of a gateway link.
func (s *Service) TouchLink(ctx context.Context, gatewayID, coreID string, applied int64) error {
	return s.touchLink(ctx, gatewayRegistry, gatewayID, coreID, applied)
}

// RecordRole stores the role a gateway reported on a core replica's link
// (a change after the link came up), which is also contact.
func (s *Service) RecordRole(ctx context.Context, gatewayID, coreID, role string, since int64) error {
	now := store.Now()
	role, since = storedRole(role, since, now)
	_, err := s.db.ExecContext(ctx, `UPDATE gateway_links SET role = $1, role_since = $2, last_contact = $3 WHERE gateway_id = $4 AND core_id = $5`,
		role, since, now, gatewayID, coreID)
	if err != nil {
		return fmt.Errorf("record gateway role: %w", err)
	}
	return nil
}

// TouchProxyLink updates the last contact of a proxy link.
func (s *Service) TouchProxyLink(ctx context.Context, proxyID, coreID string) error {
	return s.touchLink(ctx, proxyRegistry, proxyID, coreID, 0)
}

func (s *Service) touchLink(ctx context.Context, r registry, id, coreID string, applied int64) error {
	_, err := s.db.ExecContext(ctx, `UPDATE `+r.linkTable+` SET applied_revision = $1, last_contact = $2 WHERE `+r.linkColumn+` = $3 AND core_id = $4`,
		applied, store.Now(), id, coreID)
	return err
}

// componentStatus merges the links of a gateway or proxy.
func (s *Service) componentStatus(ctx context.Context, q store.Querier, r registry, c *Component) error {
	st := &GatewayStatus{Links: []GatewayLink{}}
	var serial string
	if err := q.QueryRowContext(ctx, `SELECT cert_serial, adopted_at, join_expires_at FROM `+r.table+` WHERE id = $1`, c.ID).Scan(&serial, &st.AdoptedAt, &st.JoinTokenExpiresAt); err != nil {
		return err
	}
	st.Adopted = serial != ""
	roleCols := "'', 0"
	if r.scoped {
		roleCols = "role, role_since"
	}
	rows, err := q.QueryContext(ctx, `SELECT core_id, connected, since, version, boot_id, applied_revision, last_contact, last_error, `+roleCols+` FROM `+r.linkTable+`
		WHERE `+r.linkColumn+` = $1 ORDER BY core_id`, c.ID)
	if err != nil {
		return err
	}
	defer rows.Close()
	var roles roleSummary
	for rows.Next() {
		var l GatewayLink
		if err := rows.Scan(&l.CoreID, &l.Connected, &l.Since, &l.Version, &l.BootID, &l.AppliedRevision, &l.LastContact, &l.LastError,
			&l.Role, &l.RoleSince); err != nil {
			return err
		}
		l.Connected = LinkFresh(l.Connected, l.LastContact, time.Now())
		if r.scoped {
			l.Role = shownRole(l.Role)
			roles.add(l)
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
		// "since" for a disconnected component is when the last link dropped.
		for _, l := range st.Links {
			st.ConnectedSince = max(st.ConnectedSince, l.Since)
		}
	}
	if r.scoped {
		st.Role, st.RoleSince = roles.result()
	}
	c.Status = st
	return rows.Err()
}

// roleSummary merges the roles the live links of a gateway report.
type roleSummary struct {
	live, active, standby int
	activeSince           int64
	standbySince          int64
}

func (s *roleSummary) add(l GatewayLink) {
	if !l.Connected {
		return
	}
	s.live++
	switch l.Role {
	case RoleActive:
		s.active++
		s.activeSince = max(s.activeSince, l.RoleSince)
	case RoleStandby:
		s.standby++
		s.standbySince = max(s.standbySince, l.RoleSince)
	}
}

// result: active if any live link says so (a report of the change to
// standby may still be on its way on that link, and an active gateway is
// what an operator must know of), standby if all say so, else unknown.
// Since is the newest change among the links that agree.
func (s *roleSummary) result() (string, int64) {
	switch {
	case s.active > 0:
		return RoleActive, s.activeSince
	case s.live > 0 && s.standby == s.live:
		return RoleStandby, s.standbySince
	}
	return RoleUnknown, 0
}

// RecordLinkError notes why a replica cannot reach a gateway, without an
// audit entry (retries would flood the log) and without changing "since".
func (s *Service) RecordLinkError(ctx context.Context, ev LinkEvent) error {
	return s.recordLinkError(ctx, gatewayRegistry, ev)
}

// RecordProxyLinkError is RecordLinkError for a proxy.
func (s *Service) RecordProxyLinkError(ctx context.Context, ev LinkEvent) error {
	return s.recordLinkError(ctx, proxyRegistry, ev)
}

func (s *Service) recordLinkError(ctx context.Context, r registry, ev LinkEvent) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO `+r.linkTable+` (`+r.linkColumn+`, core_id, connected, since, last_error) VALUES ($1, $2, FALSE, $3, $4)
		ON CONFLICT (`+r.linkColumn+`, core_id) DO UPDATE SET last_error = excluded.last_error`, ev.GatewayID, ev.CoreID, store.Now(), ev.Error)
	if store.IsForeignKeyViolation(err) {
		return nil
	}
	return err
}

// ForgetGateway removes a revoked gateway's tombstone once the gateway has
// been told.
func (s *Service) ForgetGateway(ctx context.Context, a core.Actor, gatewayID string) error {
	return s.forget(ctx, gatewayRegistry, a, gatewayID)
}

// ForgetProxy is ForgetGateway for a proxy.
func (s *Service) ForgetProxy(ctx context.Context, a core.Actor, proxyID string) error {
	return s.forget(ctx, proxyRegistry, a, proxyID)
}

func (s *Service) forget(ctx context.Context, r registry, a core.Actor, id string) error {
	return s.db.Tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM `+r.table+` WHERE id = $1 AND revoked_at > 0`, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		return core.Audit(ctx, tx, a, r.kind+".revocation_delivered", r.kind, id, nil)
	})
}
