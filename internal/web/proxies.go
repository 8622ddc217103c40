package web

import (
	"net/http"
	"time"

	"github.com/wardvpn/ward/internal/core/vpn"
)

// proxyRoutes registers the proxies page (admins).
func (s *Server) proxyRoutes() []route {
	return []route{
		{pattern: "GET /proxies", admin: true, handle: s.proxies},
		{pattern: "GET /proxies/live", admin: true, handle: s.proxiesLive},
		{pattern: "POST /proxies", admin: true, handle: s.registerProxy},
		{pattern: "POST /proxies/{id}/token", admin: true, handle: s.proxyToken},
		{pattern: "POST /proxies/{id}/delete", admin: true, handle: s.deleteProxy},
	}
}

type proxiesData struct {
	Proxies []componentView
	Nav     offsetNav
	// Token is a join token just issued (shown once, never stored).
	Token *joinTokenView
}

func (s *Server) proxiesData(r *http.Request, c *reqCtx) (*proxiesData, error) {
	off := navOffset(r)
	ps, total, err := s.o.VPN.ListProxies(r.Context(), c.actor(), vpn.ListParams{Limit: navPageSize, Offset: off})
	if err != nil {
		return nil, err
	}
	return &proxiesData{Proxies: componentViews(ps, time.Now()), Nav: newOffsetNav("/proxies", nil, off, len(ps), total)}, nil
}

func (s *Server) proxies(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	d, err := s.proxiesData(r, c)
	if err != nil {
		return err
	}
	s.render(w, http.StatusOK, "proxies.html", s.page(c, "Proxies", "proxies", d))
	return nil
}

// proxiesLive is what the proxies page polls: the states, swapped out of
// band into the rows.
func (s *Server) proxiesLive(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	d, err := s.proxiesData(r, c)
	if err != nil {
		return err
	}
	s.render(w, http.StatusOK, "proxies.html#live", s.page(c, "Proxies", "proxies", d))
	return nil
}

func (s *Server) registerProxy(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := r.ParseForm(); err != nil {
		return err
	}
	name, addr := r.PostFormValue("name"), r.PostFormValue("control_address")
	px, err := s.o.VPN.CreateProxy(r.Context(), c.actor(), vpn.ComponentInput{Name: &name, ControlAddress: &addr})
	d, derr := s.proxiesData(r, c)
	if derr != nil {
		return derr
	}
	p := s.page(c, "Proxies", "proxies", d)
	if err != nil {
		s.formError(w, r, p, "proxies.html", err)
		return nil
	}
	d.Token = &joinTokenView{Name: px.Name, Token: px.Token, ExpiresAt: px.ExpiresAt, Command: joinCommand("proxy", px.ControlAddress, px.Token)}
	w.Header().Set("Cache-Control", "no-store")
	s.render(w, http.StatusOK, "proxies.html", p)
	return nil
}

func (s *Server) proxyToken(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	ctx := r.Context()
	id := r.PathValue("id")
	px, err := s.o.VPN.GetProxy(ctx, c.actor(), id)
	if err != nil {
		return err
	}
	tok, err := s.o.VPN.IssueProxyJoinToken(ctx, c.actor(), id)
	if err != nil {
		return err
	}
	d, err := s.proxiesData(r, c)
	if err != nil {
		return err
	}
	d.Token = &joinTokenView{Name: px.Name, Token: tok.Token, ExpiresAt: tok.ExpiresAt, Command: joinCommand("proxy", px.ControlAddress, tok.Token), Renewed: true}
	w.Header().Set("Cache-Control", "no-store")
	s.render(w, http.StatusOK, "proxies.html", s.page(c, "Proxies", "proxies", d))
	return nil
}

func (s *Server) deleteProxy(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := s.o.VPN.DeleteProxy(r.Context(), c.actor(), r.PathValue("id")); err != nil {
		return err
	}
	redirect(w, r, "/proxies")
	return nil
}
