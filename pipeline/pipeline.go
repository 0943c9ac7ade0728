// Package pipeline runs a batch: it reads JSONL prompts, counts their tokens,
// admits them through the budget gate, sends them with a fixed number of
// workers and writes one result per line, in input order.
//
// Run wires the stages in one place, run; each stage has a file of its own,
// named for it, and reading them in this order follows a line from stdin to
// stdout:
//
//	read.go       stdin → requests, one a line
//	prepare.go    tokenize: the wire body and the estimate, on every core
//	hold.go       hold the batch back until --batch-tokens and --max-cost are known to hold
//	admit.go      reserve each line's estimate through the gate, just ahead of a free worker
//	fetch.go      send: a fixed number of workers, the retry loop
//	classify.go   what a failed call means: retry, give up or halt
//	serverlimits.go  what the x-ratelimit headers teach the gate
//	settle.go     the gate and the ledger move from estimates to what the API counted
//	emit.go       the only writer to stdout (results, or a dry run's estimates)
//	ordered.go    the ordered map and the pool the stages run on
//
// runner.go holds what the stages share: the runner, the stop state and the
// run's errors; clock.go the time the run goes by.
package pipeline

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/jsonl"
)

// Config is what a run needs. Model must be set and, unless DryRun,
// BaseURL and Key; the other fields have usable zero values.
type Config struct {
	Model     string // for lines that name none
	MaxTokens int64  // output cap for lines that give none; 0 picks by model
	Input     jsonl.Options

	BaseURL  string
	Key      string
	Parallel int           // requests in flight; less than 1 means 1
	Retries  int           // retries after the first attempt
	Timeout  time.Duration // per attempt; 0 = none

	// Gate holds the shared limits. Nil means a gate of its own, in memory,
	// with no limits: a dry run needs no more.
	Gate        *budget.Gate
	OnLimit     OnLimit     // "" means Wait
	BatchTokens int64       // refuse a batch with more input tokens; 0 = off
	MaxCost     budget.Cost // refuse a batch whose estimated cost is higher; 0 = off

	// Via is how lines reach the API ("" means ViaSync); Batch
	// configures ViaBatch.
	Via   Via
	Batch BatchOptions

	DryRun    bool
	Unordered bool
	Resumed   map[string]bool // ids finished by an earlier run (--resume): skipped

	Stats *Stats       // counters for progress and the summary; may be nil
	Log   *slog.Logger // warnings and --verbose events; nil discards them
	// Clock is the time admission waits, back-off and the ledger go by;
	// nil is the wall clock.
	Clock Clock
	// Jitter is a random duration in [0, n) for the retries' back-off;
	// nil draws from math/rand/v2.
	Jitter func(n time.Duration) time.Duration
}

// OnLimit is what to do when a limit holds a request back.
type OnLimit string

// The --on-limit choices.
const (
	Wait OnLimit = "wait"
	Fail OnLimit = "fail"
)

// Run reads the batch from in and writes results (or, with DryRun,
// estimates) to out. Cancelling ctx stops sending new requests; requests in
// flight finish and their results are written before Run returns
// ErrInterrupted. Failures of single lines are results, not errors; the
// errors Run returns are *Error, which carry an exit status.
func Run(ctx context.Context, in io.Reader, out io.Writer, cfg Config) error {
	return newRunner(ctx, cfg).run(ctx, in, out)
}

// newRunner is a run of cfg, its defaults filled in, that stops sending
// when ctx is cancelled.
func newRunner(ctx context.Context, cfg Config) *runner {
	r := &runner{cfg: cfg, stats: cfg.Stats, stop: &stopState{signal: ctx}}
	if r.stats == nil {
		r.stats = new(Stats)
	}
	if r.cfg.Log == nil {
		r.cfg.Log = slog.New(slog.DiscardHandler)
	}
	if r.cfg.Clock == nil {
		r.cfg.Clock = realClock{}
	}
	if r.cfg.Jitter == nil {
		r.cfg.Jitter = randomJitter
	}
	if r.cfg.Gate == nil {
		r.cfg.Gate = budget.NewGate(new(budget.MemStore), budget.Limits{})
	}
	if r.cfg.Parallel < 1 {
		r.cfg.Parallel = 1
	}
	if !r.cfg.DryRun {
		r.client = newClient(r.cfg.BaseURL, r.cfg.Key, r.cfg.Parallel)
	}
	r.countFirst = r.cfg.DryRun || r.cfg.BatchTokens > 0 || r.cfg.MaxCost > 0 || r.cfg.Gate.Limits().TPM > 0
	return r
}

// readAhead is how many lines wait between read, prepare and hold: it
// bounds memory, not correctness.
const readAhead = 64

// run makes every channel and starts every stage, in the order a line
// goes through them, then waits for them all.
func (r *runner) run(ctx context.Context, in io.Reader, out io.Writer) error {
	// The stages stop on gctx, which only a failure of the run cancels. A
	// cancelled ctx (a signal) only stops new requests: see stopState.
	g, gctx := errgroup.WithContext(context.WithoutCancel(ctx))
	p := r.cfg.Parallel

	lines := make(chan *jsonl.Request, readAhead)
	// A read from stdin cannot be cancelled, so this goroutine is the one
	// Run does not wait for: once the run stops, it is left blocked in Read
	// and ends with the process.
	readErr := make(chan error, 1)
	go func() { readErr <- r.read(gctx, in, lines) }()
	g.Go(func() error {
		select {
		case err := <-readErr:
			return err
		case <-gctx.Done():
			return nil
		}
	})
	g.Go(func() error {
		// Build the default model's encoder while the first lines are read.
		_, err := encoders[encodingName(r.cfg.Model)]()
		return err
	})

	prepared := make(chan *item, readAhead)
	g.Go(func() error { return r.tokenize(gctx, lines, prepared) })

	held := make(chan *item, readAhead)
	g.Go(func() error { return r.hold(gctx, prepared, held) })

	switch {
	case r.cfg.DryRun && r.cfg.Via == ViaBatch:
		planned := make(chan *item, readAhead)
		g.Go(func() error { return r.planBatches(gctx, held, planned) })
		g.Go(func() error { return r.emitEstimates(gctx, planned, out) })
	case r.cfg.DryRun:
		g.Go(func() error { return r.emitEstimates(gctx, held, out) })
	case r.cfg.Via == ViaBatch:
		// The Batch API's sender stands in for admit, fetch and settle.
		results := make(chan *jsonl.Result, p)
		g.Go(func() error { return r.batchSender(gctx, held, results) })
		g.Go(func() error { return r.emit(gctx, results, out) })
	default:
		// Finished results on their way to the writer: a worker's worth,
		// so that workers rarely wait for a write.
		results := make(chan *jsonl.Result, p)
		// Settlements queue while the settler writes the last batch of
		// them; sized so that workers rarely wait for the usage file.
		settle := make(chan budget.Settlement, 4*p)
		g.Go(func() error { return r.fetch(gctx, r.admitter(held), results, settle) })
		g.Go(func() error { return r.settle(gctx, settle) })
		g.Go(func() error { return r.emit(gctx, results, out) })
	}

	if err := g.Wait(); err != nil {
		return err
	}
	if r.cfg.DryRun {
		if msg := r.overBatch(); msg != "" {
			return &Error{Code: ExitLimit, Err: fmt.Errorf("the real run would be refused: %s", msg)}
		}
		return nil
	}
	if why := r.stop.stopped(); why != nil && why.err != nil {
		return why.err
	}
	return nil
}
