package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/openaitest"
)

func prompts(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteString(`{"id":"p` + strconv.Itoa(i) + `","prompt":"say ` + strconv.Itoa(i) + `"}` + "\n")
	}
	return b.String()
}

// TestBatchLimitsSendNothing: a batch over --batch-tokens or --max-cost is
// refused whole, exit 3, before any request.
func TestBatchLimitsSendNothing(t *testing.T) {
	long := strings.Repeat("word ", 1200) // ~1200 tokens a line
	var big strings.Builder
	for i := 0; i < 300; i++ { // ~360k tokens
		big.WriteString(`"` + long + strconv.Itoa(i) + `"` + "\n")
	}
	tests := []struct {
		name, in string
		args     []string
		msg      string
	}{
		{"batch tokens", big.String(), nil, "--batch-tokens 300000"},
		{"max cost", prompts(100), []string{"--max-cost", "0.001"}, "--max-cost 0.001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := openaitest.New(openaitest.Config{})
			defer srv.Close()
			g := newGB(t, srv.URL())
			out, stderr, code := g.run(context.Background(), tt.in, tt.args...)
			if code != 3 {
				t.Errorf("exit status = %d, want 3; stderr: %s", code, stderr)
			}
			if !strings.Contains(stderr, tt.msg) || !strings.Contains(stderr, "nothing sent") {
				t.Errorf("stderr = %q, want it to name %s and say nothing was sent", stderr, tt.msg)
			}
			if n := srv.Stats().Requests; n != 0 || out != "" {
				t.Errorf("server got %d requests and stdout has %d bytes, want none", n, len(out))
			}
		})
	}
}

// TestTooLargeForTPM: a line whose estimate exceeds --tpm on its own gets a
// budget result and is never sent; the others go.
func TestTooLargeForTPM(t *testing.T) {
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	in := `"small one"` + "\n" + `{"prompt":"big","max_tokens":5000}` + "\n" + `"small two"` + "\n"
	out, stderr, code := g.run(context.Background(), in, "--tpm", "4000")
	if code != 1 {
		t.Errorf("exit status = %d, want 1; stderr %s", code, stderr)
	}
	rs := parseResults(t, out)
	if len(rs) != 3 || rs[1].Error == nil || rs[1].Error.Type != "budget" || !strings.Contains(rs[1].Error.Message, "--tpm 4000") {
		t.Fatalf("results = %+v, want the second a budget error naming --tpm", rs)
	}
	if rs[0].Error != nil || rs[2].Error != nil {
		t.Errorf("small lines failed: %+v %+v", rs[0].Error, rs[2].Error)
	}
	if n := srv.Stats().Requests; n != 2 {
		t.Errorf("server got %d requests, want 2", n)
	}
}

// TestOnLimitFail: with --on-limit fail, reaching a limit stops sending and
// exits 3; the lines not sent say why.
func TestOnLimitFail(t *testing.T) {
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	out, stderr, code := g.run(context.Background(), prompts(10), "--rpm", "4", "--on-limit", "fail")
	if code != 3 {
		t.Errorf("exit status = %d, want 3; stderr %s", code, stderr)
	}
	rs := parseResults(t, out)
	if len(rs) != 10 {
		t.Fatalf("%d results, want 10", len(rs))
	}
	var ok, refused int
	for _, r := range rs {
		switch {
		case r.Error == nil:
			ok++
		case r.Error.Type == "budget" && strings.Contains(r.Error.Message, "minute request limit"):
			refused++
		}
	}
	if ok != 4 || refused != 6 || srv.Stats().Requests != 4 {
		t.Errorf("%d succeeded, %d refused, %d sent; want 4, 6, 4", ok, refused, srv.Stats().Requests)
	}
}

// TestUsageFile: after a run usage.md has the contract's keys and the
// ledger one line per call, with the tokens the server counted.
func TestUsageFile(t *testing.T) {
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	if _, stderr, code := g.run(context.Background(), prompts(20)); code != 0 {
		t.Fatalf("exit status %d: %s", code, stderr)
	}
	b, err := os.ReadFile(filepath.Join(g.dir, "usage.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"tokens_within_min = ", "requests_within_min = ", "tokens_within_day = ", "minute_token_limit_reached = 0", "day_token_limit_reached = 0", "Date = "} {
		if !strings.Contains(string(b), "\n"+k) {
			t.Errorf("usage.md has no %q line:\n%s", k, b)
		}
	}
	st, err := budget.ParseState(b)
	if err != nil {
		t.Fatal(err)
	}
	s := srv.Stats()
	if want := s.PromptTokens + s.CompletionTokens; st.TokensWithinDay != want {
		t.Errorf("tokens_within_day = %d, want %d (what the server counted)", st.TokensWithinDay, want)
	}
	f, err := os.Open(filepath.Join(g.dir, "usage.ledger.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var n int
	var prompt, completion int64
	if err := budget.ReadLedger(f, func(e budget.LedgerEntry) error {
		n++
		prompt += e.PromptTokens
		completion += e.CompletionTokens
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != 20 || prompt != s.PromptTokens || completion != s.CompletionTokens {
		t.Errorf("ledger: %d entries, %d prompt, %d completion tokens; want 20, %d, %d", n, prompt, completion, s.PromptTokens, s.CompletionTokens)
	}
	for _, p := range []string{"usage.md", "usage.ledger.jsonl", "usage.md.lock"} {
		if fi, err := os.Stat(filepath.Join(g.dir, p)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v (%v), want 0600", p, fi.Mode().Perm(), err)
		}
	}
}

// TestCorruptUsageFile: a usage.md with garbage stops the run before any
// request, names the file, exits 2 and leaves the file as it was.
func TestCorruptUsageFile(t *testing.T) {
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	path := filepath.Join(g.dir, "usage.md")
	garbage := "Date = 2026-11-22\ntokens_within_min = lots\n\x00\x01garbage\n"
	if err := os.WriteFile(path, []byte(garbage), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := g.run(context.Background(), prompts(3))
	if code != 2 || !strings.Contains(stderr, path) {
		t.Errorf("exit status %d, stderr %q; want 2 naming %s", code, stderr, path)
	}
	if b, _ := os.ReadFile(path); string(b) != garbage {
		t.Errorf("usage.md changed to %q", b)
	}
	if n := srv.Stats().Requests; n != 0 {
		t.Errorf("server got %d requests, want 0", n)
	}
}

// TestUnknownPrice: a model with no known price gets cost_usd null and one
// warning naming it.
func TestUnknownPrice(t *testing.T) {
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL()).loud()
	out, stderr, code := g.run(context.Background(), prompts(3), "--model", "my-local-llama")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, r := range parseResults(t, out) {
		if string(r.CostUSD) != "null" {
			t.Errorf("cost_usd = %s, want null", r.CostUSD)
		}
	}
	if n := strings.Count(stderr, "my-local-llama"); n != 1 {
		t.Errorf("stderr names the model %d times, want one warning: %s", n, stderr)
	}
}

// TestDayLimitWaitIsSaid: waiting for the day's limit to reset is said on
// stderr; interrupting the wait ends the run with every line accounted for.
func TestDayLimitWaitIsSaid(t *testing.T) {
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL()).loud()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	in := prompts(3)
	// Each line reserves about 270 tokens: the second does not fit in 400.
	out, stderr, code := g.runUntil(ctx, cancel, in, "waiting", "--tpd", "400")
	if code != 130 {
		t.Errorf("exit status %d, want 130 (interrupted while waiting)", code)
	}
	if !strings.Contains(stderr, "for the day token limit") {
		t.Errorf("stderr = %q, want the wait for the day token limit said", stderr)
	}
	rs := parseResults(t, out)
	if len(rs) != 3 || rs[0].Error != nil || rs[1].Error == nil || rs[1].Error.Type != "interrupted" {
		t.Errorf("results = %+v", rs)
	}
}
