package pipeline

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/sashabaranov/go-openai"
)

type runner struct {
	cfg    Config
	stats  *Stats
	client *openai.Client

	warnedPrice atomic.Bool
	admitMu     sync.Mutex              // one admission at a time: the gate's, or a retry's
	halted      atomic.Pointer[failure] // a call that every later call would repeat (401)
	learnMu     sync.Mutex              // orders changes to the gate's limits
	// exact says every estimate must be the exact count before anything
	// is sent: a dry run, the batch limits and the minute token bucket
	// (which keeps what it is charged) need it. Otherwise the first lines
	// may go out on a byte bound while the encoder is built.
	exact bool
}

// send sends v on out unless ctx ends first.
func send[T any](ctx context.Context, out chan<- T, v T) error {
	select {
	case out <- v:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// errStopped says the run stopped sending: a signal, --on-limit fail or a
// refused key. The lines not yet sent get their result from preflight.
var errStopped = errors.New("stopped")

// ExitError is a failure of the run itself; Code is the process exit status
// it calls for.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// Exit statuses the pipeline can ask for (the rest belong to main).
const (
	ExitFailed      = 1
	ExitConfig      = 2
	ExitLimit       = 3
	ExitInterrupted = 130
)

// ErrInterrupted is returned when ctx was cancelled: the run stopped sending,
// finished what was in flight and wrote every result it had.
var ErrInterrupted = &ExitError{Code: ExitInterrupted, Err: errors.New("interrupted")}
