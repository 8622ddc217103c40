package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// API talks to the public JSON API of a ward proxy.
type API struct {
	base string // e.g. https://vpn.example.com, without a trailing slash
	hc   *http.Client
}

const publicPrefix = "/api/v1/public"

// RequestTimeout bounds one API call. MFA finish waits for the gateways
// (core gives them 10 s), so this is generous.
const RequestTimeout = 45 * time.Second

// NewAPI checks the proxy URL and returns a client for it.
func NewAPI(proxyURL string) (*API, error) {
	u, err := url.Parse(strings.TrimSpace(proxyURL))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usagef("--url %q must be the proxy's http:// or https:// address, e.g. https://vpn.example.com", proxyURL)
	}
	u.Path, u.RawQuery, u.Fragment = strings.TrimRight(u.Path, "/"), "", ""
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConns:        2,
		IdleConnTimeout:     30 * time.Second,
	}
	return &API{base: u.String(), hc: &http.Client{Timeout: RequestTimeout, Transport: tr}}, nil
}

// Base is the proxy URL in use.
func (a *API) Base() string { return a.base }

// call sends a JSON request and decodes a 2xx answer into out. Error
// answers become *APIError; transport failures name the proxy.
func (a *API) call(ctx context.Context, method, path, bearer string, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		raw, err := json.Marshal(in)
		if err != nil {
			return 0, err
		}
		body = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+publicPrefix+path, body)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "ward-client")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return 0, &Error{Code: ExitError, Msg: "interrupted"}
		}
		return 0, &Error{Code: ExitUnavailable, Msg: "cannot reach the proxy at " + a.base, Err: unwrapURLError(err),
			Hint: "check the address and your network connection; if the address is right the VPN server may be down, try again later"}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return resp.StatusCode, &Error{Code: ExitUnavailable, Msg: "the proxy's answer broke off", Err: err, Hint: "try again"}
	}
	if resp.StatusCode >= 300 {
		ae := &APIError{Status: resp.StatusCode}
		var eb struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
				Field   string `json:"field"`
			} `json:"error"`
		}
		if json.Unmarshal(raw, &eb) == nil && eb.Error.Code != "" {
			ae.Code, ae.Message, ae.Field = eb.Error.Code, eb.Error.Message, eb.Error.Field
		} else {
			ae.Message = fmt.Sprintf("unexpected answer from %s: %s", a.base, firstLine(raw))
		}
		return resp.StatusCode, ae
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, &Error{Code: ExitError, Msg: "cannot read the proxy's answer", Err: err,
				Hint: "is " + a.base + " really a ward proxy? check the --url"}
		}
	}
	return resp.StatusCode, nil
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	if s == "" {
		s = "(empty body)"
	}
	return s
}

// Answers of the public API (the fields the client uses).
type (
	// EnrollmentInfo is GET /enrollment/{token}.
	EnrollmentInfo struct {
		Kind         string `json:"kind"`
		InstanceName string `json:"instance_name"`
		Username     string `json:"username"`
		FirstName    string `json:"first_name"`
		Email        string `json:"email"`
		ExpiresAt    int64  `json:"expires_at"`
		Steps        []struct {
			Name      string `json:"name"`
			Required  bool   `json:"required"`
			Done      bool   `json:"done"`
			Available bool   `json:"available"`
		} `json:"steps"`
		Remaining []string `json:"remaining"`
		Device    *Device  `json:"device,omitempty"`
	}
	// TOTPSetup is POST /enrollment/{token}/totp.
	TOTPSetup struct {
		Secret string `json:"secret"`
		URL    string `json:"otpauth_url"`
		Period int    `json:"period"`
		Digits int    `json:"digits"`
	}
	// RecoveryCodes is POST /enrollment/{token}/totp/confirm.
	RecoveryCodes struct {
		Codes []string `json:"recovery_codes"`
	}
	// Device is a device as core shows it.
	Device struct {
		ID        string `json:"id"`
		Name      string `json:"name"`
		Username  string `json:"username"`
		PublicKey string `json:"public_key"`
	}
	// Registered is POST /enrollment/{token}/device.
	Registered struct {
		Device      Device     `json:"device"`
		Locations   []Location `json:"locations"`
		ClientToken string     `json:"client_token"`
	}
	// Completed is POST /enrollment/{token}/complete.
	Completed struct {
		Username  string `json:"username"`
		Activated bool   `json:"activated"`
	}
	// SyncResult is POST /client/sync.
	SyncResult struct {
		Device    Device     `json:"device"`
		Locations []Location `json:"locations"`
	}
	// Challenge is POST /vpn-mfa/start.
	Challenge struct {
		Token     string `json:"token"`
		Method    string `json:"method"`
		ExpiresAt int64  `json:"expires_at"`
	}
	// Session is the session of a finished MFA login.
	Session struct {
		ID                  string `json:"id"`
		LocationID          string `json:"location_id"`
		PresharedKey        string `json:"preshared_key"`
		State               string `json:"state"`
		DisconnectThreshold int    `json:"disconnect_threshold"`
		ConnectBy           int64  `json:"connect_by"`
	}
	// Finished is POST /vpn-mfa/finish: the session, and a warning when some
	// gateway did not confirm it in time (HTTP 202).
	Finished struct {
		Session Session `json:"session"`
		Warning *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"warning,omitempty"`
	}
)

func tokenPath(token string) string { return "/enrollment/" + url.PathEscape(token) }

// EnrollmentInfo reads what an enrollment token is for.
func (a *API) EnrollmentInfo(ctx context.Context, token string) (EnrollmentInfo, error) {
	var out EnrollmentInfo
	_, err := a.call(ctx, "GET", tokenPath(token), "", nil, &out)
	return out, err
}

// SetPassword sets the enrolling user's password.
func (a *API) SetPassword(ctx context.Context, token, password string) error {
	_, err := a.call(ctx, "POST", tokenPath(token)+"/password", "", map[string]string{"password": password}, nil)
	return err
}

// SetupTOTP starts TOTP enrollment.
func (a *API) SetupTOTP(ctx context.Context, token string) (TOTPSetup, error) {
	var out TOTPSetup
	_, err := a.call(ctx, "POST", tokenPath(token)+"/totp", "", nil, &out)
	return out, err
}

// ConfirmTOTP enables TOTP with a first code.
func (a *API) ConfirmTOTP(ctx context.Context, token, code string) (RecoveryCodes, error) {
	var out RecoveryCodes
	_, err := a.call(ctx, "POST", tokenPath(token)+"/totp/confirm", "", map[string]string{"code": code}, &out)
	return out, err
}

// RegisterDevice registers this device's public key.
func (a *API) RegisterDevice(ctx context.Context, token, name, publicKey string) (Registered, error) {
	var out Registered
	_, err := a.call(ctx, "POST", tokenPath(token)+"/device", "", map[string]string{"name": name, "public_key": publicKey}, &out)
	return out, err
}

// Complete finishes the enrollment.
func (a *API) Complete(ctx context.Context, token string) (Completed, error) {
	var out Completed
	_, err := a.call(ctx, "POST", tokenPath(token)+"/complete", "", nil, &out)
	return out, err
}

// Sync fetches the device's locations.
func (a *API) Sync(ctx context.Context, syncToken string) (SyncResult, error) {
	var out SyncResult
	_, err := a.call(ctx, "POST", "/client/sync", syncToken, nil, &out)
	return out, err
}

// StartMFA begins an MFA login of the device for a location.
func (a *API) StartMFA(ctx context.Context, locationID, publicKey, method string) (Challenge, error) {
	var out Challenge
	_, err := a.call(ctx, "POST", "/vpn-mfa/start", "", map[string]string{"location_id": locationID, "public_key": publicKey, "method": method}, &out)
	return out, err
}

// FinishMFA completes it with the code.
func (a *API) FinishMFA(ctx context.Context, challengeToken, code string) (Finished, error) {
	var out Finished
	_, err := a.call(ctx, "POST", "/vpn-mfa/finish", "", map[string]string{"token": challengeToken, "code": code}, &out)
	return out, err
}
