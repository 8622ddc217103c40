package coreapp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/wardvpn/ward/internal/api"
	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/enroll"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/core/mfa"
	"github.com/wardvpn/ward/internal/core/stats"
	"github.com/wardvpn/ward/internal/core/vpn"
	"github.com/wardvpn/ward/internal/core/vpnsession"
	"github.com/wardvpn/ward/internal/core/webauthn"
	"github.com/wardvpn/ward/internal/gwlink"
	"github.com/wardvpn/ward/internal/lease"
	"github.com/wardvpn/ward/internal/mail"
	"github.com/wardvpn/ward/internal/pki"
	"github.com/wardvpn/ward/internal/proxylink"
	"github.com/wardvpn/ward/internal/public"
	"github.com/wardvpn/ward/internal/store"
	"github.com/wardvpn/ward/internal/web"
)

// InitialPasswordFile is written in the data dir at first start when the
// admin password was generated.
const InitialPasswordFile = "initial-admin-password"

// App is a running core: database, services and HTTP server.
type App struct {
	cfg      Config
	log      *slog.Logger
	DB       *store.DB
	Identity *identity.Service
	VPN      *vpn.Service
	Stats    *stats.Service
	API      *api.Server
	Web      *web.Server
	Gateways *gwlink.Manager
	Proxies  *proxylink.Manager
	Enroll   *enroll.Service
	Sessions *vpnsession.Service
	CoreID   string
	// Jobs is the singleton-jobs lease: sweep and purges run on the one
	// replica holding it.
	Jobs     *lease.Lease
	Replicas *lease.Registry
	notify   *notifyMetrics
}

// Open connects to the database, migrates it, loads the instance secrets and
// builds the services. stdout receives the one-time admin password banner.
func Open(ctx context.Context, cfg Config, version string, log *slog.Logger, stdout io.Writer) (*App, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir %s: %w", cfg.DataDir, err)
	}
	db, err := openDatabase(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	inst, err := core.EnsureInstance(ctx, db)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("instance secrets: %w", err)
	}
	if inst.Created {
		log.Info("new instance initialised", "instance_id", inst.ID)
	}
	vpnSvc := vpn.New(db, log)
	ident := identity.New(db, inst, identity.DefaultPasswordParams, vpnSvc, log)
	statsSvc := stats.New(db)
	mailer := mail.New(db, log)
	mfaSvc := mfa.New(db, inst, log)
	// Security keys: the public URL is the relying party (its host the ID,
	// its origin the only one accepted). A login then asks for any second
	// factor the user has: TOTP, recovery codes, WebAuthn.
	webauthnSvc, err := webauthn.New(db, webauthn.Config{PublicURL: cfg.PublicURL, Log: log})
	if err != nil {
		log.Warn("security keys (WebAuthn) are disabled", "err", err)
		webauthnSvc = nil
	} else {
		mfaSvc.AddSecondFactors(webauthnSvc)
	}
	ident.SetSecondFactor(mfaSvc)
	enrollSvc := enroll.New(db, inst, vpnSvc, mfaSvc, enroll.Options{PasswordParams: identity.DefaultPasswordParams, Mail: mailer, Log: log})
	sessions := vpnsession.New(db, vpnSvc, inst, vpnsession.Options{Verifier: mfaSvc, Mailer: mail.VPNCodes{Sender: mailer}, Log: log})
	app := &App{cfg: cfg, log: log, DB: db, Identity: ident, VPN: vpnSvc, Stats: statsSvc, Enroll: enrollSvc, Sessions: sessions}
	if err := app.bootstrapAdmin(ctx, stdout); err != nil {
		db.Close()
		return nil, err
	}
	ca, err := pki.EnsureCA(ctx, db)
	if err != nil {
		db.Close()
		return nil, err
	}
	if app.CoreID, err = coreID(cfg.DataDir); err != nil {
		db.Close()
		return nil, err
	}
	app.Gateways, err = gwlink.New(vpnSvc, statsSvc, ca, app.CoreID, version, log, cfg.LinkOptions)
	if err != nil {
		db.Close()
		return nil, err
	}
	coreCert, err := pki.IssueCoreCertificate(ca, app.CoreID)
	if err != nil {
		db.Close()
		return nil, err
	}
	app.Proxies = proxylink.New(vpnSvc, ca, coreCert, app.CoreID, public.New(enrollSvc, public.Options{Log: log, Sessions: sessions}), log)
	leaseMetrics := lease.NewMetrics()
	app.Jobs = lease.New(db, lease.Options{Name: JobsLease, Holder: app.CoreID, TTL: cfg.LeaseTTL, Log: log}, leaseMetrics)
	app.Replicas = lease.NewRegistry(db, app.CoreID, version)
	app.notify = newNotifyMetrics()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(app.Gateways.Collectors()...)
	reg.MustRegister(leaseMetrics.Collectors()...)
	reg.MustRegister(app.notify.collectors()...)
	app.API = api.New(db, ident, vpnSvc, api.Options{SecureCookies: cfg.SecureCookies(), Registry: reg, Log: log, Stats: statsSvc,
		MFA: mfaSvc, Enroll: enrollSvc, Mail: mailer, Cluster: app.Replicas, WebAuthn: webauthnSvc})
	app.Web, err = web.New(web.Options{DB: db, Identity: ident, VPN: vpnSvc, Stats: statsSvc, MFA: mfaSvc, Enroll: enrollSvc, Mail: mailer,
		WebAuthn: webauthnSvc,
		Cluster:  app.Replicas, SecureCookies: cfg.SecureCookies(), Log: log, Version: version})
	if err != nil {
		db.Close()
		return nil, err
	}
	return app, nil
}

// openDatabase connects and migrates. While the database is unreachable it
// keeps trying (0.5 s doubling to 5 s) instead of exiting, so replicas
// started before PostgreSQL, or during its restart, come up on their own.
func openDatabase(ctx context.Context, cfg Config, log *slog.Logger) (*store.DB, error) {
	backoff := 500 * time.Millisecond
	for {
		db, err := store.Open(ctx, cfg.Database, cfg.DataDir)
		if err == nil {
			log.Info("database connected", "engine", db.Engine, "target", db.Target)
			if err = db.Migrate(ctx, log); err == nil {
				return db, nil
			}
			db.Close()
		}
		if !store.IsUnavailable(err) || ctx.Err() != nil {
			return nil, err
		}
		log.Warn("database unavailable; retrying", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// coreID is this replica's stable name on gateway links, kept in the data
// dir (several replicas on one database have different data dirs).
func coreID(dataDir string) (string, error) {
	path := filepath.Join(dataDir, "core-id")
	if raw, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(raw))) > 0 {
		return strings.TrimSpace(string(raw)), nil
	}
	host, _ := os.Hostname()
	id := host + "-" + core.RandomHex(4)
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return id, nil
}

func (a *App) bootstrapAdmin(ctx context.Context, stdout io.Writer) error {
	res, err := a.Identity.EnsureAdmin(ctx, a.cfg.AdminPassword)
	if err != nil {
		return fmt.Errorf("create initial admin: %w", err)
	}
	if !res.Created {
		return nil
	}
	if res.Password == "" {
		a.log.Info("initial admin created with the password from WARD_ADMIN_PASSWORD", "username", "admin")
		return nil
	}
	path := filepath.Join(a.cfg.DataDir, InitialPasswordFile)
	if err := os.WriteFile(path, []byte(res.Password+"\n"), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// The password goes to the terminal once, never through the logger, so
	// log shipping never carries it.
	fmt.Fprintf(stdout, "\n  ward: first start. Log in as user \"admin\" with password:\n\n      %s\n\n  (also saved to %s, mode 0600; delete it once you have changed the password)\n\n", res.Password, path)
	a.log.Info("initial admin created", "username", "admin", "password_file", path)
	return nil
}

// Handler routes the REST API and the operational endpoints to the API
// server and every other path to the web UI.
func (a *App) Handler() http.Handler {
	apiH, webH := a.API.Handler(), a.Web.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case strings.HasPrefix(p, "/api/"), p == "/livez", p == "/readyz", p == "/metrics":
			apiH.ServeHTTP(w, r)
		default:
			webH.ServeHTTP(w, r)
		}
	})
}

// Close releases the database.
func (a *App) Close() error { return a.DB.Close() }

// Serve runs the HTTP server on ln until ctx ends, then drains requests for
// up to 15 s.
func (a *App) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	linkCtx, stopLinks := context.WithCancel(ctx)
	linksDone := make(chan struct{})
	go func() {
		defer close(linksDone)
		var wg sync.WaitGroup
		for _, run := range []func(context.Context){
			a.Gateways.Run,
			a.Proxies.Run,
			a.listen,
			a.Replicas.Run,
			func(ctx context.Context) { a.Jobs.Run(ctx, a.singletonJobs()...) },
		} {
			wg.Add(1)
			go func() { defer wg.Done(); run(linkCtx) }()
		}
		wg.Wait()
		a.Enroll.WaitMail()
	}()
	defer func() {
		stopLinks()
		<-linksDone
	}()
	a.log.Info("core listening", "addr", ln.Addr().String(), "public_url", a.cfg.PublicURL)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	a.log.Info("shutting down: draining requests")
	shutCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	a.log.Info("core stopped")
	return nil
}

// Run is `ward core`: open, listen, serve until ctx ends.
func Run(ctx context.Context, cfg Config, version string, stdout, stderr io.Writer) error {
	log := cfg.Logger(stderr)
	app, err := Open(ctx, cfg, version, log, stdout)
	if err != nil {
		return err
	}
	defer app.Close()
	// TEST ONLY: end-to-end tests lower the minimum disconnect threshold of
	// MFA locations to watch an idle session close within seconds.
	if v := os.Getenv("WARD_TEST_MIN_MFA_THRESHOLD"); v != "" {
		n, err := strconv.Atoi(v)
		if err == nil {
			err = app.VPN.SetTestMinMFADisconnectThreshold(n)
		}
		if err != nil {
			return fmt.Errorf("WARD_TEST_MIN_MFA_THRESHOLD=%q: %v", v, err)
		}
		log.Warn("TEST ONLY: WARD_TEST_MIN_MFA_THRESHOLD lowers the minimum disconnect threshold of MFA locations; never set it in production", "seconds", n)
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err)
	}
	return app.Serve(ctx, ln)
}
