package client

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Usage is the help of `ward client`.
const Usage = `ward client: the end-user VPN client

Usage:
  ward client enroll --url PROXY_URL --token TOKEN [--password-stdin] [--totp [--totp-code CODE]] [--name DEVICE] [--force]
        set a password, optionally TOTP, register this device (its keys are made here) and save the config
  ward client status [--json]
        who and where you are enrolled, your locations, and which tunnels are up
  ward client up LOCATION [--code CODE] [--method totp|email] [--interface NAME] [--foreground] [--wait 15s] [--offline]
        log in with MFA when the location needs it and bring the tunnel up (in the background unless --foreground)
  ward client down LOCATION
        bring a tunnel down
  ward client sync
        fetch the current configuration of your locations

LOCATION is a location's name or ID. The config is $WARD_CLIENT_CONFIG, else
$XDG_CONFIG_HOME/ward/client.json or ~/.config/ward/client.json (mode 0600).
Bringing a tunnel up needs root (or CAP_NET_ADMIN) and /dev/net/tun.

Exit codes: 0 ok, 1 unexpected error, 2 usage, 3 authentication or MFA refused,
4 not enrolled or unknown location, 5 proxy or core unavailable, 6 tunnel could not be brought up.
`

// env is what a command runs with.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	in             *Input
}

func (e *env) printf(format string, args ...any) { fmt.Fprintf(e.stdout, format, args...) }
func (e *env) warnf(format string, args ...any) {
	fmt.Fprintf(e.stderr, "ward client: warning: "+format+"\n", args...)
}

// Main runs `ward client ARGS` and returns the exit code.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, in: NewInput(stdin, stderr)}
	if len(args) == 0 {
		fmt.Fprint(stderr, Usage)
		return ExitUsage
	}
	var err error
	switch args[0] {
	case "enroll":
		err = e.enroll(ctx, args[1:])
	case "status":
		err = e.status(args[1:])
	case "up":
		err = e.up(ctx, args[1:])
	case "down":
		err = e.down(args[1:])
	case "sync":
		err = e.sync(ctx, args[1:])
	case "help", "-h", "--help":
		fmt.Fprint(stdout, Usage)
		return ExitOK
	default:
		err = usagef("unknown command %q (commands: enroll, status, up, down, sync)", args[0])
	}
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	if err != nil {
		report(stderr, err)
	}
	return ExitCode(err)
}

// report prints an error and what to do next.
func report(w io.Writer, err error) {
	fmt.Fprintf(w, "ward client: %v\n", err)
	var ce *Error
	hint := ""
	if errors.As(err, &ce) {
		hint = ce.Hint
	}
	var ae *APIError
	if hint == "" && errors.As(err, &ae) {
		hint = hintFor(ae, "")
	}
	if hint != "" {
		fmt.Fprintf(w, "  next: %s\n", hint)
	}
}

// parseFlags parses flags that may come before or after positional
// arguments ("up office --code 123456") and returns the positionals.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usagef("%v", err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if rest[0] == "--" {
			return append(pos, rest[1:]...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func newFlagSet(e *env, name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet("ward client "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: ward client %s\n\nFlags:\n", usage)
		fs.PrintDefaults()
	}
	return fs
}

func loadConfig() (*Config, string, error) {
	path, err := ConfigPath()
	if err != nil {
		return nil, "", err
	}
	cfg, err := LoadConfig(path)
	return cfg, path, err
}

// ---- enroll ----

func (e *env) enroll(ctx context.Context, args []string) error {
	fs := newFlagSet(e, "enroll", "enroll --url PROXY_URL --token TOKEN [flags]")
	proxyURL := fs.String("url", "", "the proxy's address, e.g. https://vpn.example.com (from your administrator)")
	token := fs.String("token", os.Getenv("WARD_ENROLL_TOKEN"), "the enrollment token (or WARD_ENROLL_TOKEN)")
	pwStdin := fs.Bool("password-stdin", false, "read the new password from the first line of stdin")
	withTOTP := fs.Bool("totp", false, "set up TOTP (an authenticator app) for your account")
	totpCode := fs.String("totp-code", "", "the first TOTP code, to confirm the setup (else read from stdin or asked)")
	name := fs.String("name", "", "this device's name (default: the host name)")
	force := fs.Bool("force", false, "replace an existing enrollment on this computer")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("enroll takes no arguments (got %q)", strings.Join(pos, " "))
	}
	if *proxyURL == "" || *token == "" {
		return usagef("enroll needs --url and --token (both come from your administrator's enrollment link)")
	}
	path, err := ConfigPath()
	if err != nil {
		return err
	}
	existing, lerr := LoadConfig(path)
	if lerr == nil && existing.Completed && !*force {
		return &Error{Code: ExitUsage, Msg: fmt.Sprintf("already enrolled as %s at %s (device %q, config %s)", existing.Username, existing.ProxyURL, existing.DeviceName, path),
			Hint: "pass --force to replace that enrollment, or set " + ConfigEnv + " to another file"}
	}
	if lerr != nil && ExitCode(lerr) != ExitNotEnrolled {
		return lerr
	}
	api, err := NewAPI(*proxyURL)
	if err != nil {
		return err
	}
	if *name == "" {
		*name, _ = os.Hostname()
		if *name == "" {
			*name = "ward client"
		}
	}

	info, err := api.EnrollmentInfo(ctx, *token)
	if err != nil {
		return wrap(err, ExitError, enrollHint(err), "cannot use the enrollment token")
	}
	instance := info.InstanceName
	if instance == "" {
		instance = "ward"
	}
	e.printf("Enrolling %s at %s (%s).\n", info.Username, instance, api.Base())
	step := func(n string) (exists, done bool) {
		for _, s := range info.Steps {
			if s.Name == n {
				return true, s.Done
			}
		}
		return false, false
	}

	// Password.
	if exists, done := step("password"); exists && (!done || *pwStdin) {
		var pw string
		switch {
		case *pwStdin:
			if pw, err = e.in.Line(ctx, ""); err != nil {
				return usagef("--password-stdin: could not read the password from stdin: %v", err)
			}
		case e.in.Terminal():
			if pw, err = e.in.Secret(ctx, "New password: "); err != nil {
				return err
			}
			again, err := e.in.Secret(ctx, "Repeat the password: ")
			if err != nil {
				return err
			}
			if again != pw {
				return usagef("the two passwords differ")
			}
		default:
			return usagef("a password must be set and stdin is not a terminal: pass --password-stdin and the password as the first line")
		}
		if err := api.SetPassword(ctx, *token, pw); err != nil {
			return wrap(err, ExitError, enrollHint(err), "the password was not accepted")
		}
		e.printf("Password set.\n")
	} else if exists {
		e.printf("Password already set.\n")
	}

	// TOTP.
	if *withTOTP {
		if _, done := step("totp"); done {
			e.printf("TOTP is already set up for this account.\n")
		} else if err := e.enrollTOTP(ctx, api, *token, *totpCode); err != nil {
			return err
		}
	}

	// Device: resume a registration of an earlier run, or register anew.
	var cfg *Config
	resume := existing != nil && !existing.Completed && info.Device != nil && info.Device.ID == existing.DeviceID
	switch {
	case resume:
		cfg = existing
		e.printf("Device %q was registered by an earlier run; finishing.\n", cfg.DeviceName)
	case info.Device != nil:
		return &Error{Code: ExitAuth, Msg: fmt.Sprintf("a device (%q) was already registered with this enrollment token, and this computer does not hold its key", info.Device.Name),
			Hint: "ask your administrator for a new token (\"configure a new client\")"}
	default:
		key, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			return wrap(err, ExitError, "", "generate the device key")
		}
		reg, err := api.RegisterDevice(ctx, *token, *name, key.PublicKey().String())
		if err != nil {
			return wrap(err, ExitError, enrollHint(err), "the device could not be registered")
		}
		cfg = &Config{ProxyURL: api.Base(), InstanceName: info.InstanceName, Username: info.Username, DeviceID: reg.Device.ID,
			DeviceName: reg.Device.Name, PrivateKey: key.String(), PublicKey: key.PublicKey().String(), SyncToken: reg.ClientToken,
			EnrolledAt: time.Now().UnixMilli(), Locations: nonNilLocations(reg.Locations)}
		// Keep the key whatever happens next: a later run can finish.
		if err := cfg.Save(path); err != nil {
			return err
		}
		e.printf("Device %q registered (public key %s).\n", cfg.DeviceName, cfg.PublicKey)
	}

	if _, err := api.Complete(ctx, *token); err != nil {
		return wrap(err, ExitError, "the device is registered and its key saved in "+path+
			"; run the same `ward client enroll` command again to finish", "the enrollment could not be completed")
	}
	cfg.Completed = true
	if err := cfg.Save(path); err != nil {
		return err
	}
	if res, err := api.Sync(ctx, cfg.SyncToken); err != nil {
		e.warnf("enrolled, but the first sync failed (%v); run `ward client sync` later", err)
	} else {
		cfg.Locations, cfg.SyncedAt = nonNilLocations(res.Locations), time.Now().UnixMilli()
		if res.Device.Name != "" {
			cfg.DeviceName = res.Device.Name
		}
		if err := cfg.Save(path); err != nil {
			return err
		}
	}
	e.printf("Enrolled device %q for %s. Config: %s\n", cfg.DeviceName, cfg.Username, path)
	e.printLocations(cfg.Locations)
	if len(cfg.Locations) > 0 {
		e.printf("Next: sudo ward client up %s\n", cfg.Locations[0].Name)
	}
	return nil
}

func (e *env) enrollTOTP(ctx context.Context, api *API, token, code string) error {
	setup, err := api.SetupTOTP(ctx, token)
	if err != nil {
		return wrap(err, ExitError, enrollHint(err), "TOTP could not be set up")
	}
	e.printf("TOTP secret: %s\n", setup.Secret)
	e.printf("otpauth URL: %s\n", setup.URL)
	e.printf("Add it to your authenticator app, then enter the code it shows.\n")
	interactive := code == "" && e.in.Terminal()
	for attempt := 1; ; attempt++ {
		if code == "" {
			c, err := e.in.Line(ctx, "TOTP code: ")
			if err != nil {
				return usagef("no TOTP code to confirm the setup: pass --totp-code or give it on stdin (%v)", err)
			}
			code = strings.TrimSpace(c)
		}
		rc, err := api.ConfirmTOTP(ctx, token, code)
		if err != nil {
			var ae *APIError
			if interactive && attempt < 3 && errors.As(err, &ae) && ae.Code == "invalid_code" {
				fmt.Fprintf(e.stderr, "That code was not accepted (%s); try the next one.\n", ae.Message)
				code = ""
				continue
			}
			return wrap(err, ExitAuth, "check the clock of this computer and of your phone, then run the enrollment again", "the TOTP code was not accepted")
		}
		e.printf("TOTP is on. Recovery codes (shown only now; keep them somewhere safe):\n")
		for _, c := range rc.Codes {
			e.printf("  %s\n", c)
		}
		return nil
	}
}

func enrollHint(err error) string {
	var ae *APIError
	if errors.As(err, &ae) {
		return hintFor(ae, "enroll")
	}
	return ""
}

func nonNilLocations(l []Location) []Location {
	if l == nil {
		return []Location{}
	}
	return l
}

func (e *env) printLocations(locs []Location) {
	if len(locs) == 0 {
		e.printf("No locations are available to this device yet.\n")
		return
	}
	e.printf("Locations:\n")
	for _, l := range locs {
		e.printf("  %-20s MFA %-8s endpoints %s  addresses %s\n", l.Name, mfaLabel(l), strings.Join(l.Endpoints, ", "), strings.Join(l.Addresses, ", "))
	}
}

func mfaLabel(l Location) string {
	if l.NeedsMFA() {
		return l.MFAMode
	}
	return "off"
}

// ---- status ----

// StatusReport is `ward client status --json`.
type StatusReport struct {
	Config     string           `json:"config"`
	ProxyURL   string           `json:"proxy_url"`
	Instance   string           `json:"instance_name,omitempty"`
	Username   string           `json:"username"`
	DeviceID   string           `json:"device_id"`
	DeviceName string           `json:"device_name"`
	PublicKey  string           `json:"public_key"`
	Completed  bool             `json:"completed"`
	SyncedAt   int64            `json:"synced_at,omitempty"`
	Locations  []LocationStatus `json:"locations"`
}

// LocationStatus is one location in the status report.
type LocationStatus struct {
	Location
	Up     bool          `json:"up"`
	Tunnel *TunnelStatus `json:"tunnel,omitempty"`
}

func (e *env) status(args []string) error {
	fs := newFlagSet(e, "status", "status [--json]")
	asJSON := fs.Bool("json", false, "print the status as JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("status takes no arguments")
	}
	cfg, path, err := loadConfig()
	if err != nil {
		return err
	}
	rep := StatusReport{Config: path, ProxyURL: cfg.ProxyURL, Instance: cfg.InstanceName, Username: cfg.Username, DeviceID: cfg.DeviceID,
		DeviceName: cfg.DeviceName, PublicKey: cfg.PublicKey, Completed: cfg.Completed, SyncedAt: cfg.SyncedAt, Locations: []LocationStatus{}}
	for _, l := range cfg.Locations {
		ls := LocationStatus{Location: l}
		files := runtimeFiles(path, l.ID)
		if pid := runningTunnel(files); pid != 0 {
			ls.Up = true
			st, err := readStatus(files.status)
			if err != nil {
				st = TunnelStatus{PID: pid, LocationID: l.ID, Location: l.Name}
			}
			st.PID = pid
			ls.Tunnel = &st
		}
		rep.Locations = append(rep.Locations, ls)
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	instance := ""
	if cfg.InstanceName != "" {
		instance = " (" + cfg.InstanceName + ")"
	}
	e.printf("Enrolled as %s at %s%s\n", cfg.Username, cfg.ProxyURL, instance)
	e.printf("Device %q (%s), public key %s\n", cfg.DeviceName, cfg.DeviceID, cfg.PublicKey)
	if !cfg.Completed {
		e.printf("The enrollment is not finished: run `ward client enroll` with your token again.\n")
	}
	synced := "never"
	if cfg.SyncedAt > 0 {
		synced = time.UnixMilli(cfg.SyncedAt).Format(time.RFC3339)
	}
	e.printf("Config %s, last sync %s\n", path, synced)
	if len(rep.Locations) == 0 {
		e.printf("No locations.\n")
		return nil
	}
	now := time.Now()
	for _, ls := range rep.Locations {
		l := ls.Location
		state := "down"
		if ls.Up {
			state = "UP"
		}
		e.printf("\n%s (%s): %s\n", l.Name, l.ID, state)
		e.printf("  MFA %s, endpoints %s, addresses %s, allowed IPs %s\n", mfaLabel(l), strings.Join(l.Endpoints, ", "),
			strings.Join(l.Addresses, ", "), strings.Join(l.AllowedIPs, ", "))
		if len(l.DNS) > 0 {
			e.printf("  DNS servers %s (not set by ward client)\n", strings.Join(l.DNS, ", "))
		}
		if t := ls.Tunnel; t != nil {
			hs := "none yet"
			if t.LastHandshake > 0 {
				hs = now.Sub(time.UnixMilli(t.LastHandshake)).Round(time.Second).String() + " ago"
			}
			e.printf("  pid %d, interface %s, endpoint %s, last handshake %s, received %d B, sent %d B, endpoint switches %d\n",
				t.PID, t.Interface, t.Endpoint, hs, t.RxBytes, t.TxBytes, t.Switches)
		}
	}
	return nil
}

// ---- sync ----

func (e *env) sync(ctx context.Context, args []string) error {
	fs := newFlagSet(e, "sync", "sync")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("sync takes no arguments")
	}
	cfg, path, err := loadConfig()
	if err != nil {
		return err
	}
	diff, err := syncConfig(ctx, cfg, path)
	if err != nil {
		return err
	}
	if diff.Empty() {
		e.printf("No changes (%d locations).\n", len(cfg.Locations))
		return nil
	}
	for _, l := range diff.Added {
		e.printf("added:   %s (MFA %s, endpoints %s)\n", l.Name, mfaLabel(l), strings.Join(l.Endpoints, ", "))
	}
	for _, c := range diff.Changed {
		e.printf("changed: %s (%s)\n", c.Location.Name, strings.Join(c.Fields, ", "))
	}
	for _, l := range diff.Removed {
		e.printf("removed: %s\n", l.Name)
	}
	for _, l := range append(append([]Location{}, diff.Removed...), changedLocations(diff)...) {
		if runningTunnel(runtimeFiles(path, l.ID)) != 0 {
			e.printf("note: %s is up with its old configuration; bring it down and up again to use the new one\n", l.Name)
		}
	}
	return nil
}

func changedLocations(d LocationDiff) []Location {
	out := make([]Location, len(d.Changed))
	for i, c := range d.Changed {
		out[i] = c.Location
	}
	return out
}

// syncConfig fetches the device's locations and saves them.
func syncConfig(ctx context.Context, cfg *Config, path string) (LocationDiff, error) {
	api, err := NewAPI(cfg.ProxyURL)
	if err != nil {
		return LocationDiff{}, err
	}
	res, err := api.Sync(ctx, cfg.SyncToken)
	if err != nil {
		return LocationDiff{}, wrap(err, ExitError, syncHint(err), "sync with %s failed", cfg.ProxyURL)
	}
	diff := DiffLocations(cfg.Locations, res.Locations)
	cfg.Locations, cfg.SyncedAt = nonNilLocations(res.Locations), time.Now().UnixMilli()
	if res.Device.Name != "" {
		cfg.DeviceName = res.Device.Name
	}
	return diff, cfg.Save(path)
}

func syncHint(err error) string {
	var ae *APIError
	if errors.As(err, &ae) {
		if ae.ExitCode() == ExitUnavailable {
			return "the VPN server is not reachable right now; tunnels that are up keep working, and the saved configuration stays in use; try `ward client sync` again later"
		}
		return hintFor(ae, "sync")
	}
	var ce *Error
	if errors.As(err, &ce) {
		return ce.Hint
	}
	return ""
}

// ---- down ----

func (e *env) down(args []string) error {
	fs := newFlagSet(e, "down", "down LOCATION")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("down needs exactly one LOCATION (a name or ID)")
	}
	cfg, path, err := loadConfig()
	if err != nil {
		return err
	}
	loc, err := cfg.FindLocation(pos[0])
	if err != nil {
		// A location removed by a sync may still have a tunnel up.
		l, ok := findRunningByName(path, pos[0])
		if !ok {
			return err
		}
		loc = l
	}
	files := runtimeFiles(path, loc.ID)
	pid := runningTunnel(files)
	if pid == 0 {
		e.printf("%s is not up.\n", loc.Name)
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return wrap(err, ExitError, "are you the user who brought it up? try with sudo", "cannot stop the tunnel process %d", pid)
	}
	if !waitExit(pid, 15*time.Second) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		if !waitExit(pid, 3*time.Second) {
			return fail(ExitError, fmt.Sprintf("see %s", files.log), "the tunnel process %d did not stop", pid)
		}
		e.warnf("the tunnel process %d did not stop within 15 s and was killed", pid)
	}
	os.Remove(files.pid)
	os.Remove(files.status)
	e.printf("%s is down.\n", loc.Name)
	return nil
}

// findRunningByName looks through the status files of running tunnels.
func findRunningByName(cfgPath, ref string) (Location, bool) {
	dir := filepath.Dir(cfgPath)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return Location{}, false
	}
	for _, ent := range entries {
		n := ent.Name()
		if !strings.HasPrefix(n, "tunnel-") || !strings.HasSuffix(n, ".json") {
			continue
		}
		st, err := readStatus(filepath.Join(dir, n))
		if err != nil {
			continue
		}
		if st.LocationID == ref || strings.EqualFold(st.Location, ref) {
			return Location{ID: st.LocationID, Name: st.Location}, true
		}
	}
	return Location{}, false
}
