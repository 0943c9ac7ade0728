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
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	openai "github.com/sashabaranov/go-openai"
	"golang.org/x/sync/errgroup"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/jsonl"
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

// maxDupReports is how many duplicate ids are named one by one.
const maxDupReports = 10

// read sends each input line to out. It stops reading when stop is done
// (a signal: no new lines) or ctx is (the run failed).
func (r *runner) read(ctx, stop context.Context, in io.Reader, out chan<- *jsonl.Request) error {
	defer close(out)
	rd := jsonl.NewReader(in, r.cfg.Input)
	// Ids seen, to report duplicates: --resume finds lines by id, so a
	// duplicated one would be skipped or sent again by mistake.
	seen := make(map[string]int32)
	dups := 0
	defer func() {
		if dups > maxDupReports {
			r.cfg.Log.Warn(fmt.Sprintf("%d more duplicate ids", dups-maxDupReports))
		}
	}()
	for {
		if stop.Err() != nil && !r.cfg.DryRun {
			return nil
		}
		req, err := rd.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return &ExitError{Code: ExitFailed, Err: fmt.Errorf("read input: %w", err)}
		}
		if first, ok := seen[req.ID]; ok {
			if dups++; dups <= maxDupReports {
				r.cfg.Log.Warn(fmt.Sprintf("duplicate id %q on lines %d and %d", req.ID, first, req.Line))
			}
		} else {
			seen[req.ID] = int32(req.Line)
		}
		if r.cfg.Done[req.ID] && req.Err == nil {
			r.stats.Skipped.Add(1)
			continue
		}
		r.stats.Lines.Add(1)
		select {
		case out <- req:
		case <-ctx.Done():
			return nil
		}
	}
}

// tokenize prepares lines on every core and sends them on in input order.
func (r *runner) tokenize(ctx context.Context, in <-chan *jsonl.Request, out chan<- *item) error {
	defer close(out)
	return orderedMap(ctx, runtime.GOMAXPROCS(0), in, out, func(req *jsonl.Request) *item {
		it := prepare(req, &r.cfg, r.exact)
		if it.done == nil && !it.priced && r.warnedPrice.CompareAndSwap(false, true) {
			r.cfg.Log.Warn(fmt.Sprintf("no price known for model %q: its cost_usd is null", it.model))
		}
		return it
	})
}

// hold keeps the batch back until its size is known to be within
// --batch-tokens and --max-cost: until the end of input, or until a limit is
// crossed, which refuses the whole batch before anything is sent. With both
// limits off, and in a dry run, it streams. Memory is bounded by the limits
// themselves.
func (r *runner) hold(ctx context.Context, in <-chan *item, out chan<- *item) error {
	defer close(out)
	stream := r.cfg.DryRun || (r.cfg.BatchTokens == 0 && r.cfg.MaxCost == 0)
	var held []*item
	for it := range in {
		if it.done == nil {
			r.stats.estimate(it)
		}
		if msg := r.overBatch(); msg != "" && !r.cfg.DryRun {
			return &ExitError{Code: ExitLimit, Err: fmt.Errorf("%s; nothing sent", msg)}
		}
		if !stream {
			held = append(held, it)
			continue
		}
		if err := send(ctx, out, it); err != nil {
			return err
		}
	}
	if !stream {
		r.stats.Total.Store(int64(len(held)))
	}
	for _, it := range held {
		if err := send(ctx, out, it); err != nil {
			return err
		}
	}
	return nil
}

// overBatch says which batch limit the lines counted so far exceed, or "".
func (r *runner) overBatch() string {
	tokens, cost := r.stats.EstPromptTokens.Load(), budget.Cost(r.stats.EstCostMax.Load())
	lines := r.stats.Estimated.Load()
	switch {
	case r.cfg.BatchTokens > 0 && tokens > r.cfg.BatchTokens:
		return fmt.Sprintf("batch exceeds --batch-tokens %d: %d input tokens in its first %d lines", r.cfg.BatchTokens, tokens, lines)
	case r.cfg.MaxCost > 0 && cost > r.cfg.MaxCost:
		return fmt.Sprintf("batch exceeds --max-cost %s: up to $%s in its first %d lines", r.cfg.MaxCost, cost, lines)
	}
	return ""
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
