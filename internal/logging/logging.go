// Package logging builds the slog logger every ward process uses and
// validates the --log-level / --log-format flags shared by all subcommands.
package logging

import (
	"fmt"
	"io"
	"log/slog"
)

// Validate checks a level and a format.
func Validate(level, format string) error {
	if _, err := parseLevel(level); err != nil {
		return err
	}
	if format != "text" && format != "json" {
		return fmt.Errorf("--log-format must be text or json, not %q", format)
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("--log-level must be debug, info, warn or error, not %q", s)
	}
	return l, nil
}

// New returns a text or JSON logger at the given level (invalid values fall
// back to info/text; call Validate first to report them).
func New(w io.Writer, level, format string) *slog.Logger {
	l, _ := parseLevel(level)
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
