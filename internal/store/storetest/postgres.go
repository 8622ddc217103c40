// Package storetest runs tests against both database engines: a fresh SQLite
// file and a fresh database on a throwaway PostgreSQL server started from the
// installed binaries.
package storetest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// PGServer is a PostgreSQL server owned by the test process.
type PGServer struct {
	dir      string
	port     int
	pgCtl    string
	asNobody bool
	// AdminURL connects to the maintenance database as superuser.
	AdminURL string
}

// FindPGBin locates a PostgreSQL server binary: on PATH or in Debian's
// versioned directories.
func FindPGBin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(matches) > 0 {
		return matches[len(matches)-1], nil
	}
	return "", fmt.Errorf("%s not found on PATH or in /usr/lib/postgresql/*/bin", name)
}

// StartPG creates a cluster in a new temporary directory and starts it on a
// free loopback port. initdb refuses to run as root, so when root the server
// runs as nobody.
func StartPG(ctx context.Context) (*PGServer, error) {
	initdb, err := FindPGBin("initdb")
	if err != nil {
		return nil, err
	}
	pgCtl, err := FindPGBin("pg_ctl")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "ward-pg-")
	if err != nil {
		return nil, err
	}
	s := &PGServer{dir: dir, pgCtl: pgCtl, asNobody: os.Geteuid() == 0}
	if s.asNobody {
		if err := os.Chown(dir, 65534, 65534); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	if out, err := s.run(ctx, initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %w: %s", err, out)
	}
	for attempt := 0; attempt < 5; attempt++ {
		s.port, err = freePort()
		if err != nil {
			break
		}
		opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300", s.port, dir)
		var out []byte
		out, err = s.run(ctx, pgCtl, "-D", data, "-o", opts, "-l", filepath.Join(dir, "pg.log"), "-w", "-t", "60", "start")
		if err == nil {
			s.AdminURL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
			return s, nil
		}
		err = fmt.Errorf("pg_ctl start: %w: %s", err, out)
	}
	s.Stop()
	return nil, err
}

// URL returns the connection URL of a database on this server.
func (s *PGServer) URL(dbname string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, dbname)
}

// Port is the TCP port the server listens on.
func (s *PGServer) Port() int { return s.port }

// Stop shuts the server down and removes its files.
func (s *PGServer) Stop() {
	if s == nil || s.dir == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _ = s.run(ctx, s.pgCtl, "-D", filepath.Join(s.dir, "data"), "-m", "immediate", "-w", "stop")
	os.RemoveAll(s.dir)
}

// PgCtl runs pg_ctl against this server's data directory, for tests that stop
// and restart the database.
func (s *PGServer) PgCtl(ctx context.Context, args ...string) error {
	full := append([]string{"-D", filepath.Join(s.dir, "data")}, args...)
	if out, err := s.run(ctx, s.pgCtl, full...); err != nil {
		return fmt.Errorf("pg_ctl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func (s *PGServer) run(ctx context.Context, bin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = s.dir
	if s.asNobody {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	// pg_ctl leaves the server running in the background; it must not keep
	// the test's stdout open.
	cmd.Stdin = nil
	return cmd.CombinedOutput()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// CreateDatabase creates a new, empty database (optionally from a template)
// and returns its URL.
func (s *PGServer) CreateDatabase(ctx context.Context, name, template string) (string, error) {
	admin, err := sql.Open("pgx", s.AdminURL)
	if err != nil {
		return "", err
	}
	defer admin.Close()
	stmt := "CREATE DATABASE " + strconv.Quote(name)
	if template != "" {
		stmt += " TEMPLATE " + strconv.Quote(template)
	}
	for attempt := 0; ; attempt++ {
		_, err = admin.ExecContext(ctx, stmt)
		// CREATE DATABASE from a template fails while another session is
		// connected to the template; those sessions are short.
		if err == nil || attempt > 50 || !strings.Contains(err.Error(), "being accessed") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return s.URL(name), nil
}

// ErrNoPostgres is returned when PostgreSQL binaries are not installed.
var ErrNoPostgres = errors.New("postgresql server binaries not installed")
