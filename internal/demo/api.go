package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"time"
)

// jsonClient speaks JSON to core's REST API (as the admin, with a session
// cookie and the CSRF token) or to the proxy's public API (anonymous).
type jsonClient struct {
	base string
	hc   *http.Client
	csrf string
}

func newJSONClient(base string) *jsonClient {
	jar, _ := cookiejar.New(nil)
	return &jsonClient{base: strings.TrimRight(base, "/"), hc: &http.Client{Jar: jar, Timeout: 30 * time.Second}}
}

// apiError is a non-expected answer, with the API's error code if any.
type apiError struct {
	method, path string
	status       int
	code, msg    string
}

func (e *apiError) Error() string {
	if e.code != "" {
		return fmt.Sprintf("%s %s: %d %s: %s", e.method, e.path, e.status, e.code, e.msg)
	}
	return fmt.Sprintf("%s %s: %d %s", e.method, e.path, e.status, e.msg)
}

// call sends body (nil: none) as JSON, expects one of the statuses and
// decodes the answer into out (unless nil). It returns the status.
func (c *jsonClient) call(ctx context.Context, method, path string, body, out any, want ...int) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.csrf != "" {
		req.Header.Set("X-CSRF-Token", c.csrf)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	ok := false
	for _, w := range want {
		ok = ok || resp.StatusCode == w
	}
	if !ok {
		e := &apiError{method: method, path: path, status: resp.StatusCode, msg: strings.TrimSpace(string(raw))}
		var body struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(raw, &body) == nil && body.Error.Code != "" {
			e.code, e.msg = body.Error.Code, body.Error.Message
		}
		return resp.StatusCode, e
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// login opens an admin session.
func (c *jsonClient) login(ctx context.Context, username, password string) error {
	var resp struct {
		CSRFToken string `json:"csrf_token"`
	}
	if _, err := c.call(ctx, "POST", "/api/v1/auth/login", map[string]string{"username": username, "password": password}, &resp, http.StatusOK); err != nil {
		return err
	}
	c.csrf = resp.CSRFToken
	return nil
}
