package web

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/wardvpn/ward/internal/core/identity"
)

// groupRoutes registers the group administration pages.
func (s *Server) groupRoutes() []route {
	return []route{
		{pattern: "GET /groups", admin: true, handle: s.groups},
		{pattern: "POST /groups", admin: true, handle: s.createGroup},
		{pattern: "GET /groups/{id}", admin: true, handle: s.groupPage},
		{pattern: "POST /groups/{id}", admin: true, handle: s.updateGroup},
		{pattern: "POST /groups/{id}/members", admin: true, handle: s.addGroupMember},
		{pattern: "POST /groups/{id}/members/remove", admin: true, handle: s.removeGroupMember},
		{pattern: "POST /groups/{id}/delete", admin: true, handle: s.deleteGroup},
	}
}

type groupsData struct {
	Groups []identity.Group
	Pager  adminPager
	// Values fill the new-group form.
	Values adminForm
}

func (s *Server) groupsData(r *http.Request, c *reqCtx, values url.Values) (groupsData, error) {
	ctx := r.Context()
	gs, pg, err := adminList(r, "/groups", nil, func(limit, offset int) ([]identity.Group, int, error) {
		return s.o.Identity.ListGroups(ctx, c.actor(), identity.ListParams{Limit: limit, Offset: offset})
	})
	if err != nil {
		return groupsData{}, err
	}
	return groupsData{Groups: gs, Pager: pg, Values: adminForm(values)}, nil
}

func (s *Server) groups(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	d, err := s.groupsData(r, c, nil)
	if err != nil {
		return err
	}
	p := s.page(c, "Groups", "groups", d)
	p.Notice = adminNotice(r)
	s.render(w, http.StatusOK, "groups.html", p)
	return nil
}

func (s *Server) createGroup(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	f := r.PostForm
	g, err := s.o.Identity.CreateGroup(r.Context(), c.actor(), identity.NewGroup{Name: f.Get("name"), Description: f.Get("description"),
		IsAdmin: f.Get("is_admin") != ""})
	if err != nil {
		d, derr := s.groupsData(r, c, f)
		if derr != nil {
			return derr
		}
		s.formError(w, r, s.page(c, "Groups", "groups", d), "groups.html", err)
		return nil
	}
	redirect(w, r, "/groups/"+g.ID+"?done=created")
	return nil
}

// One group.

type groupData struct {
	Group identity.Group
	// Members is one page of the members.
	Members []string
	Pager   adminPager
	Values  adminForm
	// Username fills the add-member form again after an error.
	Username string
}

func (s *Server) groupData(ctx context.Context, r *http.Request, c *reqCtx, id string) (groupData, error) {
	g, err := s.o.Identity.GetGroup(ctx, c.actor(), id)
	if err != nil {
		return groupData{}, err
	}
	// The service returns every member (usernames only); the page shows
	// them in pages.
	members, pg := pagedSlice(r, "/groups/"+g.ID, nil, g.Members)
	v := url.Values{"name": {g.Name}, "description": {g.Description}}
	if g.IsAdmin {
		v.Set("is_admin", "on")
	}
	return groupData{Group: g, Members: members, Pager: pg, Values: adminForm(v)}, nil
}

func (s *Server) groupPageOf(c *reqCtx, d groupData) *Page {
	return s.page(c, "Group "+d.Group.Name, "groups", d)
}

func (s *Server) groupPage(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	d, err := s.groupData(r.Context(), r, c, r.PathValue("id"))
	if err != nil {
		return err
	}
	p := s.groupPageOf(c, d)
	p.Notice = adminNotice(r)
	s.render(w, http.StatusOK, "groups_detail.html", p)
	return nil
}

// groupFormError shows a failed action on the group's page.
func (s *Server) groupFormError(w http.ResponseWriter, r *http.Request, c *reqCtx, err error, edit func(*groupData)) error {
	d, derr := s.groupData(r.Context(), r, c, r.PathValue("id"))
	if derr != nil {
		return derr
	}
	if edit != nil {
		edit(&d)
	}
	s.formError(w, r, s.groupPageOf(c, d), "groups_detail.html", err)
	return nil
}

func (s *Server) updateGroup(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	id := r.PathValue("id")
	f := r.PostForm
	name, desc, admin := f.Get("name"), f.Get("description"), f.Get("is_admin") != ""
	if _, err := s.o.Identity.UpdateGroup(r.Context(), c.actor(), id, identity.GroupPatch{Name: &name, Description: &desc, IsAdmin: &admin}); err != nil {
		return s.groupFormError(w, r, c, err, func(d *groupData) { d.Values = adminForm(f) })
	}
	redirect(w, r, "/groups/"+id+"?done=saved")
	return nil
}

// changeMembers adds or removes one member. The service replaces the whole
// member list, so the list is read and written back.
func (s *Server) changeMembers(w http.ResponseWriter, r *http.Request, c *reqCtx, add bool) error {
	id := r.PathValue("id")
	username := identity.NormalizeUsername(r.PostFormValue("username"))
	fail := func(err error) error {
		return s.groupFormError(w, r, c, renameField(err, "members", "username"), func(d *groupData) {
			if add {
				d.Username = r.PostFormValue("username")
			}
		})
	}
	if username == "" {
		return fail(fieldError("username", "Enter a username."))
	}
	if err := s.o.Identity.ChangeGroupMember(r.Context(), c.actor(), id, username, add); err != nil {
		return fail(err)
	}
	done := "member_added"
	if !add {
		done = "member_remove"
	}
	target := "/groups/" + id + "?done=" + done
	if n, err := strconv.Atoi(r.PostFormValue("page")); err == nil && n > 1 && !add {
		target += "&page=" + strconv.Itoa(n)
	}
	redirect(w, r, target)
	return nil
}

func (s *Server) addGroupMember(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	return s.changeMembers(w, r, c, true)
}

func (s *Server) removeGroupMember(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	return s.changeMembers(w, r, c, false)
}

func (s *Server) deleteGroup(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := s.o.Identity.DeleteGroup(r.Context(), c.actor(), r.PathValue("id")); err != nil {
		return s.groupFormError(w, r, c, err, nil)
	}
	redirect(w, r, "/groups?done=deleted")
	return nil
}
