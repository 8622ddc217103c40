package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// handoff is what `up` passes to the background tunnel process through an
// inherited pipe: never on the command line, never in a file.
type handoff struct {
	PresharedKey string `json:"preshared_key"`
	SessionID    string `json:"session_id,omitempty"`
}

// readyLine is the one line the tunnel process writes on the ready pipe.
type readyLine struct {
	OK          bool   `json:"ok"`
	Interface   string `json:"interface,omitempty"`
	Endpoint    string `json:"endpoint,omitempty"`
	HandshakeMS int64  `json:"handshake_ms,omitempty"`
	Code        int    `json:"code,omitempty"`
	Message     string `json:"message,omitempty"`
	Hint        string `json:"hint,omitempty"`
}

type upOptions struct {
	loc        Location
	cfg        *Config
	cfgPath    string
	iface      string
	foreground bool
	wait       time.Duration
	psk        string
	sessionID  string
	ready      *os.File // the ready pipe of a background tunnel, nil in the foreground
}

func (e *env) up(ctx context.Context, args []string) (err error) {
	fs := newFlagSet(e, "up", "up LOCATION [flags]")
	code := fs.String("code", "", "the MFA code (else asked, or read from stdin)")
	method := fs.String("method", "totp", "MFA method: totp (authenticator app) or email (a code is mailed to you)")
	iface := fs.String("interface", "", "interface name (default ward-<location>, at most 15 characters)")
	foreground := fs.Bool("foreground", false, "stay in the foreground until Ctrl-C or SIGTERM")
	wait := fs.Duration("wait", 15*time.Second, "how long to wait for the first handshake before giving up (0: do not wait)")
	offline := fs.Bool("offline", false, "use the saved configuration without syncing first")
	handoffFD := fs.Int("handoff-fd", -1, "internal: read the MFA session from this file descriptor")
	readyFD := fs.Int("ready-fd", -1, "internal: report readiness on this file descriptor")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("up needs exactly one LOCATION (a name or ID; `ward client status` lists them)")
	}
	if *method != "totp" && *method != "email" {
		return usagef("--method must be totp or email, not %q", *method)
	}
	if *wait < 0 {
		return usagef("--wait must not be negative")
	}
	cfg, path, err := loadConfig()
	if err != nil {
		return err
	}
	if !cfg.Completed {
		return &Error{Code: ExitNotEnrolled, Msg: "the enrollment of this computer is not finished",
			Hint: "run the `ward client enroll` command with your token again"}
	}
	loc, err := cfg.FindLocation(pos[0])
	if err != nil {
		return err
	}
	opts := &upOptions{cfg: cfg, cfgPath: path, foreground: *foreground, wait: *wait}
	if *readyFD >= 0 {
		opts.ready = os.NewFile(uintptr(*readyFD), "ready")
		// Whatever goes wrong, the waiting parent hears it.
		defer func() {
			if err != nil {
				e.tellParent(opts, err)
			}
		}()
	}
	if *handoffFD >= 0 {
		// The background half of `up`: the parent did the MFA login.
		h, err := readHandoff(*handoffFD)
		if err != nil {
			return wrap(err, ExitError, "", "read the session from the parent process")
		}
		opts.psk, opts.sessionID = h.PresharedKey, h.SessionID
		opts.loc = loc
		opts.iface = *iface
		if opts.iface == "" {
			opts.iface = InterfaceName(loc)
		}
		return e.runTunnel(ctx, opts)
	}

	files := runtimeFiles(path, loc.ID)
	if pid := runningTunnel(files); pid != 0 {
		st, _ := readStatus(files.status)
		return &Error{Code: ExitTunnel, Msg: fmt.Sprintf("%s is already up (pid %d, interface %s)", loc.Name, pid, st.Interface),
			Hint: "run `ward client down " + loc.Name + "` first"}
	}
	if !*offline {
		if _, err := syncConfig(ctx, cfg, path); err != nil {
			switch ExitCode(err) {
			case ExitUnavailable:
				e.warnf("could not refresh the configuration (%v); using the saved one", err)
			default:
				return err
			}
		} else if loc, err = cfg.FindLocation(loc.ID); err != nil {
			return &Error{Code: ExitNotEnrolled, Msg: fmt.Sprintf("location %q is no longer available to this device", pos[0]),
				Hint: "ask your administrator for access; `ward client status` lists your locations"}
		}
	}
	opts.loc = loc
	opts.iface = *iface
	if opts.iface == "" {
		opts.iface = InterfaceName(loc)
	}
	if err := validInterface(opts.iface); err != nil {
		return err
	}
	if err := checkLocation(loc); err != nil {
		return err
	}

	if loc.NeedsMFA() {
		sess, err := e.mfaLogin(ctx, cfg, loc, *method, *code)
		if err != nil {
			return err
		}
		opts.psk, opts.sessionID = sess.PresharedKey, sess.ID
	} else if *code != "" {
		e.warnf("%s does not use MFA; --code is ignored", loc.Name)
	}
	if opts.foreground {
		return e.runTunnel(ctx, opts)
	}
	return e.startBackground(ctx, opts)
}

// checkLocation refuses a location config the tunnel cannot use.
func checkLocation(l Location) error {
	if len(l.Endpoints) == 0 {
		return fail(ExitTunnel, "ask your administrator to set the location's endpoint, then run `ward client sync`", "location %s has no endpoint", l.Name)
	}
	if len(l.Addresses) == 0 {
		return fail(ExitTunnel, "run `ward client sync`; if it persists, ask your administrator", "this device has no address in location %s", l.Name)
	}
	if l.PublicKey == "" {
		return fail(ExitTunnel, "run `ward client sync`", "location %s has no public key in the saved configuration", l.Name)
	}
	return nil
}

// mfaLogin proves the second factor for a location and returns the session
// with its preshared key.
func (e *env) mfaLogin(ctx context.Context, cfg *Config, loc Location, method, code string) (Session, error) {
	api, err := NewAPI(cfg.ProxyURL)
	if err != nil {
		return Session{}, err
	}
	ch, err := api.StartMFA(ctx, loc.ID, cfg.PublicKey, method)
	if err != nil {
		var ae *APIError
		hint := ""
		if errors.As(err, &ae) {
			hint = hintFor(ae, "location")
		}
		return Session{}, wrap(err, ExitError, hint, "cannot start the MFA login for %s", loc.Name)
	}
	if ch.Method == "email" {
		e.printf("A code was mailed to you; it is valid until %s.\n", time.UnixMilli(ch.ExpiresAt).Format("15:04"))
	}
	interactive := code == "" && e.in.Terminal()
	for attempt := 1; ; attempt++ {
		if code == "" {
			prompt := "MFA code for " + loc.Name + " (authenticator app): "
			if ch.Method == "email" {
				prompt = "MFA code for " + loc.Name + " (from the e-mail): "
			}
			c, err := e.in.Line(ctx, prompt)
			if err != nil || strings.TrimSpace(c) == "" {
				if ctx.Err() != nil {
					return Session{}, &Error{Code: ExitError, Msg: "interrupted"}
				}
				return Session{}, usagef("%s needs an MFA code: pass --code CODE, or type it when asked", loc.Name)
			}
			code = strings.TrimSpace(c)
		}
		fin, err := api.FinishMFA(ctx, ch.Token, code)
		if err != nil {
			var ae *APIError
			if interactive && attempt < 3 && errors.As(err, &ae) && (ae.Code == "invalid_code" || ae.Code == "code_used") {
				fmt.Fprintf(e.stderr, "Code not accepted: %s. Try again.\n", ae.Message)
				code = ""
				continue
			}
			hint := "wait for the next code of your authenticator app and run `ward client up " + loc.Name + "` again"
			if errors.As(err, &ae) && ae.Code != "invalid_code" && ae.Code != "code_used" {
				hint = hintFor(ae, "location")
			}
			return Session{}, wrap(err, ExitAuth, hint, "the MFA login for %s was refused", loc.Name)
		}
		if fin.Session.PresharedKey == "" {
			return Session{}, fail(ExitError, "", "the server's MFA answer holds no session key")
		}
		if fin.Warning != nil {
			e.warnf("%s (%s); connecting anyway", fin.Warning.Message, fin.Warning.Code)
		}
		return fin.Session, nil
	}
}

func readHandoff(fd int) (handoff, error) {
	f := os.NewFile(uintptr(fd), "handoff")
	if f == nil {
		return handoff{}, fmt.Errorf("file descriptor %d is not open", fd)
	}
	defer f.Close()
	var h handoff
	raw, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return h, err
	}
	return h, json.Unmarshal(raw, &h)
}

// tellParent reports an error on the ready pipe (if any) and returns it.
func (e *env) tellParent(o *upOptions, err error) error {
	var ce *Error
	line := readyLine{Code: ExitCode(err), Message: err.Error()}
	if errors.As(err, &ce) {
		line.Hint = ce.Hint
	}
	o.writeReady(line)
	return err
}

// writeReady writes the one line of the ready pipe and closes it.
func (o *upOptions) writeReady(line readyLine) {
	if o.ready == nil {
		return
	}
	raw, _ := json.Marshal(line)
	_, _ = o.ready.Write(append(raw, '\n'))
	o.ready.Close()
	o.ready = nil
}

// runTunnel is the foreground half: open the tunnel, wait for the first
// handshake, report, then watch and keep the status file current until
// ctx ends (SIGTERM, Ctrl-C), and tear everything down.
func (e *env) runTunnel(ctx context.Context, o *upOptions) error {
	files := runtimeFiles(o.cfgPath, o.loc.ID)
	if err := claimPIDFile(files.pid); err != nil {
		return e.tellParent(o, &Error{Code: ExitTunnel, Msg: fmt.Sprintf("%s is already up", o.loc.Name), Err: err,
			Hint: "run `ward client down " + o.loc.Name + "` first"})
	}
	defer os.Remove(files.pid)
	defer os.Remove(files.status)

	tc, err := tunnelConfig(o)
	if err != nil {
		return e.tellParent(o, err)
	}
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("location", o.loc.Name)
	start := time.Now()
	tun, err := Open(tc, log)
	if err != nil {
		return e.tellParent(o, openError(err, o.iface))
	}
	defer func() {
		if err := tun.Close(); err != nil {
			log.Warn("tunnel teardown", "err", err)
		}
		log.Info("tunnel down", "interface", o.iface)
	}()
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go tun.Watch(wctx)

	status := TunnelStatus{PID: os.Getpid(), LocationID: o.loc.ID, Location: o.loc.Name, Interface: o.iface, Addresses: o.loc.Addresses,
		Endpoints: o.loc.Endpoints, MFA: o.loc.NeedsMFA(), SessionID: o.sessionID, StartedAt: start.UnixMilli()}
	update := func() TunnelStatus {
		st, err := tun.Stats()
		status.Endpoint, status.Switches, status.UpdatedAt = tun.Endpoint(), tun.Switches(), time.Now().UnixMilli()
		if err == nil {
			status.RxBytes, status.TxBytes = st.RxBytes, st.TxBytes
			if !st.LastHandshake.IsZero() {
				status.LastHandshake = st.LastHandshake.UnixMilli()
			}
		}
		if err := writeStatus(files.status, status); err != nil {
			log.Warn("cannot write the status file", "err", err)
		}
		return status
	}

	// Wait for the first handshake.
	if o.wait > 0 {
		tick := time.NewTicker(20 * time.Millisecond)
		deadline := time.NewTimer(o.wait)
	wait:
		for {
			select {
			case <-ctx.Done():
				tick.Stop()
				return e.tellParent(o, &Error{Code: ExitTunnel, Msg: "interrupted before the tunnel was up"})
			case <-deadline.C:
				tick.Stop()
				update()
				hint := "check that UDP reaches " + strings.Join(o.loc.Endpoints, " or ") + " from here (firewall?)"
				if o.loc.NeedsMFA() {
					hint += "; if the gateways did not install the MFA session, run `ward client up " + o.loc.Name + "` again with a new code"
				}
				return e.tellParent(o, &Error{Code: ExitTunnel, Hint: hint,
					Msg: fmt.Sprintf("no handshake with the gateway of %s within %v (tried %s)", o.loc.Name, o.wait, strings.Join(o.loc.Endpoints, ", "))})
			case <-tick.C:
				if st := update(); st.LastHandshake > 0 {
					tick.Stop()
					deadline.Stop()
					break wait
				}
			}
		}
	} else {
		update()
	}
	took := time.Since(start)
	log.Info("tunnel up", "interface", o.iface, "endpoint", tun.Endpoint(), "handshake_after", took.Round(time.Millisecond))
	if o.ready != nil {
		o.writeReady(readyLine{OK: true, Interface: o.iface, Endpoint: tun.Endpoint(), HandshakeMS: took.Milliseconds()})
	} else {
		e.printf("%s is up: interface %s, endpoint %s (handshake after %v). Ctrl-C or `ward client down %s` brings it down.\n",
			o.loc.Name, o.iface, tun.Endpoint(), took.Round(time.Millisecond), o.loc.Name)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			log.Info("stopping", "reason", "signal")
			return nil
		case <-tick.C:
			update()
		}
	}
}

func tunnelConfig(o *upOptions) (TunnelConfig, error) {
	tc := TunnelConfig{Interface: o.iface, PrivateKey: o.cfg.PrivateKey, MTU: o.loc.MTU, PeerKey: o.loc.PublicKey,
		PresharedKey: o.psk, Keepalive: o.loc.Keepalive, Endpoints: o.loc.Endpoints}
	for _, a := range o.loc.Addresses {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			ip, err2 := netip.ParseAddr(a)
			if err2 != nil {
				return tc, fail(ExitTunnel, "run `ward client sync`", "location %s: bad address %q in the saved configuration", o.loc.Name, a)
			}
			p = netip.PrefixFrom(ip, ip.BitLen())
		}
		tc.Addresses = append(tc.Addresses, p)
	}
	for _, a := range o.loc.AllowedIPs {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return tc, fail(ExitTunnel, "run `ward client sync`", "location %s: bad allowed IP %q in the saved configuration", o.loc.Name, a)
		}
		tc.AllowedIPs = append(tc.AllowedIPs, p.Masked())
	}
	return tc, nil
}

func openError(err error, iface string) error {
	msg := err.Error()
	hint := ""
	switch {
	case errors.Is(err, os.ErrPermission) || strings.Contains(msg, "operation not permitted") || strings.Contains(msg, "permission denied"):
		hint = "bringing a tunnel up needs root (or CAP_NET_ADMIN): run it with sudo"
	case strings.Contains(msg, "/dev/net/tun") || strings.Contains(msg, "no such file or directory"):
		hint = "this system has no TUN device (/dev/net/tun); load the tun module or enable TUN for this container"
	case strings.Contains(msg, "busy") || strings.Contains(msg, "exists"):
		hint = "an interface named " + iface + " exists already: pick another with --interface"
	}
	return &Error{Code: ExitTunnel, Msg: "cannot bring the tunnel up on " + iface, Err: err, Hint: hint}
}

// startBackground re-runs this program as `ward client up LOCATION
// --foreground` in a new session, hands it the MFA session over a pipe, and
// returns once it reports the tunnel up (or its error).
func (e *env) startBackground(ctx context.Context, o *upOptions) error {
	exe, err := os.Executable()
	if err != nil {
		return wrap(err, ExitTunnel, "run with --foreground instead", "cannot find this program to start the tunnel in the background")
	}
	files := runtimeFiles(o.cfgPath, o.loc.ID)
	logf, err := os.OpenFile(files.log, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return wrap(err, ExitTunnel, "", "open the tunnel log %s", files.log)
	}
	defer logf.Close()
	chownLikeDir(logf, filepath.Dir(files.log))
	handR, handW, err := os.Pipe()
	if err != nil {
		return err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		handR.Close()
		handW.Close()
		return err
	}
	defer readyR.Close()
	args := []string{"client", "up", o.loc.ID, "--foreground", "--offline", "--interface", o.iface,
		"--wait", o.wait.String(), "--handoff-fd", "3", "--ready-fd", "4"}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), ConfigEnv+"="+o.cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf // stdin: /dev/null
	cmd.ExtraFiles = []*os.File{handR, readyW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	err = cmd.Start()
	handR.Close()
	readyW.Close()
	if err != nil {
		handW.Close()
		return wrap(err, ExitTunnel, "run with --foreground instead", "cannot start the tunnel process")
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	raw, _ := json.Marshal(handoff{PresharedKey: o.psk, SessionID: o.sessionID})
	_, werr := handW.Write(raw)
	handW.Close()
	if werr != nil {
		_ = cmd.Process.Kill()
		return wrap(werr, ExitTunnel, "see "+files.log, "cannot hand the session to the tunnel process")
	}

	lines := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(readyR).ReadString('\n')
		lines <- s
	}()
	timeout := o.wait + 20*time.Second
	select {
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM)
		return &Error{Code: ExitTunnel, Msg: "interrupted; the tunnel process was told to stop"}
	case <-time.After(timeout):
		_ = cmd.Process.Signal(syscall.SIGTERM)
		return &Error{Code: ExitTunnel, Msg: fmt.Sprintf("the tunnel process did not report within %v", timeout), Hint: "see " + files.log}
	case s := <-lines:
		var r readyLine
		if s == "" || json.Unmarshal([]byte(s), &r) != nil {
			// The process died without a word.
			select {
			case werr := <-exited:
				err = werr
			case <-time.After(2 * time.Second):
				_ = cmd.Process.Kill()
			}
			tail := tailFile(files.log, 15)
			return &Error{Code: ExitTunnel, Msg: fmt.Sprintf("the tunnel process ended before the tunnel was up (%v)", err),
				Hint: "its log " + files.log + " ends with:\n" + indent(tail)}
		}
		if !r.OK {
			code := r.Code
			if code == 0 || code == ExitOK {
				code = ExitTunnel
			}
			return &Error{Code: code, Msg: r.Message, Hint: r.Hint}
		}
		e.printf("%s is up (pid %d): interface %s, endpoint %s, handshake after %s.\n", o.loc.Name, cmd.Process.Pid, r.Interface,
			r.Endpoint, (time.Duration(r.HandshakeMS) * time.Millisecond).String())
		e.printf("`ward client status` shows it; `ward client down %s` brings it down. Log: %s\n", o.loc.Name, files.log)
		return nil
	}
}

func indent(s string) string {
	if s == "" {
		return "    (empty)"
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}
