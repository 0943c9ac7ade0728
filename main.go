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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal the run finishes what is in flight; the
		// default disposition is back, so a second signal stops at once.
		<-ctx.Done()
		stop()
		fmt.Fprintln(os.Stderr, "gptbatch: interrupted: finishing the requests in flight (interrupt again to stop at once)")
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// exitError is a failure of run that calls for a particular exit status;
// with a nil err there is nothing more to say than the status.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return ""
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// ExitCode is the exit status the failure calls for.
func (e *exitError) ExitCode() int { return e.code }

// usageError is bad usage or configuration: exit 2, nothing sent.
func usageError(err error) error { return &exitError{code: exitUsage, err: err} }

// run is gptbatch with its arguments and streams: main without the process.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
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
	switch kctx.Command() {
	case "usage":
		err = c.Usage.run(ctx, &c.runCmd, stdout)
	case "batches", "batches list":
		err = c.Batches.List.run(ctx, &c.runCmd, stdout)
	case "batches cancel <id>":
		err = c.Batches.Cancel.run(ctx, &c.runCmd, stdout)
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
		MaxTokens: r.MaxTokens,
		Input:     jsonl.Options{Format: jsonl.Format(r.Format), System: r.System},
		BaseURL:   r.BaseURL,
		Parallel:  r.Parallel,
		Retries:   r.Retries,
		Timeout:   r.Timeout,
		OnLimit:   pipeline.OnLimit(r.OnLimit),
		DryRun:    r.DryRun,
		Unordered: r.Unordered,
		Stats:     new(pipeline.Stats),
	}
	if r.Parallel < 1 || r.Parallel > 4096 {
		return usageError(fmt.Errorf("--parallel must be from 1 to 4096, not %d", r.Parallel))
	}
	if r.RPM < 0 || r.TPM < 0 || r.TPD < 0 || r.BatchTokens < 0 || r.Retries < 0 || r.MaxTokens < 0 {
		return usageError(errors.New("limits, --retries and --max-tokens cannot be negative"))
	}
	var err error
	if cfg.MaxCost, err = budget.ParseCost(r.MaxCost); err != nil {
		return usageError(fmt.Errorf("--max-cost: %w", err))
	}
	dailyCost, err := budget.ParseCost(r.DailyCost)
	if err != nil {
		return usageError(fmt.Errorf("--daily-cost: %w", err))
	}
	cfg.BatchTokens = r.BatchTokens
	cfg.Model = modelName(r.Model)
	limits := budget.Limits{RPM: r.RPM, TPM: r.TPM, TPD: r.TPD, DailyCost: dailyCost}
	level := slog.LevelWarn
	if r.Verbose {
		level = slog.LevelDebug
	}
	cfg.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

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

	if r.DryRun {
		// A dry run touches neither the network nor the usage file: it
		// only reads what today has used, to say which limits the batch
		// would hit.
		cfg.Gate = budget.NewGate(new(budget.MemStore), limits)
		if err := r.batchConfig(ctx, &cfg, nil); err != nil {
			return usageError(err)
		}
		err := r.pipe(ctx, stdin, stdout, stderr, cfg)
		if !r.Quiet {
			fmt.Fprintf(stderr, "gptbatch: %s\n", pipeline.DrySummary(cfg.Stats, cfg, r.usedToday(), time.Now()))
		}
		return err
	}
	if cfg.Key, err = apiKey(r.APIKeyFile); err != nil {
		return usageError(err)
	}
	store, err := r.openStore()
	if err != nil {
		return usageError(err)
	}
	cfg.Gate = budget.NewGate(store, limits)
	if err := r.batchConfig(ctx, &cfg, store); err != nil {
		return usageError(err)
	}
	return r.finish(r.pipe(ctx, stdin, stdout, stderr, cfg), cfg.Stats, stderr)
}

// pipe runs the pipeline with progress on stderr when asked for.
func (r *runCmd) pipe(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer, cfg pipeline.Config) error {
	r.started = time.Now()
	show := r.Progress == "always"
	if r.Progress == "auto" && !r.Quiet {
		f, ok := stderr.(*os.File)
		show = ok && term.IsTerminal(int(f.Fd())) && os.Getenv("NO_COLOR") == ""
	}
	if show {
		stop := pipeline.ShowProgress(stderr, cfg.Stats, 200*time.Millisecond)
		defer stop()
	}
	return pipeline.Run(ctx, stdin, stdout, cfg)
}

// finish prints the summary and turns the run's outcome into an error
// carrying the exit status.
func (r *runCmd) finish(err error, s *pipeline.Stats, stderr io.Writer) error {
	if !r.Quiet {
		fmt.Fprintf(stderr, "gptbatch: %s\n", pipeline.Summary(s, time.Since(r.started)))
	}
	if err != nil {
		return err
	}
	if s.Failed.Load() > 0 {
		return &exitError{code: exitFailed}
	}
	return nil
}
