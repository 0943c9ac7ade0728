package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gofrs/flock"

	"github.com/gptbatch/gptbatch/internal/openaitest"
)

// TestInterruptGivesEveryLineAResult: after a signal the rest of the input
// is read and every line gets a result, the lines not sent an interrupted
// one (issue 12 item 17). It used to stop reading: 216 results for
// 100,000 lines.
func TestInterruptGivesEveryLineAResult(t *testing.T) {
	hang := make(chan struct{})
	srv := openaitest.New(openaitest.Config{Hang: hang})
	defer srv.Close()
	g := newGB(t, srv.URL())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		if err := waitServer(srv.WaitInFlight, 4); err == nil {
			cancel()
		}
		close(hang)
	}()
	const n = 5000
	out, stderr, code := g.run(ctx, hangPrompts(n, 0), "--parallel", "4", "--batch-tokens", "0")
	if code != 130 {
		t.Errorf("exit status %d, want 130; stderr %s", code, stderr)
	}
	rs := parseResults(t, out)
	if len(rs) != n {
		t.Fatalf("%d results, want one for each of the %d lines", len(rs), n)
	}
	ok := 0
	for i, r := range rs {
		switch {
		case r.ID != "p"+strconv.Itoa(i):
			t.Fatalf("result %d has id %s, want p%d (input order)", i, r.ID, i)
		case r.Error == nil:
			ok++
		case r.Error.Type != "interrupted":
			t.Errorf("result %s: %+v, want interrupted", r.ID, r.Error)
		}
	}
	if st := srv.Stats(); ok != 4 || st.Requests != 4 {
		t.Errorf("%d answers, %d requests; want the 4 in flight", ok, st.Requests)
	}
}

// TestUnknownPriceUnderDollarLimit: with a dollar limit, a line whose model
// has no known price is refused, not sent as if free; the dry run says
// its cost is unknown (issue 12 item 6).
func TestUnknownPriceUnderDollarLimit(t *testing.T) {
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
				if r.Error == nil || r.Error.Type != "budget" || !strings.Contains(r.Error.Message, "no known price") || !strings.Contains(r.Error.Message, flag) {
					t.Errorf("result %s: %+v, want a budget error: no known price for %s", r.ID, r.Error, flag)
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
		code := run(context.Background(), []string{"--dry-run", "-m", "my-local-llama", "--max-cost", "0.01"}, strings.NewReader(prompts(3)), &out, &errb)
		if code != 0 {
			t.Errorf("exit status %d, want 0; stderr %s", code, errb.String())
		}
		if s := errb.String(); !strings.Contains(s, "estimated cost unknown") || strings.Contains(s, "$0 (prompts only) to $0") {
			t.Errorf("dry-run summary = %q, want the cost said unknown, not $0", s)
		}
		if !strings.Contains(out.String(), `"est_cost_usd":null`) || !strings.Contains(out.String(), "no known price") {
			t.Errorf("estimates = %s, want null costs and each line refused under --max-cost", out.String())
		}
		_ = g
	})
}

// TestOwnReservationsFillTheDay: when only this run's own calls in flight
// fill the day limit with their output caps, the run waits for them to
// settle, neither failing nor announcing a wait of hours (issue 12 item
// 10): 30 lines of about 20 tokens each fit in --tpd 3000 although 16 in
// flight reserve about 4,200.
func TestOwnReservationsFillTheDay(t *testing.T) {
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

// TestResultsWrittenWhileWaiting: results already done reach stdout while
// the run waits for a limit (issue 12 item 11): with --rpm 3 the three
// answers are written before the fourth request's 20 s wait ends, so that
// an interrupt then loses nothing.
func TestResultsWrittenWhileWaiting(t *testing.T) {
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
	code := run(ctx, append(g.args, "--rpm", "3", "--parallel", "1"), strings.NewReader(prompts(6)), stdout, &errb)
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

// TestNeverSent: a base URL no request could go to is exit 2 before
// anything is sent; a model go-openai refuses before sending is an
// invalid_input result with no retry, no ledger line and no charge to the
// minute bucket (issue 12 item 18).
func TestNeverSent(t *testing.T) {
	t.Run("base URL", func(t *testing.T) {
		for _, u := range []string{"http//127.0.0.1/v1", "127.0.0.1:8080/v1", "ftp://127.0.0.1/v1", "https:///v1"} {
			g := newGB(t, u)
			_, stderr, code := g.run(context.Background(), prompts(2))
			if code != 2 || !strings.Contains(stderr, "base URL") {
				t.Errorf("--base-url %s: exit status %d, stderr %q; want 2, naming the base URL", u, code, stderr)
			}
			if _, err := os.Stat(filepath.Join(g.dir, "usage.ledger.jsonl")); err == nil {
				t.Errorf("--base-url %s: a ledger was written", u)
			}
		}
	})
	t.Run("model refused locally", func(t *testing.T) {
		srv := openaitest.New(openaitest.Config{})
		defer srv.Close()
		g := newGB(t, srv.URL())
		in := `{"id":"old","prompt":"hi","model":"text-davinci-003"}` + "\n" + `{"id":"new","prompt":"hi"}` + "\n"
		out, stderr, code := g.run(context.Background(), in, "--rpm", "100")
		if code != 1 {
			t.Errorf("exit status %d, want 1; stderr %s", code, stderr)
		}
		rs := parseResults(t, out)
		if len(rs) != 2 || rs[0].Error == nil || rs[0].Error.Type != "invalid_input" || rs[0].Attempts != 0 || rs[1].Error != nil {
			t.Fatalf("results = %+v, want the first invalid_input with no attempt, the second answered", rs)
		}
		es := ledger(t, g.dir)
		if len(es) != 1 || es[0].ID != "new" || srv.Stats().Requests != 1 {
			t.Errorf("ledger = %+v, server %d requests; want only the call sent", es, srv.Stats().Requests)
		}
		if s := readState(t, g.dir); s.RequestsWithinMin > 1.01 {
			t.Errorf("requests_within_min = %v, want at most the one request sent", s.RequestsWithinMin)
		}
	})
}

// TestLostCallSettledAtEstimate: a call that timed out after the server
// took it is settled at its estimate, which the API usually bills, not at
// 0; the ledger says so and the day counter agrees with it.
func TestLostCallSettledAtEstimate(t *testing.T) {
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	in := `"fine"` + "\n" + `{"id":"lost","prompt":"this one __hang__","max_tokens":100}` + "\n"
	_, stderr, code := g.run(context.Background(), in, "--timeout", "200ms", "--retries", "0")
	if code != 1 {
		t.Errorf("exit status %d, want 1; stderr %s", code, stderr)
	}
	es := ledger(t, g.dir)
	var lost int64
	for _, e := range es {
		if e.ID == "lost" {
			lost = e.PromptTokens + e.CompletionTokens
			if e.Error != "network" || e.CompletionTokens != 100 {
				t.Errorf("ledger entry of the lost call = %+v, want a network error at the estimate (100 output tokens)", e)
			}
		}
	}
	if lost == 0 {
		t.Fatalf("ledger = %+v, want the lost call settled at its estimate", es)
	}
	if s := readState(t, g.dir); s.TokensWithinDay != ledgerTokens(es) {
		t.Errorf("tokens_within_day = %d, want the ledger's %d", s.TokensWithinDay, ledgerTokens(es))
	}
}

// TestLockWait: a usage file whose lock another process holds is said on
// stderr after about a second, and a signal ends the wait with every line
// given its result (issue 12 item 24).
func TestLockWait(t *testing.T) {
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

// TestDayZone: GPTBATCH_DAY_TZ chooses where the day a run starts ends; a
// name that is no zone is exit 2.
func TestDayZone(t *testing.T) {
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	t.Setenv("GPTBATCH_DAY_TZ", "Not/AZone")
	if _, stderr, code := g.run(context.Background(), prompts(1)); code != 2 || !strings.Contains(stderr, "GPTBATCH_DAY_TZ") {
		t.Errorf("GPTBATCH_DAY_TZ=Not/AZone: exit status %d, stderr %q; want 2 naming it", code, stderr)
	}
	t.Setenv("GPTBATCH_DAY_TZ", "Pacific/Kiritimati") // UTC+14: never the zone of the test machine's midnight
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

// TestDryRunReadsUsageWithoutWaiting: a dry run reads what today has used
// without the lock and without waiting on a named pipe put in the usage
// file's place.
func TestDryRunReadsUsageWithoutWaiting(t *testing.T) {
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
