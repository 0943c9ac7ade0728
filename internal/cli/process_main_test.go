package cli

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"
)

// The tests that need gptbatch as processes (several at once on one
// budget, kill -9, signals, a terminal) run this test binary as gptbatch:
// TestMain sees asMainEnv and calls Run as main does, with the seams the
// variables below ask for. Production code reads none of them.
const (
	asMainEnv = "GPTBATCH_TEST_AS_MAIN"
	// clockOffsetEnv moves the process's clock, to play a host whose
	// clock is off.
	clockOffsetEnv = "GPTBATCH_TEST_CLOCK_OFFSET"
)

func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		os.Exit(asMain())
	}
	os.Exit(m.Run())
}

// asMain is main, with the clock clockOffsetEnv asks for.
func asMain() int {
	var seams Seams
	if v := os.Getenv(clockOffsetEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", clockOffsetEnv, err)
			return exitUsage
		}
		seams.Clock = offsetClock{d}
	}
	ctx, abort := Signals(os.Stderr)
	seams.Abort = abort
	return Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, seams)
}

// gptbatchProcess is gptbatch with args as a process of its own: this test
// binary, run as main. Its environment is the test's, less what would
// change the configuration the test gives (a variable set to nothing is
// unset to gptbatch).
func gptbatchProcess(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	if testing.Short() {
		t.Skip("runs gptbatch as processes")
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), asMainEnv+"=1")
	for _, k := range []string{"OPENAI_MODEL", "OPENAI_BASE_URL", "OPENAI_API_KEY", "GPTBATCH_USAGE_FILE", "GPTBATCH_STORE", "GPTBATCH_VIA", "GPTBATCH_ENDPOINT", "XDG_STATE_HOME", "GPTBATCH_CACHE", "XDG_CACHE_HOME"} {
		cmd.Env = append(cmd.Env, k+"=")
	}
	return cmd
}

// offsetClock is the wall clock moved by d.
type offsetClock struct{ d time.Duration }

func (c offsetClock) Now() time.Time { return time.Now().Add(c.d) }

func (c offsetClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
