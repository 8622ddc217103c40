package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/identity"
	"github.com/wardvpn/ward/internal/coreapp"
	"github.com/wardvpn/ward/internal/store"
)

const adminUsage = `Usage:
  ward admin reset-password [flags] USER

Sets USER's password directly in the database (core may be running or not),
clears the user's login lockout, and prints a generated password unless
--password-stdin is given. Uses the same --data-dir / --database as ward core.
`

func runAdmin(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "reset-password" {
		fmt.Fprint(stderr, adminUsage)
		return usageError{fmt.Errorf("ward admin: expected the reset-password subcommand")}
	}
	cfg, err := coreapp.ParseConfig("ward admin", nil, stderr)
	if err != nil {
		return usageError{err}
	}
	fs := flag.NewFlagSet("ward admin reset-password", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, adminUsage); fs.PrintDefaults() }
	cfg.RegisterFlags(fs)
	fromStdin := fs.Bool("password-stdin", false, "read the new password from the first line of standard input")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError{err}
	}
	// Flags may also follow the user name, as in the README's
	// "ward admin reset-password admin --data-dir ...".
	var users []string
	for fs.NArg() > 0 {
		users = append(users, fs.Arg(0))
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return usageError{err}
		}
	}
	if len(users) != 1 {
		fs.Usage()
		return usageError{fmt.Errorf("name exactly one user")}
	}
	username := users[0]
	password := ""
	if *fromStdin {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && line == "" {
			return fmt.Errorf("read password from stdin: %w", err)
		}
		password = strings.TrimRight(line, "\r\n")
	} else {
		password = core.RandomToken(18)
	}
	db, err := store.Open(ctx, cfg.Database, cfg.DataDir)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.Migrate(ctx, nil); err != nil {
		return err
	}
	settings, err := core.LoadSettings(ctx, db)
	if err != nil {
		return err
	}
	if err := identity.CheckPasswordStrength(password, settings.MinPasswordLength); err != nil {
		return err
	}
	inst, err := core.EnsureInstance(ctx, db)
	if err != nil {
		return err
	}
	svc := identity.New(db, inst, identity.DefaultPasswordParams, nil, slog.New(slog.DiscardHandler))
	if err := svc.SetPasswordDirect(ctx, username, password); err != nil {
		return err
	}
	if *fromStdin {
		fmt.Fprintf(stdout, "password of %s changed\n", identity.NormalizeUsername(username))
	} else {
		fmt.Fprintf(stdout, "new password of %s: %s\n", identity.NormalizeUsername(username), password)
	}
	return nil
}
