// Package coreapp wires `ward core`: configuration, database, domain
// services, the HTTP server, first-start bootstrap and graceful shutdown.
package coreapp

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/wardvpn/ward/internal/gwlink"
	"github.com/wardvpn/ward/internal/logging"
)

// Config is ward core's configuration. Every field can come from a flag or
// from the WARD_* variable named in its tag; a flag wins over the variable.
type Config struct {
	DataDir   string `env:"WARD_DATA_DIR" envDefault:"./ward-data"`
	HTTPAddr  string `env:"WARD_HTTP_ADDR" envDefault:":8000"`
	Database  string `env:"WARD_DATABASE"`
	PublicURL string `env:"WARD_PUBLIC_URL" envDefault:"http://localhost:8000"`
	LogLevel  string `env:"WARD_LOG_LEVEL" envDefault:"info"`
	LogFormat string `env:"WARD_LOG_FORMAT" envDefault:"text"`
	// AdminPassword is only read from the environment: a command line is
	// visible to every local user.
	AdminPassword string `env:"WARD_ADMIN_PASSWORD"`
	// SweepInterval is how often VPN sessions are checked against their
	// location's disconnect threshold.
	SweepInterval time.Duration `env:"WARD_SWEEP_INTERVAL" envDefault:"10s"`
	// LeaseTTL is how long the singleton-jobs lease lasts unrenewed: after
	// a holder dies, another replica runs the jobs within about this long.
	LeaseTTL time.Duration `env:"WARD_LEASE_TTL" envDefault:"3s"`
	// LinkOptions tune the gateway links (tests shorten them).
	LinkOptions gwlink.Options `env:"-"`
}

// ParseConfig reads the environment, then flags from args.
func ParseConfig(name string, args []string, stderr io.Writer) (Config, error) {
	var cfg Config
	if err := env.Parse(&cfg); err != nil {
		return cfg, fmt.Errorf("environment: %w", err)
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	return cfg, cfg.Validate()
}

// RegisterFlags binds the flags shared by `ward core` and `ward admin`.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory for the SQLite database and generated files (WARD_DATA_DIR)")
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "address of the REST API and operational endpoints (WARD_HTTP_ADDR)")
	fs.StringVar(&c.Database, "database", c.Database, "postgres:// URL, or a SQLite file path; empty: <data-dir>/ward.db (WARD_DATABASE)")
	fs.StringVar(&c.PublicURL, "public-url", c.PublicURL, "URL users reach core at; https:// makes cookies Secure (WARD_PUBLIC_URL)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error (WARD_LOG_LEVEL)")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "text or json (WARD_LOG_FORMAT)")
	fs.DurationVar(&c.SweepInterval, "sweep-interval", c.SweepInterval, "how often VPN MFA sessions are checked against the disconnect threshold (WARD_SWEEP_INTERVAL)")
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", c.LeaseTTL, "lifetime of the singleton-jobs lease between renewals; another replica takes over this long after its holder dies (WARD_LEASE_TTL)")
}

// Validate checks values that would otherwise fail late.
func (c Config) Validate() error {
	u, err := url.Parse(c.PublicURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--public-url %q must be an http:// or https:// URL", c.PublicURL)
	}
	if c.SweepInterval < 100*time.Millisecond || c.SweepInterval > time.Hour {
		return fmt.Errorf("--sweep-interval must be between 100ms and 1h")
	}
	if c.LeaseTTL < time.Second || c.LeaseTTL > time.Minute {
		return fmt.Errorf("--lease-ttl must be between 1s and 1m")
	}
	return logging.Validate(c.LogLevel, c.LogFormat)
}

// Logger builds the process logger.
func (c Config) Logger(w io.Writer) *slog.Logger { return logging.New(w, c.LogLevel, c.LogFormat) }

// SecureCookies tells whether the public URL is HTTPS.
func (c Config) SecureCookies() bool { return strings.HasPrefix(c.PublicURL, "https://") }
