// Command gptbatch pushes a batch of prompts through the OpenAI chat API (or
// any compatible endpoint) within shared rate and budget limits: JSONL
// prompts on stdin, one JSONL result per line on stdout, in input order.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/jsonl"
	"github.com/gptbatch/gptbatch/pipeline"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit statuses (the pipeline's own are in package pipeline).
const (
	exitOK     = 0
	exitFailed = pipeline.ExitFailed
	exitUsage  = pipeline.ExitConfig
)

func main() {
	ctx, abort := signals(os.Stderr)
	os.Exit(run(withAbort(ctx, abort), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// signals turns SIGINT, SIGTERM and SIGHUP (a closed terminal, a dropped
// ssh) into the run's context and its abort channel: the first signal
// cancels ctx (stop sending, finish what is in flight, give every line its
// result); the second closes abort (abandon the calls in flight, settle
// them and give back what was not sent, leave the rest unread); a third
// ends the process at once. SIGPIPE is ignored, so that a closed stdout
// is a write error the run handles (it settles what was sent) instead of
// death mid-call.
func signals(stderr io.Writer) (context.Context, <-chan struct{}) {
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

// abortKey is the context key of the abort channel: see withAbort.
type abortKey struct{}

// withAbort is ctx carrying abort, which a second signal closes: run
// takes the first signal from ctx and the second from here.
func withAbort(ctx context.Context, abort <-chan struct{}) context.Context {
	return context.WithValue(ctx, abortKey{}, abort)
}

// abortOf is the abort channel ctx carries, or nil.
func abortOf(ctx context.Context) <-chan struct{} {
	ch, _ := ctx.Value(abortKey{}).(<-chan struct{})
	return ch
}

// usageError is bad usage or configuration: exit 2, nothing sent.
func usageError(err error) error { return &pipeline.Error{Code: exitUsage, Err: err} }

// run is gptbatch with its arguments and streams: main without the process.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return runTTY(ctx, args, stdin, stdout, stderr, openTTY)
}

// runTTY is run asking --confirm's question on the terminal tty opens.
func runTTY(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, tty func() (io.ReadWriteCloser, error)) int {
	var c cli
	exited := -1
	parser, err := newParser(&c, stdout, stderr, func(code int) { exited = code })
	if err != nil {
		fmt.Fprintf(stderr, "gptbatch: %v\n", err)
		return exitUsage
	}
	kctx, err := parser.Parse(args)
	if exited >= 0 {
		return exited // --help or --version
	}
	if err != nil {
		fmt.Fprintf(stderr, "gptbatch: %v\n", err)
		return exitUsage
	}
	c.tty = tty
	switch kctx.Command() {
	case "usage":
		err = c.Usage.run(ctx, &c.runCmd, stdout, stderr)
	case "limits show":
		err = c.Limits.show(ctx, &c.runCmd, stdout)
	case "limits set":
		err = c.Limits.set(ctx, &c.runCmd, kctx, stdout)
	case "limits clear", "limits clear <name>":
		err = c.Limits.Clear.run(ctx, &c.runCmd, stdout, c.Limits.JSON)
	case "batches", "batches list":
		err = c.Batches.List.run(ctx, &c.runCmd, stdout)
	case "batches cancel <id>":
		err = c.Batches.Cancel.run(ctx, &c.runCmd, stdout)
	case "batches recover":
		err = c.Batches.Recover.run(ctx, &c.runCmd, stdout, stderr)
	case "prices", "prices show", "prices load <file>", "prices clear":
		err = c.Prices.run(ctx, &c.runCmd, kctx.Command(), stdout)
	default:
		err = c.runCmd.run(ctx, stdin, stdout, stderr)
	}
	return exitStatus(err, stderr)
}

// exitStatus prints err once, as "gptbatch: ...", and says the exit
// status it calls for: its ExitCode, else 1.
func exitStatus(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintf(stderr, "gptbatch: %s\n", msg)
	}
	var ec interface{ ExitCode() int }
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return exitFailed
}

func (r *runCmd) run(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) error {
	cfg := pipeline.Config{
		MaxTokens:   r.MaxTokens,
		Input:       jsonl.Options{Format: jsonl.Format(r.Format), System: r.System, Endpoint: r.Endpoint},
		Pack:        r.Pack,
		ServiceTier: r.ServiceTier,
		BaseURL:     r.BaseURL,
		Parallel:    r.Parallel,
		Retries:     r.Retries,
		Timeout:     r.Timeout,
		OnLimit:     pipeline.OnLimit(r.OnLimit),
		DryRun:      r.DryRun,
		Unordered:   r.Unordered,
		Stats:       new(pipeline.Stats),
		Abort:       abortOf(ctx),
	}
	if f, ok := stdin.(*os.File); ok {
		cfg.TerminalInput = term.IsTerminal(int(f.Fd()))
	}
	if err := r.check(); err != nil {
		return usageError(err)
	}
	// A bad price file stops the run before anything is opened or sent.
	hostPrices, givenPrices, err := r.priceFiles()
	if err != nil {
		return usageError(err)
	}
	if cfg.MaxCost, err = parseDollars("--max-cost", r.MaxCost); err != nil {
		return usageError(err)
	}
	dailyCost, err := parseDollars("--daily-cost", r.DailyCost)
	if err != nil {
		return usageError(err)
	}
	cfg.BatchTokens = r.BatchTokens
	cfg.Model = modelName(r.Model, r.Endpoint)
	limits := budget.Limits{RPM: r.RPM, TPM: r.TPM, TPD: r.TPD, DailyCost: dailyCost}
	level := slog.LevelWarn
	switch {
	case r.Verbose:
		level = slog.LevelDebug
	case r.Quiet:
		level = slog.LevelError
	}
	r.msgs = &msgWriter{w: stderr}
	cfg.Log = newLogger(r.msgs, level)
	if err := r.checkStdin(stdin, stderr); err != nil {
		return usageError(err)
	}

	if r.Resume != "" {
		f, err := os.Open(r.Resume)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return usageError(fmt.Errorf("--resume: %w", err))
		}
		if err == nil {
			done, _, err := jsonl.SucceededIDs(f)
			f.Close()
			if err != nil {
				return usageError(fmt.Errorf("--resume %s: %w", r.Resume, err))
			}
			cfg.Resumed = done
		}
	}

	// The zone whose midnight ends a day this run starts, dry or not.
	zone, err := budget.DayZone(os.Getenv(budget.DayZoneEnv))
	if err != nil {
		return usageError(err)
	}
	if r.DryRun {
		// A dry run touches neither the network nor the shared state: it
		// only reads what today has used and the stored limits, to say
		// which limits the batch would hit.
		used := budget.State{}
		rd, where, closeStore, err := r.openReader(ctx)
		if err != nil {
			return usageError(err)
		}
		defer closeStore()
		if used, err = rd.Load(ctx); err != nil {
			if r.Store != "" {
				return usageError(err)
			}
			cfg.Log.Warn(fmt.Sprintf("%v; estimating without it", err), "store", where)
		}
		stored, err := rd.StoredPrices(ctx)
		if err != nil {
			return usageError(err)
		}
		cfg.Prices = priceTable(hostPrices, stored, givenPrices)
		mem := new(budget.MemStore)
		_ = mem.Update(ctx, func(s *budget.State) ([]budget.LedgerEntry, error) { *s = used; return nil, nil })
		cfg.Gate = budget.NewGate(mem, limits)
		cfg.Gate.SetDayZone(zone)
		if err := cfg.Gate.Load(ctx, time.Now()); err != nil {
			return err
		}
		if err := r.batchConfig(ctx, &cfg, nil); err != nil {
			return usageError(err)
		}
		err = r.pipe(ctx, stdin, stdout, stderr, cfg)
		if !r.Quiet {
			fmt.Fprintf(stderr, "gptbatch: %s\n", pipeline.DrySummary(cfg.Stats, cfg))
			fmt.Fprintf(stderr, "gptbatch: %s\n", limitSources(cfg.Gate))
		}
		return err
	}
	if err := checkBaseURL(r.BaseURL, r.AllowInsecure); err != nil {
		return usageError(err)
	}
	if cfg.Key, err = apiKey(r.APIKeyFile); err != nil {
		return usageError(err)
	}
	if r.Confirm {
		// Open the terminal first: without one, fail before reading.
		tty, err := r.tty()
		if err != nil {
			return usageError(fmt.Errorf("--confirm asks on the terminal, and there is none (%w); run without --confirm, after --dry-run", err))
		}
		defer tty.Close()
		cfg.Confirm = func() error { return r.confirm(ctx, tty, cfg) }
	}
	offset, err := clockOffset()
	if err != nil {
		return usageError(err)
	}
	if offset != 0 {
		cfg.Clock = offsetClock{offset}
	}
	// The lock wait is said even with --quiet: it explains a run that
	// seems to hang.
	store, where, closeStore, err := r.openStore(ctx, func(msg string) { fmt.Fprintf(stderr, "gptbatch: %s\n", msg) })
	if err != nil {
		return usageError(fmt.Errorf("nothing sent: %w", err))
	}
	defer closeStore()
	cfg.Gate = budget.NewGate(store, limits)
	cfg.Gate.SetDayZone(zone)
	// The limits stored with the budget apply from the first line.
	// A signal while it waits for the store's lock is no failure: the run
	// then sends nothing and gives every line its interrupted result.
	if err := cfg.Gate.Load(ctx, time.Now().Add(offset)); err != nil && ctx.Err() == nil {
		return usageError(fmt.Errorf("nothing sent: %s: %w", where, err))
	}
	cfg.Log.Debug(limitSources(cfg.Gate), "store", where)
	stored, err := store.StoredPrices(ctx)
	if err != nil {
		return usageError(fmt.Errorf("nothing sent: %w", err))
	}
	cfg.Prices = priceTable(hostPrices, stored, givenPrices)
	warner := &dayWarner{gate: cfg.Gate, pct: int64(r.WarnAt), log: cfg.Log}
	cfg.Settled = warner.check
	if err := r.batchConfig(ctx, &cfg, store); err != nil {
		return usageError(err)
	}
	return r.finish(r.pipe(ctx, stdin, stdout, stderr, cfg), cfg.Stats, stderr)
}

// pipe runs the pipeline with progress on stderr when asked for. With
// --confirm the progress line waits for the answer.
func (r *runCmd) pipe(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer, cfg pipeline.Config) error {
	r.started = time.Now()
	show := r.Progress == "always"
	stdoutTerm := isTerminal(stdout)
	if r.Progress == "auto" && !r.Quiet {
		show = isTerminal(stderr) && os.Getenv("NO_COLOR") == ""
	}
	if !show {
		return pipeline.Run(ctx, stdin, stdout, cfg)
	}
	// out is stdout, kept off the progress line when they share a terminal.
	out := &msgWriter{w: stdout}
	var progress *pipeline.Progress
	start := func() {
		progress = pipeline.ShowProgress(stderr, cfg.Stats, 200*time.Millisecond)
		r.msgs.set(progress.Above(stderr))
		if stdoutTerm {
			out.set(progress.Above(stdout))
		}
	}
	defer func() {
		if progress != nil {
			progress.Stop()
			r.msgs.set(stderr)
		}
	}()
	if ask := cfg.Confirm; ask != nil {
		cfg.Confirm = func() error {
			if err := ask(); err != nil {
				return err
			}
			start()
			return nil
		}
	} else {
		start()
	}
	return pipeline.Run(ctx, stdin, out, cfg)
}

// finish prints the summary and turns the run's outcome into an error
// carrying the exit status.
func (r *runCmd) finish(err error, s *pipeline.Stats, stderr io.Writer) error {
	// A run refused before it sent or wrote anything has only its error
	// to say.
	if !r.Quiet && (err == nil || s.Requests.Load() > 0 || s.Written() > 0) {
		fmt.Fprintf(stderr, "gptbatch: %s\n", pipeline.Summary(s, time.Since(r.started)))
	}
	if errors.Is(err, jsonl.ErrNoPromptColumn) {
		// The input as a whole is unusable: bad usage, nothing sent.
		return usageError(err)
	}
	if err != nil {
		return err
	}
	if s.Failed.Load() > 0 {
		return &pipeline.Error{Code: exitFailed}
	}
	return nil
}

// maxCount bounds the counting flags: far above any real limit, and low
// enough that sums of them never overflow.
const maxCount = 1_000_000_000_000_000

// check refuses flags out of their range.
func (r *runCmd) check() error {
	switch {
	case r.Parallel < 1 || r.Parallel > 4096:
		return fmt.Errorf("--parallel must be from 1 to 4096, not %d", r.Parallel)
	case r.RPM < 0 || r.TPM < 0 || r.TPD < 0 || r.BatchTokens < 0 || r.Retries < 0 || r.MaxTokens < 0:
		return errors.New("limits, --retries and --max-tokens cannot be negative")
	case r.Timeout < 0:
		return fmt.Errorf("--timeout cannot be negative (%s); 0 means no time limit", r.Timeout)
	case r.WarnAt < 0 || r.WarnAt > 100:
		return fmt.Errorf("--warn-at is a percentage from 0 (off) to 100, not %d", r.WarnAt)
	case r.Retries > 1000:
		return fmt.Errorf("--retries %d: more than 1000", r.Retries)
	case r.Pack < 0 || r.Pack > 2048:
		return fmt.Errorf("--pack must be from 0 to 2048 (the embeddings API's inputs a request), not %d", r.Pack)
	case r.Pack > 1 && r.Via == "batch":
		return errors.New("--pack goes with --via sync: the Batch API has no per-minute request limit for packing to save")
	}
	for _, f := range []struct {
		name string
		v    int64
	}{{"--rpm", r.RPM}, {"--tpm", r.TPM}, {"--tpd", r.TPD}, {"--batch-tokens", r.BatchTokens}, {"--max-tokens", r.MaxTokens}} {
		if f.v > maxCount {
			return fmt.Errorf("%s %d: more than %d", f.name, f.v, int64(maxCount))
		}
	}
	return nil
}

// checkStdin refuses a directory on stdin and, on a terminal, says that
// gptbatch is reading the batch from it.
func (r *runCmd) checkStdin(stdin io.Reader, stderr io.Writer) error {
	f, ok := stdin.(*os.File)
	if !ok {
		return nil
	}
	fi, err := f.Stat()
	if err != nil {
		return nil // reading will say what is wrong
	}
	if fi.IsDir() {
		return errors.New("stdin is a directory: give the batch as a file's contents (gptbatch < prompts.jsonl)")
	}
	if isTerminal(f) && !r.Quiet {
		fmt.Fprintln(stderr, "gptbatch: reading prompts from the terminal, one a line; end with Ctrl-D (or give a file: gptbatch < prompts.jsonl)")
	}
	return nil
}

// isTerminal reports whether w is a terminal.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// openTTY opens the controlling terminal, for --confirm's question.
func openTTY() (io.ReadWriteCloser, error) {
	return os.OpenFile("/dev/tty", os.O_RDWR, 0)
}
