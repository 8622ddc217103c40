package main

// The web benchmark's browser: a cookie session, page fetches with the
// Server-Timing figure, and the measurement loops.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/wardvpn/ward/bench/internal/harness"
)

// webClient is a browser-like client of the UI: a cookie session and no
// redirects followed.
type webClient struct {
	*harness.Client
	base string
}

func newWebClient(base string, conns int) *webClient {
	c := harness.NewClient(base, conns)
	c.HTTP.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &webClient{Client: c, base: base}
}

// login posts the login form (no second factor for the benchmark's admin).
func (c *webClient) login(ctx context.Context, username, password string) error {
	form := url.Values{"username": {username}, "password": {password}, "next": {"/"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/login", strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("POST /login: %w", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther && resp.StatusCode != http.StatusFound {
		return fmt.Errorf("POST /login: status %d, want a redirect: %.300s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if loc := resp.Header.Get("Location"); loc != "/" {
		return fmt.Errorf("POST /login redirects to %q, want / (a second factor?)", loc)
	}
	u, _ := url.Parse(c.base)
	for _, ck := range c.HTTP.Jar.Cookies(u) {
		if ck.Name == "ward_session" {
			return nil
		}
	}
	return errors.New("POST /login set no ward_session cookie")
}

// get fetches a page once: status, body, the server's own time from its
// Server-Timing header (app;dur=<ms>) and the client's time from sending the
// request to having read the whole answer.
func (c *webClient) get(ctx context.Context, path string) (status int, body []byte, loc string, server, client time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return 0, nil, "", 0, 0, err
	}
	start := time.Now()
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, nil, "", 0, 0, err
	}
	body, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	client = time.Since(start)
	if err != nil {
		return 0, nil, "", 0, 0, err
	}
	server, ok := serverTiming(resp.Header.Get("Server-Timing"))
	if !ok && resp.StatusCode == http.StatusOK {
		return resp.StatusCode, body, "", 0, client, fmt.Errorf("GET %s: no Server-Timing app;dur in %q", path, resp.Header.Get("Server-Timing"))
	}
	return resp.StatusCode, body, resp.Header.Get("Location"), server, client, nil
}

func (c *webClient) probe(ctx context.Context, path string) (int, []byte, string, error) {
	status, body, loc, _, _, err := c.get(ctx, path)
	if status == http.StatusFound || status == http.StatusSeeOther {
		if strings.HasPrefix(loc, "/login") {
			return status, body, loc, fmt.Errorf("GET %s: sent to the login (session lost?)", path)
		}
	}
	return status, body, loc, err
}

var (
	hrefRe  = regexp.MustCompile(`href="(/[^"?#]+)"`)
	titleRe = regexp.MustCompile(`<title>\s*([^<]*?)\s*</title>`)
)

// firstLink returns the first link on the list page that goes one level
// below it (e.g. /users/<id> on /users).
func (c *webClient) firstLink(ctx context.Context, list string) string {
	status, body, _, _, _, err := c.get(ctx, list)
	if err != nil || status != http.StatusOK {
		return ""
	}
	for _, m := range hrefRe.FindAllStringSubmatch(string(body), -1) {
		rest, ok := strings.CutPrefix(m[1], list+"/")
		if ok && rest != "" && !strings.Contains(rest, "/") && rest != "new" {
			return m[1]
		}
	}
	return ""
}

func serverTiming(h string) (time.Duration, bool) {
	for _, part := range strings.Split(h, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if name != "app" {
			continue
		}
		for _, p := range strings.Split(params, ";") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(p), "dur="); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					return 0, false
				}
				return time.Duration(f * 1e6), true
			}
		}
	}
	return 0, false
}

// measure GETs the page warmup times unmeasured, then n times in sequence,
// stopping early when the measured requests took longer than budget and are
// at least 5 (a page far over the target need not be timed 30 times).
func (c *webClient) measure(ctx context.Context, p *webPage, warmup, n int, budget time.Duration) error {
	var spent time.Duration
	for i := range warmup + n {
		if len(p.client) >= 5 && spent > budget {
			break
		}
		if i > 0 && i < warmup && p.warm > targetPageServerTime {
			// A page that slow is warm after one request.
			continue
		}
		status, body, _, server, client, err := c.get(ctx, p.path)
		if err != nil {
			return err
		}
		if status != http.StatusOK {
			return fmt.Errorf("GET %s: status %d: %.300s", p.path, status, strings.TrimSpace(string(body)))
		}
		p.warm = server
		p.views++
		if i >= warmup {
			p.server = append(p.server, server)
			p.client = append(p.client, client)
			p.bytes = len(body)
			spent += client
			if m := titleRe.FindSubmatch(body); m != nil {
				p.title = string(m[1])
			}
		}
	}
	return nil
}

// mixed runs total requests over the pages in turn from concurrency clients.
func (c *webClient) mixed(ctx context.Context, env *harness.Env, engine string, pages []*webPage, concurrency, total int) ([]harness.Row, error) {
	var next atomic.Int64
	server := make([][]time.Duration, concurrency)
	worst := make([]string, concurrency)
	res, err := harness.Load(ctx, "mixed", concurrency, 0, total, func(ctx context.Context, w int) error {
		p := pages[int(next.Add(1)-1)%len(pages)]
		status, _, _, srv, _, err := c.get(ctx, p.path)
		if err != nil {
			return err
		}
		if status != http.StatusOK {
			return fmt.Errorf("GET %s: status %d", p.path, status)
		}
		if len(server[w]) == 0 || srv > slices.Max(server[w]) {
			worst[w] = p.label
		}
		server[w] = append(server[w], srv)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if res.Errors > 0 {
		return nil, fmt.Errorf("mixed run: %d of %d requests failed: %v", res.Errors, res.Total(), res.ErrorSamples)
	}
	var all []time.Duration
	slowest, slowestPage := time.Duration(0), ""
	for w, s := range server {
		all = append(all, s...)
		if len(s) > 0 && slices.Max(s) > slowest {
			slowest, slowestPage = slices.Max(s), worst[w]
		}
	}
	srv := harness.Summarise("server", all, 0)
	env.Logf("[%s] web: mixed, %d clients: %d page views, %.0f/s; server p50 %.2f ms p99 %.2f ms max %.2f ms (%s); client p50 %.2f ms p99 %.2f ms",
		engine, concurrency, res.N, res.PerSecond, ms(srv.P50), ms(srv.P99), ms(srv.Max), slowestPage, ms(res.P50), ms(res.P99))
	label := fmt.Sprintf("%d pages mixed, %d clients: server", len(pages), concurrency)
	return []harness.Row{
		harness.DurationRow(engine, label+" p50", srv.P50, 0),
		harness.DurationRow(engine, label+" p99", srv.P99, 0),
		harness.DurationRow(engine, label+" max", srv.Max, 0),
		{Engine: engine, Metric: fmt.Sprintf("%d pages mixed, %d clients: page views", len(pages), concurrency), Value: res.PerSecond, Unit: harness.PerSec},
	}, nil
}
