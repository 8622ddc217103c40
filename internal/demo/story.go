package demo

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pquerna/otp/totp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wardvpn/ward/internal/core/enroll"
	"github.com/wardvpn/ward/internal/core/mfa"
	"github.com/wardvpn/ward/internal/core/vpnsession"
)

// Step 6: alice's side of the enrollment, through the proxy.
func (d *demo) enroll(ctx context.Context) error {
	d.step("Enrollment through the proxy's public API, as alice's client does it")
	pub := newJSONClient(d.proxyURL)
	base := "/api/v1/public/enrollment/" + d.enrollToken
	var info enroll.Info
	if _, err := pub.call(ctx, "GET", base, nil, &info, http.StatusOK); err != nil {
		return err
	}
	var steps []string
	for _, s := range info.Steps {
		name := s.Name
		if s.Required {
			name += " (required)"
		}
		steps = append(steps, name)
	}
	d.say("GET  %s/public/enrollment/{token}   for %s; steps: %s", d.proxyURL+"/api/v1", info.Username, strings.Join(steps, ", "))

	d.userPassword = randomPassword()
	if _, err := pub.call(ctx, "POST", base+"/password", map[string]string{"password": d.userPassword}, nil, http.StatusNoContent); err != nil {
		return err
	}
	d.say("POST …/password         password set: %s", d.userPassword)

	var setup mfa.Setup
	if _, err := pub.call(ctx, "POST", base+"/totp", nil, &setup, http.StatusOK); err != nil {
		return err
	}
	d.totpSecret = setup.Secret
	// alice's authenticator app.
	code, err := totp.GenerateCode(setup.Secret, time.Now())
	if err != nil {
		return err
	}
	var rc mfa.RecoveryCodes
	if _, err := pub.call(ctx, "POST", base+"/totp/confirm", map[string]string{"code": code}, &rc, http.StatusOK); err != nil {
		return err
	}
	d.say("POST …/totp             TOTP secret %s (what the QR code holds)", setup.Secret)
	d.say("POST …/totp/confirm     code %s from the authenticator → TOTP on, %d recovery codes", code, len(rc.Codes))

	// The client makes its key pair; only the public key leaves it.
	if d.privateKey, err = wgtypes.GeneratePrivateKey(); err != nil {
		return err
	}
	pubKey := d.privateKey.PublicKey().String()
	var reg enroll.Registered
	if _, err := pub.call(ctx, "POST", base+"/device", enroll.DeviceInput{Name: deviceName, PublicKey: pubKey}, &reg, http.StatusCreated); err != nil {
		return err
	}
	found := false
	for _, l := range reg.Locations {
		if l.LocationID == d.loc.ID {
			d.locCfg, found = l, true
		}
	}
	if !found {
		return fmt.Errorf("the registered device has no configuration for location %q", locationName)
	}
	d.say("POST …/device           key pair made here, public key %s… → %q gets %s in %q",
		pubKey[:10], deviceName, strings.Join(d.locCfg.Addresses, ", "), d.locCfg.Name)

	var done enroll.Completed
	if _, err := pub.call(ctx, "POST", base+"/complete", nil, &done, http.StatusOK); err != nil {
		return err
	}
	if !done.Activated {
		return errors.New("the enrollment completed but did not activate the user")
	}
	d.say("POST …/complete         enrollment complete: %s is active, the link is used up", done.Username)
	return nil
}

// Step 7.
func (d *demo) vpnMFA(ctx context.Context) error {
	d.step(fmt.Sprintf("VPN MFA for %q through the proxy", locationName))
	pub := newJSONClient(d.proxyURL)
	var ch vpnsession.Challenge
	in := map[string]string{"location_id": d.loc.ID, "public_key": d.privateKey.PublicKey().String(), "method": vpnsession.MethodTOTP}
	if _, err := pub.call(ctx, "POST", "/api/v1/public/vpn-mfa/start", in, &ch, http.StatusCreated); err != nil {
		return err
	}
	d.say("POST /api/v1/public/vpn-mfa/start   {location, public key, method totp} → challenge, valid until %s",
		time.UnixMilli(ch.ExpiresAt).Format("15:04:05"))
	// The code of the current 30-s step was spent confirming TOTP and a
	// code works once; the server accepts one step of clock skew, so the
	// authenticator's next code is used (no 30 s wait).
	code, err := totp.GenerateCode(d.totpSecret, time.Now().Add(30*time.Second))
	if err != nil {
		return err
	}
	var fin struct {
		Session vpnsession.Session `json:"session"`
		Warning *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"warning"`
	}
	start := time.Now()
	status, err := pub.call(ctx, "POST", "/api/v1/public/vpn-mfa/finish", map[string]string{"token": ch.Token, "code": code}, &fin,
		http.StatusOK, http.StatusAccepted)
	if err != nil {
		return err
	}
	if fin.Session.PresharedKey == "" {
		return errors.New("the MFA answer carries no preshared key")
	}
	d.presharedKey = fin.Session.PresharedKey
	d.say("POST /api/v1/public/vpn-mfa/finish  code %s (the authenticator's next one: the current one was spent above)", code)
	if status == http.StatusAccepted && fin.Warning != nil {
		d.say("→ session %s, but: %s (%s)", fin.Session.ID, fin.Warning.Message, fin.Warning.Code)
	} else {
		d.say("→ session %s with a fresh preshared key, answered in %s once both gateways", fin.Session.ID, round(time.Since(start)))
		d.say("  had installed alice's peer (location revision %d)", fin.Session.Revision)
	}
	return nil
}

// Step 8.
func (d *demo) connect(ctx context.Context) error {
	d.step("Tunnel: alice's client (netstack as well) reaches the service through gateway 1")
	cfg := tunnelConfig{PrivateKey: d.privateKey.String(), MTU: d.locCfg.MTU, PeerKey: d.locCfg.PublicKey, PresharedKey: d.presharedKey,
		Keepalive: d.locCfg.Keepalive, Endpoints: d.locCfg.Endpoints, StallAfter: stallAfter}
	for _, a := range d.locCfg.Addresses {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return fmt.Errorf("device address %q: %w", a, err)
		}
		cfg.Addresses = append(cfg.Addresses, p)
	}
	for _, a := range d.locCfg.AllowedIPs {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return fmt.Errorf("allowed IP %q: %w", a, err)
		}
		cfg.AllowedIPs = append(cfg.AllowedIPs, p)
	}
	t, err := openTunnel(cfg, d.log.With("node", "client"))
	if err != nil {
		return err
	}
	d.client = t
	watchCtx, stop := context.WithCancel(context.Background())
	d.stopWatch = stop
	d.switches = make(chan switchEvent, 16)
	go t.watch(watchCtx, func(ev switchEvent) {
		select {
		case d.switches <- ev:
		default:
		}
	})
	d.say("client %s, peer %s… with the session's key, endpoints %s",
		strings.Join(d.locCfg.Addresses, ", "), d.locCfg.PublicKey[:10], strings.Join(d.locCfg.Endpoints, ", "))
	body, took, err := t.get(ctx, d.serviceURL, 10*time.Second)
	if err != nil {
		return fmt.Errorf("GET %s through the tunnel: %w", d.serviceURL, err)
	}
	if body != "hello from gateway 1" {
		return fmt.Errorf("GET %s answered %q, want gateway 1", d.serviceURL, body)
	}
	d.say("GET %s → %q in %s (WireGuard handshake included)", d.serviceURL, body, round(took))
	body, took, err = t.get(ctx, d.serviceURL, 5*time.Second)
	if err != nil {
		return fmt.Errorf("second GET %s: %w", d.serviceURL, err)
	}
	d.say("GET %s → %q in %s", d.serviceURL, body, round(took))
	return nil
}

// fetchResult is one fetch of the failover step.
type fetchResult struct {
	started, done time.Time
	body          string
	err           error
}

// Step 9.
func (d *demo) failover(ctx context.Context) error {
	d.step(fmt.Sprintf("Failover: gateway 1 stops; the client keeps fetching every %s", round(fetchEvery)))
	gw1, gw2 := d.gateways[0], d.gateways[1]
	results := make(chan fetchResult, 1024)
	fetchCtx, stopFetching := context.WithCancel(ctx)
	var fetches sync.WaitGroup
	defer func() {
		stopFetching()
		fetches.Wait()
	}()
	fetches.Add(1)
	go func() {
		defer fetches.Done()
		tick := time.NewTicker(fetchEvery)
		defer tick.Stop()
		for {
			fetches.Add(1)
			go func() {
				defer fetches.Done()
				r := fetchResult{started: time.Now()}
				r.body, _, r.err = d.client.get(fetchCtx, d.serviceURL, time.Second)
				r.done = time.Now()
				if fetchCtx.Err() == nil {
					results <- r
				}
			}()
			select {
			case <-fetchCtx.Done():
				return
			case <-tick.C:
			}
		}
	}()

	// A few answers from gateway 1 first.
	var lastGW1 time.Time
	for n := 0; n < 3; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case r := <-results:
			if r.err != nil || r.body != "hello from gateway 1" {
				return fmt.Errorf("before the failover: %q, %v", r.body, r.err)
			}
			lastGW1, n = r.done, n+1
		}
	}

	type entry struct {
		at   time.Time
		text string
	}
	var timeline []entry
	note := func(at time.Time, format string, args ...any) {
		timeline = append(timeline, entry{at, fmt.Sprintf(format, args...)})
	}
	t0 := time.Now()
	note(t0, "stopping %s (control streams end, last stats go to core, then its WireGuard device closes)", gw1.name)
	stopped := make(chan error, 1)
	go func() { stopped <- gw1.comp.stop(15 * time.Second) }()
	var (
		stopDone  bool
		firstFail time.Time
		firstGW2  fetchResult
		failed    int
		switched  *switchEvent
	)
	deadline := time.After(15 * time.Second)
	for !stopDone || firstGW2.done.IsZero() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("no answer from gateway 2 within 15 s of stopping gateway 1 (%d fetches failed)", failed)
		case err := <-stopped:
			if err != nil {
				return err
			}
			stopDone = true
			note(time.Now(), "%s stopped", gw1.name)
		case ev := <-d.switches:
			if ev.err != nil {
				return fmt.Errorf("client failover: %w", ev.err)
			}
			switched = &ev
			note(ev.at, "client watchdog: %d bytes sent, nothing back for %s → peer re-added towards %s (%s), a new handshake starts",
				ev.unanswered, round(ev.silentFor), ev.to, d.gateways[ev.toIndex].name)
		case r := <-results:
			switch {
			case r.err != nil:
				failed++
				if firstFail.IsZero() || r.started.Before(firstFail) {
					firstFail = r.started
				}
			case r.body == "hello from gateway 1":
				if r.done.After(lastGW1) {
					lastGW1 = r.done
				}
			case r.body == "hello from gateway 2":
				if firstGW2.done.IsZero() || r.done.Before(firstGW2.done) {
					firstGW2 = r
				}
			default:
				return fmt.Errorf("unexpected answer %q", r.body)
			}
		}
	}
	stopFetching()
	note(lastGW1, "last answer from gateway 1")
	if !firstFail.IsZero() {
		note(firstFail, "first fetch that gets no answer (each waits up to 1 s)")
	}
	note(firstGW2.done, "%q", firstGW2.body)
	slices.SortStableFunc(timeline, func(a, b entry) int { return a.at.Compare(b.at) })
	for _, e := range timeline {
		d.say("%+6d ms  %s", e.at.Sub(t0).Milliseconds(), e.text)
	}
	if switched == nil {
		return errors.New("gateway 2 answered without a watchdog switch")
	}
	d.say("interruption: %s without an answer, from the last answer of gateway 1 to the first of gateway 2", round(firstGW2.done.Sub(lastGW1)))
	timedOut := fmt.Sprintf("%d fetches", failed)
	if failed == 1 {
		timedOut = "1 fetch"
	}
	d.say("(%s timed out; those still waiting got their answer from gateway 2 when TCP resent their SYN)", timedOut)
	d.say("(a plain WireGuard client has one endpoint per peer: it would keep knocking at gateway 1)")

	body, took, err := d.client.get(ctx, d.serviceURL, 5*time.Second)
	if err != nil {
		return fmt.Errorf("GET after the failover: %w", err)
	}
	if body != "hello from gateway 2" {
		return fmt.Errorf("after the failover the service answered %q, want gateway 2", body)
	}
	d.say("GET %s → %q in %s: alice carries on through %s", d.serviceURL, body, round(took), gw2.name)
	d.reportLinks(ctx)
	return nil
}

// reportLinks shows what core sees of the two gateways (best effort).
func (d *demo) reportLinks(ctx context.Context) {
	var states []string
	_ = waitFor(ctx, 3*time.Second, "core notices", func() (bool, error) {
		states = states[:0]
		down := false
		for _, g := range d.gateways {
			var st componentStatus
			if _, err := d.admin.call(ctx, "GET", "/api/v1/locations/"+d.loc.ID+"/gateways/"+g.id, nil, &st, http.StatusOK); err != nil || st.Status == nil {
				return false, err
			}
			s := "disconnected"
			if st.Status.Connected {
				s = "connected"
			} else if g.n == 1 {
				down = true
			}
			states = append(states, fmt.Sprintf("%s %s", g.name, s))
		}
		return down, nil
	})
	if len(states) > 0 {
		d.say("core's view (GET …/gateways/{id}): %s", strings.Join(states, ", "))
	}
}

// stay keeps everything up until ctx ends.
func (d *demo) stay(ctx context.Context) {
	// Only gateway 2 is left, and an idle tunnel hears nothing from it
	// between handshakes: the watchdog would take that for a stall.
	d.stopWatch()
	d.stepName = "staying (--stay)"
	d.printf("\nStill running (--stay): press Ctrl-C to stop. Meanwhile, for example:\n\n")
	d.printf("  API=%s/api/v1   # admin password: %s\n", d.coreURL, d.adminPW)
	d.printf("  CSRF=$(curl -s -c jar -H 'Content-Type: application/json' \\\n")
	d.printf("    -d '{\"username\":\"admin\",\"password\":\"%s\"}' $API/auth/login | jq -r .csrf_token)\n", d.adminPW)
	d.printf("  curl -s -b jar $API/locations/%s/gateways | jq '.items[] | {name, connected: .status.connected}'\n", d.loc.ID)
	d.printf("  curl -s -b jar \"$API/audit?limit=30\" | jq -r '.items[].action'\n")
	d.printf("  curl -s -b jar $API/users | jq '.items[] | {username, active}'\n")
	d.printf("  curl -s %s/api/v1/public/enrollment/invalid   # the public API, through the proxy\n\n", d.proxyURL)
	d.printf("  alice's password: %s; her TOTP secret: %s\n", d.userPassword, d.totpSecret)
	<-ctx.Done()
}

// randomPassword is alice's password: 16 letters and digits.
func randomPassword() string {
	const chars = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := make([]byte, 16)
	for i := range b {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(chars))))
		if err != nil {
			panic(err)
		}
		b[i] = chars[n.Int64()]
	}
	// Two classes for sure.
	return "Demo-" + string(b) + "7"
}

// whoAmI says which user runs the demo, and whether it has capabilities.
func whoAmI() string {
	uid := os.Getuid()
	if uid == 0 {
		return "Running as root, though nothing here needs it."
	}
	s := fmt.Sprintf("Running as uid %d", uid)
	if f, err := os.Open("/proc/self/status"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
				if strings.Trim(strings.TrimSpace(v), "0") == "" {
					s += " with no capabilities"
				} else {
					s += " (capabilities " + strings.TrimSpace(v) + ", none needed)"
				}
			}
		}
	}
	return s + "."
}

// round formats a duration for the story.
func round(d time.Duration) string {
	switch {
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) []string {
	raw, err := os.ReadFile(path)
	if err != nil || len(raw) == 0 {
		return nil
	}
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}
