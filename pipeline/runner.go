package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/gptbatch/gptbatch/internal/retry"

	"github.com/gptbatch/gptbatch/jsonl"
)

// runner is one run: its configuration with the defaults filled in, and the
// state its stages share. Every stage is a method of it.
type runner struct {
	cfg    Config
	stats  *Stats
	client *openai.Client
	stop   *stopState
	cache  *cacheRun    // nil without a response cache
	retry  retry.Policy // how failed calls are tried again, on both routes

	reserveMu   sync.Mutex     // one reservation at a time: admission's, or a retry's
	limitsMu    sync.Mutex     // orders changes to the gate's limits
	pacingSaid  [2]atomic.Bool // "paced per second" said, for requests and tokens
	unboundSaid atomic.Bool    // "estimates cannot bound a stored conversation" said
	// countFirst says every estimate must be the exact count before
	// anything is sent: a dry run, the batch limits and the minute token
	// bucket (which keeps what it is charged) need it. Otherwise the first
	// lines may go out on a byte bound while the encoder is built.
	countFirst bool

	// unsettled counts this run's reservations through reserve not yet
	// settled; settled wakes those waiting for it to fall. A day limit
	// that only they fill is waited out, not failed or announced: they
	// settle to far less when their calls end.
	unsettled atomic.Int64
	settled   broadcast
	// fault is a failure of the shared state (usage.md, the ledger,
	// Redis) while the run went on: the run stopped sending, finished
	// what it had and returns it.
	fault atomic.Pointer[Error]
}

// stopState says whether the run still sends requests, and if not, why:
// a signal (ctx), a limit with --on-limit fail, a refusal that every
// later request would get too (a 401), a failure of the shared state or
// of stdout. Safe for concurrent use.
type stopState struct {
	signal context.Context // cancelled by a signal: no new requests
	// abort is cancelled by a second signal (Config.Abort): calls in
	// flight are abandoned, lines not yet read are left unread. Nil
	// outside run: never.
	abort context.Context
	why   atomic.Pointer[stopped]
}

// stopped is why the run stopped sending: what the lines not sent get as
// their error, and what the run returns.
type stopped struct {
	typ    string // a jsonl.Err* type
	msg    string // "not sent: ..."
	status int
	err    error // the run's error, or nil when the lines' errors say it all
	// unread says the lines not yet read are left unread, with no
	// result: nobody would see them (stdout is gone) or the user asked
	// to stop at once. Otherwise the rest of the input is read and each
	// line gets its result.
	unread bool
}

// interrupted is why a run stopped on a signal.
var interrupted = &stopped{typ: jsonl.ErrInterrupted, msg: "not sent: interrupted", err: ErrInterrupted}

// aborted is why a run stopped on a second signal.
var aborted = &stopped{typ: jsonl.ErrInterrupted, msg: "not sent: interrupted", err: ErrInterrupted, unread: true}

// stopped says why the run no longer sends, or nil while it does.
func (s *stopState) stopped() *stopped {
	if s.aborted() {
		return aborted
	}
	why := s.why.Load()
	if why != nil && why.unread {
		return why // a signal after it must not set the reader going again
	}
	if s.signal.Err() != nil {
		return interrupted
	}
	return why
}

// aborted reports whether a second signal came.
func (s *stopState) aborted() bool { return s.abort != nil && s.abort.Err() != nil }

// callContext is ctx for one call: also cancelled by a second signal, and
// once timeout has passed (0: never).
func (s *stopState) callContext(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	var cancel context.CancelFunc
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	if s.abort == nil {
		return ctx, cancel
	}
	stop := context.AfterFunc(s.abort, cancel)
	return ctx, func() { stop(); cancel() }
}

// halt stops sending for why, unless the run has stopped already.
func (s *stopState) halt(why *stopped) { s.why.CompareAndSwap(nil, why) }

// storeLost stops the run when the shared budget store fails mid-run (a
// usage file that cannot be written, a Redis gone): it fails closed, as a
// limit with --on-limit fail would, never falling back to a budget of its
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
	// ExitBrokenPipe is a run whose stdout was closed (| head): it
	// stopped sending and settled what was sent, quietly, with the status
	// of a filter killed by SIGPIPE (128+13).
	ExitBrokenPipe = 141
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

// storeFailed stops sending because the shared state failed mid-run: the
// lines not sent say why, and the run ends with exit status 1 once
// everything in flight is finished, written and, as far as the state
// allows, settled; or with 2 if, in the end, nothing was sent (see
// stateFailure.exit). It keeps the first failure.
func (r *runner) storeFailed(err error) {
	sf := &stateFailure{err: err, sent: &r.stats.Requests}
	if r.cfg.Via == ViaBatch {
		sf.sent, sf.batch = &r.stats.BatchLines, true
	}
	e := &Error{Code: ExitFailed, Err: sf}
	r.fault.CompareAndSwap(nil, e)
	r.stop.halt(&stopped{typ: jsonl.ErrInterrupted, msg: "not sent: the run stopped: " + storeFailedMsg, err: e})
}

// storeFailedMsg says the shared state failed, whatever the cause: a
// full disk, a file made corrupt, Redis gone.
const storeFailedMsg = "the shared budget store failed"

// journalFailed stops submitting because the batch journal cannot be
// written: what is submitted must be journalled first, or --resume would
// submit it again. The lines not submitted say why; what was submitted
// is collected; the run ends with err, exit status 1, or 2 if no batch
// was submitted. It keeps the first failure.
func (r *runner) journalFailed(err error) {
	code := ExitFailed
	if r.stats.BatchLines.Load() == 0 {
		code = ExitConfig
	}
	e := &Error{Code: code, Err: fmt.Errorf("stopped submitting: %w", err)}
	r.fault.CompareAndSwap(nil, e)
	r.stop.halt(&stopped{typ: jsonl.ErrInterrupted, msg: "not sent: the run stopped: the batch journal cannot be written", err: e})
}

// stateFailure is a failure of the shared state mid-run. Its message,
// printed once the run has ended, says how many requests were sent in
// all, in flight ones included, and the cause.
type stateFailure struct {
	err   error
	sent  *atomic.Int64
	batch bool // --via batch: sent in batches
}

func (e *stateFailure) Error() string {
	switch n := e.sent.Load(); {
	case n == 0:
		return fmt.Sprintf("nothing sent: %s: %v", storeFailedMsg, e.err)
	case e.batch:
		return fmt.Sprintf("stopped sending: %s; %s sent in batches, the answers recorded are on stdout, and --resume collects the rest: %v", storeFailedMsg, Count(n, "request was", "requests were"), e.err)
	default:
		return fmt.Sprintf("stopped sending: %s; %s sent, their results are on stdout, and --resume finishes the rest: %v", storeFailedMsg, Count(n, "request was", "requests were"), e.err)
	}
}

// exit is the failure as the run ends with it: exit status 2 when nothing
// was sent, as for any failure before sending, else 1.
func (e *stateFailure) exit(code int) int {
	if e.sent.Load() == 0 {
		return ExitConfig
	}
	return code
}

func (e *stateFailure) Unwrap() error { return e.err }

// outputFailed stops sending because stdout cannot be written: nobody
// will see more results, so the lines not yet read stay unread. A closed
// pipe (| head) ends the run quietly with ExitBrokenPipe, as a filter
// killed by SIGPIPE would; any other failure says why, exit status 1.
func (r *runner) outputFailed(err error) {
	e := &Error{Code: ExitFailed, Err: fmt.Errorf("write results: %w", err)}
	if errors.Is(err, syscall.EPIPE) {
		e = &Error{Code: ExitBrokenPipe}
	}
	r.fault.CompareAndSwap(nil, e)
	r.stop.halt(&stopped{typ: jsonl.ErrInterrupted, msg: "not sent: stdout was closed", err: e, unread: true})
}

// broadcast wakes every goroutine waiting on it at each signal. The zero
// value is ready; safe for concurrent use.
type broadcast struct {
	mu sync.Mutex
	c  chan struct{} // closed and replaced at each signal; nil until waited on
}

// wait is a channel closed at the next signal.
func (b *broadcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.c == nil {
		b.c = make(chan struct{})
	}
	return b.c
}

// signal wakes every waiter.
func (b *broadcast) signal() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.c != nil {
		close(b.c)
		b.c = nil
	}
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
