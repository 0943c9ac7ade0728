// Command gptbatch pushes a batch of prompts through the OpenAI chat API (or
// any compatible endpoint) within shared rate and budget limits: JSONL
// prompts on stdin, one JSONL result per line on stdout, in input order.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
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

// cli is the command line: the batch flags are global, so that --help
// lists them all; the main job is the default command.
type cli struct {
	runCmd
	Run     struct{}         `cmd:"" default:"1" hidden:"" help:"Send the batch on stdin (the default)."`
	Usage   usageCmd         `cmd:"" help:"Report what has been spent, from the ledger beside the usage file."`
	Version kong.VersionFlag `help:"Print the version and exit."`
}

// examples close --help.
const examples = `
Examples:
  # Label a file, keep only the answers, with jq:
  jq -c '{id, prompt: ("Sentiment of: " + .text)}' reviews.jsonl | gptbatch -m gpt-4o-mini | jq -r '[.id, .content] | @tsv'

  # Several batches at once, sharing one budget (same usage file), with xargs:
  ls batches/*.jsonl | xargs -P 4 -I{} sh -c 'gptbatch --quiet < {} > {}.out'

  # Nightly from cron, never more than $5 a day across every run:
  0 2 * * * cd /data && gptbatch --daily-cost 5 --quiet < nightly.jsonl >> results.jsonl 2>> gptbatch.log

  # Estimate first, send nothing, no key needed:
  gptbatch --dry-run < prompts.jsonl | jq -s 'map(.est_cost_usd) | add'

Exit status: 0 all lines succeeded, 1 some failed (each still has its result),
2 bad usage or configuration, 3 refused or stopped by a limit, 130 interrupted.
`

// runCmd is the main job.
type runCmd struct {
	Model      string        `short:"m" env:"OPENAI_MODEL" placeholder:"NAME" help:"Model for lines that name none (else ./gpt_model_type.txt, else gpt-4o-mini)."`
	APIKeyFile string        `name:"api-key-file" type:"path" placeholder:"FILE" help:"File holding the API key (else $OPENAI_API_KEY, ./api_key.txt, ./.openai_key, ./.env)."`
	BaseURL    string        `name:"base-url" env:"OPENAI_BASE_URL" default:"https://api.openai.com/v1" placeholder:"URL" help:"API endpoint; any OpenAI-compatible server."`
	UsageFile  string        `name:"usage-file" env:"GPTBATCH_USAGE_FILE" type:"path" placeholder:"FILE" help:"Usage file shared by every invocation (default $XDG_STATE_HOME/gptbatch/usage.md)."`
	Parallel   int           `short:"p" default:"16" help:"Requests in flight."`
	RPM        int64         `name:"rpm" default:"500" help:"Requests per minute, shared through the usage file (0 = no limit)."`
	TPM        int64         `name:"tpm" default:"500000" help:"Tokens per minute, shared (0 = no limit)."`
	TPD        int64         `name:"tpd" default:"5000000" help:"Tokens per day, shared; resets at local midnight (0 = no limit)."`
	BatchToks  int64         `name:"batch-tokens" default:"300000" help:"Refuse a batch with more input tokens, before sending anything (0 = off, and stream)."`
	MaxCost    string        `name:"max-cost" default:"0" placeholder:"USD" help:"Refuse a batch whose estimated cost is higher, before sending anything (0 = off)."`
	DailyCost  string        `name:"daily-cost" default:"0" placeholder:"USD" help:"Dollars per day, shared (0 = off)."`
	OnLimit    string        `name:"on-limit" enum:"wait,fail" default:"wait" help:"When a limit is reached: wait for room, or stop sending and exit 3 (wait|fail)."`
	Retries    int           `default:"5" help:"Retries for 429s, 5xx, timeouts and dropped connections."`
	Timeout    time.Duration `default:"5m" help:"Time limit for one request."`
	MaxTokens  int64         `name:"max-tokens" placeholder:"N" help:"Output cap for lines that give none (default 256; 4096 for o-series and gpt-5)."`
	System     string        `placeholder:"TEXT" help:"System prompt for lines that give none."`
	DryRun     bool          `name:"dry-run" help:"Estimate tokens and cost per line; send nothing, need no key."`
	Resume     string        `type:"path" placeholder:"FILE" help:"Skip lines whose id has a successful result in FILE."`
	Unordered  bool          `help:"Write results as they finish, not in input order."`
	Format     string        `enum:"jsonl,text,csv" default:"jsonl" help:"Input format (jsonl|text|csv)."`
	Progress   string        `enum:"auto,always,never" default:"auto" help:"Progress on stderr: auto (when stderr is a terminal and NO_COLOR is unset), always or never."`
	Quiet      bool          `short:"q" help:"No summary, only errors."`
	Verbose    bool          `short:"v" help:"Log retries, waits and limit changes to stderr."`

	started time.Time
}

// usageCmd reports spending from the ledger.
type usageCmd struct {
	Today bool   `help:"Only today (local time)." xor:"period"`
	Month bool   `help:"Only this month." xor:"period"`
	Since string `placeholder:"YYYY-MM-DD" help:"From this day on." xor:"period"`
	By    string `enum:",model,day" default:"" placeholder:"model|day" help:"Group by model or by day."`
	JSON  bool   `name:"json" help:"Write JSON instead of a table."`
}

// exitError is a failure of run that calls for a particular exit status.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

// run is gptbatch with its arguments and streams: main without the process.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var c cli
	exited := -1
	parser, err := kong.New(&c,
		kong.Name("gptbatch"),
		kong.Description("Send a batch of prompts through the OpenAI chat API within shared rate and budget limits."),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { exited = code }),
		kong.Vars{"version": version},
		kong.UsageOnError(),
		kong.Help(func(o kong.HelpOptions, ctx *kong.Context) error {
			if err := kong.DefaultHelpPrinter(o, ctx); err != nil {
				return err
			}
			_, err := fmt.Fprint(ctx.Stdout, examples)
			return err
		}),
	)
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
	var ee *exitError
	var pe *pipeline.Error
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		if ee.err != nil {
			fmt.Fprintf(stderr, "gptbatch: %v\n", ee.err)
		}
		return ee.code
	case errors.As(err, &pe):
		fmt.Fprintf(stderr, "gptbatch: %v\n", pe)
		return pe.Code
	}
	fmt.Fprintf(stderr, "gptbatch: %v\n", err)
	return exitFailed
}

func (r *runCmd) run(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) error {
	usage := func(err error) error { return &exitError{code: exitUsage, err: err} }
	cfg := pipeline.Config{
		Model:     r.Model,
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
		return usage(fmt.Errorf("--parallel must be from 1 to 4096, not %d", r.Parallel))
	}
	if r.RPM < 0 || r.TPM < 0 || r.TPD < 0 || r.BatchToks < 0 || r.Retries < 0 || r.MaxTokens < 0 {
		return usage(errors.New("limits, --retries and --max-tokens cannot be negative"))
	}
	var err error
	if cfg.MaxCost, err = budget.ParseCost(r.MaxCost); err != nil {
		return usage(fmt.Errorf("--max-cost: %w", err))
	}
	dailyCost, err := budget.ParseCost(r.DailyCost)
	if err != nil {
		return usage(fmt.Errorf("--daily-cost: %w", err))
	}
	cfg.BatchTokens = r.BatchToks
	if cfg.Model == "" {
		cfg.Model = firstLine("gpt_model_type.txt")
	}
	if cfg.Model == "" {
		cfg.Model = "gpt-4o-mini"
	}
	limits := budget.Limits{RPM: r.RPM, TPM: r.TPM, TPD: r.TPD, DailyCost: dailyCost}
	level := slog.LevelWarn
	if r.Verbose {
		level = slog.LevelDebug
	}
	cfg.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	if r.Resume != "" {
		f, err := os.Open(r.Resume)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return usage(fmt.Errorf("--resume: %w", err))
		}
		if err == nil {
			done, _, err := jsonl.Done(f)
			f.Close()
			if err != nil {
				return usage(fmt.Errorf("--resume %s: %w", r.Resume, err))
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
		return usage(err)
	}
	store, err := r.openStore()
	if err != nil {
		return usage(err)
	}
	cfg.Gate = budget.NewGate(store, limits)
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

// usagePath is --usage-file, else the default.
func (r *runCmd) usagePath() (string, error) {
	if r.UsageFile != "" {
		return r.UsageFile, nil
	}
	return defaultUsageFile()
}

// openStore opens the usage file.
func (r *runCmd) openStore() (*budget.FileStore, error) {
	path, err := r.usagePath()
	if err != nil {
		return nil, err
	}
	return budget.OpenFile(path)
}

// usedToday is the usage file's state, if it has one that parses.
func (r *runCmd) usedToday() budget.State {
	path, _ := r.usagePath()
	b, err := os.ReadFile(path)
	if err != nil {
		return budget.State{}
	}
	st, _ := budget.ParseState(b)
	return st
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

// apiKey finds the API key: --api-key-file, $OPENAI_API_KEY, then
// api_key.txt, .openai_key and .env in the working directory.
func apiKey(file string) (string, error) {
	if file != "" {
		k := firstLine(file)
		if k == "" {
			return "", fmt.Errorf("--api-key-file %s: no key in it", file)
		}
		return k, nil
	}
	if k := strings.TrimSpace(os.Getenv("OPENAI_API_KEY")); k != "" {
		return k, nil
	}
	for _, f := range []string{"api_key.txt", ".openai_key"} {
		if k := firstLine(f); k != "" {
			return k, nil
		}
	}
	if k := dotenv(".env", "OPENAI_API_KEY"); k != "" {
		return k, nil
	}
	return "", errors.New("no API key: set OPENAI_API_KEY, or put the key in ./api_key.txt, ./.openai_key or ./.env (OPENAI_API_KEY=...), or pass --api-key-file; --dry-run needs none")
}

// firstLine is the first non-blank line of a file, trimmed; "" if none.
func firstLine(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			return l
		}
	}
	return ""
}

// dotenv reads key from a .env file's KEY=value lines.
func dotenv(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "export "))
		k, v, ok := strings.Cut(l, "=")
		if ok && strings.TrimSpace(k) == key {
			return strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	return ""
}

// defaultUsageFile is $XDG_STATE_HOME/gptbatch/usage.md, else
// ~/.local/state/gptbatch/usage.md.
func defaultUsageFile() (string, error) {
	dir := os.Getenv("XDG_STATE_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no usage file: set --usage-file or GPTBATCH_USAGE_FILE: %w", err)
		}
		dir = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(dir, "gptbatch", "usage.md"), nil
}

func (u *usageCmd) run(ctx context.Context, r *runCmd, stdout io.Writer) error {
	usage := func(err error) error { return &exitError{code: exitUsage, err: err} }
	now := time.Now()
	from, until, err := budget.Period(now, u.Today, u.Month, u.Since)
	if err != nil {
		return usage(err)
	}
	store, err := r.openStore()
	if err != nil {
		return usage(err)
	}
	st, err := store.Load(ctx)
	if err != nil {
		return usage(err)
	}
	var ledger io.Reader = strings.NewReader("")
	if f, err := os.Open(store.LedgerPath()); err == nil {
		defer f.Close()
		ledger = f
	} else if !errors.Is(err, os.ErrNotExist) {
		return usage(err)
	}
	rep, err := budget.BuildReport(ledger, budget.ReportOptions{Since: from, Until: until, By: u.By}, now.Location())
	if err != nil {
		return usage(fmt.Errorf("ledger %s: %w", store.LedgerPath(), err))
	}
	if u.JSON {
		return rep.WriteJSON(stdout, &st)
	}
	return rep.WriteTable(stdout, &st)
}
