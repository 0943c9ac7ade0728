package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/schema"
	"github.com/gptbatch/gptbatch/internal/tokens"
	"github.com/gptbatch/gptbatch/jsonl"
	"github.com/gptbatch/gptbatch/pipeline"
)

// Run is gptbatch with its arguments, streams and seams: main without the
// process. It prints each failure once, as "gptbatch: ...", and returns
// the exit status. Cancelling ctx is the first signal.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, s Seams) int {
	if s.TTY == nil {
		s.TTY = openTTY
	}
	p, err := takeParser()
	if err != nil {
		fmt.Fprintf(stderr, "gptbatch: %v\n", err)
		return exitUsage
	}
	defer p.release()
	p.c = cli{runCmd: runCmd{seams: s}}
	c := &p.c
	kctx, err := p.parse(args, stdout, stderr)
	if p.exited >= 0 {
		return p.exited // --help or --version
	}
	if err != nil {
		fmt.Fprintf(stderr, "gptbatch: %v\n", err)
		return exitUsage
	}
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
		err = c.Batches.List.run(ctx, &c.runCmd, stdout, stderr)
	case "batches cancel <id>":
		err = c.Batches.Cancel.run(ctx, &c.runCmd, stdout, stderr)
	case "batches recover":
		err = c.Batches.Recover.run(ctx, &c.runCmd, stdout, stderr)
	case "prices", "prices show", "prices load <file>", "prices clear":
		err = c.Prices.run(ctx, &c.runCmd, kctx.Command(), stdout)
	case "cache", "cache show":
		err = c.CacheCmd.show(ctx, &c.runCmd, stdout)
	case "cache clear":
		err = c.CacheCmd.clear(ctx, &c.runCmd, stdout)
	case "cache prune":
		err = c.CacheCmd.prune(ctx, &c.runCmd, stdout)
	default:
		err = c.runCmd.run(ctx, stdin, stdout, stderr)
	}
	return exitStatus(err, stderr)
}

// usageError is bad usage or configuration: exit 2, nothing sent.
func usageError(err error) error { return &pipeline.Error{Code: exitUsage, Err: err} }

// exitStatus prints err once, as "gptbatch: ...", and says the exit
// status it calls for: its ExitCode, else 1. A closed stdout (| head) is
// quiet, with the status of a filter killed by SIGPIPE, whatever the
// command.
func exitStatus(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	if errors.Is(err, syscall.EPIPE) {
		return pipeline.ExitBrokenPipe
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

// run is the main job: the batch on stdin, its results on stdout. A dry
// run only estimates it; otherwise it is sent within the shared budget.
func (r *runCmd) run(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) error {
	cfg, limits, err := r.config(stdin, stderr)
	if err != nil {
		return usageError(err)
	}
	// The zone whose midnight ends a day this run starts, dry or not.
	zone, err := dayZone(r.seams.getenv(dayZoneEnv))
	if err != nil {
		return usageError(err)
	}
	if r.DryRun {
		return r.dryRun(ctx, stdin, stdout, stderr, cfg, limits, zone)
	}
	return r.send(ctx, stdin, stdout, stderr, cfg, limits, zone)
}

// config is the run's configuration from its flags, and the limits they
// set; an error is bad usage.
func (r *runCmd) config(stdin io.Reader, stderr io.Writer) (pipeline.Config, budget.Limits, error) {
	cfg := pipeline.Config{
		Tokens:      tokens.Counter{},
		Model:       r.modelName(),
		MaxTokens:   r.MaxTokens,
		Input:       jsonl.Options{Format: jsonl.Format(r.Format), System: r.System, Endpoint: r.Endpoint},
		Pack:        r.Pack,
		ServiceTier: r.ServiceTier,
		BaseURL:     r.BaseURL,
		Parallel:    r.Parallel,
		Retries:     r.Retries,
		Timeout:     r.Timeout,
		OnLimit:     pipeline.OnLimit(r.OnLimit),
		BatchTokens: r.BatchTokens,
		DryRun:      r.DryRun,
		Unordered:   r.Unordered,
		Stats:       new(pipeline.Stats),
		Abort:       r.seams.Abort,
		Clock:       r.seams.Clock,
	}
	if f, ok := stdin.(*os.File); ok {
		cfg.TerminalInput = term.IsTerminal(int(f.Fd()))
	}
	if err := r.check(); err != nil {
		return cfg, budget.Limits{}, err
	}
	var err error
	if cfg.MaxCost, err = parseDollars("--max-cost", r.MaxCost, zeroTurnsOff); err != nil {
		return cfg, budget.Limits{}, err
	}
	dailyCost, err := parseDollars("--daily-cost", r.DailyCost, zeroTurnsOff)
	if err != nil {
		return cfg, budget.Limits{}, err
	}
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
		return cfg, budget.Limits{}, err
	}
	if cfg.Schema, err = r.schema(cfg.Log); err != nil {
		return cfg, budget.Limits{}, err
	}
	cfg.SchemaRetries = r.SchemaRetries
	if cfg.Resumed, err = resumed(r.Resume); err != nil {
		return cfg, budget.Limits{}, err
	}
	// A bad price file stops the run before anything is opened or sent;
	// the table stored with the budget goes between them once read.
	if r.hostPrices, r.givenPrices, err = r.priceFiles(); err != nil {
		return cfg, budget.Limits{}, err
	}
	return cfg, budget.Limits{RPM: r.RPM, TPM: r.TPM, TPD: r.TPD, DailyCost: dailyCost}, nil
}

// schema reads --schema, nil when it is not given. A schema that does not
// compile, a concise form that does not parse, and --schema where no
// answer could be checked are bad usage; a schema strict mode cannot
// take is said once, as it is sent non-strict.
func (r *runCmd) schema(log *slog.Logger) (*schema.Schema, error) {
	if r.Schema == "" {
		return nil, nil
	}
	if r.Endpoint == "embeddings" {
		return nil, errors.New("--schema: the embeddings endpoint answers with vectors, not text to check; use --endpoint chat or responses")
	}
	s, err := schema.Parse(r.Schema)
	if err != nil {
		return nil, fmt.Errorf("--schema: %w", err)
	}
	if !s.Strict() {
		log.Warn("--schema is sent non-strict: " + s.Reason())
	}
	return s, nil
}

// resumed is the ids that have a successful result in the --resume file;
// none if it does not exist yet, so that the first run of a cron job's
// `--resume out.jsonl < in >> out.jsonl` is the whole batch.
func resumed(path string) (*jsonl.Done, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("--resume: %w", err)
	}
	defer f.Close()
	done, _, err := jsonl.ReadDone(f)
	if err != nil {
		return nil, fmt.Errorf("--resume %s: %w", path, err)
	}
	return done, nil
}

// dryRun estimates the batch. It touches neither the network nor the
// shared state: it only reads what today has used and the stored limits,
// to say which limits the batch would hit.
func (r *runCmd) dryRun(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer, cfg pipeline.Config, limits budget.Limits, zone *time.Location) error {
	used := budget.State{}
	rd, err := r.openStore(ctx, true, nil)
	if err != nil {
		return usageError(err)
	}
	defer rd.Close()
	if used, err = rd.Load(ctx); err != nil {
		if r.Store != "" {
			return usageError(err)
		}
		cfg.Log.Warn(fmt.Sprintf("%v; estimating without it", err), "store", rd.String())
	}
	stored, err := rd.StoredPrices(ctx)
	if err != nil {
		return usageError(err)
	}
	cfg.Prices = priceTable(r.hostPrices, stored, r.givenPrices)
	// The cache is only looked in: the dry run counts its answers.
	if cfg.Cache, err = r.openRunCache(ctx, rd, func(msg string) { cfg.Log.Warn(msg) }, true); err != nil {
		return usageError(err)
	}
	if cfg.Cache != nil {
		defer cfg.Cache.Close()
	}
	mem := new(budget.MemStore)
	_ = mem.Update(ctx, time.Time{}, func(s *budget.State, _ time.Time) ([]budget.LedgerEntry, error) { *s = used; return nil, nil })
	cfg.Gate = budget.NewGate(mem, limits)
	cfg.Gate.SetDayZone(zone)
	if err := cfg.Gate.Load(ctx, r.seams.now()); err != nil {
		return err
	}
	if err := r.batchConfig(&cfg, false); err != nil {
		return usageError(err)
	}
	err = r.pipe(ctx, stdin, stdout, stderr, cfg)
	if !r.Quiet {
		fmt.Fprintf(stderr, "gptbatch: %s\n", drySummary(cfg.Stats, cfg))
		fmt.Fprintf(stderr, "gptbatch: %s\n", limitSources(cfg.Gate))
	}
	return err
}

// send sends the batch within the shared budget, and says how it went.
func (r *runCmd) send(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer, cfg pipeline.Config, limits budget.Limits, zone *time.Location) error {
	if err := checkBaseURL(r.BaseURL, r.AllowInsecure); err != nil {
		return usageError(err)
	}
	var err error
	if cfg.Key, err = r.apiKey(); err != nil {
		return usageError(err)
	}
	if r.Confirm {
		// Open the terminal first: without one, fail before reading.
		tty, err := r.seams.TTY()
		if err != nil {
			return usageError(fmt.Errorf("--confirm asks on the terminal, and there is none (%w); run without --confirm, after --dry-run", err))
		}
		defer tty.Close()
		cfg.Confirm = func() error { return r.confirm(ctx, tty, cfg) }
	}
	// The lock wait is said even with --quiet: it explains a run that
	// seems to hang.
	store, err := r.openStore(ctx, false, func(msg string) { fmt.Fprintf(stderr, "gptbatch: %s\n", msg) })
	if err != nil {
		return usageError(fmt.Errorf("nothing sent: %w", err))
	}
	defer store.Close()
	where := r.storeWhere(store)
	cfg.Gate = budget.NewGate(store, limits)
	cfg.Gate.SetDayZone(zone)
	// The limits stored with the budget apply from the first line.
	// A signal while it waits for the store's lock is no failure: the run
	// then sends nothing and gives every line its interrupted result.
	if err := cfg.Gate.Load(ctx, r.seams.now()); err != nil && ctx.Err() == nil {
		return usageError(fmt.Errorf("nothing sent: %s: %w", where, err))
	}
	cfg.Log.Debug(limitSources(cfg.Gate), "store", where)
	// As for the limits, a signal here is no failure: the run then sends
	// nothing, and needs no price.
	stored, err := store.StoredPrices(ctx)
	if err != nil && ctx.Err() == nil {
		return usageError(fmt.Errorf("nothing sent: %w", err))
	}
	cfg.Prices = priceTable(r.hostPrices, stored, r.givenPrices)
	if cfg.Cache, err = r.openRunCache(ctx, store, func(msg string) { cfg.Log.Warn(msg) }, false); err != nil {
		return usageError(fmt.Errorf("nothing sent: %w", err))
	}
	if cfg.Cache != nil {
		defer cfg.Cache.Close()
	}
	warner := &dayWarner{gate: cfg.Gate, pct: int64(r.WarnAt), log: cfg.Log}
	cfg.Settled = warner.check
	if err := r.batchConfig(&cfg, true); err != nil {
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
		show = isTerminal(stderr) && r.seams.getenv("NO_COLOR") == ""
	}
	if !show {
		return pipeline.Run(ctx, stdin, stdout, cfg)
	}
	// out is stdout, kept off the progress line when they share a terminal.
	out := &msgWriter{w: stdout}
	var progress *progressBar
	start := func() {
		progress = showProgress(stderr, cfg.Stats, 200*time.Millisecond)
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
		fmt.Fprintf(stderr, "gptbatch: %s\n", summary(s, time.Since(r.started)))
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
		return fmt.Errorf("--warn-at is a percentage from 0 to 100 (0: warn only when a day's limit is reached), not %d", r.WarnAt)
	case r.Retries > 1000:
		return fmt.Errorf("--retries %d: more than 1000", r.Retries)
	case r.SchemaRetries < 0 || r.SchemaRetries > 100:
		return fmt.Errorf("--schema-retries must be from 0 to 100, not %d", r.SchemaRetries)
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
