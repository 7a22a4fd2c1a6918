// Package logflag turns the --log-format and --log-level flags every
// genesis binary takes into a structured logger, so they all read the same
// values and log the same way.
package logflag

import (
	"fmt"
	"io"
	"log/slog"
)

// New returns a logger writing to w in format ("json" or "text") at level
// ("debug", "info", "warn" or "error"). Its error names the bad flag.
func New(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %v", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: want text or json, got %q", format)
}
