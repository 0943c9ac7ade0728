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
		Abort:     abortOf(ctx),
	}
	if f, ok := stdin.(*os.File); ok {
		cfg.TerminalInput = term.IsTerminal(int(f.Fd()))
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
		err := r.pipe(ctx, stdin, stdout, stderr, cfg)
		if !r.Quiet {
			fmt.Fprintf(stderr, "gptbatch: %s\n", pipeline.DrySummary(cfg.Stats, cfg, r.usedToday(), time.Now()))
		}
		return err
	}
	if cfg.Key, err = apiKey(r.APIKeyFile); err != nil {
		return usageError(err)
	}
	zone, err := budget.DayZone(os.Getenv(budget.DayZoneEnv))
	if err != nil {
		return usageError(err)
	}
	store, err := r.openStore(lockNotice(stderr))
	if err != nil {
		return usageError(err)
	}
	cfg.Gate = budget.NewGate(store, limits)
	cfg.Gate.SetDayZone(zone)
	return r.finish(r.pipe(ctx, stdin, stdout, stderr, cfg), cfg.Stats, stderr)
}

// lockNotice has a wait for the usage file's lock said on stderr.
func lockNotice(stderr io.Writer) budget.FileOption {
	return budget.OnLockWait(func(msg string) { fmt.Fprintf(stderr, "gptbatch: %s\n", msg) })
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
