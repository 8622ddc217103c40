package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Input reads answers line by line from stdin: the password of
// --password-stdin first, then codes. On a terminal it prompts on stderr
// and hides secrets; from a pipe it reads the lines as they come.
type Input struct {
	r      *bufio.Reader
	file   *os.File // stdin when it is a file or terminal
	prompt io.Writer
}

// NewInput wraps stdin; prompts go to promptTo.
func NewInput(stdin io.Reader, promptTo io.Writer) *Input {
	in := &Input{r: bufio.NewReader(stdin), prompt: promptTo}
	if f, ok := stdin.(*os.File); ok {
		in.file = f
	}
	return in
}

// Terminal tells whether stdin is a terminal (someone can answer prompts).
func (in *Input) Terminal() bool { return in.file != nil && isTerminal(in.file) }

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

var errNoInput = errors.New("no input")

// Line prompts (on a terminal) and reads one line without its line end.
func (in *Input) Line(ctx context.Context, prompt string) (string, error) {
	if in.Terminal() && prompt != "" {
		fmt.Fprint(in.prompt, prompt)
	}
	return in.read(ctx)
}

// Secret is Line without echo on a terminal.
func (in *Input) Secret(ctx context.Context, prompt string) (string, error) {
	if !in.Terminal() {
		return in.read(ctx)
	}
	fd := int(in.file.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return in.Line(ctx, prompt)
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON | unix.ISIG
	if prompt != "" {
		fmt.Fprint(in.prompt, prompt)
	}
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return in.read(ctx)
	}
	defer func() {
		_ = unix.IoctlSetTermios(fd, unix.TCSETS, old)
		fmt.Fprintln(in.prompt)
	}()
	return in.read(ctx)
}

// read returns the next line; ctx (Ctrl-C) interrupts the wait.
func (in *Input) read(ctx context.Context) (string, error) {
	type result struct {
		s   string
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := in.r.ReadString('\n')
		ch <- result{s, err}
	}()
	select {
	case <-ctx.Done():
		return "", &Error{Code: ExitError, Msg: "interrupted"}
	case r := <-ch:
		line := strings.TrimRight(r.s, "\r\n")
		if r.err != nil && (line == "" || !errors.Is(r.err, io.EOF)) {
			if errors.Is(r.err, io.EOF) {
				return "", errNoInput
			}
			return "", r.err
		}
		return line, nil
	}
}
