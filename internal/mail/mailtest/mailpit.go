// Package mailtest runs a real SMTP server for tests: mailpit, started on
// free loopback ports with its own database in a temporary directory, and
// read back through its REST API.
package mailtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Mailpit is a mailpit process owned by one test.
type Mailpit struct {
	// API is the base URL of the web UI and REST API.
	API string
	// SMTPHost and SMTPPort are where it accepts mail (no TLS; any AUTH
	// credentials are accepted).
	SMTPHost string
	SMTPPort int

	cmd    *exec.Cmd
	exited chan error
}

// Binary locates mailpit: on PATH or in $(go env GOPATH)/bin, where
// scripts/install-deps.sh installs it.
func Binary() (string, error) {
	if p, err := exec.LookPath("mailpit"); err == nil {
		return p, nil
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			gopath = strings.TrimSpace(string(out))
		}
	}
	for _, dir := range filepath.SplitList(gopath) {
		p := filepath.Join(dir, "bin", "mailpit")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("mailpit not found on PATH or in $(go env GOPATH)/bin")
}

// Start runs mailpit for the test and stops it (by PID) when the test ends.
// Without the binary the test is skipped with a clear message, except under
// CI=true where a missing mailpit is a failure.
func Start(t testing.TB) *Mailpit {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mailpit is required under CI=true: %v (run scripts/install-deps.sh)", err)
		}
		t.Skipf("SKIP real SMTP test: %v; install it with scripts/install-deps.sh", err)
	}
	dir := t.TempDir()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		httpPort, err1 := freePort()
		smtpPort, err2 := freePort()
		if err1 != nil || err2 != nil {
			t.Fatalf("free ports: %v %v", err1, err2)
		}
		m, err := start(bin, dir, httpPort, smtpPort, attempt)
		if err == nil {
			t.Cleanup(m.stop)
			return m
		}
		lastErr = err
	}
	t.Fatalf("start mailpit: %v", lastErr)
	return nil
}

func start(bin, dir string, httpPort, smtpPort, attempt int) (*Mailpit, error) {
	logFile, err := os.Create(filepath.Join(dir, fmt.Sprintf("mailpit-%d.log", attempt)))
	if err != nil {
		return nil, err
	}
	m := &Mailpit{API: fmt.Sprintf("http://127.0.0.1:%d", httpPort), SMTPHost: "127.0.0.1", SMTPPort: smtpPort, exited: make(chan error, 1)}
	// --disable-version-check: mailpit would otherwise ask GitHub for
	// updates, and there is no network.
	m.cmd = exec.Command(bin, "--disable-version-check",
		"-l", fmt.Sprintf("127.0.0.1:%d", httpPort),
		"-s", fmt.Sprintf("127.0.0.1:%d", smtpPort),
		"--database", filepath.Join(dir, fmt.Sprintf("mailpit-%d.db", attempt)),
		"--smtp-auth-accept-any", "--smtp-auth-allow-insecure")
	m.cmd.Stdout, m.cmd.Stderr = logFile, logFile
	if err := m.cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	exited := make(chan error, 1)
	go func() {
		err := m.cmd.Wait()
		logFile.Close()
		exited <- err
		m.exited <- err
	}()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			raw, _ := os.ReadFile(logFile.Name())
			return nil, fmt.Errorf("mailpit exited: %v: %s", err, raw)
		default:
		}
		if m.ready() {
			return m, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = m.cmd.Process.Kill()
	<-exited
	return nil, fmt.Errorf("mailpit did not become ready on ports %d/%d", httpPort, smtpPort)
}

func (m *Mailpit) ready() bool {
	resp, err := http.Get(m.API + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	c, err := net.DialTimeout("tcp", fmt.Sprintf("%s:%d", m.SMTPHost, m.SMTPPort), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// stop kills the process this test started, by its PID, and reaps it.
func (m *Mailpit) stop() {
	_ = m.cmd.Process.Kill()
	select {
	case <-m.exited:
	case <-time.After(10 * time.Second):
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Address is a mailbox in mailpit's API.
type Address struct {
	Name    string `json:"Name"`
	Address string `json:"Address"`
}

// Summary is one entry of GET /api/v1/messages.
type Summary struct {
	ID      string    `json:"ID"`
	From    Address   `json:"From"`
	To      []Address `json:"To"`
	Subject string    `json:"Subject"`
}

// Message is GET /api/v1/message/{ID}.
type Message struct {
	ID      string    `json:"ID"`
	From    Address   `json:"From"`
	To      []Address `json:"To"`
	Subject string    `json:"Subject"`
	Text    string    `json:"Text"`
	HTML    string    `json:"HTML"`
}

func (m *Mailpit) get(path string, v any) error {
	resp, err := http.Get(m.API + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, raw)
	}
	return json.Unmarshal(raw, v)
}

// Messages lists every stored message, newest first.
func (m *Mailpit) Messages(t testing.TB) []Summary {
	t.Helper()
	var out struct {
		Messages []Summary `json:"messages"`
	}
	if err := m.get("/api/v1/messages?limit=500", &out); err != nil {
		t.Fatalf("mailpit messages: %v", err)
	}
	return out.Messages
}

// Message reads one message in full.
func (m *Mailpit) Message(t testing.TB, id string) Message {
	t.Helper()
	var out Message
	if err := m.get("/api/v1/message/"+url.PathEscape(id), &out); err != nil {
		t.Fatalf("mailpit message %s: %v", id, err)
	}
	return out
}

// WaitFor polls until a message to the recipient whose subject contains
// subject arrives, and returns it in full.
func (m *Mailpit) WaitFor(t testing.TB, to, subject string, timeout time.Duration) Message {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, s := range m.Messages(t) {
			if strings.Contains(s.Subject, subject) && hasRecipient(s.To, to) {
				return m.Message(t, s.ID)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no mail to %s with subject containing %q within %s (have %d messages)", to, subject, timeout, len(m.Messages(t)))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Count returns how many stored messages went to the recipient.
func (m *Mailpit) Count(t testing.TB, to string) int {
	t.Helper()
	n := 0
	for _, s := range m.Messages(t) {
		if hasRecipient(s.To, to) {
			n++
		}
	}
	return n
}

func hasRecipient(list []Address, to string) bool {
	for _, a := range list {
		if strings.EqualFold(a.Address, to) {
			return true
		}
	}
	return false
}
