package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
)

// ConfigEnv names the variable that overrides the config file's path.
const ConfigEnv = "WARD_CLIENT_CONFIG"

// configVersion is the format of client.json.
const configVersion = 1

// Config is what `ward client` keeps between runs, in one JSON file readable
// by its owner only: it holds the device's private key and its sync token.
type Config struct {
	Version      int    `json:"version"`
	ProxyURL     string `json:"proxy_url"`
	InstanceName string `json:"instance_name,omitempty"`
	Username     string `json:"username"`
	DeviceID     string `json:"device_id"`
	DeviceName   string `json:"device_name"`
	PrivateKey   string `json:"private_key"`
	PublicKey    string `json:"public_key"`
	SyncToken    string `json:"sync_token"`
	// Completed is false while an enrollment registered the device but did
	// not finish; running enroll again with the same token finishes it.
	Completed  bool       `json:"completed"`
	EnrolledAt int64      `json:"enrolled_at"`
	SyncedAt   int64      `json:"synced_at,omitempty"`
	Locations  []Location `json:"locations"`
}

// Location is one location's configuration as the last sync returned it.
type Location struct {
	ID         string   `json:"location_id"`
	Name       string   `json:"name"`
	Addresses  []string `json:"addresses"`
	Endpoints  []string `json:"endpoints"`
	AllowedIPs []string `json:"allowed_ips"`
	DNS        []string `json:"dns"`
	MTU        int      `json:"mtu"`
	Keepalive  int      `json:"keepalive"`
	MFAMode    string   `json:"mfa_mode"`
	PublicKey  string   `json:"public_key"`
	Revision   int64    `json:"revision"`
}

// NeedsMFA tells whether bringing the location up needs an MFA login.
func (l Location) NeedsMFA() bool { return l.MFAMode != "" && l.MFAMode != "disabled" }

// ConfigPath is where the config lives: $WARD_CLIENT_CONFIG, else
// $XDG_CONFIG_HOME/ward/client.json, else ~/.config/ward/client.json.
func ConfigPath() (string, error) {
	if p := os.Getenv(ConfigEnv); p != "" {
		return filepath.Abs(p)
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", &Error{Code: ExitError, Msg: "cannot find your config directory", Err: err,
			Hint: "set HOME or XDG_CONFIG_HOME, or " + ConfigEnv + " to the path of the client's config file"}
	}
	path := filepath.Join(dir, "ward", "client.json")
	// Under sudo, HOME is usually root's: use the invoking user's config
	// when root has none.
	if sudoUser := os.Getenv("SUDO_USER"); sudoUser != "" && os.Geteuid() == 0 {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			if u, err := user.Lookup(sudoUser); err == nil && u.HomeDir != "" {
				alt := filepath.Join(u.HomeDir, ".config", "ward", "client.json")
				if _, err := os.Stat(alt); err == nil {
					return alt, nil
				}
			}
		}
	}
	return path, nil
}

// chownLikeDir gives a file that root creates in someone else's directory
// (sudo ward client ...) to that directory's owner, so the user keeps
// access to their config and can read the tunnel's status.
func chownLikeDir(f *os.File, dir string) {
	if os.Geteuid() != 0 {
		return
	}
	st, err := os.Stat(dir)
	if err != nil {
		return
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid != 0 {
		_ = f.Chown(int(sys.Uid), int(sys.Gid))
	}
}

// ErrNotEnrolled: there is no config file.
var ErrNotEnrolled = errors.New("this computer is not enrolled")

// LoadConfig reads the config file at path. A missing file is
// ErrNotEnrolled (exit code 4). A file that others can read is tightened
// to 0600 on the way.
func LoadConfig(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &Error{Code: ExitNotEnrolled, Msg: fmt.Sprintf("not enrolled (no config at %s)", path), Err: nil,
			Hint: "enroll first: `ward client enroll --url https://PROXY --token TOKEN` with the token from your administrator"}
	}
	if err != nil {
		return nil, wrap(err, ExitError, "", "read the client config")
	}
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		_ = os.Chmod(path, 0o600)
	}
	var c Config
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, &Error{Code: ExitError, Msg: fmt.Sprintf("the client config %s is damaged", path), Err: err,
			Hint: "fix the file, or move it away and enroll again"}
	}
	if c.Version > configVersion {
		return nil, fail(ExitError, "use a newer ward client", "the client config %s has version %d, this client knows only %d", path, c.Version, configVersion)
	}
	if c.PrivateKey == "" || c.SyncToken == "" || c.ProxyURL == "" {
		return nil, &Error{Code: ExitNotEnrolled, Msg: fmt.Sprintf("the client config %s holds no complete enrollment", path),
			Hint: "enroll again: `ward client enroll --force --url https://PROXY --token TOKEN`"}
	}
	return &c, nil
}

// Save writes the config atomically with mode 0600, creating its directory
// with mode 0700. The default ward directory is tightened to 0700 if it
// exists with looser permissions; a directory named by WARD_CLIENT_CONFIG is
// left as it is, but the file is still 0600.
func (c *Config) Save(path string) error {
	c.Version = configVersion
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return wrap(err, ExitError, "", "create the config directory")
	}
	if filepath.Base(dir) == "ward" && os.Getenv(ConfigEnv) == "" {
		if st, err := os.Stat(dir); err == nil && st.Mode().Perm() != 0o700 {
			_ = os.Chmod(dir, 0o700)
		}
	}
	raw, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(raw, '\n'))
}

// writeFileAtomic writes a 0600 file through a temporary file and a rename.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return wrap(err, ExitError, "", "write %s", path)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	chownLikeDir(f, filepath.Dir(path))
	if _, err := f.Write(data); err != nil {
		f.Close()
		return wrap(err, ExitError, "", "write %s", path)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return wrap(err, ExitError, "", "write %s", path)
	}
	ok = true
	return nil
}

// FindLocation resolves a location given by ID or name (exact, then
// case-insensitive); an unknown or ambiguous name is exit code 4 or 2.
func (c *Config) FindLocation(ref string) (Location, error) {
	ref = strings.TrimSpace(ref)
	for _, l := range c.Locations {
		if l.ID == ref {
			return l, nil
		}
	}
	var exact, folded []Location
	for _, l := range c.Locations {
		if l.Name == ref {
			exact = append(exact, l)
		} else if strings.EqualFold(l.Name, ref) {
			folded = append(folded, l)
		}
	}
	for _, set := range [][]Location{exact, folded} {
		switch len(set) {
		case 0:
			continue
		case 1:
			return set[0], nil
		default:
			ids := make([]string, len(set))
			for i, l := range set {
				ids[i] = l.ID
			}
			return Location{}, usagef("the name %q matches several locations (%s); give the location's ID instead", ref, strings.Join(ids, ", "))
		}
	}
	names := make([]string, len(c.Locations))
	for i, l := range c.Locations {
		names[i] = l.Name
	}
	slices.Sort(names)
	known := "none"
	if len(names) > 0 {
		known = strings.Join(names, ", ")
	}
	return Location{}, &Error{Code: ExitNotEnrolled, Msg: fmt.Sprintf("unknown location %q (known: %s)", ref, known),
		Hint: "run `ward client sync` if it was added recently, and `ward client status` to list your locations"}
}

var ifaceUnsafe = regexp.MustCompile(`[^a-z0-9_.-]+`)

// InterfaceName is the default interface of a location: "ward-" and the
// location's name cut to Linux's 15 characters.
func InterfaceName(l Location) string {
	short := strings.Trim(ifaceUnsafe.ReplaceAllString(strings.ToLower(l.Name), "-"), "-.")
	if short == "" {
		short = ifaceUnsafe.ReplaceAllString(strings.ToLower(l.ID), "")
	}
	name := "ward-" + short
	if len(name) > 15 {
		name = strings.TrimRight(name[:15], "-.")
	}
	return name
}

// validInterface checks a user-given interface name.
func validInterface(name string) error {
	if name == "" || len(name) > 15 || strings.ContainsAny(name, "/ \t\n:%") || name == "." || name == ".." {
		return usagef("interface name %q: use 1 to 15 characters, no spaces, slashes or colons", name)
	}
	return nil
}

// LocationDiff is what a sync changed.
type LocationDiff struct {
	Added   []Location
	Removed []Location
	Changed []LocationChange
}

// LocationChange names the fields of a location that changed.
type LocationChange struct {
	Location Location
	Fields   []string
}

// Empty tells whether nothing changed.
func (d LocationDiff) Empty() bool { return len(d.Added)+len(d.Removed)+len(d.Changed) == 0 }

// DiffLocations compares the saved locations with fresh ones, by ID.
func DiffLocations(old, cur []Location) LocationDiff {
	var d LocationDiff
	before := map[string]Location{}
	for _, l := range old {
		before[l.ID] = l
	}
	seen := map[string]bool{}
	for _, l := range cur {
		seen[l.ID] = true
		o, ok := before[l.ID]
		if !ok {
			d.Added = append(d.Added, l)
			continue
		}
		if f := changedFields(o, l); len(f) > 0 {
			d.Changed = append(d.Changed, LocationChange{Location: l, Fields: f})
		}
	}
	for _, l := range old {
		if !seen[l.ID] {
			d.Removed = append(d.Removed, l)
		}
	}
	return d
}

func changedFields(a, b Location) []string {
	var f []string
	add := func(name string, same bool) {
		if !same {
			f = append(f, name)
		}
	}
	add("name", a.Name == b.Name)
	add("addresses", slices.Equal(a.Addresses, b.Addresses))
	add("endpoints", slices.Equal(a.Endpoints, b.Endpoints))
	add("allowed_ips", slices.Equal(a.AllowedIPs, b.AllowedIPs))
	add("dns", slices.Equal(a.DNS, b.DNS))
	add("mtu", a.MTU == b.MTU)
	add("keepalive", a.Keepalive == b.Keepalive)
	add("mfa_mode", a.MFAMode == b.MFAMode)
	add("public_key", a.PublicKey == b.PublicKey)
	return f
}
