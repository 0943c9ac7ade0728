package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/openaitest"
)

// Regression tests for issue 12's command-line items.

// TestRelativeXDGStateHome (item 19): a relative XDG_STATE_HOME is
// ignored, as the XDG spec says: the usage file goes under $HOME, not
// under the working directory.
func TestRelativeXDGStateHome(t *testing.T) {
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_STATE_HOME", "state")
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

// TestInsecureBaseURL (item 20): the key goes over plain http:// only to
// this machine, unless --allow-insecure.
func TestInsecureBaseURL(t *testing.T) {
	for _, url := range []string{"http://example.com/v1", "http://10.0.0.7:8080/v1", "http://user:pw@api.example.org/v1"} {
		t.Run(url, func(t *testing.T) {
			g := newGB(t, url)
			_, stderr, code := g.run(context.Background(), prompts(1))
			if code != 2 || !strings.Contains(stderr, "--allow-insecure") || !strings.Contains(stderr, "clear text") {
				t.Errorf("exit status %d, stderr %q; want 2 and a word of --allow-insecure", code, stderr)
			}
			if strings.Contains(stderr, "pw@") {
				t.Errorf("stderr %q shows the URL's password", stderr)
			}
		})
	}
	tests := []struct {
		url      string
		insecure bool
		ok       bool
	}{
		{"http://127.0.0.1:8080/v1", false, true},
		{"http://127.9.0.1/v1", false, true},
		{"http://[::1]:8080/v1", false, true},
		{"http://localhost:11434/v1", false, true},
		{"http://ollama.localhost/v1", false, true},
		{"https://api.example.com/v1", false, true},
		{"http://example.com/v1", false, false},
		{"http://example.com/v1", true, true},
		{"http://localhost.example.com/v1", false, false},
	}
	for _, tt := range tests {
		if err := checkBaseURL(tt.url, tt.insecure); (err == nil) != tt.ok {
			t.Errorf("checkBaseURL(%q, %v) = %v, want ok %v", tt.url, tt.insecure, err, tt.ok)
		}
	}
}

// TestMaskedKeyRedacted (item 21): a 401 that quotes the key masked (first
// and last characters around stars) does not reach results, stderr or
// logs, whatever the key's prefix.
func TestMaskedKeyRedacted(t *testing.T) {
	for _, key := range []string{"gsk_wrong0123456789abcdefghijklmnopq", "AIzaWrong0123456789abcdefghijklm", "sk-proj-wrong0123456789abcdefghij"} {
		t.Run(key[:4], func(t *testing.T) {
			srv := openaitest.New(openaitest.Config{Key: "sk-the-right-key-000000000000"})
			defer srv.Close()
			g := newGB(t, srv.URL())
			t.Setenv("OPENAI_API_KEY", key)
			out, stderr, code := g.run(context.Background(), prompts(2), "--verbose", "--parallel", "1")
			if code != 1 {
				t.Errorf("exit status %d, want 1; stderr: %s", code, stderr)
			}
			rs := parseResults(t, out)
			if len(rs) != 2 || rs[0].Error == nil || !strings.Contains(rs[0].Error.Message, "[redacted]") {
				t.Fatalf("results = %+v, want a 401 whose message says [redacted]", rs)
			}
			for _, leak := range []string{key[:5] + "*", "*" + key[len(key)-2:]} {
				if strings.Contains(out, leak) || strings.Contains(stderr, leak) {
					t.Errorf("output shows the masked key (%q):\n%s\n%s", leak, out, stderr)
				}
			}
		})
	}
}

// TestEmptyEnvIsUnset (item 25): VAR= is no value: the defaults hold.
func TestEmptyEnvIsUnset(t *testing.T) {
	for _, k := range []string{"OPENAI_BASE_URL", "OPENAI_MODEL", "GPTBATCH_USAGE_FILE"} {
		t.Setenv(k, "")
	}
	var c cli
	p, err := newParser(&c, &bytes.Buffer{}, &bytes.Buffer{}, func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Parse(nil); err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if c.BaseURL != "https://api.openai.com/v1" || c.Model != "" || c.UsageFile != "" {
		t.Errorf("with empty variables: --base-url %q, --model %q, --usage-file %q; want the default URL and no model or usage file", c.BaseURL, c.Model, c.UsageFile)
	}
	t.Setenv("OPENAI_MODEL", "gpt-4.1-mini")
	c = cli{}
	p, _ = newParser(&c, &bytes.Buffer{}, &bytes.Buffer{}, func(int) {})
	if _, err := p.Parse(nil); err != nil || c.Model != "gpt-4.1-mini" {
		t.Errorf("OPENAI_MODEL=gpt-4.1-mini: --model %q (%v), want it", c.Model, err)
	}
}

// TestAPIKeyFile (item 26): a missing --api-key-file says it cannot be
// read; a .env value loses its inline comment and quotes.
func TestAPIKeyFile(t *testing.T) {
	g := newGB(t, "http://127.0.0.1:1/v1")
	_, stderr, code := g.run(context.Background(), prompts(1), "--api-key-file", filepath.Join(g.dir, "nokey.txt"))
	if code != 2 || !strings.Contains(stderr, "cannot read") || !strings.Contains(stderr, "no such file") {
		t.Errorf("missing --api-key-file: exit status %d, stderr %q; want 2 and cannot read: no such file", code, stderr)
	}
	tests := []struct{ in, want string }{
		{"sk-abc # my key", "sk-abc"},
		{"sk-abc\t# my key", "sk-abc"},
		{"sk-abc#not-a-comment", "sk-abc#not-a-comment"},
		{`"sk-abc" # quoted`, "sk-abc"},
		{`'sk-a#bc'  # single`, "sk-a#bc"},
		{`"sk-a\"bc"`, `sk-a"bc`},
		{"sk-abc", "sk-abc"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := dotenvValue(tt.in); got != tt.want {
			t.Errorf("dotenvValue(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	srv := openaitest.New(openaitest.Config{Key: "sk-from-dotenv-123456"})
	defer srv.Close()
	g = newGB(t, srv.URL())
	t.Setenv("OPENAI_API_KEY", "")
	os.WriteFile(filepath.Join(g.dir, ".env"), []byte("OPENAI_API_KEY=sk-from-dotenv-123456 # the team's key\n"), 0o600)
	if _, stderr, code := g.run(context.Background(), prompts(1)); code != 0 {
		t.Errorf(".env with an inline comment: exit status %d: %s", code, stderr)
	}
}

// TestUnusableInput (item 27): a CSV header without a prompt column and a
// directory on stdin are usage errors (exit 2) that send nothing; the CSV
// error lists the columns it found.
func TestUnusableInput(t *testing.T) {
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
	code = run(context.Background(), g.args, dir, &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), "stdin is a directory") {
		t.Errorf("stdin a directory: exit status %d, stderr %q; want 2", code, errb.String())
	}
	if n := srv.Stats().Requests; n != 0 {
		t.Errorf("server got %d requests, want none", n)
	}
}

// TestFlagValues (items 27, 28): values that would mean something else
// than they say are refused, nothing sent.
func TestFlagValues(t *testing.T) {
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--timeout=-1s"}, "--timeout cannot be negative"},
		{[]string{"--max-cost", "1e-13"}, "less than a picodollar"},
		{[]string{"--daily-cost", "0.0000000000004"}, "less than a picodollar"},
		{[]string{"--max-cost=0x10"}, "not an amount of dollars"},
		{[]string{"--max-cost", "1e30"}, "too large"},
		{[]string{"--tpd", "1000000000000000000"}, "more than"},
		{[]string{"--max-tokens", "9223372036854775807"}, "more than"},
		{[]string{"--retries", "1000000"}, "more than 1000"},
		{[]string{"--warn-at", "120"}, "--warn-at"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, stderr, code := g.run(context.Background(), prompts(1), tt.args...)
			if code != 2 || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit status %d, stderr %q; want 2 and %q", code, stderr, tt.want)
			}
		})
	}
	if n := srv.Stats().Requests; n != 0 {
		t.Errorf("server got %d requests, want none", n)
	}
	if _, stderr, code := g.run(context.Background(), prompts(1), "--max-cost", "0e5", "--timeout", "0"); code != 0 {
		t.Errorf("--max-cost 0e5 --timeout 0 (off): exit status %d: %s", code, stderr)
	}
}

// TestUsageReadsOnly (items 27, 28): `gptbatch usage` reports lines of the
// ledger it cannot parse instead of hiding them or failing, reports when
// usage.md is damaged (it needs only the ledger), and creates no state
// directory or lock.
func TestUsageReadsOnly(t *testing.T) {
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
		t.Errorf("usage table = %q, want the price table's date (item 7)", table)
	}
}

// TestQuietWarnings (item 28): warnings are "gptbatch: warning: ...",
// like errors, and --quiet silences them.
func TestQuietWarnings(t *testing.T) {
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	_, stderr, code := g.run(context.Background(), prompts(2), "--model", "my-local-llama")
	if code != 0 || stderr != "" {
		t.Errorf("--quiet: exit status %d, stderr %q; want 0 and nothing", code, stderr)
	}
	_, stderr, _ = g.loud().run(context.Background(), prompts(2), "--model", "my-local-llama")
	if !strings.HasPrefix(stderr, `gptbatch: warning: no price known for model "my-local-llama"`) {
		t.Errorf("stderr = %q, want it to start with gptbatch: warning:", stderr)
	}
}

// TestUsageFileComments (item 28): a comment written in usage.md is there
// after a run rewrites the file.
func TestUsageFileComments(t *testing.T) {
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

// TestCancelledRetryNotCounted (item 28): a retry the run never made (a
// signal came during the back-off) is not in the summary's retries.
func TestCancelledRetryNotCounted(t *testing.T) {
	// Every request gets a 429 asking to wait a minute.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("retry-after", "60")
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, `{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}`)
	}))
	defer srv.Close()
	g := newGB(t, srv.URL+"/v1").loud()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The signal comes as the retry is logged, before its back-off ends.
	_, stderr, code := g.runUntil(ctx, cancel, prompts(1), "gptbatch: retry", "--verbose")
	if code != 130 {
		t.Errorf("exit status %d, want 130; stderr: %s", code, stderr)
	}
	if !strings.Contains(stderr, "; 0 retries, 1 rate-limited") {
		t.Errorf("stderr = %q, want a summary of 0 retries, 1 rate-limited", stderr)
	}
}

// TestVersion (item 28): --version says the module version a go install
// build records, or the commit, rather than "dev".
func TestVersion(t *testing.T) {
	bi := func(v string, settings ...debug.BuildSetting) *debug.BuildInfo {
		return &debug.BuildInfo{Main: debug.Module{Version: v}, Settings: settings}
	}
	rev := debug.BuildSetting{Key: "vcs.revision", Value: "0123456789abcdef0123"}
	dirty := debug.BuildSetting{Key: "vcs.modified", Value: "true"}
	tests := []struct {
		set  string
		bi   *debug.BuildInfo
		want string
	}{
		{"v1.0.0", bi("v0.9.0"), "v1.0.0"},
		{"dev", bi("v1.2.3"), "v1.2.3"},
		{"dev", bi("(devel)", rev, dirty), "dev (0123456789ab, modified)"},
		{"dev", bi("(devel)", rev), "dev (0123456789ab)"},
		{"dev", bi("(devel)"), "dev"},
	}
	for _, tt := range tests {
		if got := versionOf(tt.set, tt.bi, true); got != tt.want {
			t.Errorf("versionOf(%q, %s) = %q, want %q", tt.set, tt.bi.Main.Version, got, tt.want)
		}
	}
	var out strings.Builder
	if code := run(context.Background(), []string{"--version"}, strings.NewReader(""), &out, &out); code != 0 || strings.TrimSpace(out.String()) != buildVersion() {
		t.Errorf("--version = %q (exit %d), want %q", out.String(), code, buildVersion())
	}
}

// TestHelpPriceDate (item 7): --help says the date of the price table.
func TestHelpPriceDate(t *testing.T) {
	var out strings.Builder
	run(context.Background(), []string{"--help"}, strings.NewReader(""), &out, &out)
	if !strings.Contains(out.String(), budget.PriceTableDate) {
		t.Errorf("--help does not give the price table's date %s", budget.PriceTableDate)
	}
}

// TestDevNullUsageFile (item 1): --usage-file /dev/null runs with no
// shared state and leaves /dev/null a character device, with nothing
// created beside it.
func TestDevNullUsageFile(t *testing.T) {
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
