package drill

// A small client of core's REST API, dialled from inside the core namespace:
// a cookie session with its CSRF token, as the e2e tests and an operator's
// scripts use it.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"time"
)

type apiClient struct {
	base           string
	hc             *http.Client
	csrf           string
	user, password string // to log in again (core restarted, session gone)
}

func newAPIClient(ns *NS, base string) *apiClient {
	jar, _ := cookiejar.New(nil)
	hc := ns.httpClient(20 * time.Second)
	hc.Jar = jar
	return &apiClient{base: base, hc: hc}
}

// do sends body as JSON (nil for none), requires wantStatus and decodes the
// answer into out (unless nil). A 401 logs in again once.
func (c *apiClient) do(method, path string, body any, wantStatus int, out any) error {
	err := c.once(method, path, body, wantStatus, out)
	var se statusError
	if errors.As(err, &se) && se.status == http.StatusUnauthorized && c.user != "" && path != loginPath {
		if err := c.login(c.user, c.password); err != nil {
			return err
		}
		return c.once(method, path, body, wantStatus, out)
	}
	return err
}

type statusError struct {
	status int
	msg    string
}

func (e statusError) Error() string { return e.msg }

const loginPath = "/api/v1/auth/login"

func (c *apiClient) once(method, path string, body any, wantStatus int, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.csrf != "" {
		req.Header.Set("X-CSRF-Token", c.csrf)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode != wantStatus {
		return statusError{resp.StatusCode, fmt.Sprintf("%s %s = %d, want %d: %s", method, path, resp.StatusCode, wantStatus, bytes.TrimSpace(raw))}
	}
	if out != nil {
		if s, ok := out.(*string); ok {
			*s = string(raw)
			return nil
		}
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: decode %s: %w", method, path, raw, err)
		}
	}
	return nil
}

func (c *apiClient) login(user, password string) error {
	var resp struct {
		CSRFToken string `json:"csrf_token"`
	}
	c.csrf = ""
	if err := c.once("POST", loginPath, map[string]string{"username": user, "password": password}, http.StatusOK, &resp); err != nil {
		return err
	}
	c.user, c.password = user, password
	if resp.CSRFToken == "" {
		return fmt.Errorf("login: no CSRF token in the answer")
	}
	c.csrf = resp.CSRFToken
	return nil
}

// apiGateway is a gateway as core shows it.
type apiGateway struct {
	ID        string `json:"id"`
	JoinToken string `json:"join_token"`
	Status    struct {
		Adopted         bool   `json:"adopted"`
		Connected       bool   `json:"connected"`
		AppliedRevision int64  `json:"applied_revision"`
		LastError       string `json:"last_error"`
		Role            string `json:"role"`
	} `json:"status"`
}

// apiProxy is a proxy as core shows it.
type apiProxy struct {
	ID        string `json:"id"`
	JoinToken string `json:"join_token"`
	Status    *struct {
		Links []struct {
			Connected bool `json:"connected"`
		} `json:"links"`
	} `json:"status"`
}

func (p apiProxy) linked() bool {
	if p.Status == nil {
		return false
	}
	for _, l := range p.Status.Links {
		if l.Connected {
			return true
		}
	}
	return false
}

// apiLocation is a location as core shows it.
type apiLocation struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	PublicKey string `json:"public_key"`
	Revision  int64  `json:"revision"`
}
