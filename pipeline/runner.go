package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	openai "github.com/sashabaranov/go-openai"

	"github.com/gptbatch/gptbatch/jsonl"
)

// runner is one run: its configuration with the defaults filled in, and the
// state its stages share. Every stage is a method of it.
type runner struct {
	cfg    Config
	stats  *Stats
	client *openai.Client
	stop   *stopState

	warnedPrice atomic.Bool
	reserveMu   sync.Mutex     // one reservation at a time: admission's, or a retry's
	limitsMu    sync.Mutex     // orders changes to the gate's limits
	pacingSaid  [2]atomic.Bool // "paced per second" said, for requests and tokens
	// countFirst says every estimate must be the exact count before
	// anything is sent: a dry run, the batch limits and the minute token
	// bucket (which keeps what it is charged) need it. Otherwise the first
	// lines may go out on a byte bound while the encoder is built.
	countFirst bool
}

// stopState says whether the run still sends requests, and if not, why:
// a signal (ctx), a limit with --on-limit fail, or a refusal that every
// later request would get too (a 401). Safe for concurrent use.
type stopState struct {
	signal context.Context // cancelled by a signal: no new requests
	why    atomic.Pointer[stopped]
}

// stopped is why the run stopped sending: what the lines not sent get as
// their error, and what the run returns.
type stopped struct {
	typ    string // a jsonl.Err* type
	msg    string // "not sent: ..."
	status int
	err    error // the run's error, or nil when the lines' errors say it all
}

// interrupted is why a run stopped on a signal.
var interrupted = &stopped{typ: jsonl.ErrInterrupted, msg: "not sent: interrupted", err: ErrInterrupted}

// stopped says why the run no longer sends, or nil while it does.
func (s *stopState) stopped() *stopped {
	if s.signal.Err() != nil {
		return interrupted
	}
	return s.why.Load()
}

// halt stops sending for why, unless the run has stopped already.
func (s *stopState) halt(why *stopped) { s.why.CompareAndSwap(nil, why) }

// storeLost stops the run when the shared budget store fails mid-run (a
// usage file that cannot be written, a Redis gone): it fails closed, as a
// limit with --on-limit fail would, never falling back to a budget of its
// own. The requests in flight finish and every line read gets a result.
func (r *runner) storeLost(err error) {
	r.stop.halt(&stopped{
		typ: jsonl.ErrBudget,
		msg: "not sent: the shared budget store is gone",
		err: &Error{Code: ExitFailed, Err: fmt.Errorf("the shared budget store is gone, so gptbatch stopped sending; every line read has its result and --resume finishes the rest: %w", err)},
	})
}

// result is the result of a line not sent because the run stopped.
func (w *stopped) result(req *jsonl.Request) *jsonl.Result {
	return errorResult(req, w.typ, w.msg, w.status)
}

// Exit statuses the pipeline's errors carry (the rest belong to main).
const (
	ExitFailed      = 1
	ExitConfig      = 2
	ExitLimit       = 3
	ExitInterrupted = 130
)

// Error is a failure of the run itself and the process exit status it
// calls for.
type Error struct {
	Code int
	Err  error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return ""
	}
	return e.Err.Error()
}

// Unwrap returns the failure.
func (e *Error) Unwrap() error { return e.Err }

// ExitCode is the exit status the failure calls for.
func (e *Error) ExitCode() int { return e.Code }

// ErrInterrupted is returned when ctx was cancelled: the run stopped sending,
// finished what was in flight and wrote every result it had.
var ErrInterrupted = &Error{Code: ExitInterrupted, Err: errors.New("interrupted")}

// send sends v on out unless ctx ends first.
func send[T any](ctx context.Context, out chan<- T, v T) error {
	select {
	case out <- v:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
