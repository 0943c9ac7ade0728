package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/gptbatch/gptbatch/internal/openaitest"
)

// TestHelpNamesEveryFlag: --help lists every flag of the contract, its
// environment variable, and the three examples.
func TestHelpNamesEveryFlag(t *testing.T) {
	var out, errb strings.Builder
	if code := run(context.Background(), []string{"--help"}, strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("--help: exit status %d: %s", code, errb.String())
	}
	help := out.String()
	var flags []string
	rt := reflect.TypeOf(runCmd{})
	for i := 0; i < rt.NumField(); i++ {
		if f := rt.Field(i); f.IsExported() {
			name := f.Tag.Get("name")
			if name == "" {
				name = kebab(f.Name)
			}
			flags = append(flags, "--"+name)
		}
	}
	flags = append(flags, "--version", "$OPENAI_MODEL", "$OPENAI_BASE_URL", "$GPTBATCH_USAGE_FILE", "$OPENAI_API_KEY", "jq ", "xargs ", "cron")
	for _, f := range flags {
		if !strings.Contains(help, f) {
			t.Errorf("--help does not mention %s", f)
		}
	}
}

func kebab(s string) string {
	var b strings.Builder
	for i, r := range s {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte('-')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// TestDryRun: 40 prompts with no key: nothing sent, 40 estimates and a cost.
func TestDryRun(t *testing.T) {
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	t.Setenv("OPENAI_API_KEY", "")
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

// TestNoKey: without a key, exit 2 and say where a key is looked for.
func TestNoKey(t *testing.T) {
	g := newGB(t, "http://127.0.0.1:1/v1")
	t.Setenv("OPENAI_API_KEY", "")
	_, stderr, code := g.run(context.Background(), prompts(1))
	if code != 2 {
		t.Errorf("exit status %d, want 2", code)
	}
	for _, where := range []string{"OPENAI_API_KEY", "api_key.txt", ".openai_key", ".env", "--api-key-file"} {
		if !strings.Contains(stderr, where) {
			t.Errorf("stderr %q does not mention %s", stderr, where)
		}
	}
}

// TestConfigFiles: the model from gpt_model_type.txt and the key from .env
// in the working directory.
func TestConfigFiles(t *testing.T) {
	srv := openaitest.New(openaitest.Config{Key: "sk-from-dotenv-123456"})
	defer srv.Close()
	g := newGB(t, srv.URL())
	t.Setenv("OPENAI_API_KEY", "")
	os.WriteFile(filepath.Join(g.dir, "gpt_model_type.txt"), []byte("gpt-4.1-mini\n"), 0o600)
	os.WriteFile(filepath.Join(g.dir, ".env"), []byte("# keys\nexport OPENAI_API_KEY=\"sk-from-dotenv-123456\"\n"), 0o600)
	out, stderr, code := g.run(context.Background(), prompts(1))
	if code != 0 {
		t.Fatalf("exit status %d: %s", code, stderr)
	}
	if rs := parseResults(t, out); rs[0].Model != "gpt-4.1-mini-2025-04-14" {
		t.Errorf("model = %q, want gpt-4.1-mini from gpt_model_type.txt", rs[0].Model)
	}
}

// TestUsageReport: after a run of 20 prompts, usage --today --json reports
// 20 requests and exactly the tokens the server counted.
func TestUsageReport(t *testing.T) {
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	if _, stderr, code := g.run(context.Background(), prompts(20)); code != 0 {
		t.Fatalf("run: exit status %d: %s", code, stderr)
	}
	out, stderr, code := g.run(context.Background(), "", "usage", "--today", "--json")
	if code != 0 {
		t.Fatalf("usage: exit status %d: %s", code, stderr)
	}
	var rep struct {
		Total struct {
			Requests         int64           `json:"requests"`
			Succeeded        int64           `json:"succeeded"`
			PromptTokens     int64           `json:"prompt_tokens"`
			CompletionTokens int64           `json:"completion_tokens"`
			CostUSD          json.RawMessage `json:"cost_usd"`
		} `json:"total"`
		Limits map[string]any `json:"limits"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("usage --json: %v\n%s", err, out)
	}
	st := srv.Stats()
	if rep.Total.Requests != 20 || rep.Total.Succeeded != 20 || rep.Total.PromptTokens != st.PromptTokens || rep.Total.CompletionTokens != st.CompletionTokens {
		t.Errorf("usage --today --json total = %+v; want 20 requests, %d prompt and %d completion tokens", rep.Total, st.PromptTokens, st.CompletionTokens)
	}
	if _, ok := rep.Limits["tokens_within_day"]; !ok {
		t.Errorf("usage --json has no limits state: %s", out)
	}
	table, _, code := g.run(context.Background(), "", "usage", "--by", "model")
	if code != 0 || !strings.Contains(table, "gpt-4o-mini-2024-07-18") || !strings.Contains(table, "REQUESTS") {
		t.Errorf("usage --by model = %q (exit %d)", table, code)
	}
}
