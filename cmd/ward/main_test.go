package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// clearWardEnv keeps WARD_* variables of the calling shell out of the tests.
func clearWardEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "WARD_") {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
}

func TestRunExitCodes(t *testing.T) {
	clearWardEnv(t)
	tests := []struct {
		name       string
		args       []string
		stdin      string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{name: "no arguments", args: nil, wantCode: 2, wantStderr: "Usage:"},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 2, wantStderr: `unknown command "frobnicate"`},
		{name: "flag as command", args: []string{"--data-dir"}, wantCode: 2, wantStderr: "unknown command"},
		{name: "version", args: []string{"version"}, wantCode: 0, wantStdout: "ward "},
		{name: "--version", args: []string{"--version"}, wantCode: 0, wantStdout: "ward "},
		{name: "help", args: []string{"help"}, wantCode: 0, wantStdout: "ward core [flags]"},
		{name: "-h", args: []string{"-h"}, wantCode: 0, wantStdout: "Usage:"},
		{name: "core bad log format", args: []string{"core", "--log-format", "xml"}, wantCode: 2, wantStderr: "--log-format must be text or json"},
		{name: "core bad log level", args: []string{"core", "--log-level=loud"}, wantCode: 2, wantStderr: "--log-level"},
		{name: "core bad public URL", args: []string{"core", "--public-url", "ftp://x"}, wantCode: 2, wantStderr: "--public-url"},
		{name: "core unknown flag", args: []string{"core", "--no-such-flag"}, wantCode: 2, wantStderr: "flag provided but not defined"},
		{name: "core stray argument", args: []string{"core", "extra"}, wantCode: 2, wantStderr: "unexpected arguments: extra"},
		{name: "core -h", args: []string{"core", "-h"}, wantCode: 0, wantStderr: "-data-dir"},
		{name: "admin without subcommand", args: []string{"admin"}, wantCode: 2, wantStderr: "reset-password"},
		{name: "admin unknown subcommand", args: []string{"admin", "delete-everything"}, wantCode: 2, wantStderr: "reset-password"},
		{name: "admin reset-password without user", args: []string{"admin", "reset-password"}, wantCode: 2, wantStderr: "name exactly one user"},
		{name: "admin reset-password two users", args: []string{"admin", "reset-password", "a", "b"}, wantCode: 2, wantStderr: "name exactly one user"},
		{name: "admin reset-password two users around a flag", args: []string{"admin", "reset-password", "a", "--password-stdin", "b"}, wantCode: 2, wantStderr: "name exactly one user"},
		{name: "admin reset-password unknown flag after the user", args: []string{"admin", "reset-password", "admin", "--bogus"}, wantCode: 2, wantStderr: "flag provided but not defined"},
		{name: "admin reset-password unknown flag", args: []string{"admin", "reset-password", "--bogus", "admin"}, wantCode: 2, wantStderr: "flag provided but not defined"},
		{name: "admin reset-password -h", args: []string{"admin", "reset-password", "-h"}, wantCode: 0, wantStderr: "password-stdin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, strings.NewReader(tt.stdin), &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("run(%q) = %d, want %d\nstdout: %s\nstderr: %s", tt.args, code, tt.wantCode, stdout.String(), stderr.String())
			}
			if tt.wantStdout != "" && !strings.Contains(stdout.String(), tt.wantStdout) {
				t.Errorf("stdout %q does not contain %q", stdout.String(), tt.wantStdout)
			}
			if tt.wantStderr != "" && !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tt.wantStderr)
			}
		})
	}
}

func TestVersionLine(t *testing.T) {
	var stdout bytes.Buffer
	if code := run(context.Background(), []string{"version"}, strings.NewReader(""), &stdout, &bytes.Buffer{}); code != 0 {
		t.Fatalf("exit %d", code)
	}
	line := stdout.String()
	if !strings.HasPrefix(line, "ward "+buildVersion()+" (go") || !strings.HasSuffix(line, ")\n") || strings.Count(line, "\n") != 1 {
		t.Fatalf("version line = %q", line)
	}
	old := version
	version = "v1.2.3"
	t.Cleanup(func() { version = old })
	if got := buildVersion(); got != "v1.2.3" {
		t.Fatalf("buildVersion with -X main.version = %q", got)
	}
}

func TestEnvironmentValidated(t *testing.T) {
	clearWardEnv(t)
	t.Setenv("WARD_LOG_FORMAT", "yaml")
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"core"}, strings.NewReader(""), &bytes.Buffer{}, &stderr); code != 2 {
		t.Fatalf("WARD_LOG_FORMAT=yaml: exit %d, want 2 (%s)", code, stderr.String())
	}
	// A flag wins over the variable.
	stderr.Reset()
	if code := run(context.Background(), []string{"core", "--log-format", "json", "--log-level", "nope"}, strings.NewReader(""), &bytes.Buffer{}, &stderr); code != 2 ||
		!strings.Contains(stderr.String(), "--log-level") {
		t.Fatalf("flag over env: exit %d, stderr %s", code, stderr.String())
	}
}

func TestAdminResetPasswordErrors(t *testing.T) {
	clearWardEnv(t)
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		args       []string
		stdin      string
		wantStderr string
	}{
		{"weak password", []string{"admin", "reset-password", "--data-dir", dir, "--password-stdin", "admin"}, "short\n", "at least 12 characters"},
		{"empty stdin", []string{"admin", "reset-password", "--data-dir", dir, "--password-stdin", "admin"}, "", "read password from stdin"},
		{"unknown user", []string{"admin", "reset-password", "--data-dir", dir, "--password-stdin", "nobody-here"}, "Long-enough-passw0rd\n", "not found"},
		{"flags after the user", []string{"admin", "reset-password", "nobody-here", "--data-dir", dir, "--password-stdin"}, "Long-enough-passw0rd\n", "not found"},
		{"flags around the user", []string{"admin", "reset-password", "--data-dir", dir, "nobody-here", "--password-stdin"}, "Long-enough-passw0rd\n", "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, strings.NewReader(tt.stdin), &stdout, &stderr)
			if code != 1 {
				t.Fatalf("exit %d, want 1\nstdout: %s\nstderr: %s", code, stdout.String(), stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Fatalf("stderr %q does not contain %q", stderr.String(), tt.wantStderr)
			}
			if strings.Contains(stdout.String(), "changed") {
				t.Fatalf("stdout claims success: %s", stdout.String())
			}
		})
	}
}
