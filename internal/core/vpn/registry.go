package vpn

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/store"
)

// Component is a registered gateway or proxy: a name and the address core
// dials to reach its control port.
type Component struct {
	ID             string `json:"id"`
	LocationID     string `json:"location_id,omitempty"`
	Name           string `json:"name"`
	ControlAddress string `json:"control_address"`
	CreatedAt      int64  `json:"created_at"`
	UpdatedAt      int64  `json:"updated_at"`
	// Status is the control link state.
	Status *GatewayStatus `json:"status,omitempty"`
}

// CreatedGateway is a new gateway with its join token, shown once.
type CreatedGateway struct {
	Component
	JoinToken
}

// ComponentInput creates (all fields) or patches (set fields) a component.
type ComponentInput struct {
	Name           *string `json:"name"`
	ControlAddress *string `json:"control_address"`
}

func (in ComponentInput) apply(c *Component) error {
	if in.Name != nil {
		c.Name = strings.TrimSpace(*in.Name)
	}
	if c.Name == "" || len(c.Name) > 64 || strings.ContainsAny(c.Name, "\x00\r\n") {
		return core.Invalid("invalid_name", "name", "name must be 1 to 64 characters on one line")
	}
	if in.ControlAddress != nil {
		c.ControlAddress = strings.TrimSpace(*in.ControlAddress)
	}
	if !strings.Contains(c.ControlAddress, ":") {
		return core.Invalid("invalid_address", "control_address", "control address must be host:port")
	}
	if _, err := validEndpoint("control_address", c.ControlAddress); err != nil {
		return core.Invalid("invalid_address", "control_address", "control address must be host:port")
	}
	return nil
}

// registry is the table-specific part of gateway and proxy management.
type registry struct {
	table, kind           string // "gateways"/"gateway"
	linkTable, linkColumn string // per core replica link state
	scoped                bool   // rows belong to a location
}

var (
	gatewayRegistry = registry{table: "gateways", kind: "gateway", linkTable: "gateway_links", linkColumn: "gateway_id", scoped: true}
	proxyRegistry   = registry{table: "proxies", kind: "proxy", linkTable: "proxy_links", linkColumn: "proxy_id"}
)

func (r registry) scope(locationID string) (string, []any) {
	if r.scoped {
		return " AND location_id = $2 AND revoked_at = 0", []any{locationID}
	}
	return " AND revoked_at = 0", nil
}

func (s *Service) createComponent(ctx context.Context, a core.Actor, r registry, locationID string, in ComponentInput, joinKey string, joinExpires int64) (Component, error) {
	if err := requireAdmin(a, "register a "+r.kind); err != nil {
		return Component{}, err
	}
	c := Component{ID: core.NewID(), LocationID: locationID}
	if err := in.apply(&c); err != nil {
		return Component{}, err
	}
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		now := store.Now()
		var err error
		if r.scoped {
			if _, err := s.getLocation(ctx, tx, locationID); err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, `INSERT INTO gateways (id, location_id, name, control_address, join_key, join_expires_at, created_at, updated_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $7)`, c.ID, locationID, c.Name, c.ControlAddress, joinKey, joinExpires, now)
		} else {
			_, err = tx.ExecContext(ctx, `INSERT INTO proxies (id, name, control_address, join_key, join_expires_at, created_at, updated_at)
				VALUES ($1, $2, $3, $4, $5, $6, $6)`, c.ID, c.Name, c.ControlAddress, joinKey, joinExpires, now)
		}
		if store.IsUniqueViolation(err) {
			return core.Conflict("duplicate_name", "name", "a %s with this name already exists", r.kind)
		}
		if err != nil {
			return fmt.Errorf("register %s: %w", r.kind, err)
		}
		return core.Audit(ctx, tx, a, r.kind+".create", r.kind, c.ID, map[string]any{"name": c.Name, "control_address": c.ControlAddress, "location_id": locationID})
	})
	if err != nil {
		return Component{}, err
	}
	return s.getComponent(ctx, s.db, r, locationID, c.ID)
}

func (s *Service) getComponent(ctx context.Context, q store.Querier, r registry, locationID, id string) (Component, error) {
	cond, extra := r.scope(locationID)
	cols := "id, '', name, control_address, created_at, updated_at"
	if r.scoped {
		cols = "id, location_id, name, control_address, created_at, updated_at"
	}
	var c Component
	err := q.QueryRowContext(ctx, `SELECT `+cols+` FROM `+r.table+` WHERE id = $1`+cond, append([]any{id}, extra...)...).
		Scan(&c.ID, &c.LocationID, &c.Name, &c.ControlAddress, &c.CreatedAt, &c.UpdatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return Component{}, core.NotFound(r.kind)
	}
	if err != nil {
		return Component{}, fmt.Errorf("get %s: %w", r.kind, err)
	}
	if err := s.componentStatus(ctx, q, r, &c); err != nil {
		return Component{}, err
	}
	return c, nil
}

func (s *Service) listComponents(ctx context.Context, a core.Actor, r registry, locationID string, p ListParams) ([]Component, int, error) {
	if err := requireAdmin(a, "list "+r.table); err != nil {
		return nil, 0, err
	}
	if r.scoped {
		if _, err := s.getLocation(ctx, s.db, locationID); err != nil {
			return nil, 0, err
		}
	}
	cols := "id, '', name, control_address, created_at, updated_at"
	where, args := " WHERE revoked_at = 0", []any{}
	if r.scoped {
		cols = "id, location_id, name, control_address, created_at, updated_at"
		where, args = " WHERE location_id = $1 AND revoked_at = 0", []any{locationID}
	}
	var total int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+r.table+where, args...).Scan(&total); err != nil {
		return nil, 0, err
	}
	args = append(args, p.Limit, p.Offset)
	rows, err := s.db.QueryContext(ctx, fmt.Sprintf(`SELECT %s FROM %s%s ORDER BY name LIMIT $%d OFFSET $%d`, cols, r.table, where, len(args)-1, len(args)), args...)
	if err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", r.table, err)
	}
	defer rows.Close()
	out := []Component{}
	for rows.Next() {
		var c Component
		if err := rows.Scan(&c.ID, &c.LocationID, &c.Name, &c.ControlAddress, &c.CreatedAt, &c.UpdatedAt); err != nil {
			return nil, 0, err
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	rows.Close()
	for i := range out {
		if err := s.componentStatus(ctx, s.db, r, &out[i]); err != nil {
			return nil, 0, err
		}
	}
	return out, total, nil
}

func (s *Service) updateComponent(ctx context.Context, a core.Actor, r registry, locationID, id string, in ComponentInput) (Component, error) {
	if err := requireAdmin(a, "change a "+r.kind); err != nil {
		return Component{}, err
	}
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		c, err := s.getComponent(ctx, tx, r, locationID, id)
		if err != nil {
			return err
		}
		if err := in.apply(&c); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE `+r.table+` SET name = $1, control_address = $2, updated_at = $3 WHERE id = $4`, c.Name, c.ControlAddress, store.Now(), id)
		if store.IsUniqueViolation(err) {
			return core.Conflict("duplicate_name", "name", "a %s with this name already exists", r.kind)
		}
		if err != nil {
			return err
		}
		return core.Audit(ctx, tx, a, r.kind+".update", r.kind, id, map[string]any{"name": c.Name, "control_address": c.ControlAddress})
	})
	if err != nil {
		return Component{}, err
	}
	return s.getComponent(ctx, s.db, r, locationID, id)
}

func (s *Service) deleteComponent(ctx context.Context, a core.Actor, r registry, locationID, id string) error {
	if err := requireAdmin(a, "delete a "+r.kind); err != nil {
		return err
	}
	return s.db.Tx(ctx, func(tx *sql.Tx) error {
		c, err := s.getComponent(ctx, tx, r, locationID, id)
		if err != nil {
			return err
		}
		// Keep a tombstone until a core replica has delivered the
		// revocation; the name is freed for a new registration.
		now := store.Now()
		if _, err := tx.ExecContext(ctx, `UPDATE `+r.table+` SET revoked_at = $1, updated_at = $1, join_key = '', join_expires_at = 0,
			name = name || ' (deleted ' || id || ')' WHERE id = $2`, now, id); err != nil {
			return err
		}
		return core.Audit(ctx, tx, a, r.kind+".delete", r.kind, id, map[string]any{"name": c.Name})
	})
}

// Gateway registry, scoped to a location.

// CreateGateway registers a gateway and returns its one-time join token.
func (s *Service) CreateGateway(ctx context.Context, a core.Actor, locationID string, in ComponentInput) (CreatedGateway, error) {
	tok, key := newJoinToken(DefaultJoinTokenTTL)
	c, err := s.createComponent(ctx, a, gatewayRegistry, locationID, in, key, tok.ExpiresAt)
	if err != nil {
		return CreatedGateway{}, err
	}
	return CreatedGateway{Component: c, JoinToken: tok}, nil
}
func (s *Service) GetGateway(ctx context.Context, a core.Actor, locationID, id string) (Component, error) {
	if err := requireAdmin(a, "read gateways"); err != nil {
		return Component{}, err
	}
	return s.getComponent(ctx, s.db, gatewayRegistry, locationID, id)
}
func (s *Service) ListGateways(ctx context.Context, a core.Actor, locationID string, p ListParams) ([]Component, int, error) {
	return s.listComponents(ctx, a, gatewayRegistry, locationID, p)
}
func (s *Service) UpdateGateway(ctx context.Context, a core.Actor, locationID, id string, in ComponentInput) (Component, error) {
	return s.updateComponent(ctx, a, gatewayRegistry, locationID, id, in)
}
func (s *Service) DeleteGateway(ctx context.Context, a core.Actor, locationID, id string) error {
	return s.deleteComponent(ctx, a, gatewayRegistry, locationID, id)
}

// Proxy registry.

// CreateProxy registers a proxy and returns its one-time join token.
func (s *Service) CreateProxy(ctx context.Context, a core.Actor, in ComponentInput) (CreatedGateway, error) {
	tok, key := newJoinToken(DefaultJoinTokenTTL)
	c, err := s.createComponent(ctx, a, proxyRegistry, "", in, key, tok.ExpiresAt)
	if err != nil {
		return CreatedGateway{}, err
	}
	return CreatedGateway{Component: c, JoinToken: tok}, nil
}
func (s *Service) GetProxy(ctx context.Context, a core.Actor, id string) (Component, error) {
	if err := requireAdmin(a, "read proxies"); err != nil {
		return Component{}, err
	}
	return s.getComponent(ctx, s.db, proxyRegistry, "", id)
}
func (s *Service) ListProxies(ctx context.Context, a core.Actor, p ListParams) ([]Component, int, error) {
	return s.listComponents(ctx, a, proxyRegistry, "", p)
}
func (s *Service) UpdateProxy(ctx context.Context, a core.Actor, id string, in ComponentInput) (Component, error) {
	return s.updateComponent(ctx, a, proxyRegistry, "", id, in)
}
func (s *Service) DeleteProxy(ctx context.Context, a core.Actor, id string) error {
	return s.deleteComponent(ctx, a, proxyRegistry, "", id)
}
