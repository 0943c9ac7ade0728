package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// TestUnknownPriceUnderDollarLimit: with a dollar limit, a line whose model
// has no known price is refused, naming the model, not sent as if free;
// the dry run says its cost is unknown.
func TestUnknownPriceUnderDollarLimit(t *testing.T) {
	t.Parallel()
	for _, flag := range []string{"--max-cost", "--daily-cost"} {
		t.Run(flag, func(t *testing.T) {
			srv := openaitest.New(openaitest.Config{})
			defer srv.Close()
			g := newGB(t, srv.URL())
			out, stderr, code := g.run(context.Background(), prompts(5), "-m", "my-local-llama", flag, "0.01")
			if code != 1 {
				t.Errorf("exit status %d, want 1; stderr %s", code, stderr)
			}
			rs := parseResults(t, out)
			if len(rs) != 5 {
				t.Fatalf("%d results, want 5", len(rs))
			}
			for _, r := range rs {
				if r.Error == nil || r.Error.Type != "budget" || !strings.Contains(r.Error.Message, `model "my-local-llama"`) ||
					!strings.Contains(r.Error.Message, "no known price") || !strings.Contains(r.Error.Message, flag) {
					t.Errorf("result %s: %+v, want a budget error: my-local-llama has no known price for %s", r.ID, r.Error, flag)
				}
			}
			if n := srv.Stats().Requests; n != 0 {
				t.Errorf("server got %d requests, want none", n)
			}
		})
	}
	t.Run("dry run", func(t *testing.T) {
		g := newGB(t, "http://127.0.0.1:1/v1")
		var out, errb bytes.Buffer
		code := g.runStreams(context.Background(), []string{"--dry-run", "-m", "my-local-llama", "--max-cost", "0.01"}, strings.NewReader(prompts(3)), &out, &errb)
		if code != 0 {
			t.Errorf("exit status %d, want 0; stderr %s", code, errb.String())
		}
		if s := errb.String(); !strings.Contains(s, "estimated cost unknown") || strings.Contains(s, "$0 (prompts only) to $0") {
			t.Errorf("dry-run summary = %q, want the cost said unknown, not $0", s)
		}
		if !strings.Contains(out.String(), `"est_cost_usd":null`) || !strings.Contains(out.String(), `model \"my-local-llama\": the model has no known price`) {
			t.Errorf("estimates = %s, want null costs and each line refused under --max-cost", out.String())
		}
		_ = g
	})
}

// TestOwnReservationsFillTheDay: when only this run's own calls in flight
// fill the day limit with their output caps, the run waits for them to
// settle, neither failing nor announcing a wait of hours: 30 lines of about 20 tokens each fit in --tpd 3000 although 16 in
// flight reserve about 4,200.
func TestOwnReservationsFillTheDay(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"fail", "wait"} {
		t.Run(mode, func(t *testing.T) {
			srv := openaitest.New(openaitest.Config{Latency: 20 * time.Millisecond})
			defer srv.Close()
			g := newGB(t, srv.URL())
			out, stderr, code := g.run(context.Background(), prompts(30), "--tpd", "3000", "--on-limit", mode, "--parallel", "16")
			if code != 0 || strings.Contains(stderr, "waiting") {
				t.Errorf("exit status %d, stderr %q; want 0 and no wait said", code, stderr)
			}
			if rs := parseResults(t, out); len(rs) != 30 {
				t.Errorf("%d results, want 30", len(rs))
			}
			if n := srv.Stats().Succeeded; n != 30 {
				t.Errorf("server answered %d, want 30", n)
			}
		})
	}
}

// TestDayZone: GPTBATCH_DAY_TZ chooses where the day a run starts ends; a
// name that is no zone is exit 2.
func TestDayZone(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	g.setenv("GPTBATCH_DAY_TZ", "Not/AZone")
	if _, stderr, code := g.run(context.Background(), prompts(1)); code != 2 || !strings.Contains(stderr, "GPTBATCH_DAY_TZ") {
		t.Errorf("GPTBATCH_DAY_TZ=Not/AZone: exit status %d, stderr %q; want 2 naming it", code, stderr)
	}
	g.setenv("GPTBATCH_DAY_TZ", "Pacific/Kiritimati") // UTC+14: never the zone of the test machine's midnight
	if _, stderr, code := g.run(context.Background(), prompts(1)); code != 0 {
		t.Fatalf("exit status %d: %s", code, stderr)
	}
	loc, err := time.LoadLocation("Pacific/Kiritimati")
	if err != nil {
		t.Skip(err)
	}
	if end := readState(t, g.dir).DayEndsAt.In(loc); end.Hour() != 0 || end.Minute() != 0 || time.Until(end) > 24*time.Hour {
		t.Errorf("day_ends_at = %v, want the next midnight in Pacific/Kiritimati", end)
	}
}

// TestBatchLimitsSendNothing: a batch over --batch-tokens or --max-cost is
// refused whole, exit 3, before any request.
func TestBatchLimitsSendNothing(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("word ", 1200) // ~1200 tokens a line
	var big strings.Builder
	for i := 0; i < 30; i++ { // ~36k tokens
		big.WriteString(`"` + long + strconv.Itoa(i) + `"` + "\n")
	}
	tests := []struct {
		name, in string
		args     []string
		msg      string
	}{
		{"batch tokens", big.String(), []string{"--batch-tokens", "30000"}, "--batch-tokens 30000"},
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
	t.Parallel()
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
	t.Parallel()
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

// TestUnknownPrice: a model with no known price gets cost_usd null and one
// warning naming it.
func TestUnknownPrice(t *testing.T) {
	t.Parallel()
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
	t.Parallel()
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL()).loud()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var in strings.Builder
	for i := range 3 {
		// Each line uses about 260 tokens of the 400 (its prompt, and
		// its whole output cap, for the answer echoes the prompt): the
		// second does not fit once the first has settled.
		in.WriteString(`{"id":"p` + strconv.Itoa(i) + `","prompt":"` + strings.Repeat("word ", 150) + `","max_tokens":100}` + "\n")
	}
	out, stderr, code := g.runUntil(ctx, cancel, in.String(), "waiting", "--tpd", "400")
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

// limitsJSON is `gptbatch limits --json`.
type limitsJSON struct {
	Store  string `json:"store"`
	Limits map[string]struct {
		Stored json.RawMessage `json:"stored"`
		Used   json.RawMessage `json:"used"`
	} `json:"limits"`
}

// TestStoredDailyCost: a daily cost stored once
// holds a run that gives no cost flag, and a later run cannot loosen it
// with a flag; `limits --json` shows the limit and the day's spend.
func TestStoredDailyCost(t *testing.T) {
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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
			"gptbatch: warning: 85 % of today's 1000000 tokens used (850", "spent"},
		{"threshold flag", 850_000, 0, []string{"--tpd", "1000000", "--warn-at", "90"}, "", "warning"},
		// The share said is the share spent, not the threshold passed.
		{"far past the threshold", 0, 150 * budget.Dollar / 100, []string{"--daily-cost", "5", "--warn-at", "1"},
			"gptbatch: warning: 30 % of today's $5.00 spent ($1.5", "1 %"},
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

func (f *fakeTTY) Read(p []byte) (int, error) { return f.answer.Read(p) }

func (f *fakeTTY) Write(p []byte) (int, error) { return f.screen.Write(p) }

func (f *fakeTTY) Close() error { f.closed = true; return nil }

// TestConfirm: --confirm shows the estimate on the terminal and sends
// only when answered yes; without a terminal it is a usage error.
func TestConfirm(t *testing.T) {
	t.Parallel()
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
			code := Run(context.Background(), append(g.args, "--confirm"), strings.NewReader(prompts(5)), &out, &errb, g.ttySeams(open))
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
	t.Parallel()
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
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	g.setenv("GPTBATCH_DAY_TZ", zone)
	if _, stderr, code := g.run(context.Background(), prompts(5)); code != 0 {
		t.Fatalf("first run: exit status %d; stderr: %s", code, stderr)
	}
	fs, err := budget.OpenFile(filepath.Join(g.dir, "usage.md"), budget.Options{})
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
	Run(context.Background(), args, strings.NewReader(prompts(5)), &out, &errb, g.ttySeams(func() (io.ReadWriteCloser, error) { return tty, nil }))
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

// toolLines is n chat lines, each with a short question of its own and
// large function definitions, as an agent's batch has: the even lines
// as tools with long enums (countries, currencies), the odd ones as the
// deprecated functions of a support agent. The API bills definitions as
// prompt tokens, many more than the lines' messages; each answer is cut
// to 4 tokens, so that the output's reservation leaves no slack.
func toolLines(n int) string {
	enum := func(values string) string {
		return `["` + strings.Join(strings.Fields(values), `","`) + `"]`
	}
	shipping := `[{"type":"function","function":{"name":"quote_shipping","description":"Quote the price of shipping a parcel abroad.",` +
		`"parameters":{"type":"object","properties":{` +
		`"country":{"type":"string","description":"Destination country, ISO 3166-1 alpha-2","enum":` +
		enum("AD AE AR AT AU BE BG BR CA CH CL CN CO CY CZ DE DK EE EG ES FI FR GB GR HK HR HU ID IE IL IN IS IT JP KE KR LT LU LV MA MT MX MY NG NL NO NZ PE PH PK PL PT RO RS SA SE SG SI SK TH TR TW UA US VN ZA") + `},` +
		`"currency":{"type":"string","description":"Currency of the quote, ISO 4217","enum":` +
		enum("AED ARS AUD BRL CAD CHF CLP CNY COP CZK DKK EGP EUR GBP HKD HUF IDR ILS INR ISK JPY KES KRW MAD MXN MYR NGN NOK NZD PEN PHP PKR PLN RON RSD SAR SEK SGD THB TRY TWD UAH USD VND ZAR") + `},` +
		`"weight_kg":{"type":"number","description":"Weight of the parcel in kilograms"}},"required":["country","currency","weight_kg"]}}}]`
	support := `[{"name":"lookup_order","description":"Look up an order by its number.","parameters":{"type":"object","properties":{"order_id":{"type":"string","description":"The order number, like AB-123456"}},"required":["order_id"]}},` +
		`{"name":"refund_order","description":"Refund all or part of an order.","parameters":{"type":"object","properties":{"order_id":{"type":"string","description":"The order number"},"amount":{"type":"number","description":"Amount to refund, in the order's currency; the whole order if absent"},"reason":{"type":"string","enum":["damaged","late","wrong_item","not_received","changed_mind"],"description":"Why the customer wants a refund"}},"required":["order_id","reason"]}},` +
		`{"name":"escalate","description":"Hand the conversation to a human agent.","parameters":{"type":"object","properties":{"priority":{"type":"string","enum":["low","normal","high","urgent"],"description":"How soon a human must answer"},"summary":{"type":"string","description":"What the customer needs, in one or two sentences"}},"required":["priority","summary"]}},` +
		`{"name":"update_address","description":"Change the delivery address of an order not yet shipped.","parameters":{"type":"object","properties":{"order_id":{"type":"string","description":"The order number"},"address":{"type":"object","description":"The new address","properties":{"street":{"type":"string","description":"Street and number"},"city":{"type":"string","description":"City"},"postal_code":{"type":"string","description":"Postal code"},"country":{"type":"string","description":"ISO 3166-1 alpha-2 country code"}}}},"required":["order_id","address"]}}]`
	var b strings.Builder
	for i := range n {
		field, defs := "tools", shipping
		if i%2 == 1 {
			field, defs = "functions", support
		}
		fmt.Fprintf(&b, `{"id":"t%d","messages":[{"role":"user","content":"Customer %d asks about parcel %d."}],"max_tokens":4,%q:%s}`+"\n", i, i, i*7, field, defs)
	}
	return b.String()
}

// TestLimitsHoldWithTools: lines with function definitions, as tools or
// as the deprecated functions, are estimated at no less than the API
// bills them, so the batch limits hold: --max-cost (and, through the
// Batch API, --batch-tokens) set to the dry run's estimate lets the batch
// go, and it is billed no more than the limit; set just below what the
// API bills, the batch is refused before anything is sent.
func TestLimitsHoldWithTools(t *testing.T) {
	t.Parallel()
	in := toolLines(12)
	price, _ := budget.PriceOf("gpt-4o-mini")
	// estimate is the dry run's: its estimated cost and prompt tokens.
	estimate := func(t *testing.T, args ...string) (budget.Cost, int64) {
		t.Helper()
		g := newGB(t, "http://127.0.0.1:9/v1")
		out, stderr, code := g.run(context.Background(), in, append([]string{"--dry-run"}, args...)...)
		if code != 0 {
			t.Fatalf("--dry-run: exit status %d: %s", code, stderr)
		}
		var c budget.Cost
		var tokens int64
		for _, e := range parseLines[struct {
			PromptTokens int64           `json:"prompt_tokens"`
			EstCostUSD   json.RawMessage `json:"est_cost_usd"`
		}](t, out) {
			c += cost(t, e.EstCostUSD)
			tokens += e.PromptTokens
		}
		return c, tokens
	}

	t.Run("max cost", func(t *testing.T) {
		t.Parallel()
		est, _ := estimate(t)
		srv := openaitest.New(openaitest.Config{})
		defer srv.Close()
		g := newGB(t, srv.URL())
		if _, stderr, code := g.run(context.Background(), in, "--max-cost", est.String()); code != 0 {
			t.Fatalf("--max-cost %s (the dry run's estimate): exit status %d, want 0: %s", est, code, stderr)
		}
		st := srv.Stats()
		billed := price.Cost(st.PromptTokens, st.CachedTokens, st.CompletionTokens)
		if billed > est {
			t.Errorf("the API billed $%s (%d prompt tokens) under --max-cost %s", billed, st.PromptTokens, est)
		}
		t.Logf("estimated $%s, billed $%s", est, billed)

		below := billed - 1 // a picodollar less than the batch costs
		srv2 := openaitest.New(openaitest.Config{})
		defer srv2.Close()
		g2 := newGB(t, srv2.URL())
		_, stderr, code := g2.run(context.Background(), in, "--max-cost", below.String())
		if n := srv2.Stats().Requests; code != 3 || n != 0 {
			t.Errorf("--max-cost %s, below the $%s the API bills: exit status %d and %d requests sent, want 3 and none: %s", below, billed, code, n, stderr)
		}
	})

	t.Run("batch tokens", func(t *testing.T) {
		t.Parallel()
		_, est := estimate(t, "--via", "batch")
		run := func(limit int64) (openaitest.BatchStats, string, int) {
			clk := newStepClock()
			srv := openaitest.New(openaitest.Config{Now: clk.Now, Key: testKey})
			defer srv.Close()
			g := newGB(t, srv.URL())
			g.seams.Clock = clk
			_, stderr, code := g.run(context.Background(), in, "--via", "batch", "--batch-tokens", strconv.FormatInt(limit, 10))
			return srv.BatchStats(), stderr, code
		}
		st, stderr, code := run(est)
		if code != 0 {
			t.Fatalf("--via batch --batch-tokens %d (the dry run's estimate): exit status %d, want 0: %s", est, code, stderr)
		}
		if st.PromptTokens > est {
			t.Errorf("the Batch API billed %d prompt tokens under --batch-tokens %d", st.PromptTokens, est)
		}
		t.Logf("estimated %d prompt tokens, billed %d", est, st.PromptTokens)
		below := st.PromptTokens - 1
		if st, stderr, code := run(below); code != 3 || st.Uploads != 0 || st.Created != 0 {
			t.Errorf("--via batch --batch-tokens %d, below the %d the API bills: exit status %d, %d files uploaded, %d batches created; want 3 and none: %s",
				below, st.PromptTokens, code, st.Uploads, st.Created, stderr)
		}
	})
}
