package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"time"
)

// Client talks to ward's REST API: a session cookie with its CSRF token
// after Login, or a bearer token once Token is set.
type Client struct {
	Base  string
	HTTP  *http.Client
	Token string
	csrf  string
}

// NewClient returns a client with keep-alive connections for up to
// maxConns concurrent requests and no proxy.
func NewClient(base string, maxConns int) *Client {
	jar, _ := cookiejar.New(nil)
	tr := &http.Transport{
		Proxy:               nil,
		MaxIdleConns:        maxConns * 2,
		MaxIdleConnsPerHost: maxConns * 2,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &Client{Base: base, HTTP: &http.Client{Transport: tr, Jar: jar, Timeout: 60 * time.Second}}
}

// Close drops idle connections.
func (c *Client) Close() { c.HTTP.CloseIdleConnections() }

// NewRequest builds a request with the client's credentials.
func (c *Client) NewRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, body)
	if err != nil {
		return nil, err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	} else if c.csrf != "" && method != http.MethodGet {
		req.Header.Set("X-CSRF-Token", c.csrf)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// JSON sends in (if not nil) as JSON and decodes the answer into out (if
// not nil); any status other than want is an error carrying the body.
func (c *Client) JSON(ctx context.Context, method, path string, in, out any, want int) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := c.NewRequest(ctx, method, path, body)
	if err != nil {
		return err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, bytes.TrimSpace(b))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

// Get fetches path and returns the body when the status is 200.
func (c *Client) Get(ctx context.Context, path string) ([]byte, error) {
	req, err := c.NewRequest(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: read body: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %d: %s", path, resp.StatusCode, bytes.TrimSpace(b))
	}
	return b, nil
}

// Login opens a cookie session.
func (c *Client) Login(ctx context.Context, username, password string) error {
	var out struct {
		CSRFToken string `json:"csrf_token"`
	}
	if err := c.JSON(ctx, http.MethodPost, "/api/v1/auth/login", map[string]string{"username": username, "password": password}, &out, http.StatusOK); err != nil {
		return err
	}
	c.csrf = out.CSRFToken
	return nil
}

// CreateToken issues an API token for the logged-in user and returns it.
func (c *Client) CreateToken(ctx context.Context, name string) (string, error) {
	var out struct {
		Token string `json:"token"`
	}
	if err := c.JSON(ctx, http.MethodPost, "/api/v1/me/tokens", map[string]any{"name": name}, &out, http.StatusCreated); err != nil {
		return "", err
	}
	if out.Token == "" {
		return "", fmt.Errorf("POST /api/v1/me/tokens returned no token")
	}
	return out.Token, nil
}
