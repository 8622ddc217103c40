package mailtest

import (
	"bufio"
	"net"
	"strings"
	"sync"
	"testing"
)

// Sink is a minimal in-process SMTP server (no TLS, no AUTH) that keeps
// every message it receives, for tests that need mail to go somewhere but
// do not check a real server's behaviour (Start runs mailpit for those).
type Sink struct {
	Host string
	Port int

	ln    net.Listener
	mu    sync.Mutex
	msgs  []SinkMessage
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

// SinkMessage is one received message: envelope and raw data.
type SinkMessage struct {
	From string
	To   []string
	Data string
}

// NewSink listens on a free loopback port until the test ends.
func NewSink(t testing.TB) *Sink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Sink{Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port, ln: ln, conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(func() {
		ln.Close()
		// A client that gave up mid-session may hold its connection open.
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

// Messages returns what was received so far.
func (s *Sink) Messages() []SinkMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]SinkMessage(nil), s.msgs...)
}

func (s *Sink) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			s.session(c)
		}()
	}
}

func (s *Sink) session(c net.Conn) {
	r := bufio.NewReader(c)
	say := func(line string) bool {
		_, err := c.Write([]byte(line + "\r\n"))
		return err == nil
	}
	say("220 sink ESMTP")
	var cur SinkMessage
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		verb := strings.ToUpper(strings.SplitN(line, " ", 2)[0])
		switch verb {
		case "EHLO", "HELO":
			say("250-sink")
			say("250-8BITMIME")
			say("250-AUTH PLAIN LOGIN")
			say("250 SMTPUTF8")
		case "MAIL":
			cur = SinkMessage{From: addrOf(line)}
			say("250 OK")
		case "RCPT":
			cur.To = append(cur.To, addrOf(line))
			say("250 OK")
		case "DATA":
			say("354 end with .")
			var b strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if strings.TrimRight(l, "\r\n") == "." {
					break
				}
				b.WriteString(strings.TrimPrefix(l, "."))
			}
			cur.Data = b.String()
			s.mu.Lock()
			s.msgs = append(s.msgs, cur)
			s.mu.Unlock()
			say("250 OK queued")
		case "AUTH":
			// Any credentials are good; PLAIN sends them with the command.
			if f := strings.Fields(line); len(f) >= 3 || (len(f) == 2 && strings.EqualFold(f[1], "PLAIN")) {
				if len(f) == 2 {
					say("334 ")
					if _, err := r.ReadString('\n'); err != nil {
						return
					}
				}
				say("235 2.7.0 authenticated")
			} else {
				say("504 unsupported")
			}
		case "RSET", "NOOP":
			say("250 OK")
		case "QUIT":
			say("221 bye")
			return
		default:
			say("502 not implemented")
		}
	}
}

func addrOf(line string) string {
	i, j := strings.Index(line, "<"), strings.LastIndex(line, ">")
	if i < 0 || j < i {
		return ""
	}
	return line[i+1 : j]
}
