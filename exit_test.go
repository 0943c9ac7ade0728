package main

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/gptbatch/gptbatch/pipeline"
)

// TestExitStatus: every error says its exit status through ExitCode,
// however wrapped, and is printed once; one with nothing to say prints
// nothing.
func TestExitStatus(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		code   int
		stderr string
	}{
		{"nil", nil, 0, ""},
		{"plain", errors.New("boom"), 1, "gptbatch: boom\n"},
		{"usage", usageError(errors.New("bad flag")), 2, "gptbatch: bad flag\n"},
		{"no message", &pipeline.Error{Code: exitFailed}, 1, ""},
		{"pipeline", &pipeline.Error{Code: pipeline.ExitLimit, Err: errors.New("stopped by the minute request limit")}, 3, "gptbatch: stopped by the minute request limit\n"},
		{"wrapped", fmt.Errorf("run: %w", pipeline.ErrInterrupted), 130, "gptbatch: run: interrupted\n"},
		{"pipeline, nil error", &pipeline.Error{Code: pipeline.ExitFailed}, 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			if got := exitStatus(tt.err, &b); got != tt.code || b.String() != tt.stderr {
				t.Errorf("exitStatus(%v) = %d and %q on stderr, want %d and %q", tt.err, got, b.String(), tt.code, tt.stderr)
			}
		})
	}
}
