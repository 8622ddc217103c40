package identity

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/store"
)

// Group collects users; admin groups grant administration of ward.
type Group struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	IsAdmin     bool     `json:"is_admin"`
	Description string   `json:"description"`
	Members     []string `json:"members"`
	CreatedAt   int64    `json:"created_at"`
	UpdatedAt   int64    `json:"updated_at"`
}

// NewGroup is the input for creating a group.
type NewGroup struct {
	Name        string   `json:"name"`
	IsAdmin     bool     `json:"is_admin"`
	Description string   `json:"description"`
	Members     []string `json:"members"`
}

// GroupPatch changes the fields that are set; Members replaces the list.
type GroupPatch struct {
	Name        *string   `json:"name"`
	IsAdmin     *bool     `json:"is_admin"`
	Description *string   `json:"description"`
	Members     *[]string `json:"members"`
}

var groupNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$`)

func validateGroupName(n string) error {
	if !groupNameRe.MatchString(n) {
		return core.Invalid("invalid_name", "name", "group name must be 1-64 characters of letters, digits, space, '.', '_' or '-'")
	}
	return nil
}

func groupConflict(err error) error {
	if store.UniqueViolationOn(err, "name") {
		return core.Conflict("duplicate_name", "name", "a group with this name already exists")
	}
	return fmt.Errorf("write group: %w", err)
}

// CreateGroup adds a group with optional members (usernames).
func (s *Service) CreateGroup(ctx context.Context, a core.Actor, in NewGroup) (Group, error) {
	if !a.IsAdmin {
		return Group{}, core.Forbidden("only admins can create groups")
	}
	in.Name = strings.TrimSpace(in.Name)
	if err := validateGroupName(in.Name); err != nil {
		return Group{}, err
	}
	if err := validateName("description", in.Description); err != nil {
		return Group{}, err
	}
	id := core.NewID()
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		now := store.Now()
		if _, err := tx.ExecContext(ctx, `INSERT INTO groups (id, name, is_admin, description, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)`,
			id, in.Name, in.IsAdmin, in.Description, now); err != nil {
			return groupConflict(err)
		}
		if in.Members != nil {
			if err := s.setMembers(ctx, tx, id, in.Members); err != nil {
				return err
			}
		}
		return core.Audit(ctx, tx, a, "group.create", "group", id, map[string]any{"name": in.Name, "is_admin": in.IsAdmin, "members": in.Members})
	})
	if err != nil {
		return Group{}, err
	}
	return s.getGroup(ctx, s.db, id)
}

// setMembers replaces a group's members and re-syncs VPN access of everyone
// who joined or left.
func (s *Service) setMembers(ctx context.Context, tx *sql.Tx, groupID string, usernames []string) error {
	want := map[string]bool{}
	for _, n := range usernames {
		var uid string
		err := tx.QueryRowContext(ctx, `SELECT id FROM users WHERE username = $1`, NormalizeUsername(n)).Scan(&uid)
		if errors.Is(err, sql.ErrNoRows) {
			return core.Invalid("unknown_user", "members", "user %q does not exist", n)
		}
		if err != nil {
			return err
		}
		want[uid] = true
	}
	have := map[string]bool{}
	rows, err := tx.QueryContext(ctx, `SELECT user_id FROM group_members WHERE group_id = $1`, groupID)
	if err != nil {
		return err
	}
	for rows.Next() {
		var uid string
		if err := rows.Scan(&uid); err != nil {
			rows.Close()
			return err
		}
		have[uid] = true
	}
	rows.Close()
	for uid := range have {
		if !want[uid] {
			if _, err := tx.ExecContext(ctx, `DELETE FROM group_members WHERE group_id = $1 AND user_id = $2`, groupID, uid); err != nil {
				return err
			}
			if err := s.syncUser(ctx, tx, uid, false); err != nil {
				return err
			}
		}
	}
	for uid := range want {
		if !have[uid] {
			if _, err := tx.ExecContext(ctx, `INSERT INTO group_members (group_id, user_id) VALUES ($1, $2)`, groupID, uid); err != nil {
				return err
			}
			if err := s.syncUser(ctx, tx, uid, false); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Service) getGroup(ctx context.Context, q store.Querier, id string) (Group, error) {
	var g Group
	err := q.QueryRowContext(ctx, `SELECT id, name, is_admin, description, created_at, updated_at FROM groups WHERE id = $1`, id).
		Scan(&g.ID, &g.Name, &g.IsAdmin, &g.Description, &g.CreatedAt, &g.UpdatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return Group{}, core.NotFound("group")
	}
	if err != nil {
		return Group{}, fmt.Errorf("get group: %w", err)
	}
	rows, err := q.QueryContext(ctx, `SELECT u.username FROM group_members m JOIN users u ON u.id = m.user_id WHERE m.group_id = $1 ORDER BY u.username`, id)
	if err != nil {
		return Group{}, err
	}
	defer rows.Close()
	g.Members = []string{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return Group{}, err
		}
		g.Members = append(g.Members, n)
	}
	return g, rows.Err()
}

// GetGroup returns a group with its members. Admins only.
func (s *Service) GetGroup(ctx context.Context, a core.Actor, id string) (Group, error) {
	if !a.IsAdmin {
		return Group{}, core.Forbidden("only admins can read groups")
	}
	return s.getGroup(ctx, s.db, id)
}

// ListGroups returns a page of groups ordered by name. Members are not
// listed here (a group may be large); read the group for them.
func (s *Service) ListGroups(ctx context.Context, a core.Actor, p ListParams) ([]Group, int, error) {
	if !a.IsAdmin {
		return nil, 0, core.Forbidden("only admins can list groups")
	}
	var total int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM groups`).Scan(&total); err != nil {
		return nil, 0, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, name, is_admin, description, created_at, updated_at FROM groups ORDER BY name LIMIT $1 OFFSET $2`, p.Limit, p.Offset)
	if err != nil {
		return nil, 0, fmt.Errorf("list groups: %w", err)
	}
	defer rows.Close()
	out := []Group{}
	for rows.Next() {
		var g Group
		if err := rows.Scan(&g.ID, &g.Name, &g.IsAdmin, &g.Description, &g.CreatedAt, &g.UpdatedAt); err != nil {
			return nil, 0, err
		}
		out = append(out, g)
	}
	return out, total, rows.Err()
}

// UpdateGroup applies a patch.
func (s *Service) UpdateGroup(ctx context.Context, a core.Actor, id string, p GroupPatch) (Group, error) {
	if !a.IsAdmin {
		return Group{}, core.Forbidden("only admins can change groups")
	}
	if p.Name != nil {
		*p.Name = strings.TrimSpace(*p.Name)
		if err := validateGroupName(*p.Name); err != nil {
			return Group{}, err
		}
	}
	if p.Description != nil {
		if err := validateName("description", *p.Description); err != nil {
			return Group{}, err
		}
	}
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := s.getGroup(ctx, tx, id); err != nil {
			return err
		}
		changed := map[string]any{}
		for col, v := range map[string]any{"name": p.Name, "is_admin": p.IsAdmin, "description": p.Description} {
			var val any
			switch x := v.(type) {
			case *string:
				if x == nil {
					continue
				}
				val = *x
			case *bool:
				if x == nil {
					continue
				}
				val = *x
			}
			if _, err := tx.ExecContext(ctx, `UPDATE groups SET `+col+` = $1, updated_at = $2 WHERE id = $3`, val, store.Now(), id); err != nil {
				return groupConflict(err)
			}
			changed[col] = val
		}
		if p.Members != nil {
			if err := s.setMembers(ctx, tx, id, *p.Members); err != nil {
				return err
			}
			changed["members"] = *p.Members
		}
		if err := ensureAdminRemains(ctx, tx); err != nil {
			return err
		}
		if len(changed) == 0 {
			return nil
		}
		return core.Audit(ctx, tx, a, "group.update", "group", id, changed)
	})
	if err != nil {
		return Group{}, err
	}
	return s.getGroup(ctx, s.db, id)
}

// DeleteGroup removes a group; members lose whatever access it granted.
func (s *Service) DeleteGroup(ctx context.Context, a core.Actor, id string) error {
	if !a.IsAdmin {
		return core.Forbidden("only admins can delete groups")
	}
	return s.db.Tx(ctx, func(tx *sql.Tx) error {
		g, err := s.getGroup(ctx, tx, id)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM group_members WHERE group_id = $1`, id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM groups WHERE id = $1`, id); err != nil {
			return fmt.Errorf("delete group: %w", err)
		}
		for _, m := range g.Members {
			var uid string
			if err := tx.QueryRowContext(ctx, `SELECT id FROM users WHERE username = $1`, m).Scan(&uid); err != nil {
				return err
			}
			if err := s.syncUser(ctx, tx, uid, false); err != nil {
				return err
			}
		}
		if err := ensureAdminRemains(ctx, tx); err != nil {
			return err
		}
		return core.Audit(ctx, tx, a, "group.delete", "group", id, map[string]any{"name": g.Name})
	})
}

// Membership errors callers may show at the username field.
var (
	ErrAlreadyMember = core.Conflict("already_member", "username", "the user is already a member")
	ErrNotMember     = core.Conflict("not_member", "username", "the user is not a member")
)

// ChangeGroupMember adds (join) or removes one user, leaving every other
// member as it is: two admins changing members of one group at the same
// time both get their change, unlike with a whole member list.
func (s *Service) ChangeGroupMember(ctx context.Context, a core.Actor, groupID, username string, join bool) error {
	if !a.IsAdmin {
		return core.Forbidden("only admins can change groups")
	}
	username = NormalizeUsername(username)
	return s.db.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := s.getGroup(ctx, tx, groupID); err != nil {
			return err
		}
		var uid string
		err := tx.QueryRowContext(ctx, `SELECT id FROM users WHERE username = $1`, username).Scan(&uid)
		if errors.Is(err, sql.ErrNoRows) {
			return core.Invalid("unknown_user", "username", "user %q does not exist", username)
		}
		if err != nil {
			return err
		}
		var res sql.Result
		action := "group.member_add"
		if join {
			res, err = tx.ExecContext(ctx, `INSERT INTO group_members (group_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, groupID, uid)
		} else {
			action = "group.member_remove"
			res, err = tx.ExecContext(ctx, `DELETE FROM group_members WHERE group_id = $1 AND user_id = $2`, groupID, uid)
		}
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			if join {
				return ErrAlreadyMember
			}
			return ErrNotMember
		}
		if err := s.syncUser(ctx, tx, uid, false); err != nil {
			return err
		}
		if err := ensureAdminRemains(ctx, tx); err != nil {
			return err
		}
		return core.Audit(ctx, tx, a, action, "group", groupID, map[string]any{"username": username})
	})
}
