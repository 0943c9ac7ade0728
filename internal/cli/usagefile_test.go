package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gofrs/flock"
	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/openaitest"
)

// TestLockWait: a usage file whose lock another process holds is said on
// stderr after about a second, and a signal ends the wait with every line
// given its result.
func TestLockWait(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	lock := flock.New(filepath.Join(g.dir, "usage.md.lock"))
	if err := lock.Lock(); err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type outcome struct {
		out, stderr string
		code        int
	}
	done := make(chan outcome, 1)
	go func() {
		out, stderr, code := g.runUntil(ctx, cancel, prompts(5), "waiting for the lock")
		done <- outcome{out, stderr, code}
	}()
	var o outcome
	select {
	case o = <-done:
	case <-time.After(time.Minute):
		t.Fatal("the run still waits for the lock a minute after the signal")
	}
	out, stderr, code := o.out, o.stderr, o.code
	if code != 130 || !strings.Contains(stderr, "gptbatch: waiting for the lock on "+filepath.Join(g.dir, "usage.md.lock")) {
		t.Errorf("exit status %d, stderr %q; want 130 and the wait said", code, stderr)
	}
	rs := parseResults(t, out)
	if len(rs) != 5 {
		t.Fatalf("%d results, want 5", len(rs))
	}
	for _, r := range rs {
		if r.Error == nil || r.Error.Type != "interrupted" {
			t.Errorf("result %s: %+v, want interrupted", r.ID, r.Error)
		}
	}
	if n := srv.Stats().Requests; n != 0 {
		t.Errorf("server got %d requests, want none", n)
	}
}

// TestDryRunReadsUsageWithoutWaiting: a dry run reads what today has used
// without the lock and without waiting on a named pipe put in the usage
// file's place.
func TestDryRunReadsUsageWithoutWaiting(t *testing.T) {
	t.Parallel()
	g := newGB(t, "http://127.0.0.1:1/v1")
	if err := syscall.Mkfifo(filepath.Join(g.dir, "usage.md"), 0o600); err != nil {
		t.Skip(err)
	}
	done := make(chan int, 1)
	go func() {
		_, _, code := g.run(context.Background(), prompts(2), "--dry-run")
		done <- code
	}()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("dry run: exit status %d, want 0", code)
		}
	case <-time.After(time.Minute):
		t.Fatal("dry run still blocked on the usage file after a minute")
	}
}

// TestRelativeXDGStateHome: a relative XDG_STATE_HOME is
// ignored, as the XDG spec says: the usage file goes under $HOME, not
// under the working directory.
func TestRelativeXDGStateHome(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	home := t.TempDir()
	g.setenv("HOME", home)
	g.setenv("XDG_STATE_HOME", "state")
	g.args = []string{"--base-url", srv.URL(), "--quiet"}
	if _, stderr, code := g.run(context.Background(), prompts(1)); code != 0 {
		t.Fatalf("exit status %d: %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(home, ".local", "state", "gptbatch", "usage.md")); err != nil {
		t.Errorf("no usage file under $HOME/.local/state: %v", err)
	}
	if _, err := os.Stat(filepath.Join(g.dir, "state")); err == nil {
		t.Error("the usage file went under the working directory's ./state")
	}
}

// TestUsageReadsOnly (items 27, 28): `gptbatch usage` reports lines of the
// ledger it cannot parse instead of hiding them or failing, reports when
// usage.md is damaged (it needs only the ledger), and creates no state
// directory or lock.
func TestUsageReadsOnly(t *testing.T) {
	t.Parallel()
	g := newGB(t, "http://127.0.0.1:1/v1")
	g.loud()
	missing := filepath.Join(g.dir, "never", "usage.md")
	out, stderr, code := g.run(context.Background(), "", "usage", "--usage-file", missing)
	if code != 0 || !strings.Contains(out, "REQUESTS") {
		t.Errorf("usage of a usage file not yet made: exit status %d, stdout %q, stderr %q", code, out, stderr)
	}
	if _, err := os.Stat(filepath.Dir(missing)); err == nil {
		t.Error("usage created the state directory")
	}

	usage := filepath.Join(g.dir, "usage.md")
	entry := func(id string) string {
		c := budget.Dollar / 1000
		b, _ := json.Marshal(budget.LedgerEntry{ID: id, Model: "gpt-4o-mini", Status: 200, PromptTokens: 10, CompletionTokens: 5, CostUSD: &c})
		return string(b) + "\n"
	}
	ledger := entry("a") + "{not json\n" + entry("b") + "\n" + `{"id": 3, "status": "x"}` + "\n" + entry("c")
	os.WriteFile(filepath.Join(g.dir, "usage.ledger.jsonl"), []byte(ledger), 0o600)
	os.WriteFile(usage, []byte("tokens_within_day = many\n"), 0o600)
	out, stderr, code = g.run(context.Background(), "", "usage", "--json")
	if code != 0 {
		t.Fatalf("usage: exit status %d: %s", code, stderr)
	}
	var rep struct {
		Total struct {
			Requests int64 `json:"requests"`
		} `json:"total"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Total.Requests != 3 {
		t.Errorf("usage --json = %s (%v), want 3 requests from the 3 good ledger lines", out, err)
	}
	for _, want := range []string{"gptbatch: warning: 2 ledger lines", "corrupt"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr = %q, want %q", stderr, want)
		}
	}
	if _, err := os.Stat(usage + ".lock"); err == nil {
		t.Error("usage created the lock file")
	}
	if table, _, _ := g.run(context.Background(), "", "usage"); !strings.Contains(table, "price table of "+budget.PriceTableDate) {
		t.Errorf("usage table = %q, want the price table's date", table)
	}
}

// TestUsageFileComments: a comment written in usage.md is there
// after a run rewrites the file.
func TestUsageFileComments(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	path := filepath.Join(g.dir, "usage.md")
	os.WriteFile(path, []byte("# shared by the nightly jobs: ask Ana\nlimit_daily_cost_usd = 5\n"), 0o600)
	if _, stderr, code := g.run(context.Background(), prompts(3)); code != 0 {
		t.Fatalf("exit status %d: %s", code, stderr)
	}
	b, _ := os.ReadFile(path)
	if !bytes.Contains(b, []byte("# shared by the nightly jobs: ask Ana\n")) || !bytes.Contains(b, []byte("limit_daily_cost_usd = 5\n")) {
		t.Errorf("usage.md after a run lost the comment or the stored limit:\n%s", b)
	}
}

// TestDevNullUsageFile: --usage-file /dev/null runs with no
// shared state and leaves /dev/null a character device, with nothing
// created beside it.
func TestDevNullUsageFile(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	out, stderr, code := g.run(context.Background(), prompts(5), "--usage-file", os.DevNull)
	if code != 0 || len(parseResults(t, out)) != 5 {
		t.Fatalf("exit status %d, %d results; stderr: %s", code, len(parseResults(t, out)), stderr)
	}
	fi, err := os.Lstat(os.DevNull)
	if err != nil || fi.Mode()&fs.ModeCharDevice == 0 {
		t.Errorf("/dev/null after the run: %v, %v; want a character device", fi.Mode(), err)
	}
	for _, p := range []string{os.DevNull + ".lock", "/dev/null.ledger.jsonl"} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s was created", p)
		}
	}
	if _, _, code := g.run(context.Background(), "", "usage", "--usage-file", os.DevNull); code != 0 {
		t.Errorf("usage --usage-file /dev/null: exit status %d", code)
	}
}

// TestUsageFile: after a run usage.md has the contract's keys and the
// ledger one line per call, with the tokens the server counted.
func TestUsageFile(t *testing.T) {
	t.Parallel()
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
	t.Parallel()
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

// TestUsageReport: after a run of 20 prompts, usage --today --json reports
// 20 requests and exactly the tokens the server counted.
func TestUsageReport(t *testing.T) {
	t.Parallel()
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

// TestUsageFileWithoutOurKeys: a usage.md emptied, or holding none of the
// keys gptbatch writes, is not a fresh budget (which would drop the
// day's spending and the stored limits): it is refused as corrupt, before
// the run (exit 2, nothing sent) and mid-run (the run stops sending, exit
// 1), naming the file and leaving it as it is.
func TestUsageFileWithoutOurKeys(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, content string }{
		{"emptied", ""},
		{"unknown keys only", "team = research\nowner = ana\n"},
		{"comments only", "# nothing here\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := openaitest.New(openaitest.Config{})
			defer srv.Close()
			g := newGB(t, srv.URL())
			path := filepath.Join(g.dir, "usage.md")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, stderr, code := g.run(context.Background(), prompts(3))
			if code != 2 || !strings.Contains(stderr, path) || !strings.Contains(stderr, "corrupt") {
				t.Errorf("exit status %d, stderr %q; want 2, calling %s corrupt", code, stderr, path)
			}
			if b, _ := os.ReadFile(path); string(b) != tt.content {
				t.Errorf("usage.md changed to %q", b)
			}
			if n := srv.Stats().Requests; n != 0 {
				t.Errorf("server got %d requests, want 0", n)
			}
		})
	}
	t.Run("emptied mid-run", func(t *testing.T) {
		srv := openaitest.New(openaitest.Config{Latency: 20 * time.Millisecond})
		defer srv.Close()
		g := newGB(t, srv.URL())
		path := filepath.Join(g.dir, "usage.md")
		emptied := make(chan error, 1)
		go func() {
			if err := waitServer(srv.WaitArrivals, 10); err != nil {
				emptied <- err
				return
			}
			// Under the lock, or the run's next write would replace it.
			lock := flock.New(path + ".lock")
			if err := lock.Lock(); err != nil {
				emptied <- err
				return
			}
			defer lock.Unlock()
			emptied <- os.WriteFile(path, nil, 0o600)
		}()
		out, stderr, code := g.run(context.Background(), prompts(200), "--parallel", "2")
		if err := <-emptied; err != nil {
			t.Fatal(err)
		}
		if code != 1 || !strings.Contains(stderr, path) || !strings.Contains(stderr, "corrupt") {
			t.Errorf("exit status %d, stderr %q; want 1, calling %s corrupt", code, stderr, path)
		}
		if n := len(parseResults(t, out)); n == 0 || srv.Stats().Requests >= 200 {
			t.Errorf("%d results, %d requests sent; want the run stopped short, every line read with a result", n, srv.Stats().Requests)
		}
		if b, _ := os.ReadFile(path); len(b) != 0 {
			t.Errorf("usage.md was rewritten as a fresh budget:\n%s", b)
		}
	})
}
