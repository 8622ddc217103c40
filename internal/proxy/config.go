// Package proxy is `ward proxy`: the public, stateless front. It serves
// HTTP to the Internet and relays every request to a core replica over a
// Relay stream that the core opened (core never accepts connections from
// the DMZ); with several cores connected it spreads requests over them and
// retries idempotent requests on another core when one drops mid-flight.
package proxy

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/wardvpn/ward/internal/logging"
)

// Config is the proxy's configuration; flags win over WARD_* variables.
type Config struct {
	DataDir        string        `env:"WARD_DATA_DIR" envDefault:"./ward-proxy"`
	HTTPAddr       string        `env:"WARD_HTTP_ADDR" envDefault:":8080"`
	TLSCert        string        `env:"WARD_TLS_CERT"`
	TLSKey         string        `env:"WARD_TLS_KEY"`
	ControlAddr    string        `env:"WARD_CONTROL_ADDR" envDefault:":50068"`
	HealthAddr     string        `env:"WARD_HEALTH_ADDR" envDefault:":50069"`
	JoinToken      string        `env:"WARD_JOIN_TOKEN"`
	RateLimit      float64       `env:"WARD_RATE_LIMIT" envDefault:"20"`
	RateBurst      int           `env:"WARD_RATE_BURST" envDefault:"40"`
	RequestTimeout time.Duration `env:"WARD_REQUEST_TIMEOUT" envDefault:"30s"`
	TrustForwarded bool          `env:"WARD_TRUST_FORWARDED_FOR"`
	LogLevel       string        `env:"WARD_LOG_LEVEL" envDefault:"info"`
	LogFormat      string        `env:"WARD_LOG_FORMAT" envDefault:"text"`
}

// ParseConfig reads WARD_* variables, then flags.
func ParseConfig(args []string, stderr io.Writer) (Config, error) {
	var c Config
	if err := env.Parse(&c); err != nil {
		return c, fmt.Errorf("environment: %w", err)
	}
	fs := flag.NewFlagSet("ward proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "adoption identity (WARD_DATA_DIR)")
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "public HTTP(S) address (WARD_HTTP_ADDR)")
	fs.StringVar(&c.TLSCert, "tls-cert", c.TLSCert, "certificate file for HTTPS; empty serves plain HTTP behind a load balancer (WARD_TLS_CERT)")
	fs.StringVar(&c.TLSKey, "tls-key", c.TLSKey, "key file for HTTPS (WARD_TLS_KEY)")
	fs.StringVar(&c.ControlAddr, "control-addr", c.ControlAddr, "address core dials for the relay (mutual TLS) (WARD_CONTROL_ADDR)")
	fs.StringVar(&c.HealthAddr, "health-addr", c.HealthAddr, "address of /livez, /readyz, /metrics; empty disables (WARD_HEALTH_ADDR)")
	fs.StringVar(&c.JoinToken, "join-token", c.JoinToken, "one-time token from core's proxy registration; prefer WARD_JOIN_TOKEN")
	fs.Float64Var(&c.RateLimit, "rate-limit", c.RateLimit, "requests per second allowed per client IP (WARD_RATE_LIMIT)")
	fs.IntVar(&c.RateBurst, "rate-burst", c.RateBurst, "burst allowed per client IP (WARD_RATE_BURST)")
	fs.DurationVar(&c.RequestTimeout, "request-timeout", c.RequestTimeout, "how long a request may wait for core (WARD_REQUEST_TIMEOUT)")
	fs.BoolVar(&c.TrustForwarded, "trust-forwarded-for", c.TrustForwarded, "take the client IP from X-Forwarded-For (only behind a trusted load balancer) (WARD_TRUST_FORWARDED_FOR)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error (WARD_LOG_LEVEL)")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "text or json (WARD_LOG_FORMAT)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return c, fmt.Errorf("--tls-cert and --tls-key go together")
	}
	if c.RateLimit <= 0 || c.RateBurst < 1 {
		return c, fmt.Errorf("--rate-limit must be positive and --rate-burst at least 1")
	}
	if c.RequestTimeout < time.Second {
		return c, fmt.Errorf("--request-timeout must be at least 1s")
	}
	return c, logging.Validate(c.LogLevel, c.LogFormat)
}

// Logger builds the process logger.
func (c Config) Logger(w io.Writer) *slog.Logger { return logging.New(w, c.LogLevel, c.LogFormat) }
