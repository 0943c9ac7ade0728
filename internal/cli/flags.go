package cli

import (
	"fmt"
	"io"
	"reflect"
	"runtime/debug"
	"strings"
	"time"

	"github.com/alecthomas/kong"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/cache"
)

// version is set at build time with
// -ldflags "-X github.com/gptbatch/gptbatch/internal/cli.version=v1.2.3";
// otherwise buildVersion asks the build.
var version = "dev"

// cli is the command line: the batch flags are global, so that --help
// lists them all; the main job is the default command.
type cli struct {
	runCmd
	Run      struct{}         `cmd:"" default:"1" hidden:"" help:"Send the batch on stdin (the default)."`
	Usage    usageCmd         `cmd:"" help:"Report what has been spent, from the ledger beside the usage file."`
	Limits   limitsCmd        `cmd:"" help:"Show, set (limits set --daily-cost 5) or clear the limits stored with the shared budget, which every run obeys."`
	Batches  batchesCmd       `cmd:"" help:"List, cancel or recover the Batch API batches recorded beside the usage file (--via batch)."`
	CacheCmd cacheCmd         `cmd:"" name:"cache" help:"Show the response cache's entries, size, hits and dollars saved; clear it (cache clear) or remove old answers (cache prune --older-than 30d)."`
	Prices   pricesCmd        `cmd:"" help:"List the prices runs use, or store a price file with the shared budget (prices load FILE) for every run on every host, or clear it."`
	Version  kong.VersionFlag `help:"Print the version and exit."`
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

  # A team budget: set once, every job sharing the usage file obeys it:
  gptbatch limits set --daily-cost 5 && gptbatch limits

  # Estimate first, send nothing, no key needed:
  gptbatch --dry-run < prompts.jsonl | jq -s 'map(.est_cost_usd) | add'

Prices: the table of %s, under any stored with the budget (gptbatch prices)
and --prices; a model none of them lists has cost_usd null.

Exit status: 0 all lines succeeded, 1 some failed (each still has its result),
2 bad usage or configuration, 3 refused or stopped by a limit, 130 interrupted,
141 stdout closed (| head).

The manual: %s
`

// docsURL is where --help sends its reader: the manual, docs/ in the
// source.
const docsURL = "https://github.com/gptbatch/gptbatch/tree/main/docs"

// runCmd is the main job.
type runCmd struct {
	Model            string        `short:"m" env:"OPENAI_MODEL" placeholder:"NAME" help:"Model for lines that name none (else ./gpt_model_type.txt, else gpt-4o-mini)."`
	APIKeyFile       string        `name:"api-key-file" type:"path" placeholder:"FILE" help:"File holding the API key (else $OPENAI_API_KEY, ./api_key.txt, ./.openai_key, ./.env)."`
	BaseURL          string        `name:"base-url" env:"OPENAI_BASE_URL" default:"https://api.openai.com/v1" placeholder:"URL" help:"API endpoint; any OpenAI-compatible server."`
	UsageFile        string        `name:"usage-file" env:"GPTBATCH_USAGE_FILE" type:"path" placeholder:"FILE" help:"Usage file shared by every invocation (default $XDG_STATE_HOME/gptbatch/usage.md)."`
	Store            string        `name:"store" env:"GPTBATCH_STORE" placeholder:"URL" help:"Keep the shared budget in Redis (redis://[:password@]host:port/db or rediss://) instead of the usage file, to share it across hosts."`
	StoreName        string        `name:"store-name" env:"GPTBATCH_STORE_NAME" default:"default" placeholder:"NAME" help:"The budget in --store: budgets of other names share the Redis, not the limits."`
	Parallel         int           `short:"p" default:"16" help:"Requests in flight."`
	RPM              int64         `name:"rpm" default:"500" help:"Requests per minute, shared through the usage file (0 = no limit)."`
	TPM              int64         `name:"tpm" default:"500000" help:"Tokens per minute, shared (0 = no limit)."`
	TPD              int64         `name:"tpd" default:"5000000" help:"Tokens per day, shared; resets at local midnight (0 = no limit)."`
	BatchTokens      int64         `name:"batch-tokens" default:"300000" help:"Refuse a batch with more input tokens, before sending anything (0 = off, and stream)."`
	MaxCost          string        `name:"max-cost" default:"0" placeholder:"USD" help:"Refuse a batch whose estimated cost is higher, before sending anything (0 = off)."`
	DailyCost        string        `name:"daily-cost" default:"0" placeholder:"USD" help:"Dollars per day, shared (0 = off)."`
	OnLimit          string        `name:"on-limit" enum:"wait,fail" default:"wait" help:"When a limit is reached: wait for room, or stop sending and exit 3 (wait|fail)."`
	Retries          int           `default:"5" help:"Retries for 429s, 5xx, timeouts and dropped connections."`
	Timeout          time.Duration `default:"5m" help:"Time limit for one request."`
	MaxTokens        int64         `name:"max-tokens" placeholder:"N" help:"Output cap for lines that give none (default 256; 4096 for o-series and gpt-5)."`
	System           string        `placeholder:"TEXT" help:"System prompt for lines that give none (responses: their instructions)."`
	Endpoint         string        `env:"GPTBATCH_ENDPOINT" enum:"chat,responses,embeddings" default:"chat" help:"API for plain lines: chat (/v1/chat/completions), responses (/v1/responses) or embeddings (/v1/embeddings); a Batch API line goes to its own url."`
	Pack             int           `placeholder:"N" help:"Embeddings: send up to N single-input lines in one request (up to 2048), each still its own result."`
	PriceFile        string        `name:"prices" env:"GPTBATCH_PRICES" type:"path" placeholder:"FILE" help:"Prices in LiteLLM's model_prices_and_context_window.json format, over the built-in table and any stored with the budget (else $XDG_CONFIG_HOME/gptbatch/prices.json, under the stored ones, when it exists)."`
	ServiceTier      string        `name:"service-tier" placeholder:"TIER" help:"service_tier for chat and responses lines that give none (flex: half price, slower, may be refused when busy)."`
	Schema           string        `placeholder:"FILE|JSON|SPEC" help:"Ask chat and responses lines for JSON of this shape, check every answer and put its value in parsed: a JSON Schema file, inline JSON, or llm's concise form ('name, age int, bio: one sentence')."`
	SchemaRetries    int           `name:"schema-retries" default:"2" placeholder:"N" help:"Ask an answer that does not fit --schema again, up to N times (0 = never); each try is paid for."`
	DryRun           bool          `name:"dry-run" help:"Estimate tokens and cost per line; send nothing, need no key."`
	Cache            cacheSpec     `env:"GPTBATCH_CACHE" negatable:"" help:"Answer requests sent before from the response cache, and keep new answers there: beside the budget ($XDG_CACHE_HOME/gptbatch/cache.db, or the Redis of --store), or --cache=PATH; off by default."`
	CacheTTL         span          `name:"cache-ttl" default:"${cache_ttl}" placeholder:"AGE" help:"Serve cached answers up to this old: 30d, 2w, 12h (0 = forever)."`
	Resume           string        `type:"path" placeholder:"FILE" help:"Skip lines whose id has a successful result in FILE."`
	Unordered        bool          `help:"Write results as they finish, not in input order."`
	Via              string        `enum:"sync,batch" default:"sync" env:"GPTBATCH_VIA" help:"sync: a request a line; batch: OpenAI's Batch API, half price, answers within 24 h (sync|batch)."`
	BatchLines       int           `name:"batch-lines" default:"50000" placeholder:"N" help:"--via batch: most lines a batch file (the API takes 50000)."`
	BatchQueueTokens int64         `name:"batch-queue-tokens" default:"0" placeholder:"N" help:"--via batch: most input tokens of one model enqueued at once, and so in one file: your organisation's enqueued-token limit (0 = none)."`
	ResubmitUnknown  bool          `name:"resubmit-unknown" help:"--via batch --resume: submit again the lines of a journalled batch the API does not know (made with another key or base URL) instead of stopping; it may still run and bill where it was made."`
	Format           string        `enum:"jsonl,text,csv" default:"jsonl" help:"Input format (jsonl|text|csv)."`
	Progress         string        `enum:"auto,always,never" default:"auto" help:"Progress on stderr: auto (when stderr is a terminal and NO_COLOR is unset), always or never."`
	Quiet            bool          `short:"q" help:"No summary, only errors."`
	Verbose          bool          `short:"v" help:"Log retries, waits and limit changes to stderr."`

	WarnAt        int  `name:"warn-at" default:"80" placeholder:"PERCENT" help:"Warn once when today's tokens or dollars pass this share of their limit, and when they reach it (0 = only then)."`
	Confirm       bool `help:"Show the batch's estimate on the terminal and ask before sending anything (exit 3 unless answered yes)."`
	AllowInsecure bool `name:"allow-insecure" help:"Send the API key over plain http:// to a host other than this machine."`

	started time.Time
	msgs    *msgWriter // stderr for messages, above the progress line
	seams   Seams

	hostPrices, givenPrices *budget.Prices // the price files read: the host's configuration file's, --prices's
}

// usageCmd reports spending from the ledger.
type usageCmd struct {
	Today bool   `help:"Only today (local time)." xor:"period"`
	Month bool   `help:"Only this month." xor:"period"`
	Since string `placeholder:"YYYY-MM-DD" help:"From this day on." xor:"period"`
	By    string `enum:",model,day,via" default:"" placeholder:"model|day|via" help:"Group by model, by day, or by via (sync or batch)."`
	JSON  bool   `name:"json" help:"Write JSON instead of a table."`
	Limit string `placeholder:"USD" help:"Store a daily cost limit every run obeys (the same as limits set --daily-cost USD)."`
}

// BeforeReset keeps kong from reading the process's environment for the
// flags: envResolver reads it, from the Seams, after the defaults are set.
func (c *cli) BeforeReset(kctx *kong.Context) error {
	for _, f := range kctx.Flags() {
		f.Tag.Envs = nil // kong reads these in Reset; help shows f.Envs
	}
	return nil
}

// envResolver sets a flag the command line leaves unset from its
// environment variable (its env tag), looked up in s. A variable set to ""
// counts as unset, as a shell's VAR= or a cron line's means, rather than
// as an empty value.
func envResolver(s *Seams) kong.Resolver {
	return kong.ResolverFunc(func(_ *kong.Context, _ *kong.Path, f *kong.Flag) (any, error) {
		for _, env := range f.Envs {
			if v, _ := s.lookupEnv(env); v != "" {
				return v, nil
			}
		}
		return nil, nil
	})
}

// pathMapper is kong's "path" type with relative paths in s's working
// directory.
func pathMapper(s *Seams) kong.MapperFunc {
	return func(ctx *kong.DecodeContext, target reflect.Value) error {
		var path string
		if err := ctx.Scan.PopValueInto("file", &path); err != nil {
			return err
		}
		// As kong's: "" leaves a flag with a default unset, "-" is stdin.
		if ctx.Value.HasDefault && path == "" {
			return nil
		}
		if path != "-" {
			if !strings.HasPrefix(path, "~/") {
				path = s.path(path)
			}
			path = kong.ExpandPath(path)
		}
		target.SetString(path)
		return nil
	}
}

// buildVersion is the version set at build time, else what the build
// recorded: the module's version for `go install ...@v1.2.3`, else the
// commit it was built from, else "dev".
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	return versionOf(version, bi, ok)
}

func versionOf(set string, bi *debug.BuildInfo, ok bool) string {
	if set != "dev" || !ok {
		return set
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value[:min(12, len(s.Value))]
		case "vcs.modified":
			if s.Value == "true" {
				modified = ", modified"
			}
		}
	}
	if rev != "" {
		return fmt.Sprintf("dev (%s%s)", rev, modified)
	}
	return set
}

// parser is the command line's parser with the cli it parses into, kept
// in parsers between Runs. It is used by one Run at a time.
type parser struct {
	c      cli
	k      *kong.Kong
	exited int // the status --help or --version asked for; -1: none
}

// parsers are parsers built before, for the Runs to come: kong builds its
// model by reading every field's tags (a few milliseconds, longer than a
// parse), and a process running many Runs (tests, a program calling Run)
// would otherwise build it for each. Not a sync.Pool, which lets every
// garbage collection take them. The buffer is the most kept: Runs at once
// beyond it build their own.
var parsers = make(chan *parser, 16)

// takeParser is a parser from parsers, or a new one.
func takeParser() (*parser, error) {
	select {
	case p := <-parsers:
		return p, nil
	default:
		return buildParser()
	}
}

// buildParser is a new parser.
func buildParser() (*parser, error) {
	p := &parser{}
	k, err := newParser(&p.c, nil, nil, func(code int) { p.exited = code })
	if err != nil {
		return nil, err
	}
	p.k = k
	return p, nil
}

// parse parses args into p.c, writing help to stdout and errors to
// stderr. The model is first put back as kong.New made it: kong marks in
// it what a parse met (a flag set, a branch taken, a flag negated), and
// its checks (--today and --month together, say) read those marks.
func (p *parser) parse(args []string, stdout, stderr io.Writer) (*kong.Context, error) {
	p.k.Stdout, p.k.Stderr = stdout, stderr
	p.exited = -1
	_ = kong.Visit(p.k.Model.Node, func(n kong.Visitable, next kong.Next) error {
		switch n := n.(type) {
		case *kong.Node:
			n.Active = false
		case *kong.Flag:
			n.Negated = false
			n.Tag.Envs = n.Envs // as kong.New leaves them: see BeforeReset
		case *kong.Value:
			n.Active, n.Set = false, false
		}
		return next(nil)
	})
	return p.k.Parse(args)
}

// release returns p to parsers, holding nothing of the Run that used it.
func (p *parser) release() {
	p.c = cli{}
	p.k.Stdout, p.k.Stderr = nil, nil
	select {
	case parsers <- p:
	default:
	}
}

// newParser is the command line parser for c, writing help to stdout and
// errors to stderr, calling exit instead of ending the process.
func newParser(c *cli, stdout, stderr io.Writer, exit func(int)) (*kong.Kong, error) {
	return kong.New(c,
		kong.Name("gptbatch"),
		kong.Description("Send a batch of prompts through the OpenAI API (chat completions, responses or embeddings) within shared rate and budget limits."),
		kong.Writers(stdout, stderr),
		kong.Exit(exit),
		kong.Resolvers(envResolver(&c.seams)),
		kong.NamedMapper("path", pathMapper(&c.seams)),
		kong.Vars{"version": buildVersion(), "cache_ttl": span(cache.DefaultTTL).String()},
		kong.UsageOnError(),
		kong.Help(func(o kong.HelpOptions, ctx *kong.Context) error {
			for _, f := range ctx.Flags() {
				f.Tag.Envs = f.Envs // hidden from kong by BeforeReset, shown in help
			}
			if err := kong.DefaultHelpPrinter(o, ctx); err != nil {
				return err
			}
			_, err := fmt.Fprintf(ctx.Stdout, examples, budget.PriceTableDate, docsURL)
			return err
		}),
	)
}
