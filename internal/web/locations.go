package web

import (
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/vpn"
)

// locationRoutes registers the locations pages with their gateways
// (admins).
func (s *Server) locationRoutes() []route {
	return []route{
		{pattern: "GET /locations", admin: true, handle: s.locations},
		{pattern: "GET /locations/new", admin: true, handle: s.newLocationPage},
		{pattern: "POST /locations", admin: true, handle: s.createLocation},
		{pattern: "GET /locations/{id}", admin: true, handle: s.location},
		{pattern: "GET /locations/{id}/edit", admin: true, handle: s.editLocationPage},
		{pattern: "POST /locations/{id}/edit", admin: true, handle: s.updateLocation},
		{pattern: "POST /locations/{id}/delete", admin: true, handle: s.deleteLocation},
		{pattern: "GET /locations/{id}/gateways/live", admin: true, handle: s.gatewaysLive},
		{pattern: "POST /locations/{id}/gateways", admin: true, handle: s.registerGateway},
		{pattern: "POST /locations/{id}/gateways/{gid}/token", admin: true, handle: s.gatewayToken},
		{pattern: "POST /locations/{id}/gateways/{gid}/delete", admin: true, handle: s.deleteGateway},
	}
}

type locationsData struct {
	Locations []locationRow
	Nav       offsetNav
}

// locationRow is a location in the list.
type locationRow struct {
	vpn.Location
	// EndpointText is where clients connect (host:port).
	EndpointText string
}

func (s *Server) locations(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	off := navOffset(r)
	locs, total, err := s.o.VPN.ListLocations(r.Context(), c.actor(), vpn.ListParams{Limit: navPageSize, Offset: off})
	if err != nil {
		return err
	}
	d := locationsData{Nav: newOffsetNav("/locations", nil, off, len(locs), total)}
	for _, l := range locs {
		d.Locations = append(d.Locations, locationRow{Location: l, EndpointText: vpn.EndpointWithPort(l.Endpoint, l.ListenPort)})
	}
	s.render(w, http.StatusOK, "locations.html", s.page(c, "Locations", "locations", d))
	return nil
}

// locationFormData is the create and edit form of a location.
type locationFormData struct {
	// ID is set when editing.
	ID     string
	Groups []string
	// checked are the allowed groups ticked in the form.
	checked []string
}

// GroupChecked tells whether the form has the group ticked.
func (d *locationFormData) GroupChecked(name string) bool { return slices.Contains(d.checked, name) }

// maxFormGroups bounds the group checkboxes of the location form.
const maxFormGroups = 500

func (s *Server) locationFormData(r *http.Request, c *reqCtx, id string, checked []string) (*locationFormData, error) {
	groups, _, err := s.o.Identity.ListGroups(r.Context(), c.actor(), identity.ListParams{Limit: maxFormGroups})
	if err != nil {
		return nil, err
	}
	d := &locationFormData{ID: id, checked: checked}
	for _, g := range groups {
		d.Groups = append(d.Groups, g.Name)
	}
	// A group ticked but gone (or beyond the list) still shows.
	for _, g := range checked {
		if !slices.Contains(d.Groups, g) {
			d.Groups = append(d.Groups, g)
		}
	}
	return d, nil
}

// locationDefaults are the new-location form's values (the domain's
// defaults).
func locationDefaults() url.Values {
	return url.Values{
		"listen_port":          {strconv.Itoa(vpn.DefaultListenPort)},
		"keepalive":            {strconv.Itoa(vpn.DefaultKeepalive)},
		"mtu":                  {strconv.Itoa(vpn.DefaultMTU)},
		"fwmark":               {"0"},
		"mfa_mode":             {vpn.MFADisabled},
		"disconnect_threshold": {strconv.Itoa(vpn.DefaultDisconnectThreshold)},
		"peers_without_core":   {vpn.PeersWithoutCoreKeep},
		"drop_peers_after":     {strconv.Itoa(vpn.DefaultDropPeersAfter)},
		"all_groups":           {"on"},
	}
}

// locationValues fills the edit form from a location.
func locationValues(l vpn.Location) url.Values {
	v := url.Values{
		"name":                 {l.Name},
		"addresses":            {strings.Join(l.Addresses, ", ")},
		"listen_port":          {strconv.Itoa(l.ListenPort)},
		"endpoint":             {l.Endpoint},
		"extra_endpoints":      {strings.Join(l.ExtraEndpoints, "\n")},
		"allowed_ips":          {strings.Join(l.AllowedIPs, ", ")},
		"dns":                  {strings.Join(l.DNS, ", ")},
		"keepalive":            {strconv.Itoa(l.Keepalive)},
		"mtu":                  {strconv.Itoa(l.MTU)},
		"fwmark":               {strconv.Itoa(l.FwMark)},
		"mfa_mode":             {l.MFAMode},
		"disconnect_threshold": {strconv.Itoa(l.DisconnectThreshold)},
		"peers_without_core":   {l.PeersWithoutCore},
		"drop_peers_after":     {strconv.Itoa(l.DropPeersAfter)},
		"allowed_groups":       l.AllowedGroups,
	}
	if l.AllGroups {
		v.Set("all_groups", "on")
	}
	return v
}

// formList splits a list field at commas, spaces and line breaks.
func formList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
}

// locationInput reads the location form. Every field is sent (the edit
// form is filled with the current values); an empty number keeps the
// default (create) or the current value (edit).
func locationInput(f url.Values) (vpn.LocationInput, error) {
	var in vpn.LocationInput
	str := func(name string) *string {
		v := strings.TrimSpace(f.Get(name))
		return &v
	}
	list := func(name string) *[]string {
		v := formList(f.Get(name))
		if v == nil {
			v = []string{}
		}
		return &v
	}
	var err error
	num := func(name string) *int {
		v := strings.TrimSpace(f.Get(name))
		if v == "" || err != nil {
			return nil
		}
		n, perr := strconv.Atoi(v)
		if perr != nil {
			err = core.Invalid("invalid_value", name, "%q is not a whole number", v)
			return nil
		}
		return &n
	}
	in.Name = str("name")
	in.Addresses = list("addresses")
	in.ListenPort = num("listen_port")
	in.Endpoint = str("endpoint")
	in.ExtraEndpoints = list("extra_endpoints")
	in.AllowedIPs = list("allowed_ips")
	in.DNS = list("dns")
	in.Keepalive = num("keepalive")
	in.MTU = num("mtu")
	in.FwMark = num("fwmark")
	if v := f.Get("mfa_mode"); v != "" {
		in.MFAMode = &v
	}
	in.DisconnectThreshold = num("disconnect_threshold")
	if v := f.Get("peers_without_core"); v != "" {
		in.PeersWithoutCore = &v
	}
	in.DropPeersAfter = num("drop_peers_after")
	all := f.Get("all_groups") != ""
	in.AllGroups = &all
	groups := []string{}
	if !all {
		groups = append(groups, f["allowed_groups"]...)
	}
	in.AllowedGroups = &groups
	if err != nil {
		return in, err
	}
	if *in.Endpoint == "" {
		return in, core.Invalid("missing_field", "endpoint", "endpoint is required: the public host name or address clients connect to")
	}
	return in, nil
}

func (s *Server) newLocationPage(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	d, err := s.locationFormData(r, c, "", nil)
	if err != nil {
		return err
	}
	p := s.page(c, "New location", "locations", d)
	p.Form = locationDefaults()
	s.render(w, http.StatusOK, "locations_form.html", p)
	return nil
}

func (s *Server) createLocation(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := r.ParseForm(); err != nil {
		return err
	}
	in, err := locationInput(r.PostForm)
	var l vpn.Location
	if err == nil {
		l, err = s.o.VPN.CreateLocation(r.Context(), c.actor(), in)
	}
	if err != nil {
		d, derr := s.locationFormData(r, c, "", r.PostForm["allowed_groups"])
		if derr != nil {
			return derr
		}
		s.formError(w, r, s.page(c, "New location", "locations", d), "locations_form.html", err)
		return nil
	}
	redirect(w, r, "/locations/"+l.ID)
	return nil
}

func (s *Server) editLocationPage(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	l, err := s.o.VPN.GetLocation(r.Context(), c.actor(), r.PathValue("id"))
	if err != nil {
		return err
	}
	d, err := s.locationFormData(r, c, l.ID, l.AllowedGroups)
	if err != nil {
		return err
	}
	p := s.page(c, "Edit location "+l.Name, "locations", d)
	p.Form = locationValues(l)
	s.render(w, http.StatusOK, "locations_form.html", p)
	return nil
}

func (s *Server) updateLocation(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := r.ParseForm(); err != nil {
		return err
	}
	id := r.PathValue("id")
	in, err := locationInput(r.PostForm)
	if err == nil {
		_, err = s.o.VPN.UpdateLocation(r.Context(), c.actor(), id, in)
	}
	if err != nil {
		l, gerr := s.o.VPN.GetLocation(r.Context(), c.actor(), id)
		if gerr != nil {
			return gerr
		}
		d, derr := s.locationFormData(r, c, id, r.PostForm["allowed_groups"])
		if derr != nil {
			return derr
		}
		s.formError(w, r, s.page(c, "Edit location "+l.Name, "locations", d), "locations_form.html", err)
		return nil
	}
	redirect(w, r, "/locations/"+id)
	return nil
}

func (s *Server) deleteLocation(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := s.o.VPN.DeleteLocation(r.Context(), c.actor(), r.PathValue("id")); err != nil {
		return err
	}
	redirect(w, r, "/locations")
	return nil
}

// componentView is a gateway or proxy with its state in words (never by
// colour alone).
type componentView struct {
	vpn.Component
	// State is "connected", "disconnected", "not adopted" or "unknown";
	// StateClass the matching CSS class.
	State, StateClass string
	// Note explains a component waiting for adoption.
	Note string
}

func componentViews(cs []vpn.Component, now time.Time) []componentView {
	out := make([]componentView, 0, len(cs))
	for _, c := range cs {
		v := componentView{Component: c, State: "unknown", StateClass: "idle"}
		switch st := c.Status; {
		case st == nil:
		case st.Connected:
			v.State, v.StateClass = "connected", "ok"
		case st.Adopted:
			v.State, v.StateClass = "disconnected", "bad"
		default:
			v.State = "not adopted"
			switch exp := st.JoinTokenExpiresAt; {
			case exp > now.UnixMilli():
				v.Note = "waiting for adoption; the join token is valid until " + time.UnixMilli(exp).UTC().Format("15:04 UTC")
			case exp > 0:
				v.Note = "the join token expired: issue a new one"
			default:
				v.Note = "no valid join token: issue a new one"
			}
		}
		out = append(out, v)
	}
	return out
}

// joinTokenView is a join token shown once with the command to run.
type joinTokenView struct {
	// Name of the gateway or proxy.
	Name      string
	Token     string
	ExpiresAt int64
	Command   string
	// Renewed: a new token for a registered component (its adoption was
	// revoked), not a new registration.
	Renewed bool
}

// joinCommand is the command line that starts a component with its token:
// it listens on the port core dials.
func joinCommand(kind, controlAddress, token string) string {
	args := []string{"WARD_JOIN_TOKEN='" + token + "'", "ward", kind, "--data-dir", "/var/lib/ward-" + kind}
	if _, port, err := net.SplitHostPort(controlAddress); err == nil && port != "" {
		args = append(args, "--control-addr", ":"+port)
	}
	if kind == "gateway" {
		args = append(args, "--interface", "wg0")
	}
	return strings.Join(args, " ")
}

// maxLocationGateways bounds the gateways shown on a location's page.
const maxLocationGateways = 200

type locationData struct {
	Location vpn.Location
	Gateways []componentView
	// Token is a join token just issued (shown once, never stored).
	Token *joinTokenView
}

func (s *Server) locationData(r *http.Request, c *reqCtx, id string) (*locationData, error) {
	ctx := r.Context()
	l, err := s.o.VPN.GetLocation(ctx, c.actor(), id)
	if err != nil {
		return nil, err
	}
	gws, _, err := s.o.VPN.ListGateways(ctx, c.actor(), id, vpn.ListParams{Limit: maxLocationGateways})
	if err != nil {
		return nil, err
	}
	return &locationData{Location: l, Gateways: componentViews(gws, time.Now())}, nil
}

func (s *Server) location(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	d, err := s.locationData(r, c, r.PathValue("id"))
	if err != nil {
		return err
	}
	s.render(w, http.StatusOK, "locations_detail.html", s.page(c, "Location "+d.Location.Name, "locations", d))
	return nil
}

// gatewaysLive is what the location page polls: each gateway's state, as
// out-of-band swaps into the table (the rows and their buttons stay, so
// keyboard focus is never lost).
func (s *Server) gatewaysLive(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	d, err := s.locationData(r, c, r.PathValue("id"))
	if err != nil {
		return err
	}
	s.render(w, http.StatusOK, "locations_detail.html#live", s.page(c, "Location "+d.Location.Name, "locations", d))
	return nil
}

func (s *Server) registerGateway(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := r.ParseForm(); err != nil {
		return err
	}
	id := r.PathValue("id")
	name, addr := r.PostFormValue("name"), r.PostFormValue("control_address")
	gw, err := s.o.VPN.CreateGateway(r.Context(), c.actor(), id, vpn.ComponentInput{Name: &name, ControlAddress: &addr})
	d, derr := s.locationData(r, c, id)
	if derr != nil {
		return derr
	}
	p := s.page(c, "Location "+d.Location.Name, "locations", d)
	if err != nil {
		s.formError(w, r, p, "locations_detail.html", err)
		return nil
	}
	d.Token = &joinTokenView{Name: gw.Name, Token: gw.Token, ExpiresAt: gw.ExpiresAt, Command: joinCommand("gateway", gw.ControlAddress, gw.Token)}
	w.Header().Set("Cache-Control", "no-store")
	s.render(w, http.StatusOK, "locations_detail.html", p)
	return nil
}

func (s *Server) gatewayToken(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	ctx := r.Context()
	id, gid := r.PathValue("id"), r.PathValue("gid")
	gw, err := s.o.VPN.GetGateway(ctx, c.actor(), id, gid)
	if err != nil {
		return err
	}
	tok, err := s.o.VPN.IssueJoinToken(ctx, c.actor(), id, gid)
	if err != nil {
		return err
	}
	d, err := s.locationData(r, c, id)
	if err != nil {
		return err
	}
	d.Token = &joinTokenView{Name: gw.Name, Token: tok.Token, ExpiresAt: tok.ExpiresAt, Command: joinCommand("gateway", gw.ControlAddress, tok.Token), Renewed: true}
	w.Header().Set("Cache-Control", "no-store")
	s.render(w, http.StatusOK, "locations_detail.html", s.page(c, "Location "+d.Location.Name, "locations", d))
	return nil
}

func (s *Server) deleteGateway(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	id := r.PathValue("id")
	if err := s.o.VPN.DeleteGateway(r.Context(), c.actor(), id, r.PathValue("gid")); err != nil {
		return err
	}
	redirect(w, r, "/locations/"+id)
	return nil
}
