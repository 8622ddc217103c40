package identity

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/mail"
	"regexp"
	"slices"
	"strings"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/store"
)

// User is a person (or service account) known to ward.
type User struct {
	ID          string   `json:"id"`
	Username    string   `json:"username"`
	Email       string   `json:"email"`
	FirstName   string   `json:"first_name"`
	LastName    string   `json:"last_name"`
	Phone       string   `json:"phone"`
	Active      bool     `json:"active"`
	HasPassword bool     `json:"has_password"`
	IsAdmin     bool     `json:"is_admin"`
	Groups      []string `json:"groups"`
	CreatedAt   int64    `json:"created_at"`
	UpdatedAt   int64    `json:"updated_at"`
}

// NewUser is the input for creating a user.
type NewUser struct {
	Username  string   `json:"username"`
	Email     string   `json:"email"`
	FirstName string   `json:"first_name"`
	LastName  string   `json:"last_name"`
	Phone     string   `json:"phone"`
	Password  string   `json:"password"`
	Active    *bool    `json:"active"`
	Groups    []string `json:"groups"`
}

// UserPatch changes the fields that are set.
type UserPatch struct {
	Email     *string   `json:"email"`
	FirstName *string   `json:"first_name"`
	LastName  *string   `json:"last_name"`
	Phone     *string   `json:"phone"`
	Password  *string   `json:"password"`
	Active    *bool     `json:"active"`
	Groups    *[]string `json:"groups"`
}

var (
	usernameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	phoneRe    = regexp.MustCompile(`^[+0-9 ()-]{0,32}$`)
)

// NormalizeUsername lower-cases and trims a username for lookups.
func NormalizeUsername(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

func validateUsername(u string) error {
	if !usernameRe.MatchString(u) {
		return core.Invalid("invalid_username", "username", "username must be 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit")
	}
	return nil
}

func normalizeEmail(e string) (string, error) {
	e = strings.ToLower(strings.TrimSpace(e))
	addr, err := mail.ParseAddress(e)
	if err != nil || addr.Address != e || len(e) > 254 {
		return "", core.Invalid("invalid_email", "email", "not a valid e-mail address")
	}
	return e, nil
}

func validateName(field, v string) error {
	if len(v) > 128 || strings.ContainsAny(v, "\x00\r\n") {
		return core.Invalid("invalid_value", field, "must be at most 128 characters on one line")
	}
	return nil
}

func validatePhone(v string) error {
	if !phoneRe.MatchString(v) {
		return core.Invalid("invalid_phone", "phone", "phone may hold only digits, spaces, +, -, ( and ), at most 32")
	}
	return nil
}

// CreateUser adds a user. Only admins may create users. A user without a
// password cannot log in until one is set (enrollment arrives later).
func (s *Service) CreateUser(ctx context.Context, a core.Actor, in NewUser) (User, error) {
	if !a.IsAdmin {
		return User{}, core.Forbidden("only admins can create users")
	}
	in.Username = NormalizeUsername(in.Username)
	if err := validateUsername(in.Username); err != nil {
		return User{}, err
	}
	email, err := normalizeEmail(in.Email)
	if err != nil {
		return User{}, err
	}
	for f, v := range map[string]string{"first_name": in.FirstName, "last_name": in.LastName} {
		if err := validateName(f, v); err != nil {
			return User{}, err
		}
	}
	if err := validatePhone(in.Phone); err != nil {
		return User{}, err
	}
	hash := ""
	if in.Password != "" {
		settings, err := core.LoadSettings(ctx, s.db)
		if err != nil {
			return User{}, err
		}
		if err := CheckPasswordStrength(in.Password, settings.MinPasswordLength); err != nil {
			return User{}, err
		}
		hash = HashPassword(s.params, in.Password)
	}
	active := in.Active == nil || *in.Active
	id := core.NewID()
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		now := store.Now()
		_, err := tx.ExecContext(ctx, `INSERT INTO users (id, username, email, first_name, last_name, phone, active, password_hash, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)`,
			id, in.Username, email, strings.TrimSpace(in.FirstName), strings.TrimSpace(in.LastName), strings.TrimSpace(in.Phone), active, hash, now)
		if err != nil {
			return userConflict(err)
		}
		if err := s.setUserGroups(ctx, tx, id, in.Groups); err != nil {
			return err
		}
		if err := s.syncUser(ctx, tx, id, false); err != nil {
			return err
		}
		return core.Audit(ctx, tx, a, "user.create", "user", id, map[string]any{"username": in.Username, "groups": in.Groups})
	})
	if err != nil {
		return User{}, err
	}
	return s.GetUser(ctx, a, id)
}

func userConflict(err error) error {
	switch {
	case store.UniqueViolationOn(err, "username"):
		return core.Conflict("duplicate_username", "username", "a user with this username already exists")
	case store.UniqueViolationOn(err, "email"):
		return core.Conflict("duplicate_email", "email", "a user with this e-mail already exists")
	}
	return fmt.Errorf("write user: %w", err)
}

// setUserGroups replaces the user's group membership with the named groups.
func (s *Service) setUserGroups(ctx context.Context, tx *sql.Tx, userID string, names []string) error {
	ids := make([]string, 0, len(names))
	for _, n := range names {
		var gid string
		err := tx.QueryRowContext(ctx, `SELECT id FROM groups WHERE name = $1`, strings.TrimSpace(n)).Scan(&gid)
		if errors.Is(err, sql.ErrNoRows) {
			return core.Invalid("unknown_group", "groups", "group %q does not exist", n)
		}
		if err != nil {
			return err
		}
		ids = append(ids, gid)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM group_members WHERE user_id = $1`, userID); err != nil {
		return err
	}
	slices.Sort(ids)
	for _, gid := range slices.Compact(ids) {
		if _, err := tx.ExecContext(ctx, `INSERT INTO group_members (group_id, user_id) VALUES ($1, $2)`, gid, userID); err != nil {
			return err
		}
	}
	return nil
}

const userColumns = `u.id, u.username, u.email, u.first_name, u.last_name, u.phone, u.active, u.password_hash <> '', u.created_at, u.updated_at`

func scanUser(row interface{ Scan(...any) error }) (User, error) {
	var u User
	err := row.Scan(&u.ID, &u.Username, &u.Email, &u.FirstName, &u.LastName, &u.Phone, &u.Active, &u.HasPassword, &u.CreatedAt, &u.UpdatedAt)
	return u, err
}

// loadGroups fills Groups and IsAdmin for the given users.
func loadGroups(ctx context.Context, q store.Querier, users []User) error {
	if len(users) == 0 {
		return nil
	}
	idx := make(map[string]int, len(users))
	args := make([]any, len(users))
	ph := make([]string, len(users))
	for i := range users {
		idx[users[i].ID] = i
		users[i].Groups = []string{}
		args[i] = users[i].ID
		ph[i] = fmt.Sprintf("$%d", i+1)
	}
	rows, err := q.QueryContext(ctx, `SELECT m.user_id, g.name, g.is_admin FROM group_members m JOIN groups g ON g.id = m.group_id
		WHERE m.user_id IN (`+strings.Join(ph, ",")+`) ORDER BY g.name`, args...)
	if err != nil {
		return fmt.Errorf("load groups: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var uid, name string
		var admin bool
		if err := rows.Scan(&uid, &name, &admin); err != nil {
			return err
		}
		u := &users[idx[uid]]
		u.Groups = append(u.Groups, name)
		u.IsAdmin = u.IsAdmin || admin
	}
	return rows.Err()
}

// GetUser returns one user; users may read themselves, admins anyone.
func (s *Service) GetUser(ctx context.Context, a core.Actor, id string) (User, error) {
	if !a.IsAdmin && a.UserID != id {
		return User{}, core.Forbidden("you may only read your own account")
	}
	return s.getUser(ctx, s.db, id)
}

func (s *Service) getUser(ctx context.Context, q store.Querier, id string) (User, error) {
	u, err := scanUser(q.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users u WHERE u.id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, core.NotFound("user")
	}
	if err != nil {
		return User{}, fmt.Errorf("get user: %w", err)
	}
	users := []User{u}
	if err := loadGroups(ctx, q, users); err != nil {
		return User{}, err
	}
	return users[0], nil
}

// ListUsers returns a page of users matching the search (username, e-mail or
// name), ordered by username, and the total count.
func (s *Service) ListUsers(ctx context.Context, a core.Actor, p ListParams) ([]User, int, error) {
	if !a.IsAdmin {
		return nil, 0, core.Forbidden("only admins can list users")
	}
	cond, args := "", []any{}
	if p.Search != "" {
		args = append(args, "%"+strings.ToLower(p.Search)+"%")
		cond = ` WHERE u.username LIKE $1 OR u.email LIKE $1 OR LOWER(u.first_name || ' ' || u.last_name) LIKE $1`
	}
	var total int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM users u`+cond, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count users: %w", err)
	}
	args = append(args, p.Limit, p.Offset)
	rows, err := s.db.QueryContext(ctx, fmt.Sprintf(`SELECT %s FROM users u%s ORDER BY u.username LIMIT $%d OFFSET $%d`,
		userColumns, cond, len(args)-1, len(args)), args...)
	if err != nil {
		return nil, 0, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	users := []User{}
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, 0, err
		}
		users = append(users, u)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	return users, total, loadGroups(ctx, s.db, users)
}

// UpdateUser applies a patch. Users may change their own profile fields;
// only admins change the active flag, groups or another user's password.
func (s *Service) UpdateUser(ctx context.Context, a core.Actor, id string, p UserPatch) (User, error) {
	self := a.UserID == id
	if !a.IsAdmin && !self {
		return User{}, core.Forbidden("you may only change your own account")
	}
	if !a.IsAdmin && (p.Active != nil || p.Groups != nil || p.Password != nil) {
		return User{}, core.Forbidden("only admins can change the active flag, groups or set a password here")
	}
	var email string
	if p.Email != nil {
		var err error
		if email, err = normalizeEmail(*p.Email); err != nil {
			return User{}, err
		}
	}
	for f, v := range map[string]*string{"first_name": p.FirstName, "last_name": p.LastName} {
		if v != nil {
			if err := validateName(f, *v); err != nil {
				return User{}, err
			}
		}
	}
	if p.Phone != nil {
		if err := validatePhone(*p.Phone); err != nil {
			return User{}, err
		}
	}
	var hash string
	if p.Password != nil {
		settings, err := core.LoadSettings(ctx, s.db)
		if err != nil {
			return User{}, err
		}
		if err := CheckPasswordStrength(*p.Password, settings.MinPasswordLength); err != nil {
			return User{}, err
		}
		hash = HashPassword(s.params, *p.Password)
	}
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		before, err := s.getUser(ctx, tx, id)
		if err != nil {
			return err
		}
		changed := map[string]any{}
		set := func(col string, v any) error {
			_, err := tx.ExecContext(ctx, `UPDATE users SET `+col+` = $1, updated_at = $2 WHERE id = $3`, v, store.Now(), id)
			if err != nil {
				return userConflict(err)
			}
			if col != "password_hash" {
				changed[col] = v
			} else {
				changed["password"] = "changed"
			}
			return nil
		}
		if p.Email != nil && email != before.Email {
			if err := set("email", email); err != nil {
				return err
			}
		}
		for col, v := range map[string]*string{"first_name": p.FirstName, "last_name": p.LastName, "phone": p.Phone} {
			if v != nil {
				if err := set(col, strings.TrimSpace(*v)); err != nil {
					return err
				}
			}
		}
		if p.Password != nil {
			if err := set("password_hash", hash); err != nil {
				return err
			}
		}
		accessChanged := false
		if p.Active != nil && *p.Active != before.Active {
			if err := set("active", *p.Active); err != nil {
				return err
			}
			accessChanged = true
			if !*p.Active {
				// A disabled user loses every open session at once.
				if _, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE user_id = $1`, id); err != nil {
					return err
				}
			}
		}
		groupsChanged := false
		if p.Groups != nil {
			if err := s.setUserGroups(ctx, tx, id, *p.Groups); err != nil {
				return err
			}
			changed["groups"] = *p.Groups
			groupsChanged = true
		}
		if accessChanged || groupsChanged {
			if err := s.syncUser(ctx, tx, id, accessChanged); err != nil {
				return err
			}
			if err := ensureAdminRemains(ctx, tx); err != nil {
				return err
			}
		}
		if len(changed) == 0 {
			return nil
		}
		return core.Audit(ctx, tx, a, "user.update", "user", id, changed)
	})
	if err != nil {
		return User{}, err
	}
	return s.getUser(ctx, s.db, id)
}

// DeleteUser removes a user with their devices, sessions and tokens.
func (s *Service) DeleteUser(ctx context.Context, a core.Actor, id string) error {
	if !a.IsAdmin {
		return core.Forbidden("only admins can delete users")
	}
	return s.db.Tx(ctx, func(tx *sql.Tx) error {
		u, err := s.getUser(ctx, tx, id)
		if err != nil {
			return err
		}
		// Bump the revisions of the user's locations before the cascade
		// removes the rows that say which locations those were.
		if err := s.syncUser(ctx, tx, id, true); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM users WHERE id = $1`, id); err != nil {
			return fmt.Errorf("delete user: %w", err)
		}
		if err := ensureAdminRemains(ctx, tx); err != nil {
			return err
		}
		return core.Audit(ctx, tx, a, "user.delete", "user", id, map[string]any{"username": u.Username})
	})
}

// ensureAdminRemains refuses a change that leaves no active administrator,
// which would lock everybody out of the instance.
func ensureAdminRemains(ctx context.Context, tx *sql.Tx) error {
	var n int
	err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM users u WHERE u.active = TRUE AND EXISTS (
		SELECT 1 FROM group_members m JOIN groups g ON g.id = m.group_id WHERE m.user_id = u.id AND g.is_admin = TRUE)`).Scan(&n)
	if err != nil {
		return err
	}
	if n == 0 {
		return core.Conflict("last_admin", "", "this change would leave no active administrator")
	}
	return nil
}

// SetPasswordDirect sets a password without an actor's permission check, for
// the `ward admin reset-password` command that works on the database itself.
func (s *Service) SetPasswordDirect(ctx context.Context, username, password string) error {
	username = NormalizeUsername(username)
	hash := HashPassword(s.params, password)
	return s.db.Tx(ctx, func(tx *sql.Tx) error {
		var id string
		err := tx.QueryRowContext(ctx, `SELECT id FROM users WHERE username = $1`, username).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return core.NotFound("user")
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3`, hash, store.Now(), id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM login_attempts WHERE login_key = $1`, id); err != nil {
			return err
		}
		return core.Audit(ctx, tx, core.SystemActor("ward admin"), "user.password_reset", "user", id, map[string]any{"username": username})
	})
}
