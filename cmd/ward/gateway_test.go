package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestGatewaySubcommands: exit codes and messages of the keepalived hooks
// (the notify round trip itself is tested in internal/gateway).
func TestGatewaySubcommands(t *testing.T) {
	clearWardEnv(t)
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer ok.Close()
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "interface is down", http.StatusServiceUnavailable)
	}))
	defer down.Close()
	empty := t.TempDir()
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{"notify without state", []string{"gateway", "notify", "--data-dir", empty}, 2, "", "name exactly one state"},
		{"notify two states", []string{"gateway", "notify", "master", "backup"}, 2, "", "name exactly one state"},
		{"notify unknown state", []string{"gateway", "notify", "--data-dir", empty, "promote"}, 1, "", "unknown state"},
		{"notify without a gateway", []string{"gateway", "notify", "--data-dir", empty, "MASTER"}, 1, "", "no gateway runs with data dir"},
		{"notify data dir too long", []string{"gateway", "notify", "--data-dir", "/" + strings.Repeat("x", 120), "backup"}, 1, "", "use a shorter --data-dir"},
		{"notify -h", []string{"gateway", "notify", "-h"}, 0, "", "master|backup|fault|stop"},
		{"healthcheck ready", []string{"gateway", "healthcheck", "--url", ok.URL + "/readyz"}, 0, "", ""},
		{"healthcheck not ready", []string{"gateway", "healthcheck", "--url", down.URL + "/readyz"}, 1, "", "503"},
		{"healthcheck nobody listening", []string{"gateway", "healthcheck", "--health-addr", "127.0.0.1:1"}, 1, "", "http://127.0.0.1:1/readyz"},
		{"healthcheck bad address", []string{"gateway", "healthcheck", "--health-addr", "nope"}, 2, "", "health address"},
		{"gateway floating ip", []string{"gateway", "--floating-ip", "vip"}, 2, "", "not an IP address"},
		{"gateway -h lists floating-ip", []string{"gateway", "-h"}, 0, "", "-floating-ip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, strings.NewReader(""), &stdout, &stderr)
			if code != tt.wantCode {
				t.Fatalf("run(%q) = %d, want %d\nstdout: %s\nstderr: %s", tt.args, code, tt.wantCode, stdout.String(), stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.wantStdout) || !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Fatalf("stdout %q (want %q), stderr %q (want %q)", stdout.String(), tt.wantStdout, stderr.String(), tt.wantStderr)
			}
		})
	}
}
