package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/openaitest"
)

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// lineWriter is a writer that closes reached once n lines were written.
type lineWriter struct {
	mu      sync.Mutex
	b       bytes.Buffer
	n       int
	reached chan struct{}
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	if w.reached != nil && bytes.Count(w.b.Bytes(), []byte("\n")) >= w.n {
		close(w.reached)
		w.reached = nil
	}
	return len(p), nil
}

func (w *lineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func prompts(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteString(`{"id":"p` + strconv.Itoa(i) + `","prompt":"say ` + strconv.Itoa(i) + `"}` + "\n")
	}
	return b.String()
}

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const testKey = "sk-test-0123456789abcdefghijklmnopqrstuvwxyz"

// gb runs gptbatch as a user would, with stdin and arguments, in a fresh
// working directory with the key in the environment. It has an
// environment and a working directory of its own (its Seams), not the
// process's, so that tests run in parallel.
type gb struct {
	t     *testing.T
	dir   string
	url   string
	args  []string
	env   map[string]string // the environment gptbatch sees
	seams Seams
}

// commandEnv is every environment variable gptbatch reads.
var commandEnv = []string{
	"OPENAI_API_KEY", "OPENAI_MODEL", "OPENAI_BASE_URL",
	"GPTBATCH_USAGE_FILE", "GPTBATCH_STORE", "GPTBATCH_STORE_NAME", "GPTBATCH_ENDPOINT", "GPTBATCH_PRICES",
	"GPTBATCH_CACHE", "GPTBATCH_VIA", "GPTBATCH_DAY_TZ",
	"HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "NO_COLOR",
}

func newGB(t *testing.T, url string) *gb {
	t.Helper()
	dir := t.TempDir()
	g := &gb{t: t, dir: dir, url: url, args: []string{"--base-url", url, "--usage-file", filepath.Join(dir, "usage.md"), "--quiet"}, env: map[string]string{}}
	for _, k := range commandEnv {
		g.env[k] = ""
	}
	g.env["OPENAI_API_KEY"] = testKey
	g.env["HOME"] = dir
	g.env["XDG_CONFIG_HOME"] = filepath.Join(dir, "config") // no price file of the machine's
	g.seams = Seams{Env: g.lookupEnv, Dir: dir}
	return g
}

// setenv sets an environment variable for the runs to come.
func (g *gb) setenv(key, value string) { g.env[key] = value }

func (g *gb) lookupEnv(key string) (string, bool) {
	v, ok := g.env[key]
	return v, ok
}

// environ is g's environment as a process's, KEY=value.
func (g *gb) environ() []string {
	var env []string
	for k, v := range g.env {
		env = append(env, k+"="+v)
	}
	return env
}

// run is Run as main runs it, but for signals.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return Run(ctx, args, stdin, stdout, stderr, Seams{})
}

// runStreams is run in g's environment and working directory.
func (g *gb) runStreams(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return Run(ctx, args, stdin, stdout, stderr, g.seams)
}

// ttySeams is g's seams with open as the terminal.
func (g *gb) ttySeams(open func() (io.ReadWriteCloser, error)) Seams {
	s := g.seams
	s.TTY = open
	return s
}

// loud is g without --quiet: warnings and the summary on stderr.
func (g *gb) loud() *gb {
	g.args = slices.DeleteFunc(g.args, func(a string) bool { return a == "--quiet" })
	return g
}

// run runs gptbatch and returns its stdout, stderr and exit status.
func (g *gb) run(ctx context.Context, stdin string, args ...string) (string, string, int) {
	g.t.Helper()
	var out, errb bytes.Buffer
	code := Run(ctx, append(append([]string{}, g.args...), args...), strings.NewReader(stdin), &out, &errb, g.seams)
	return out.String(), errb.String(), code
}

// runUntil runs gptbatch and cancels ctx (a signal) once stderr contains
// marker.
func (g *gb) runUntil(ctx context.Context, cancel context.CancelFunc, stdin, marker string, args ...string) (string, string, int) {
	g.t.Helper()
	var out bytes.Buffer
	errb := &watchWriter{marker: marker, seen: cancel}
	code := Run(ctx, append(append([]string{}, g.args...), args...), strings.NewReader(stdin), &out, errb, g.seams)
	return out.String(), errb.String(), code
}

// watchWriter calls seen the first time marker is written to it.
type watchWriter struct {
	mu     sync.Mutex
	b      bytes.Buffer
	marker string
	seen   func()
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	if w.seen != nil && strings.Contains(w.b.String(), w.marker) {
		w.seen()
		w.seen = nil
	}
	return len(p), nil
}

func (w *watchWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// result is the part of a result line the tests read.
type result struct {
	ID           string          `json:"id"`
	Line         int             `json:"line"`
	Model        string          `json:"model"`
	Content      *string         `json:"content"`
	FinishReason string          `json:"finish_reason"`
	Usage        *usage          `json:"usage"`
	CostUSD      json.RawMessage `json:"cost_usd"`
	Attempts     int             `json:"attempts"`
	BatchID      string          `json:"batch_id"`
	Metadata     json.RawMessage `json:"metadata"`
	Error        *struct {
		Type    string `json:"type"`
		Message string `json:"message"`
		Status  int    `json:"status"`
	} `json:"error"`
}

type usage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
	CachedTokens     int64 `json:"cached_tokens"`
}

// parseLines reads out, gptbatch's stdout, as a JSON value of type T a
// line; a line that is not one fails the test.
func parseLines[T any](t *testing.T, out string) []T {
	t.Helper()
	if out == "" {
		return nil
	}
	var rs []T
	for i, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var r T
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("output line %d is not a result: %v: %.200s", i+1, err, l)
		}
		rs = append(rs, r)
	}
	return rs
}

// parseResults reads out as results.
func parseResults(t *testing.T, out string) []result {
	t.Helper()
	return parseLines[result](t, out)
}

// mustGetwdAtStart is the package directory: tests chdir away from it.
var mustGetwdAtStart = func() string {
	wd, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	return wd
}()

// command is gptbatch as a process of its own, working in dir with its
// usage file there, sending to url with the test key.
func command(t *testing.T, dir, url string, stdin string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := gptbatchProcess(t, append([]string{"--base-url", url, "--usage-file", filepath.Join(dir, "usage.md"), "--quiet"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(cmd.Env, "OPENAI_API_KEY="+testKey, "HOME="+dir, "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
	cmd.Stdin = strings.NewReader(stdin)
	return cmd
}

func readState(t *testing.T, dir string) budget.State {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "usage.md"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := budget.ParseState(b)
	if err != nil {
		t.Fatalf("usage.md does not parse: %v\n%s", err, b)
	}
	return s
}

func ledgerLines(t *testing.T, dir string) int {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "usage.ledger.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	if err := budget.ReadLedger(f, func(budget.LedgerEntry) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// parseResultsLoose reads results, skipping a line torn by a kill.
func parseResultsLoose(out string) []result {
	var rs []result
	for _, l := range strings.Split(out, "\n") {
		var r result
		if json.Unmarshal([]byte(l), &r) == nil && r.ID != "" {
			rs = append(rs, r)
		}
	}
	return rs
}

// hangPrompts is n lines whose requests the fake holds until its Hang
// channel is closed; the first fast of them are answered at once.
func hangPrompts(n, fast int) string {
	var b strings.Builder
	for i := range n {
		p := "say " + strconv.Itoa(i)
		if i >= fast {
			p = "slow __hang__ " + strconv.Itoa(i)
		}
		b.WriteString(`{"id":"p` + strconv.Itoa(i) + `","prompt":"` + p + `"}` + "\n")
	}
	return b.String()
}

// ledger is every entry of the ledger in dir.
func ledger(t *testing.T, dir string) []budget.LedgerEntry {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "usage.ledger.jsonl"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var es []budget.LedgerEntry
	if err := budget.ReadLedger(f, func(e budget.LedgerEntry) error { es = append(es, e); return nil }); err != nil {
		t.Fatal(err)
	}
	return es
}

// ledgerByLine is the entries of the ledger in dir by the id of their line.
func ledgerByLine(t *testing.T, dir string) map[string][]budget.LedgerEntry {
	t.Helper()
	byLine := map[string][]budget.LedgerEntry{}
	for _, e := range ledger(t, dir) {
		byLine[e.ID] = append(byLine[e.ID], e)
	}
	return byLine
}

// ledgerTokens adds up the tokens of the ledger's entries.
func ledgerTokens(es []budget.LedgerEntry) int64 {
	var n int64
	for _, e := range es {
		n += e.PromptTokens + e.CompletionTokens
	}
	return n
}

// exitCode is the exit status of a finished command.
func exitCode(cmd *exec.Cmd) int { return cmd.ProcessState.ExitCode() }

// marked is a writer that closes seen the first time marker is written.
func marked(marker string) (*watchWriter, <-chan struct{}) {
	seen := make(chan struct{})
	return &watchWriter{marker: marker, seen: func() { close(seen) }}, seen
}

// waitMarked waits for seen, failing after a minute.
func waitMarked(t *testing.T, seen <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-seen:
	case <-time.After(time.Minute):
		t.Fatalf("no %s on stderr after a minute", what)
	}
}

// longPrompts is n prompts of about 200 tokens each, so that a few cost
// more than a small daily limit.
func longPrompts(n int) string {
	var b strings.Builder
	words := strings.Repeat("lorem ipsum ", 100)
	for i := range n {
		b.WriteString(`{"id":"p` + strconv.Itoa(i) + `","prompt":"` + words + strconv.Itoa(i) + `"}` + "\n")
	}
	return b.String()
}

func (g *gb) limits(t *testing.T) limitsJSON {
	t.Helper()
	out, stderr, code := g.run(context.Background(), "", "limits", "--json")
	if code != 0 {
		t.Fatalf("limits --json: exit status %d: %s", code, stderr)
	}
	var l limitsJSON
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("limits --json: %v\n%s", err, out)
	}
	return l
}

func cost(t *testing.T, raw json.RawMessage) budget.Cost {
	t.Helper()
	var c budget.Cost
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatalf("%s is not an amount of dollars: %v", raw, err)
	}
	return c
}

// ran is what a run of gptbatch wrote and its exit status.
type ran struct {
	out, stderr string
	code        int
}

// start runs g.run(ctx, stdin, args...) on a goroutine of its own; what
// the run wrote and its exit status arrive on the channel once it ends.
func (g *gb) start(ctx context.Context, stdin string, args ...string) <-chan ran {
	done := make(chan ran, 1)
	go func() {
		out, stderr, code := g.run(ctx, stdin, args...)
		done <- ran{out, stderr, code}
	}()
	return done
}

// finishBatchesFrom lets the k-th batch the API creates, and every one
// after it, run to its end as the API's batches do, until ctx ends: the
// batches a run (or --resume) makes that the test does not step through
// itself.
func finishBatchesFrom(ctx context.Context, srv *openaitest.Server, k int) {
	go func() {
		for ; srv.Wait(ctx, func() bool { return srv.BatchStats().Created >= k }) == nil; k++ {
			srv.FinishBatches()
		}
	}()
}

// resumeFinishing runs the command again with --resume prev, in, on a
// fresh step clock, while every batch from the k-th the fake makes runs to
// its end, as the API's do.
func resumeFinishing(ctx context.Context, g *gb, srv *openaitest.Server, k int, in string, args []string, prev string) (out, stderr string, code int) {
	finishBatchesFrom(ctx, srv, k)
	g.seams.Clock = newStepClock()
	return g.run(ctx, in, append(args, "--resume", prev)...)
}
