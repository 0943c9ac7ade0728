package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/internal/openaitest"
)

// TestSystemFlag: --system goes first in messages and Batch API lines
// that have no system or developer message, and is the instructions of a
// responses line that has none.
func TestSystemFlag(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	in := `{"id":"m","messages":[{"role":"user","content":"hi"}]}
{"id":"d","messages":[{"role":"developer","content":"own"},{"role":"user","content":"hi"}]}
{"custom_id":"b","method":"POST","url":"/v1/chat/completions","body":{"messages":[{"role":"user","content":"hi"}]}}
{"custom_id":"r","method":"POST","url":"/v1/responses","body":{"input":"hi"}}
{"custom_id":"ri","method":"POST","url":"/v1/responses","body":{"input":"hi","instructions":"own"}}
`
	if _, stderr, code := g.run(context.Background(), in, "--system", "SYS"); code != 0 {
		t.Fatalf("exit status %d: %s", code, stderr)
	}
	wants := []string{
		`"messages":[{"role":"system","content":"SYS"},{"role":"user","content":"hi"}]`,
		`"messages":[{"role":"developer","content":"own"},{"role":"user","content":"hi"}]`,
		`"messages":[{"role":"system","content":"SYS"},{"role":"user","content":"hi"}]`,
		`"instructions":"SYS"`,
		`"instructions":"own"`,
	}
	reqs := srv.Requests()
	if len(reqs) != len(wants) {
		t.Fatalf("%d requests, want %d", len(reqs), len(wants))
	}
	for _, want := range wants {
		found := 0
		for _, r := range reqs {
			if strings.Contains(string(r.Body), want) {
				found++
			}
		}
		if found == 0 {
			t.Errorf("no request has %s", want)
		}
	}
}

// TestResultsWrittenWhileWaiting: results already done reach stdout while
// the run waits for a limit: with --rpm 3 the three
// answers are written before the fourth request's 20 s wait ends, so that
// an interrupt then loses nothing.
func TestResultsWrittenWhileWaiting(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout := &lineWriter{n: 3, reached: make(chan struct{})}
	reached := stdout.reached
	go func() {
		select {
		case <-reached:
		case <-time.After(time.Minute):
		}
		cancel()
	}()
	var errb bytes.Buffer
	code := g.runStreams(ctx, append(g.args, "--rpm", "3", "--parallel", "1"), strings.NewReader(prompts(6)), stdout, &errb)
	if code != 130 {
		t.Errorf("exit status %d, want 130; stderr %s", code, errb.String())
	}
	if n := srv.Stats().Requests; n != 3 {
		t.Errorf("server got %d requests before the three results were written, want 3", n)
	}
	rs := parseResults(t, stdout.String())
	if len(rs) != 6 || rs[2].Error != nil || rs[3].Error == nil || rs[3].Error.Type != "interrupted" {
		t.Errorf("results = %+v, want 3 answers then 3 interrupted", rs)
	}
}

// TestUnusableInput: a CSV header without a prompt column and a
// directory on stdin are usage errors (exit 2) that send nothing; the CSV
// error lists the columns it found.
func TestUnusableInput(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	_, stderr, code := g.run(context.Background(), "text,lang\nhello,en\n", "--format", "csv")
	if code != 2 || !strings.Contains(stderr, `"prompt"`) || !strings.Contains(stderr, `"text" "lang"`) {
		t.Errorf("csv without prompt: exit status %d, stderr %q; want 2, naming the columns found", code, stderr)
	}
	dir, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	var out, errb bytes.Buffer
	code = g.runStreams(context.Background(), g.args, dir, &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), "stdin is a directory") {
		t.Errorf("stdin a directory: exit status %d, stderr %q; want 2", code, errb.String())
	}
	if n := srv.Stats().Requests; n != 0 {
		t.Errorf("server got %d requests, want none", n)
	}
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
	t.Parallel()
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
	t.Parallel()
	srv := openaitest.New(openaitest.Config{Seed: 1})
	defer srv.Close()
	g := newGB(t, srv.URL())
	in, err := os.ReadFile(filepath.Join(mustGetwdAtStart, "..", "..", "testdata", "prompts.jsonl"))
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
	golden := filepath.Join(mustGetwdAtStart, "..", "..", "testdata", "prompts.golden.jsonl")
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

// TestDryRun: 40 prompts with no key: nothing sent, 40 estimates and a cost.
func TestDryRun(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	g.setenv("OPENAI_API_KEY", "")
	g.args = []string{"--base-url", srv.URL(), "--usage-file", filepath.Join(g.dir, "usage.md")}
	out, stderr, code := g.run(context.Background(), prompts(40), "--dry-run")
	if code != 0 {
		t.Fatalf("exit status %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 40 {
		t.Fatalf("%d estimates, want 40", len(lines))
	}
	for i, l := range lines {
		var e struct {
			ID              string   `json:"id"`
			PromptTokens    int64    `json:"prompt_tokens"`
			MaxOutputTokens int64    `json:"max_output_tokens"`
			EstCostUSD      *float64 `json:"est_cost_usd"`
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil || e.PromptTokens == 0 || e.MaxOutputTokens != 256 || e.EstCostUSD == nil || *e.EstCostUSD <= 0 {
			t.Errorf("estimate %d = %s (%v)", i, l, err)
		}
	}
	if srv.Stats().Requests != 0 {
		t.Errorf("the dry run sent %d requests", srv.Stats().Requests)
	}
	if _, err := os.Stat(filepath.Join(g.dir, "usage.md")); err == nil {
		t.Error("the dry run wrote usage.md")
	}
	if !strings.Contains(stderr, "40 lines") || !strings.Contains(stderr, "estimated cost $") {
		t.Errorf("summary = %q, want lines and cost", stderr)
	}
}

// TestTextAndCSV: one result per prompt; CSV ids kept and other columns in
// metadata.
func TestTextAndCSV(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	out, stderr, code := g.run(context.Background(), "first prompt\n\nsecond, with a comma\r\n", "--format", "text")
	if code != 0 {
		t.Fatalf("text: exit status %d: %s", code, stderr)
	}
	rs := parseResults(t, out)
	if len(rs) != 2 || *rs[0].Content != "answer: first prompt" || *rs[1].Content != "answer: second, with a comma" || rs[1].ID != "3" {
		t.Errorf("text results = %+v", rs)
	}
	csv := "id,prompt,lang\nq1,\"Hello, world\",en\nq2,\"two\nlines\",de\n"
	out, stderr, code = g.run(context.Background(), csv, "--format", "csv")
	if code != 0 {
		t.Fatalf("csv: exit status %d: %s", code, stderr)
	}
	rs = parseResults(t, out)
	if len(rs) != 2 || rs[0].ID != "q1" || rs[1].ID != "q2" || *rs[0].Content != "answer: Hello, world" || *rs[1].Content != "answer: two\nlines" {
		t.Fatalf("csv results = %+v", rs)
	}
	if string(rs[0].Metadata) != `{"lang":"en"}` || rs[1].Line != 3 {
		t.Errorf("csv: metadata %s, second line %d; want {\"lang\":\"en\"} and 3", rs[0].Metadata, rs[1].Line)
	}
}

// TestProgressShowsDoneOfTotal: with --progress always, stderr shows the
// count done out of the batch's total.
func TestProgressShowsDoneOfTotal(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	_, stderr, code := g.run(context.Background(), prompts(12), "--progress", "always")
	if code != 0 {
		t.Fatalf("exit status %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "/12") {
		t.Errorf("progress = %q, want done/12", stderr)
	}
}
