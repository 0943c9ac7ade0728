// Package pipeline runs a batch: it reads JSONL prompts, counts their tokens,
// admits them through the budget gate, sends them with a fixed number of
// workers, or through OpenAI's Batch API, and writes one result per line,
// in input order.
//
// Run wires the stages in one place, run. These are every file of the
// package but its tests; reading them in this order follows a line from
// stdin to stdout:
//
//	pipeline.go      Run and its Config; run makes the channels and starts the stages
//	runner.go        what the stages share: the runner, the stop state, the run's errors
//	item.go          a line on its way through the stages; the result of a line that failed
//	read.go          stdin → requests, one a line
//	prepare.go       prepare: a line's wire body and estimate (run puts it on every core)
//	cache.go         --cache: answers sent before, looked up in blocks; identical lines sent once
//	endpoint.go      the endpoints' table and what their files share: the answer each decodes to
//	                 on either route (each route prices it), a Batch API output line
//	chat.go          chat completions: a line's body and its count by the chat formula, its call, its answer's result
//	responses.go     the Responses API: the same
//	embeddings.go    embeddings: the same, and the vectors as floats
//	pack.go          --pack: runs of single-input embeddings lines share a request
//	admit.go         hold the batch back while --batch-tokens and --max-cost may refuse it;
//	                 then reserve each line's estimate through the gate, just ahead of a free worker
//	fetch.go         send: what each of run's fixed number of workers does with an admitted
//	                 line, the retry loop, the request on the wire (go-openai picks the URL,
//	                 the line's own body goes) and its answer read, what the headers teach
//	                 the gate, and the settling of every call to what the API counted
//	cacheserve.go    --cache in fetch's workers: hits and twins served, new answers stored
//	schema.go        --schema: lines held to a schema, answers checked, invalid ones asked again
//	emit.go          the only writer to stdout (results, or a dry run's estimates)
//
// --via batch takes the lines hold passes on (admit.go) and stands in for
// admission and fetch with the Batch API, in stages of its own, wired in
// run beside the synchronous ones:
//
//	batchplan.go     a dry run's plan of batch files
//	batch.go         what the batch stages share: options, a line's record, the client, the journal, the spools
//	batchsubmit.go   submit: lines → batch files by endpoint and model, uploaded, created, journalled
//	batchresume.go   --resume: lines claimed from the journal's batches, collected, not submitted again
//	batchpoll.go     poll: every submitted batch polled, politely, until it ends
//	batchcollect.go  collect: output and error files streamed into results, settled, retried
//	batchschema.go   --schema: collected answers checked, invalid ones asked again in follow-ups
//	batchorder.go    the ordered writer: results in input order, to emit; those ahead of their turn spooled
//
// The Batch API's client, its journal and their recovery are
// internal/batchapi's.
//
// Beneath both routes:
//
//	ordered.go       the ordered map and the pool the stages run on
//	stats.go         the run's counters, for the progress line and the summaries
//	clock.go         the time the run goes by
package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"runtime"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/cache"
	"github.com/gptbatch/gptbatch/internal/retry"
	"github.com/gptbatch/gptbatch/internal/schema"
	"github.com/gptbatch/gptbatch/jsonl"
)

// Config is what a run needs. Model must be set and, unless DryRun,
// BaseURL and Key; the other fields have usable zero values.
type Config struct {
	// Tokens counts prompt tokens as the API bills them: internal/tokens'
	// Counter. It must be set.
	Tokens    TokenCounter
	Model     string // for lines that name none
	MaxTokens int64  // output cap for lines that give none; 0 picks by model
	Input     jsonl.Options
	// ServiceTier is the service_tier sent with chat and responses lines
	// that give none ("flex", say); "" sends none.
	ServiceTier string
	// Prices is the price table lines are estimated and answers priced
	// by; nil is the built-in one.
	Prices *budget.Prices
	// Pack is how many single-input embeddings lines may share one
	// request (--pack); each still gets its own result. 0 or 1: one a
	// request.
	Pack int
	// Schema is --schema: chat and responses lines that name no format of
	// their own are sent with it and held to it; lines that carry a
	// json_schema format are held to their own (see schema.go). Nil: none,
	// and answers are not checked.
	Schema *schema.Schema
	// SchemaRetries is how many times an answer that does not fit the
	// schema is asked again (--schema-retries).
	SchemaRetries int

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
	Resumed   *jsonl.Done // lines answered by an earlier run (--resume): skipped

	// Cache, if set, answers the requests it holds an answer to and keeps
	// the complete answers of the others (see cache.go); a dry run only
	// looks. Its failures mid-run are warnings. It sits before the routes
	// part: on the Batch API's route, a line it answers goes in no batch,
	// and the answers collected are kept.
	Cache cache.Store

	// Abort, closed by a second signal, stops at once: calls in flight
	// are cancelled and settled at their estimates, reservations not yet
	// sent go back, and lines not yet read get no result. Nil: never.
	Abort <-chan struct{}
	// TerminalInput says the input is a terminal: once the run stops,
	// the lines not yet read are not waited for. Other input is read to
	// its end, each line given the result that says why it was not sent.
	TerminalInput bool

	Stats *Stats       // counters for progress and the summary; may be nil
	Log   *slog.Logger // warnings and --verbose events; nil discards them
	// Clock is the time admission waits, back-off and the ledger go by;
	// nil is the wall clock.
	Clock Clock
	// Jitter is a random duration in [0, n) for the retries' back-off;
	// nil draws from math/rand/v2.
	Jitter func(n time.Duration) time.Duration

	// Confirm, if set, is asked once the whole batch is read and counted
	// (Stats holds its size), before anything is sent; an error from it
	// ends the run with that error and nothing sent. Not asked in a dry run.
	Confirm func() error
	// Settled, if set, is called after each batch of settlements has
	// reached the gate, on the settling goroutine: Gate.Seen then holds
	// the day's use.
	Settled func()

	// schemas is the run's compiled line schemas and schema token counts,
	// made by newRunner; nil (outside a run) compiles and counts anew.
	schemas *schemaRun
	// countLater, set by newRunner, has prepare estimate every line by the
	// byte bound, even once the encoder is built: the response cache's
	// lookup counts exactly the lines it does not answer (see look), so
	// that a run again spends no time counting lines it sends nothing for.
	countLater bool
}

// TokenCounter counts prompt tokens as the API bills them: exactly with
// the model's encoder, or, while it is not built (not exact), by an upper
// bound that needs none. internal/tokens.Counter is gptbatch's. It must be
// safe for concurrent use.
type TokenCounter interface {
	// Chat counts a chat request's messages and function definitions
	// (tools, functions) by the chat formula.
	Chat(model string, messages, tools, functions json.RawMessage, exact bool) (int64, error)
	// Tools counts function definitions as Chat does: Chat of a request
	// is Chat of its messages plus Tools of each field.
	Tools(model string, tools, functions json.RawMessage, exact bool) (int64, error)
	// Inputs counts embeddings inputs, texts and token arrays, with no
	// overhead: the texts' counts, then the arrays'.
	Inputs(model string, texts []string, arrays [][]int64, exact bool) ([]int64, error)
	// Ready reports whether model's encoder is built.
	Ready(model string) bool
	// Build builds model's encoder, waiting for it.
	Build(model string) error
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
//
// After ctx is cancelled the rest of the input is still read, each line
// given an interrupted result, unless TerminalInput; Abort stops at once.
// A failure of the shared state or of out stops sending the same way: what
// is in flight is finished and settled, and Run returns the failure.
func Run(ctx context.Context, in io.Reader, out io.Writer, cfg Config) error {
	if cfg.Tokens == nil {
		return &Error{Code: ExitConfig, Err: errors.New("no token counter (Config.Tokens)")}
	}
	if !cfg.DryRun {
		if err := checkBaseURL(cfg.BaseURL); err != nil {
			return &Error{Code: ExitConfig, Err: err}
		}
	}
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
	if r.cfg.Gate == nil {
		r.cfg.Gate = budget.NewGate(new(budget.MemStore), budget.Limits{})
	}
	if r.cfg.Parallel < 1 {
		r.cfg.Parallel = 1
	}
	r.cfg.schemas = new(schemaRun)
	if !r.cfg.DryRun {
		r.client = newClient(r.cfg.BaseURL, r.cfg.Key, r.cfg.Parallel)
	}
	if r.cfg.Cache != nil {
		r.cache = newCacheRun(r.cfg.Cache, r.cfg.Parallel)
	}
	r.retry = retry.Policy{Retries: r.cfg.Retries, Jitter: r.cfg.Jitter}
	r.countFirst = r.cfg.DryRun || r.cfg.BatchTokens > 0 || r.cfg.MaxCost > 0 || r.cfg.Gate.Limits().TPM > 0 || r.cfg.Confirm != nil
	// A dry run writes every line's count, and the batch route counts
	// the lines it puts in files: only the synchronous route counts later.
	r.cfg.countLater = r.cache != nil && !r.cfg.DryRun && r.cfg.Via != ViaBatch
	return r
}

// readAhead is how many lines wait between read, prepare and hold: it
// bounds memory, not correctness.
const readAhead = 64

// run makes every channel and starts every stage, in the order a line
// goes through them, then waits for them all.
func (r *runner) run(ctx context.Context, in io.Reader, out io.Writer) error {
	// A second signal cancels abort, and with it the signal context.
	abort, unwatch := watch(r.cfg.Abort)
	defer unwatch()
	signal, stopSignal := context.WithCancel(ctx)
	defer stopSignal()
	defer context.AfterFunc(abort, stopSignal)()
	r.stop.signal, r.stop.abort = signal, abort

	var br *batchRun
	if r.cfg.Via == ViaBatch && !r.cfg.DryRun {
		var err error
		if br, err = r.openBatch(ctx); err != nil {
			return err
		}
		defer br.close()
	}

	// The stages stop on gctx, which only a failure of the run cancels. A
	// cancelled ctx (a signal) only stops new requests: see stopState.
	g, gctx := errgroup.WithContext(context.WithoutCancel(ctx))
	p := r.cfg.Parallel
	// The stages ahead of admission also stop on abort: the lines they
	// hold get no result. Those after it finish what was admitted.
	up, stopUp := context.WithCancel(gctx)
	defer stopUp()
	defer context.AfterFunc(abort, stopUp)()
	upstream := func(err error) error {
		if r.stop.aborted() && gctx.Err() == nil {
			return nil
		}
		return err
	}

	lines := make(chan *jsonl.Request, readAhead)
	// A read from stdin cannot be cancelled, so this goroutine is the one
	// Run does not wait for: once the run stops at once, it is left
	// blocked in Read and ends with the process.
	readErr := make(chan error, 1)
	go func() { readErr <- r.read(up, in, lines) }()
	g.Go(func() error {
		select {
		case err := <-readErr:
			return err
		case <-up.Done():
			return nil
		}
	})
	g.Go(func() error {
		// Build the default model's encoder while the first lines are read.
		return r.cfg.Tokens.Build(r.cfg.Model)
	})

	// prepare: each line's body and estimate, on every core, in input
	// order. Two lines a core in the window keep every core busy while the
	// head line, perhaps a long one, is counted.
	prepared := make(chan *item, readAhead)
	cores := runtime.GOMAXPROCS(0)
	g.Go(func() error {
		defer close(prepared)
		return upstream(orderedMap(up, cores, 2*cores, fromChan(lines), prepared, r.prepareLine, nil))
	})

	looked := prepared
	if r.cache != nil {
		looked = make(chan *item, readAhead)
		g.Go(func() error { return upstream(r.lookup(up, prepared, looked)) })
	}

	held := looked
	if r.holds() {
		held = make(chan *item, readAhead)
		g.Go(func() error { return upstream(r.hold(up, looked, held)) })
	}

	switch {
	case r.cfg.DryRun && r.cfg.Via == ViaBatch:
		planned := make(chan *item, readAhead)
		g.Go(func() error { return r.planBatches(gctx, held, planned) })
		g.Go(func() error { return r.emitEstimates(gctx, planned, out) })
	case r.cfg.DryRun:
		g.Go(func() error { return r.emitEstimates(gctx, held, out) })
	case r.cfg.Via == ViaBatch:
		// The Batch API stands in for admit, fetch and settle: lines are
		// submitted in batches, the batches polled until they end, and
		// collected; the ordered writer puts the results in input order.
		//
		// Submitted batches: the poller takes each at once, so the
		// submitter never waits on it for long.
		toPoll := make(chan *tbatch)
		// Ended batches, one at a time: the collector takes each in turn.
		toCollect := make(chan *tbatch)
		// Back from each collected batch to the submitter: lines to
		// submit again. The submitter takes it while it works, and after
		// it ends until the collector closes it.
		back := make(chan collected)
		// Results to the ordered writer: the submitter's (lines no batch
		// answers) and the collector's. The writer takes them at once,
		// spooling those ahead of their turn; a send is a block of results.
		unsent := make(chan []done)
		answered := make(chan []done)
		// Results in order, to emit: one block, which the ordered writer
		// makes of a block it takes, while emit writes the last.
		results := make(chan []*jsonl.Result, 1)
		g.Go(func() error { return r.submitBatches(gctx, br, held, toPoll, unsent, back) })
		g.Go(func() error { return r.pollBatches(gctx, br.api, toPoll, toCollect) })
		g.Go(func() error {
			if r.cache != nil {
				// The answers to store come from the collector.
				defer close(r.cache.puts)
			}
			return r.collectBatches(gctx, br, toCollect, back, answered)
		})
		if r.cache != nil {
			g.Go(func() error { return r.storeAnswers(gctx) })
		}
		g.Go(func() error { return r.orderBatchResults(gctx, r.cfg.Batch.TempDir, unsent, answered, results) })
		g.Go(func() error { return r.emit(gctx, results, out) })
	default:
		// Finished results on their way to the writer, an item's (a
		// line's, or a pack's) a send: a worker's worth, so that workers
		// rarely wait for a write.
		results := make(chan []*jsonl.Result, p)
		// Settlements queue while the settler writes the last batch of
		// them; sized so that workers rarely wait for the usage file.
		settle := make(chan budget.Settlement, 4*p)
		toAdmit := held
		if r.cfg.Pack > 1 {
			// Unbuffered: a pack that is not full goes on when admission
			// takes it, and fills while admission waits.
			packed := make(chan *item)
			g.Go(func() error { return r.pack(gctx, held, packed) })
			toAdmit = packed
		}
		// fetch: p workers, each taking an item as it comes free (the
		// admitter reserves it just then) and doing with it what sender
		// chose (fetch.go); their results go on in input order unless
		// --unordered, the calls' settlements to settle. Another way of
		// sending (the Batch API) replaces this stage as a whole. It is the
		// only sender on results and settle. The window is the items taken
		// in ahead of the one the writer waits for: a slow item at the
		// head holds back at most this many. A pack holds up to --pack
		// lines' results, so the window of packs is the window of lines
		// over --pack, with a place for every worker.
		window := 4*p + 64
		if r.cfg.Pack > 1 {
			window = p + max(1, window/r.cfg.Pack)
		}
		g.Go(func() error {
			if r.cache != nil {
				// The answers to store come from fetch's workers.
				defer close(r.cache.puts)
			}
			defer close(settle)
			defer close(results)
			if r.cfg.Unordered {
				return unorderedMap(gctx, p, r.admitter(toAdmit), results, r.sender(gctx, settle))
			}
			return orderedMap(gctx, p, window, r.admitter(toAdmit), results, r.sender(gctx, settle), func(head *item) {
				r.cfg.Log.Debug("waiting for a slow line: the window ahead of it is full", "line", head.req.Line, "window", window)
			})
		})
		g.Go(func() error { return r.settle(gctx, settle) })
		if r.cache != nil {
			g.Go(func() error { return r.storeAnswers(gctx) })
		}
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
	if f := r.fault.Load(); f != nil {
		if sf := (*stateFailure)(nil); errors.As(f.Err, &sf) {
			return &Error{Code: sf.exit(f.Code), Err: f.Err}
		}
		return f
	}
	if why := r.stop.stopped(); why != nil && why.err != nil {
		return why.err
	}
	return nil
}

// watch is a context cancelled once ch is closed (never, for a nil ch),
// and the function that ends the watch.
func watch(ch <-chan struct{}) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		select {
		case <-ch:
			cancel()
		case <-done:
		}
	}()
	return ctx, func() { close(done) }
}

// checkBaseURL refuses a base URL no request could go to, before
// anything is sent: go-openai would build a URL that fails every call.
func checkBaseURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("base URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("base URL %q: want http:// or https:// and a host, as in https://api.openai.com/v1", u.Redacted())
	}
	return nil
}
