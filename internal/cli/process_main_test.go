package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// clockOffsetEnv moves a gptbatchProcess's clock, to play a host whose
// clock is off (see internal/gptbatchtest).
const clockOffsetEnv = "GPTBATCH_TEST_CLOCK_OFFSET"

// processBinary builds internal/gptbatchtest once, for the tests that run
// gptbatch as processes. It is built without the race detector, as users
// build gptbatch: a process starts in a fifth of the time (building its
// encoder), which the tests that start twenty of them feel; the race
// detector has the same code in this process's own tests.
var processBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "gptbatch-test-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "gptbatch")
	build := exec.Command("go", "build", "-o", bin, "github.com/gptbatch/gptbatch/internal/gptbatchtest")
	build.Dir = mustGetwdAtStart
	if out, err := build.CombinedOutput(); err != nil {
		return "", &exec.ExitError{Stderr: out}
	}
	return bin, nil
})

// gptbatchProcess is gptbatch with args as a process of its own. Its
// environment is the test's, less every variable gptbatch reads (set to
// nothing, which is unset to gptbatch): the test gives the configuration.
func gptbatchProcess(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	if testing.Short() {
		t.Skip("runs gptbatch as processes")
	}
	bin, err := processBinary()
	if err != nil {
		t.Fatalf("build gptbatch: %v", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = os.Environ()
	for _, k := range commandEnv {
		cmd.Env = append(cmd.Env, k+"=")
	}
	return cmd
}
