package web

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/boombuler/barcode/qr"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/stats"
	"github.com/wardvpn/ward/internal/core/vpn"
)

// deviceRoutes registers the devices pages: everyone manages their own
// devices (as far as the settings allow), admins everyone's.
func (s *Server) deviceRoutes() []route {
	return []route{
		{pattern: "GET /devices", handle: s.devices},
		{pattern: "GET /devices/new", handle: s.newDevicePage},
		{pattern: "POST /devices", handle: s.createDevice},
		{pattern: "GET /devices/{id}", handle: s.device},
		{pattern: "POST /devices/{id}", handle: s.updateDevice},
		{pattern: "POST /devices/{id}/delete", handle: s.deleteDevice},
		{pattern: "GET /devices/{id}/config", handle: s.deviceConfig},
		{pattern: "GET /devices/{id}/qr", handle: s.deviceConfigQR},
		{pattern: "GET /devices/{id}/usage", handle: s.deviceUsage},
	}
}

// navPageSize is how many rows a list page shows.
const navPageSize = 50

// offsetNav is the pagination of a list: which rows are shown and the
// links to the neighbouring pages (the query of the list is kept).
type offsetNav struct {
	Offset, Total    int
	First, Last      int // 1-based numbers of the rows shown
	PrevURL, NextURL string
}

// newOffsetNav builds the pager of a list at base with query q.
func newOffsetNav(base string, q url.Values, offset, shown, total int) offsetNav {
	n := offsetNav{Offset: offset, Total: total}
	if shown > 0 {
		n.First, n.Last = offset+1, offset+shown
	}
	link := func(off int) string {
		v := url.Values{}
		for k, vs := range q {
			if k != "offset" && len(vs) > 0 && vs[0] != "" {
				v.Set(k, vs[0])
			}
		}
		if off > 0 {
			v.Set("offset", strconv.Itoa(off))
		}
		if len(v) == 0 {
			return base
		}
		return base + "?" + v.Encode()
	}
	if offset > 0 {
		n.PrevURL = link(max(0, offset-navPageSize))
	}
	if offset+shown < total {
		n.NextURL = link(offset + navPageSize)
	}
	return n
}

// listOffset reads ?offset= (a bad value is the first page).
func navOffset(r *http.Request) int {
	off, err := strconv.Atoi(r.URL.Query().Get("offset"))
	if err != nil || off < 0 {
		return 0
	}
	return off
}

type devicesData struct {
	Devices []vpn.Device
	Nav     offsetNav
	Search  string
	// User is the owner filter (admins): the username typed or the owner
	// of ?user_id=.
	User   string
	UserID string
	// Location filters by location (?location_id=).
	Location vpn.Location
}

func (s *Server) devices(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	ctx := r.Context()
	q := r.URL.Query()
	d := devicesData{Search: strings.TrimSpace(q.Get("search")), User: strings.TrimSpace(q.Get("user")), UserID: q.Get("user_id")}
	if d.Search == "" {
		d.Search = strings.TrimSpace(q.Get("q")) // short alias
	}
	p := s.page(c, "Devices", "devices", &d)
	f := vpn.DeviceFilter{ListParams: vpn.ListParams{Search: d.Search, Limit: navPageSize, Offset: navOffset(r)}}
	if id := q.Get("location_id"); id != "" {
		l, err := s.o.VPN.GetLocation(ctx, c.actor(), id)
		if err != nil {
			return err
		}
		d.Location, f.LocationID = l, l.ID
	}
	if c.principal.IsAdmin {
		switch {
		case d.User != "":
			u, err := s.userByName(r, c, d.User)
			if err != nil {
				return err
			}
			if u == nil {
				p.FieldErrors = map[string]string{"user": "No user has this username."}
				s.renderDevices(w, r, http.StatusOK, p)
				return nil
			}
			d.UserID = u.ID
		case d.UserID != "":
			u, err := s.o.Identity.GetUser(ctx, c.actor(), d.UserID)
			if err != nil {
				return err
			}
			d.User = u.Username
		}
		f.UserID = d.UserID
	}
	devs, total, err := s.o.VPN.ListDevices(ctx, c.actor(), f)
	if err != nil {
		return err
	}
	d.Devices = devs
	nq := url.Values{"search": {d.Search}}
	if d.User != "" {
		nq.Set("user", d.User)
	}
	if d.Location.ID != "" {
		nq.Set("location_id", d.Location.ID)
	}
	d.Nav = newOffsetNav("/devices", nq, f.Offset, len(devs), total)
	s.renderDevices(w, r, http.StatusOK, p)
	return nil
}

// renderDevices answers the search form's htmx request with the results
// only, anything else with the page.
func (s *Server) renderDevices(w http.ResponseWriter, r *http.Request, status int, p *Page) {
	if r.Header.Get("HX-Request") != "" {
		s.render(w, status, "devices.html#results", p)
		return
	}
	s.render(w, status, "devices.html", p)
}

// userByName finds a user by exact username (nil when there is none).
func (s *Server) userByName(r *http.Request, c *reqCtx, name string) (*identity.User, error) {
	users, _, err := s.o.Identity.ListUsers(r.Context(), c.actor(), identity.ListParams{Search: name, Limit: 100})
	if err != nil {
		return nil, err
	}
	for i := range users {
		if strings.EqualFold(users[i].Username, name) {
			return &users[i], nil
		}
	}
	return nil, nil
}

// newDeviceData is the add-device form: admins may choose the owner and
// bind a network device to a location.
type newDeviceData struct {
	Locations []vpn.Location
}

func (s *Server) newDeviceData(r *http.Request, c *reqCtx) (*newDeviceData, error) {
	d := &newDeviceData{}
	if c.principal.IsAdmin {
		locs, _, err := s.o.VPN.ListLocations(r.Context(), c.actor(), vpn.ListParams{Limit: maxOverviewLocations})
		if err != nil {
			return nil, err
		}
		d.Locations = locs
	}
	return d, nil
}

func (s *Server) newDevicePage(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	d, err := s.newDeviceData(r, c)
	if err != nil {
		return err
	}
	p := s.page(c, "Add device", "devices", d)
	p.Form = url.Values{"key": {"generate"}, "user": {c.principal.Username}}
	s.render(w, http.StatusOK, "devices_new.html", p)
	return nil
}

// deviceConfigView is one location's config of a device, shown once when
// its key was generated.
type deviceConfigView struct {
	LocationID   string
	LocationName string
	FileName     string
	Config       string
	// ConfigB64 is the config for a download link (data: URL).
	ConfigB64 string
	// QR is a base64 PNG of the config.
	QR string
}

type createdDeviceData struct {
	Device     vpn.Device
	PrivateKey string
	Configs    []deviceConfigView
}

func (s *Server) createDevice(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := r.ParseForm(); err != nil {
		return err
	}
	ctx := r.Context()
	in := vpn.NewDevice{
		Name:        r.PostFormValue("name"),
		Description: strings.TrimSpace(r.PostFormValue("description")),
		PublicKey:   strings.TrimSpace(r.PostFormValue("public_key")),
		GenerateKey: r.PostFormValue("key") != "paste",
	}
	err := func() error {
		if c.principal.IsAdmin {
			if name := strings.TrimSpace(r.PostFormValue("user")); name != "" && name != c.principal.Username {
				u, err := s.userByName(r, c, name)
				if err != nil {
					return err
				}
				if u == nil {
					return core.Invalid("unknown_user", "user_id", "no user is named %q", name)
				}
				in.UserID = u.ID
			}
			if loc := r.PostFormValue("location_id"); loc != "" {
				in.Kind, in.LocationID = vpn.KindNetwork, loc
			}
		}
		if r.PostFormValue("key") == "paste" && in.PublicKey == "" {
			return core.Invalid("missing_field", "public_key", "paste the device's public key, or let ward generate a key pair")
		}
		return nil
	}()
	var created vpn.CreatedDevice
	if err == nil {
		created, err = s.o.VPN.CreateDevice(ctx, c.actor(), in)
	}
	if err != nil {
		d, derr := s.newDeviceData(r, c)
		if derr != nil {
			return derr
		}
		s.formError(w, r, s.page(c, "Add device", "devices", d), "devices_new.html", err)
		return nil
	}
	if created.PrivateKey == "" {
		redirect(w, r, "/devices/"+created.ID)
		return nil
	}
	// The private key exists only in this answer: it is shown once, with
	// the ready configs, and never stored.
	d := createdDeviceData{Device: created.Device, PrivateKey: created.PrivateKey}
	for _, locID := range deviceLocationIDs(created.Device) {
		l, err := s.o.VPN.GetLocation(ctx, c.actor(), locID)
		if err != nil {
			return err
		}
		cfg, err := vpn.RenderConfig(created.Device, l, created.PrivateKey)
		if err != nil {
			return err
		}
		png, err := configQR(cfg)
		if err != nil {
			return err
		}
		d.Configs = append(d.Configs, deviceConfigView{LocationID: l.ID, LocationName: l.Name, FileName: configFileName(l.Name),
			Config: cfg, ConfigB64: base64.StdEncoding.EncodeToString([]byte(cfg)), QR: png})
	}
	w.Header().Set("Cache-Control", "no-store")
	s.render(w, http.StatusOK, "devices_created.html", s.page(c, "Device "+created.Name+" added", "devices", d))
	return nil
}

// deviceLocationIDs lists the locations a device has addresses in, once
// each, in the order of its addresses.
func deviceLocationIDs(d vpn.Device) []string {
	var out []string
	for _, a := range d.Addresses {
		if !slices.Contains(out, a.LocationID) {
			out = append(out, a.LocationID)
		}
	}
	return out
}

// configFileName is the download name of a location's config: wg-quick
// names the interface after the file, so only its safe characters stay.
func configFileName(location string) string {
	var b strings.Builder
	for _, r := range location {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune("_=+.-", r):
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		b.WriteString("ward")
	}
	return b.String() + ".conf"
}

// configQR renders a config as a base64 PNG QR code (the WireGuard mobile
// apps scan it), with the quiet zone of four modules scanners need.
func configQR(cfg string) (string, error) {
	code, err := qr.Encode(cfg, qr.M, qr.Auto)
	if err != nil {
		return "", fmt.Errorf("qr code: %w", err)
	}
	const quiet = 4
	modules := code.Bounds().Dx()
	// Whole pixels per module keep the code sharp.
	px := max(1, 360/(modules+2*quiet))
	img := image.NewGray(image.Rect(0, 0, (modules+2*quiet)*px, (modules+2*quiet)*px))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	for y := range modules {
		for x := range modules {
			if code.At(x, y) == color.Black {
				draw.Draw(img, image.Rect((x+quiet)*px, (y+quiet)*px, (x+quiet+1)*px, (y+quiet+1)*px), image.Black, image.Point{}, draw.Src)
			}
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return "", fmt.Errorf("qr code: %w", err)
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes()), nil
}

// deviceLocationView is a device's membership in one location.
type deviceLocationView struct {
	ID, Name  string
	Addresses []string
	FileName  string
}

type deviceData struct {
	Device    vpn.Device
	Locations []deviceLocationView
	Usage     deviceUsageData
	// LastSeen is the newest handshake in the last 7 days (0: none).
	LastSeen int64
}

func (s *Server) deviceData(r *http.Request, c *reqCtx, id string) (*deviceData, error) {
	ctx := r.Context()
	dev, err := s.o.VPN.GetDevice(ctx, c.actor(), id)
	if err != nil {
		return nil, err
	}
	d := &deviceData{Device: dev}
	names := map[string]string{}
	for _, locID := range deviceLocationIDs(dev) {
		lv := deviceLocationView{ID: locID, Name: locID}
		l, err := s.o.VPN.GetLocation(ctx, c.actor(), locID)
		switch {
		case err == nil:
			lv.Name = l.Name
		case !errors.Is(err, core.ErrNotFound):
			return nil, err
		}
		names[locID] = lv.Name
		lv.FileName = configFileName(lv.Name)
		for _, a := range dev.Addresses {
			if a.LocationID == locID {
				lv.Addresses = append(lv.Addresses, a.Address)
			}
		}
		d.Locations = append(d.Locations, lv)
	}
	if d.Usage, err = s.deviceUsageData(r, dev, names, r.URL.Query().Get("range")); err != nil {
		return nil, err
	}
	for _, l := range d.Usage.Locations {
		d.LastSeen = max(d.LastSeen, l.LastHandshake)
	}
	return d, nil
}

func (s *Server) device(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	d, err := s.deviceData(r, c, r.PathValue("id"))
	if err != nil {
		return err
	}
	p := s.page(c, "Device "+d.Device.Name, "devices", d)
	p.Form = url.Values{"name": {d.Device.Name}, "description": {d.Device.Description}}
	s.render(w, http.StatusOK, "devices_detail.html", p)
	return nil
}

func (s *Server) updateDevice(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := r.ParseForm(); err != nil {
		return err
	}
	id := r.PathValue("id")
	name, desc := r.PostFormValue("name"), strings.TrimSpace(r.PostFormValue("description"))
	_, err := s.o.VPN.UpdateDevice(r.Context(), c.actor(), id, vpn.DevicePatch{Name: &name, Description: &desc})
	if err != nil {
		d, derr := s.deviceData(r, c, id)
		if derr != nil {
			return derr
		}
		s.formError(w, r, s.page(c, "Device "+d.Device.Name, "devices", d), "devices_detail.html", err)
		return nil
	}
	redirect(w, r, "/devices/"+id)
	return nil
}

func (s *Server) deleteDevice(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := s.o.VPN.DeleteDevice(r.Context(), c.actor(), r.PathValue("id")); err != nil {
		return err
	}
	redirect(w, r, "/devices")
	return nil
}

// configFor renders the device's config for ?location= with the private
// key placeholder (ward never has a device's private key after creation),
// exactly as GET /api/v1/devices/{id}/config does.
func (s *Server) configFor(r *http.Request, c *reqCtx) (cfg, fileName string, err error) {
	ctx := r.Context()
	id, locID := r.PathValue("id"), r.URL.Query().Get("location")
	if cfg, err = s.o.VPN.DeviceConfig(ctx, c.actor(), id, locID, ""); err != nil {
		return "", "", err
	}
	if locID == "" {
		dev, err := s.o.VPN.GetDevice(ctx, c.actor(), id)
		if err != nil {
			return "", "", err
		}
		if ids := deviceLocationIDs(dev); len(ids) == 1 {
			locID = ids[0]
		}
	}
	l, err := s.o.VPN.GetLocation(ctx, c.actor(), locID)
	if err != nil {
		return "", "", err
	}
	return cfg, configFileName(l.Name), nil
}

func (s *Server) deviceConfig(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	cfg, name, err := s.configFor(r, c)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	// name has only characters that need no escaping (configFileName).
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(cfg))
	return nil
}

func (s *Server) deviceConfigQR(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	cfg, _, err := s.configFor(r, c)
	if err != nil {
		return err
	}
	b64, err := configQR(cfg)
	if err != nil {
		return err
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(raw)
	return nil
}

// deviceRanges are the usage chart windows and their bucket sizes.
var deviceRanges = map[string]struct{ span, step time.Duration }{
	"24h": {24 * time.Hour, 15 * time.Minute},
	"7d":  {7 * 24 * time.Hour, time.Hour},
}

// deviceUsageRow is a device's traffic in one location.
type deviceUsageRow struct {
	Name          string
	Day, Week     stats.Totals
	LastHandshake int64
}

type deviceUsageData struct {
	DeviceID string
	Range    string
	Ranges   []string
	// Points is JSON for the chart script: [[t...], [up...], [down...]].
	Points    string
	Total     stats.Totals // of the chart's range
	Day, Week stats.Totals
	Locations []deviceUsageRow
}

// deviceUsageData reads the device's traffic of the last 7 days once: the
// 24 h and 7 d totals per location and the chart of rng.
func (s *Server) deviceUsageData(r *http.Request, dev vpn.Device, names map[string]string, rng string) (deviceUsageData, error) {
	win, ok := deviceRanges[rng]
	if !ok {
		rng, win = "24h", deviceRanges["24h"]
	}
	now := time.Now()
	week := now.Add(-7 * 24 * time.Hour).UnixMilli()
	day := now.Add(-24 * time.Hour).UnixMilli()
	from := now.Add(-win.span).UnixMilli()
	st, err := s.o.Stats.Device(r.Context(), dev.ID, dev.PublicKey, week, now.UnixMilli())
	if err != nil {
		return deviceUsageData{}, err
	}
	u := deviceUsageData{DeviceID: dev.ID, Range: rng, Ranges: []string{"24h", "7d"}}
	step := win.step.Milliseconds()
	buckets := map[int64]*stats.Totals{}
	for _, l := range st.Locations {
		row := deviceUsageRow{Name: names[l.LocationID], LastHandshake: l.LastHandshake}
		if row.Name == "" {
			row.Name = l.LocationID
		}
		for _, p := range l.Series {
			row.Week.UploadBytes += p.UploadBytes
			row.Week.DownloadBytes += p.DownloadBytes
			if p.Minute >= day/60000*60000 {
				row.Day.UploadBytes += p.UploadBytes
				row.Day.DownloadBytes += p.DownloadBytes
			}
			if p.Minute < from/60000*60000 {
				continue
			}
			b := buckets[p.Minute/step*step]
			if b == nil {
				b = &stats.Totals{}
				buckets[p.Minute/step*step] = b
			}
			b.UploadBytes += p.UploadBytes
			b.DownloadBytes += p.DownloadBytes
		}
		u.Day.UploadBytes += row.Day.UploadBytes
		u.Day.DownloadBytes += row.Day.DownloadBytes
		u.Week.UploadBytes += row.Week.UploadBytes
		u.Week.DownloadBytes += row.Week.DownloadBytes
		u.Locations = append(u.Locations, row)
	}
	keys := make([]int64, 0, len(buckets))
	for k := range buckets {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	cols := [3][]float64{{}, {}, {}}
	for _, k := range keys {
		cols[0] = append(cols[0], float64(k/1000))
		cols[1] = append(cols[1], float64(buckets[k].UploadBytes))
		cols[2] = append(cols[2], float64(buckets[k].DownloadBytes))
		u.Total.UploadBytes += buckets[k].UploadBytes
		u.Total.DownloadBytes += buckets[k].DownloadBytes
	}
	raw, err := json.Marshal(cols)
	if err != nil {
		return deviceUsageData{}, err
	}
	u.Points = string(raw)
	return u, nil
}

// deviceUsage is the usage fragment of the device page (range buttons).
func (s *Server) deviceUsage(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	d, err := s.deviceData(r, c, r.PathValue("id"))
	if err != nil {
		return err
	}
	s.render(w, http.StatusOK, "devices_detail.html#usage", s.page(c, "Device "+d.Device.Name, "devices", d))
	return nil
}
