// Package pipeline runs a batch: it reads JSONL prompts, counts their tokens,
// admits them through the budget gate, sends them with a fixed number of
// workers and writes one result per line, in input order.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/jsonl"
	"golang.org/x/sync/errgroup"
)

// Config is what a run needs. The zero value is not usable: Model, Parallel
// and, unless DryRun, BaseURL, Key and Gate must be set.
type Config struct {
	Model     string // for lines that name none
	MaxTokens int64  // output cap for lines that give none; 0 picks by model
	Input     jsonl.Options

	BaseURL  string
	Key      string
	Parallel int           // requests in flight
	Retries  int           // retries after the first attempt
	Timeout  time.Duration // per attempt; 0 = none

	Gate        *budget.Gate // the shared limits
	OnLimit     OnLimit
	BatchTokens int64       // refuse a batch with more input tokens; 0 = off
	MaxCost     budget.Cost // refuse a batch whose estimated cost is higher; 0 = off

	DryRun    bool
	Unordered bool
	Done      map[string]bool // ids finished by an earlier run (--resume)

	Stats *Stats       // counters for progress and the summary; may be nil
	Log   *slog.Logger // warnings and --verbose events; nil discards them
	Now   func() time.Time
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
// ErrInterrupted. Failures of single lines are results, not errors.
func Run(ctx context.Context, in io.Reader, out io.Writer, cfg Config) error {
	r := &runner{cfg: cfg, stats: cfg.Stats}
	if r.stats == nil {
		r.stats = new(Stats)
	}
	if r.cfg.Log == nil {
		r.cfg.Log = slog.New(slog.DiscardHandler)
	}
	if r.cfg.Now == nil {
		r.cfg.Now = time.Now
	}
	if r.cfg.Parallel < 1 {
		r.cfg.Parallel = 1
	}
	if !cfg.DryRun {
		r.client = newClient(cfg.BaseURL, cfg.Key, r.cfg.Parallel)
	}
	r.exact = cfg.DryRun || cfg.BatchTokens > 0 || cfg.MaxCost > 0 || cfg.Gate.Limits().TPM > 0
	return r.run(ctx, in, out)
}

func (r *runner) run(ctx context.Context, in io.Reader, out io.Writer) error {
	// The stages stop on gctx, which only a failure of the run cancels. A
	// cancelled ctx (a signal) only stops new work: see gate.
	g, gctx := errgroup.WithContext(context.WithoutCancel(ctx))

	lines := make(chan *jsonl.Request, 64) // read-ahead: bounds memory, not correctness
	items := make(chan *item, 64)          // tokenized, waiting for the hold stage
	held := make(chan *item, 64)           // released by the hold stage

	// A read from stdin cannot be cancelled, so this goroutine is the one
	// Run does not wait for: once the run stops, it is left blocked in Read
	// and ends with the process.
	readErr := make(chan error, 1)
	go func() { readErr <- r.read(gctx, ctx, in, lines) }()
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
	g.Go(func() error { return r.tokenize(gctx, lines, items) })
	g.Go(func() error { return r.hold(gctx, items, held) })
	if r.cfg.DryRun {
		g.Go(func() error { return r.emitEstimates(gctx, held, out) })
	} else {
		r.startFetch(g, gctx, ctx, held, out)
	}
	err := g.Wait()
	if err != nil {
		return err
	}
	if msg := r.stats.limitMsg(); msg != "" {
		return &ExitError{Code: ExitLimit, Err: errors.New(msg)}
	}
	if r.cfg.DryRun {
		if msg := r.overBatch(); msg != "" {
			return &ExitError{Code: ExitLimit, Err: fmt.Errorf("the real run would be refused: %s", msg)}
		}
	}
	if ctx.Err() != nil && !r.cfg.DryRun {
		return ErrInterrupted
	}
	return nil
}
