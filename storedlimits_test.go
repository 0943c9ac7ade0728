package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/openaitest"
)

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

// limitsJSON is `gptbatch limits --json`.
type limitsJSON struct {
	Store  string `json:"store"`
	Limits map[string]struct {
		Stored json.RawMessage `json:"stored"`
		Used   json.RawMessage `json:"used"`
	} `json:"limits"`
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

// TestStoredDailyCost is issue 16's "done when": a daily cost stored once
// holds a run that gives no cost flag, and a later run cannot loosen it
// with a flag; `limits --json` shows the limit and the day's spend.
func TestStoredDailyCost(t *testing.T) {
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	if _, stderr, code := g.run(context.Background(), "", "limits", "set", "--daily-cost", "0.0005"); code != 0 {
		t.Fatalf("limits set: exit status %d: %s", code, stderr)
	}

	out, stderr, code := g.run(context.Background(), longPrompts(100), "--on-limit", "fail")
	if code != 3 {
		t.Errorf("run under the stored limit: exit status %d, want 3; stderr: %s", code, stderr)
	}
	rs := parseResults(t, out)
	if len(rs) != 100 {
		t.Fatalf("%d results, want 100", len(rs))
	}
	var oneCall budget.Cost
	for _, r := range rs {
		if r.Error == nil {
			oneCall = max(oneCall, cost(t, r.CostUSD))
		}
	}
	st := srv.Stats()
	price, _ := budget.PriceOf("gpt-4o-mini")
	spent := price.Cost(st.PromptTokens, st.CachedTokens, st.CompletionTokens)
	limit := budget.Dollar / 2000 // $0.0005
	if st.Succeeded == 0 || spent > limit+oneCall {
		t.Errorf("the server answered %d calls costing $%s by its own counts, want some and at most $%s + $%s (one call)", st.Succeeded, spent, limit, oneCall)
	}
	t.Logf("%d calls, $%s by the server's counts, under a stored $%s", st.Succeeded, spent, limit)

	// The second run's flag cannot loosen the stored limit: it sends
	// nothing when what is left of the day is less than a line's estimate
	// (the first run stopped at the limit), and never more than is left.
	sent, left := st.Requests, limit-spent
	est := lineEstimate(t, g, longPrompts(1))
	_, stderr, code = g.run(context.Background(), longPrompts(10), "--on-limit", "fail", "--daily-cost", "10")
	if code != 3 {
		t.Errorf("run with --daily-cost 10: exit status %d, want 3; stderr: %s", code, stderr)
	}
	st = srv.Stats()
	t.Logf("second run: $%s was left of the day, a line's estimate is $%s: %d more requests", left, est, st.Requests-sent)
	spent = price.Cost(st.PromptTokens, st.CachedTokens, st.CompletionTokens)
	if more := st.Requests - sent; (left < est && more != 0) || spent > limit+oneCall {
		t.Errorf("run with --daily-cost 10 sent %d more requests with $%s left of the day and $%s a line, $%s in all; want none, and at most $%s + $%s", more, left, est, spent, limit, oneCall)
	}
	l := g.limits(t)
	dc := l.Limits["daily-cost"]
	if got := cost(t, dc.Stored); got != limit {
		t.Errorf("limits --json: daily-cost stored = $%s, want $%s", got, limit)
	}
	if got := cost(t, dc.Used); got != spent {
		t.Errorf("limits --json: daily-cost used = $%s, want $%s (what the server counted)", got, spent)
	}
	if string(l.Limits["rpm"].Stored) != "null" {
		t.Errorf("limits --json: rpm stored = %s, want null (never set)", l.Limits["rpm"].Stored)
	}
}

// lineEstimate is the estimated cost of the one line in, by a dry run.
func lineEstimate(t *testing.T, g *gb, in string) budget.Cost {
	t.Helper()
	out, stderr, code := g.run(context.Background(), in, "--dry-run")
	var e struct {
		Est json.RawMessage `json:"est_cost_usd"`
	}
	if err := json.Unmarshal([]byte(out), &e); code != 0 || err != nil {
		t.Fatalf("dry run: exit status %d, %v: %s", code, err, stderr)
	}
	return cost(t, e.Est)
}

// TestLimitsCommands: set stores only what it is given, clear removes
// what it names, usage --limit is limits set --daily-cost, and bad names
// and values are usage errors that change nothing.
func TestLimitsCommands(t *testing.T) {
	g := newGB(t, "http://127.0.0.1:1/v1")
	steps := []struct {
		args []string
		code int
		want map[string]string // limit -> stored, as JSON
	}{
		{[]string{"limits", "set", "--tpd", "1000", "--rpm", "60"}, 0, map[string]string{"rpm": "60", "tpm": "null", "tpd": "1000", "daily-cost": "null"}},
		{[]string{"usage", "--limit", "5"}, 0, map[string]string{"rpm": "60", "tpd": "1000", "daily-cost": "5"}},
		{[]string{"limits", "clear", "rpm"}, 0, map[string]string{"rpm": "null", "tpd": "1000", "daily-cost": "5"}},
		{[]string{"limits", "set"}, 2, map[string]string{"tpd": "1000"}},
		{[]string{"limits", "set", "--tpd", "0"}, 2, map[string]string{"tpd": "1000"}},
		{[]string{"limits", "clear", "rmp"}, 2, map[string]string{"tpd": "1000"}},
		{[]string{"usage", "--limit", "0"}, 2, map[string]string{"daily-cost": "5"}},
		{[]string{"limits", "clear"}, 0, map[string]string{"rpm": "null", "tpm": "null", "tpd": "null", "daily-cost": "null"}},
	}
	for _, s := range steps {
		_, stderr, code := g.run(context.Background(), "", s.args...)
		if code != s.code {
			t.Errorf("%s: exit status %d, want %d; stderr: %s", strings.Join(s.args, " "), code, s.code, stderr)
		}
		l := g.limits(t)
		for k, v := range s.want {
			if got := string(l.Limits[k].Stored); got != v {
				t.Errorf("after %s: %s stored = %s, want %s", strings.Join(s.args, " "), k, got, v)
			}
		}
	}
	b, err := os.ReadFile(filepath.Join(g.dir, "usage.md"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("\nlimit_")) {
		t.Errorf("usage.md still has a stored limit after limits clear:\n%s", b)
	}
}

// TestStoredLimitIsCeiling: a stored limit lowers a higher flag, a lower
// flag wins, and the dry run and --verbose say where each came from.
func TestStoredLimitIsCeiling(t *testing.T) {
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL()).loud()
	if _, stderr, code := g.run(context.Background(), "", "limits", "set", "--tpd", "300"); code != 0 {
		t.Fatalf("limits set: exit status %d: %s", code, stderr)
	}
	tests := []struct {
		args []string
		want string
		code int
	}{
		{[]string{"--dry-run", "--tpd", "5000000"}, "tpd 300 (stored)", 0},
		{[]string{"--dry-run", "--tpd", "200"}, "tpd 200 (flag)", 0},
		{[]string{"--verbose", "--tpd", "5000000"}, "tpd 300 (stored)", 0},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, stderr, code := g.run(context.Background(), prompts(2), tt.args...)
			if code != tt.code {
				t.Errorf("exit status %d, want %d; stderr: %s", code, tt.code, stderr)
			}
			if !strings.Contains(stderr, tt.want) || !strings.Contains(stderr, "rpm 500 (flag)") {
				t.Errorf("stderr = %q, want it to say %q and rpm 500 (flag)", stderr, tt.want)
			}
		})
	}
}

// writeDay writes a usage file with today's counters at tokens and cost.
func writeDay(t *testing.T, path string, tokens int64, cost budget.Cost) {
	t.Helper()
	now := time.Now()
	y, m, d := now.Date()
	s := budget.State{Date: now.Format(time.DateOnly), DayEndsAt: time.Date(y, m, d+1, 0, 0, 0, 0, now.Location()),
		TokensWithinDay: tokens, CostWithinDay: cost}
	if err := os.WriteFile(path, s.Format(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestDayWarnings: once the day's tokens or dollars pass --warn-at percent
// of their limit, stderr says so once, in gptbatch's warning format;
// --quiet and --warn-at 0 say nothing.
func TestDayWarnings(t *testing.T) {
	tests := []struct {
		name          string
		tokens        int64
		cost          budget.Cost
		args          []string
		want, notWant string
	}{
		{"dollars", 0, 402 * budget.Dollar / 100, []string{"--daily-cost", "5"},
			"gptbatch: warning: 80 % of today's $5.00 spent ($4.02)\n", "tokens used"},
		{"tokens", 850_000, 0, []string{"--tpd", "1000000"},
			"gptbatch: warning: 80 % of today's 1000000 tokens used (850", "spent"},
		{"threshold flag", 850_000, 0, []string{"--tpd", "1000000", "--warn-at", "90"}, "", "warning"},
		{"below", 100, 0, []string{"--tpd", "1000000", "--daily-cost", "5"}, "", "warning"},
		{"quiet", 850_000, 0, []string{"--tpd", "1000000", "--quiet"}, "", "warning"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := openaitest.New(openaitest.Config{})
			defer srv.Close()
			g := newGB(t, srv.URL()).loud()
			writeDay(t, filepath.Join(g.dir, "usage.md"), tt.tokens, tt.cost)
			out, stderr, code := g.run(context.Background(), prompts(5), append(tt.args, "--parallel", "1")...)
			if code != 0 || len(parseResults(t, out)) != 5 {
				t.Fatalf("exit status %d, %d results; stderr: %s", code, len(parseResults(t, out)), stderr)
			}
			if tt.want != "" && strings.Count(stderr, tt.want) != 1 {
				t.Errorf("stderr = %q, want %q once", stderr, tt.want)
			}
			if strings.Count(stderr, "warning") > 1 || (tt.notWant != "" && strings.Contains(stderr, tt.notWant)) {
				t.Errorf("stderr = %q, want one warning at most and no %q", stderr, tt.notWant)
			}
		})
	}
}

// fakeTTY is a terminal for --confirm: answer is what the user types.
type fakeTTY struct {
	answer io.Reader
	screen bytes.Buffer
	closed bool
}

func (f *fakeTTY) Read(p []byte) (int, error)  { return f.answer.Read(p) }
func (f *fakeTTY) Write(p []byte) (int, error) { return f.screen.Write(p) }
func (f *fakeTTY) Close() error                { f.closed = true; return nil }

// TestConfirm: --confirm shows the estimate on the terminal and sends
// only when answered yes; without a terminal it is a usage error.
func TestConfirm(t *testing.T) {
	tests := []struct {
		name   string
		answer string // "" with noTTY: none
		noTTY  bool
		code   int
		sent   int
	}{
		{"no", "n\n", false, 3, 0},
		{"nothing", "", false, 3, 0},
		{"other", "sure\n", false, 3, 0},
		{"yes", "y\n", false, 0, 5},
		{"YES", " YES \n", false, 0, 5},
		{"no terminal", "", true, 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := openaitest.New(openaitest.Config{})
			defer srv.Close()
			g := newGB(t, srv.URL())
			tty := &fakeTTY{answer: strings.NewReader(tt.answer)}
			open := func() (io.ReadWriteCloser, error) { return tty, nil }
			if tt.noTTY {
				open = func() (io.ReadWriteCloser, error) {
					return nil, &os.PathError{Op: "open", Path: "/dev/tty", Err: errors.New("no such device or address")}
				}
			}
			var out, errb bytes.Buffer
			code := runTTY(context.Background(), append(g.args, "--confirm"), strings.NewReader(prompts(5)), &out, &errb, open)
			if code != tt.code {
				t.Errorf("exit status %d, want %d; stderr: %s", code, tt.code, errb.String())
			}
			if n := srv.Stats().Requests; n != tt.sent {
				t.Errorf("server got %d requests, want %d", n, tt.sent)
			}
			if n := len(parseResults(t, out.String())); n != tt.sent {
				t.Errorf("%d results, want %d", n, tt.sent)
			}
			screen := tty.screen.String()
			switch {
			case tt.noTTY:
				if !strings.Contains(errb.String(), "--confirm") || !strings.Contains(errb.String(), "/dev/tty") {
					t.Errorf("stderr = %q, want it to say --confirm has no terminal", errb.String())
				}
			case !strings.Contains(screen, "5 lines;") || !strings.Contains(screen, "estimated cost $") || !strings.Contains(screen, "limits:") || !strings.Contains(screen, "[y/N]"):
				t.Errorf("terminal shows %q, want the lines, tokens, cost, limits and the question", screen)
			case !tty.closed:
				t.Error("the terminal was not closed")
			}
		})
	}
}

// TestConfirmDayZone: --confirm and the dry run count what the budget's own day has used
// (GPTBATCH_DAY_TZ), also when the local date is another.
func TestConfirmDayZone(t *testing.T) {
	now := time.Now()
	var zone string
	for _, z := range []string{"Etc/GMT-14", "Etc/GMT+12"} {
		loc, err := time.LoadLocation(z)
		if err != nil {
			t.Fatal(err)
		}
		if now.In(loc).Format(time.DateOnly) != now.Format(time.DateOnly) {
			zone = z // one of the two is always on another date
			break
		}
	}
	t.Setenv("GPTBATCH_DAY_TZ", zone)
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	if _, stderr, code := g.run(context.Background(), prompts(5)); code != 0 {
		t.Fatalf("first run: exit status %d; stderr: %s", code, stderr)
	}
	fs, err := budget.OpenFile(filepath.Join(g.dir, "usage.md"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := fs.Load(context.Background())
	if err != nil || st.TokensWithinDay == 0 {
		t.Fatalf("after the first run: %d tokens used today, %v", st.TokensWithinDay, err)
	}
	tty := &fakeTTY{answer: strings.NewReader("n\n")}
	var out, errb bytes.Buffer
	args := append(g.args, "--confirm", "--tpd", strconv.FormatInt(st.TokensWithinDay+1, 10))
	runTTY(context.Background(), args, strings.NewReader(prompts(5)), &out, &errb, func() (io.ReadWriteCloser, error) { return tty, nil })
	want := strconv.FormatInt(st.TokensWithinDay, 10) + " already used today"
	if !strings.Contains(tty.screen.String(), want) {
		t.Errorf("with GPTBATCH_DAY_TZ=%s the terminal shows %q, want it to say %q", zone, tty.screen.String(), want)
	}
	// The dry run's summary counts the same day.
	_, stderr, _ := g.loud().run(context.Background(), prompts(5), "--dry-run", "--tpd", strconv.FormatInt(st.TokensWithinDay+1, 10))
	if !strings.Contains(stderr, want) {
		t.Errorf("with GPTBATCH_DAY_TZ=%s the dry run says %q, want it to say %q", zone, stderr, want)
	}
}
