package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/internal/openaitest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const testKey = "sk-test-0123456789abcdefghijklmnopqrstuvwxyz"

// gb runs gptbatch as a user would, with stdin and arguments, in a fresh
// working directory with the key in the environment.
type gb struct {
	t    *testing.T
	dir  string
	url  string
	args []string
}

func newGB(t *testing.T, url string) *gb {
	t.Helper()
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv("OPENAI_API_KEY", testKey)
	for _, k := range []string{"OPENAI_MODEL", "OPENAI_BASE_URL", "GPTBATCH_USAGE_FILE", "XDG_STATE_HOME", "GPTBATCH_PRICES"} {
		t.Setenv(k, "")
	}
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config")) // no price file of the machine's
	return &gb{t: t, dir: dir, url: url, args: []string{"--base-url", url, "--usage-file", filepath.Join(dir, "usage.md"), "--quiet"}}
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
	code := run(ctx, append(append([]string{}, g.args...), args...), strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

// runUntil runs gptbatch and cancels ctx (a signal) once stderr contains
// marker.
func (g *gb) runUntil(ctx context.Context, cancel context.CancelFunc, stdin, marker string, args ...string) (string, string, int) {
	g.t.Helper()
	var out bytes.Buffer
	errb := &watchWriter{marker: marker, seen: cancel}
	code := run(ctx, append(append([]string{}, g.args...), args...), strings.NewReader(stdin), &out, errb)
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

func parseResults(t *testing.T, out string) []result {
	t.Helper()
	var rs []result
	for i, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if l == "" {
			continue
		}
		var r result
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("output line %d is not a result: %v: %s", i+1, err, l)
		}
		rs = append(rs, r)
	}
	return rs
}

// mixedBatch is n lines in the four input forms, with blank lines and the
// malformed lines at the given positions. It returns the input and, for
// each non-blank line, the id and user prompt expected.
func mixedBatch(n int, bad map[int]bool) (string, []string, []string) {
	var b strings.Builder
	var ids, prompts []string
	line := 0
	for i := 0; i < n; i++ {
		if i%17 == 5 {
			b.WriteString("\n")
			line++
		}
		line++
		p := fmt.Sprintf("prompt number %d: say something about %d", i, i*i)
		id := fmt.Sprintf("q%d", i)
		switch {
		case bad[i]:
			b.WriteString(`{"prompt": "unterminated` + "\n")
			id, p = fmt.Sprint(line), ""
		case i%4 == 0:
			fmt.Fprintf(&b, "%q\n", p)
			id = fmt.Sprint(line)
		case i%4 == 1:
			fmt.Fprintf(&b, `{"id":%q,"prompt":%q,"system":"be brief","temperature":0,"metadata":{"i":%d}}`+"\n", id, p, i)
		case i%4 == 2:
			fmt.Fprintf(&b, `{"id":%q,"messages":[{"role":"system","content":"sys"},{"role":"user","content":%q}],"seed":42,"metadata":{"i":%d}}`+"\n", id, p, i)
		default:
			fmt.Fprintf(&b, `{"custom_id":%q,"method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":%q}],"max_tokens":64,"response_format":{"type":"text"},"prompt_cache_key":"gb-1"}}`+"\n", id, p)
		}
		ids = append(ids, id)
		prompts = append(prompts, p)
	}
	return b.String(), ids, prompts
}

// TestMixedBatch is the filter end to end: 120 lines in every form, blank
// lines and three bad ones, sent 16 at a time to a server whose latency
// varies so that answers finish out of order.
func TestMixedBatch(t *testing.T) {
	srv := openaitest.New(openaitest.Config{Latency: 5 * time.Millisecond, Jitter: 40 * time.Millisecond, Seed: 1, Key: testKey})
	defer srv.Close()
	g := newGB(t, srv.URL())
	bad := map[int]bool{7: true, 50: true, 119: true}
	in, ids, prompts := mixedBatch(120, bad)

	out, stderr, code := g.run(context.Background(), in, "--parallel", "16")
	if code != 1 {
		t.Errorf("exit status = %d, want 1 (three bad lines); stderr: %s", code, stderr)
	}
	rs := parseResults(t, out)
	if len(rs) != 120 {
		t.Fatalf("got %d results, want 120", len(rs))
	}
	prevLine := 0
	for i, r := range rs {
		if r.Line <= prevLine {
			t.Errorf("result %d: line %d after line %d: not in input order", i, r.Line, prevLine)
		}
		prevLine = r.Line
		if r.ID != ids[i] {
			t.Errorf("result %d: id = %q, want %q", i, r.ID, ids[i])
		}
		if bad[i] {
			if r.Error == nil || r.Error.Type != "invalid_input" || !strings.Contains(r.Error.Message, fmt.Sprintf("line %d", r.Line)) {
				t.Errorf("result %d: error = %+v, want invalid_input naming line %d", i, r.Error, r.Line)
			}
			continue
		}
		if r.Error != nil {
			t.Errorf("result %d: error %+v", i, *r.Error)
			continue
		}
		if want := "answer: " + prompts[i]; r.Content == nil || !strings.HasPrefix(want, *r.Content) || len(*r.Content) < len("answer: prompt") {
			t.Errorf("result %d: content = %v, want (a prefix of) %q", i, r.Content, want)
		}
		if r.Usage == nil || r.Usage.PromptTokens == 0 || r.Usage.TotalTokens != r.Usage.PromptTokens+r.Usage.CompletionTokens {
			t.Errorf("result %d: usage = %+v", i, r.Usage)
		}
		if i%4 == 1 || i%4 == 2 {
			if want := fmt.Sprintf(`{"i":%d}`, i); string(r.Metadata) != want {
				t.Errorf("result %d: metadata = %s, want %s", i, r.Metadata, want)
			}
		}
		if r.Model != "gpt-4o-mini-2024-07-18" {
			t.Errorf("result %d: model = %q", i, r.Model)
		}
	}

	// What reached the server: temperature 0, system prompts, unknown fields.
	var sawTemp0, sawSystem, sawUnknown, sawFormat int
	for _, req := range srv.Requests() {
		var body map[string]json.RawMessage
		if err := json.Unmarshal(req.Body, &body); err != nil {
			t.Fatalf("server got a body that is not JSON: %s", req.Body)
		}
		if string(body["temperature"]) == "0" {
			sawTemp0++
		}
		if bytes.Contains(body["messages"], []byte(`{"role":"system","content":"be brief"}`)) {
			sawSystem++
		}
		if string(body["prompt_cache_key"]) == `"gb-1"` {
			sawUnknown++
		}
		if string(body["response_format"]) == `{"type":"text"}` {
			sawFormat++
		}
	}
	if sawTemp0 != 30 || sawSystem != 30 || sawUnknown != 28 || sawFormat != 28 {
		t.Errorf("server saw temperature 0 in %d, system in %d, unknown field in %d, response_format in %d requests; want 30, 30, 28, 28",
			sawTemp0, sawSystem, sawUnknown, sawFormat)
	}
	if st := srv.Stats(); st.MaxInFlight > 16 || st.MaxInFlight < 8 {
		t.Errorf("server saw at most %d requests in flight, want 8..16 with --parallel 16", st.MaxInFlight)
	}
}

// TestGolden runs the quick start's batch and compares with the golden file
// (latencies zeroed). go test -update rewrites it.
func TestGolden(t *testing.T) {
	srv := openaitest.New(openaitest.Config{Seed: 1})
	defer srv.Close()
	g := newGB(t, srv.URL())
	in, err := os.ReadFile(filepath.Join(mustGetwdAtStart, "testdata", "prompts.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	out, stderr, code := g.run(context.Background(), string(in))
	if code != 0 {
		t.Fatalf("exit status %d: %s", code, stderr)
	}
	// Latencies vary from run to run (and 0 is left out); everything else
	// is deterministic.
	norm := regexp.MustCompile(`,"latency_ms":\d+`).ReplaceAllString(out, "")
	golden := filepath.Join(mustGetwdAtStart, "testdata", "prompts.golden.jsonl")
	if *update {
		if err := os.WriteFile(golden, []byte(norm), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if norm != string(want) {
		t.Errorf("results differ from %s (go test -update rewrites it):\n got:\n%s\nwant:\n%s", golden, norm, want)
	}
}

// mustGetwdAtStart is the package directory: tests chdir away from it.
var mustGetwdAtStart = func() string {
	wd, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	return wd
}()
