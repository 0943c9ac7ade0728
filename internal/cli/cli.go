// Package cli is gptbatch's command line: Run parses the arguments and runs
// the command they name, a file each: run.go the main job (the batch on
// stdin), which runs unless another command is named, and so begins with
// Run; usage.go, limits.go and batches.go the reports and stores beside
// it. Here, Signals turns the process's signals into what Run takes, and
// Seams are the rest it takes from the process.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/gptbatch/gptbatch/pipeline"
)

// Exit statuses (the pipeline's own are in package pipeline).
const (
	exitOK     = 0
	exitFailed = pipeline.ExitFailed
	exitUsage  = pipeline.ExitConfig
)

// Seams are what Run takes from the process besides its arguments and
// streams. The zero value is a process with no second signal, the wall
// clock, /dev/tty, the process's environment and working directory.
type Seams struct {
	// Abort is closed by a second signal: stop at once (see Signals).
	// Nil: never.
	Abort <-chan struct{}
	// Clock is the time runs go by: waits, polls, the budget's minutes
	// and days. Nil: the wall clock.
	Clock pipeline.Clock
	// TTY opens the terminal --confirm asks on. Nil: /dev/tty.
	TTY func() (io.ReadWriteCloser, error)
	// Env looks up an environment variable, as os.LookupEnv: the flags'
	// ($OPENAI_MODEL, $GPTBATCH_...), the key, $HOME and the XDG
	// directories. Nil: the process's environment.
	Env func(key string) (string, bool)
	// Dir is the working directory relative paths are in: a flag's file,
	// ./api_key.txt, ./gpt_model_type.txt. "": the process's.
	Dir string
}

// Signals turns SIGINT, SIGTERM and SIGHUP (a closed terminal, a dropped
// ssh) into Run's context and its abort channel: the first signal
// cancels ctx (stop sending, finish what is in flight, give every line its
// result); the second closes abort (abandon the calls in flight, settle
// them and give back what was not sent, leave the rest unread); a third
// ends the process at once. SIGPIPE is ignored, so that a closed stdout
// is a write error the run handles (it settles what was sent) instead of
// death mid-call.
func Signals(stderr io.Writer) (context.Context, <-chan struct{}) {
	signal.Ignore(syscall.SIGPIPE)
	// Buffered for the three signals told apart below.
	sig := make(chan os.Signal, 3)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	ctx, stop := context.WithCancel(context.Background())
	abort := make(chan struct{})
	go func() {
		<-sig
		stop()
		fmt.Fprintln(stderr, "gptbatch: interrupted: finishing the requests in flight, giving every line its result (interrupt again to stop at once)")
		<-sig
		close(abort)
		fmt.Fprintln(stderr, "gptbatch: stopping at once: abandoning the requests in flight and settling the usage file (interrupt again to quit without settling)")
		<-sig
		os.Exit(pipeline.ExitInterrupted)
	}()
	return ctx, abort
}

// lookupEnv is the environment variable key, and whether it is set.
func (s Seams) lookupEnv(key string) (string, bool) {
	if s.Env == nil {
		return os.LookupEnv(key)
	}
	return s.Env(key)
}

// getenv is the environment variable key; "" when it is not set.
func (s Seams) getenv(key string) string {
	v, _ := s.lookupEnv(key)
	return v
}

// path is p in the working directory: p itself when it is absolute, or
// when the working directory is the process's.
func (s Seams) path(p string) string {
	if s.Dir == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(s.Dir, p)
}

// home is the user's home directory, $HOME (os.UserHomeDir).
func (s Seams) home() (string, error) {
	if s.Env == nil {
		return os.UserHomeDir()
	}
	if h := s.getenv("HOME"); h != "" {
		return h, nil
	}
	return "", errors.New("$HOME is not defined")
}

// xdgPath is name in the XDG base directory $env, else in fallback under
// the home directory (a relative $env is invalid and to be ignored, says
// the XDG Base Directory spec: it would put what every invocation shares
// under whichever directory each starts in).
func (s Seams) xdgPath(env, fallback, name string) (string, error) {
	dir := s.getenv(env)
	if !filepath.IsAbs(dir) {
		home, err := s.home()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(home, fallback)
	}
	return filepath.Join(dir, name), nil
}

// now is the time on s's clock.
func (s Seams) now() time.Time {
	if s.Clock == nil {
		return time.Now()
	}
	return s.Clock.Now()
}
