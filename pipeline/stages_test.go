package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/openaitest"
	"github.com/gptbatch/gptbatch/internal/retry"
	"github.com/gptbatch/gptbatch/internal/tokens"
	"github.com/gptbatch/gptbatch/jsonl"
)

// testRunner is a run of cfg on simulated time, its log in logs.
func testRunner(t *testing.T, cfg Config) (*runner, *fakeClock, *strings.Builder) {
	t.Helper()
	clk := newFakeClock()
	logs := new(strings.Builder)
	cfg.Clock = clk
	cfg.Log = slog.New(slog.NewTextHandler(&syncWriter{b: logs}, nil))
	if cfg.Model == "" {
		cfg.Model = "gpt-4o-mini"
	}
	if cfg.Tokens == nil {
		cfg.Tokens = tokens.Counter{}
	}
	return newRunner(context.Background(), cfg), clk, logs
}

// syncWriter lets workers log while the test reads.
type syncWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// items are n lines ready for admission, each estimated at tokens.
func items(n int, tokens int64) chan *item {
	c := make(chan *item, n)
	for i := range n {
		req := &jsonl.Request{Line: i + 1, ID: fmt.Sprint(i + 1)}
		c <- &item{req: req, model: "gpt-4o-mini", prompt: tokens, exact: true, est: budget.Estimate{Tokens: tokens}}
	}
	close(c)
	return c
}

func gate(l budget.Limits) *budget.Gate {
	g := budget.NewGate(new(budget.MemStore), l)
	g.SetSlack(0) // exactly the server's bucket: waits are whole refills
	return g
}

// Admission takes what the limits allow at once, then waits, on the clock,
// for the next to fit; a wait of a minute or more is said without
// --verbose.
func TestAdmitWaits(t *testing.T) {
	r, clk, logs := testRunner(t, Config{Gate: gate(budget.Limits{RPM: 2})})
	next := r.admitter(items(3, 10))
	ctx := context.Background()
	got, err := next(ctx, 3)
	if err != nil || len(got) != 2 {
		t.Fatalf("next(3) = %d lines, %v; want the 2 the minute allows", len(got), err)
	}
	start := clk.Now()
	done := make(chan []*item)
	go func() {
		its, err := next(ctx, 3)
		if err != nil {
			t.Errorf("next: %v", err)
		}
		done <- its
	}()
	got = runUntil(clk, done)
	if len(got) != 1 || got[0].req.Line != 3 || got[0].result != nil {
		t.Fatalf("next after the wait = %+v, want line 3 admitted", got)
	}
	if waited := clk.Now().Sub(start); waited != 30*time.Second {
		t.Errorf("admitted line 3 after %v, want 30s (a request refills in 30 s at --rpm 2)", waited)
	}
	if w := r.stats.Waiting(); w != nil {
		t.Errorf("Stats.Waiting() = %+v after admission, want nil", w)
	}
	if !strings.Contains(logs.String(), "waiting 30s for the minute request limit") {
		t.Errorf("log = %q, want the 30 s wait said", logs.String())
	}
}

// A wait shorter than longWait is said only with --verbose.
func TestAdmitShortWaitIsQuiet(t *testing.T) {
	r, clk, logs := testRunner(t, Config{Gate: gate(budget.Limits{RPM: 600})})
	next := r.admitter(items(601, 10))
	done := make(chan int)
	go func() {
		n := 0
		for n < 601 {
			its, err := next(context.Background(), 64)
			if err != nil {
				t.Errorf("next: %v", err)
				break
			}
			n += len(its)
		}
		done <- n
	}()
	start := clk.Now()
	if n := runUntil(clk, done); n != 601 {
		t.Errorf("admitted %d lines, want 601", n)
	}
	if waited := clk.Now().Sub(start); waited != 100*time.Millisecond {
		t.Errorf("the 601st line waited %v, want 100ms", waited)
	}
	if logs.Len() != 0 {
		t.Errorf("log = %q, want nothing without --verbose", logs.String())
	}
}

// --on-limit fail: the line a limit holds back, and every later one, get
// a budget result at once, and the run stops with exit status 3.
func TestAdmitOnLimitFail(t *testing.T) {
	r, _, _ := testRunner(t, Config{Gate: gate(budget.Limits{RPM: 1}), OnLimit: Fail})
	next := r.admitter(items(3, 10))
	var all []*item
	for {
		its, err := next(context.Background(), 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(its) == 0 {
			break
		}
		all = append(all, its...)
	}
	if len(all) != 3 || all[0].result != nil {
		t.Fatalf("admitted %d lines, first result %+v; want 3, the first to be sent", len(all), all[0].result)
	}
	for _, it := range all[1:] {
		if e := it.result.Error; e == nil || e.Type != jsonl.ErrBudget || !strings.Contains(e.Message, "stopped by the minute request limit (--on-limit fail)") {
			t.Errorf("line %d: result %+v, want a budget error naming the limit", it.req.Line, it.result.Error)
		}
	}
	why := r.stop.stopped()
	var ec interface{ ExitCode() int }
	if why == nil || !errors.As(why.err, &ec) || ec.ExitCode() != ExitLimit {
		t.Errorf("stop state = %+v, want stopped with exit status 3", why)
	}
}

// hold streams with the batch limits off, and refuses a batch over
// --batch-tokens before passing on any line.
func TestHold(t *testing.T) {
	for _, tt := range []struct {
		name        string
		batchTokens int64
		passed      int
		code        int
	}{
		{"streams", 0, 5, 0},
		{"within", 500, 5, 0},
		{"over", 499, 0, ExitLimit},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, _, _ := testRunner(t, Config{BatchTokens: tt.batchTokens})
			out := make(chan *item, 5)
			err := r.hold(context.Background(), items(5, 100), out)
			code := 0
			var ec interface{ ExitCode() int }
			if errors.As(err, &ec) {
				code = ec.ExitCode()
			}
			if len(out) != tt.passed || code != tt.code {
				t.Errorf("hold(5 lines of 100 tokens, --batch-tokens %d) passed %d lines, exit status %d (%v); want %d, %d",
					tt.batchTokens, len(out), code, err, tt.passed, tt.code)
			}
		})
	}
}

// The retry loop backs off on the clock with decorrelated jitter (each wait
// drawn between the floor and three times the last), then gives up with
// the last error; every attempt is settled.
func TestRetryLoop(t *testing.T) {
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	var asked []time.Duration
	r, clk, _ := testRunner(t, Config{
		BaseURL: srv.URL(), Key: "sk-test", Retries: 3, Gate: gate(budget.Limits{RPM: 600}),
		Jitter: func(n time.Duration) time.Duration { asked = append(asked, n); return n / 2 },
	})
	req, err := jsonl.NewReader(strings.NewReader(`"fail __status_500__"`+"\n"), jsonl.Options{}).Next()
	if err != nil {
		t.Fatal(err)
	}
	it := r.prepare(req, true)
	settle := make(chan budget.Settlement, 10)
	done := make(chan *jsonl.Result)
	go func() { done <- r.sendLine(context.Background(), it, settle)[0] }()
	start := clk.Now()
	res := runUntil(clk, done)
	if res.Error == nil || res.Error.Type != jsonl.ErrServer || res.Attempts != 4 {
		t.Fatalf("sendLine = %+v (attempts %d), want a server error after 4 attempts", res.Error, res.Attempts)
	}
	// Waits 1s, 1.75s, 2.875s: each the 500ms floor plus half of the
	// range up to three times the last wait.
	want := []time.Duration{time.Second, 2500 * time.Millisecond, 4750 * time.Millisecond}
	if fmt.Sprint(asked) != fmt.Sprint(want) {
		t.Errorf("back-off drew jitter in %v, want %v", asked, want)
	}
	if waited := clk.Now().Sub(start); waited != 5625*time.Millisecond {
		t.Errorf("retries took %v of the clock, want 5.625s", waited)
	}
	if n := len(settle); n != 4 || srv.Stats().Requests != 4 {
		t.Errorf("%d settlements, %d requests; want 4 of each", n, srv.Stats().Requests)
	}
}

// countingStore counts the store updates.
type countingStore struct {
	budget.MemStore
	updates atomic.Int32
}

func (s *countingStore) Update(ctx context.Context, now time.Time, fn func(*budget.State, time.Time) ([]budget.LedgerEntry, error)) error {
	s.updates.Add(1)
	return s.MemStore.Update(ctx, now, fn)
}

// The settler applies what has queued in one update of the store.
func TestSettleBatches(t *testing.T) {
	store := new(countingStore)
	r, _, _ := testRunner(t, Config{Gate: budget.NewGate(store, budget.Limits{})})
	in := make(chan budget.Settlement, 8)
	for i := range 5 {
		in <- budget.Settlement{Sent: true, Tokens: 10, Entry: &budget.LedgerEntry{ID: fmt.Sprint(i)}}
	}
	close(in)
	if err := r.settle(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	if n, e := store.updates.Load(), len(store.Entries()); n != 1 || e != 5 {
		t.Errorf("settle(5 queued) = %d store updates, %d ledger entries; want 1, 5", n, e)
	}
	if got := store.State().TokensWithinDay; got != 50 {
		t.Errorf("tokens_within_day = %d, want 50", got)
	}
}

// A nil Gate is an in-memory gate with no limits: a dry run needs no other.
func TestNilGate(t *testing.T) {
	var out strings.Builder
	err := Run(context.Background(), strings.NewReader("\"hello\"\n\"world\"\n"), &out, Config{Tokens: tokens.Counter{}, Model: "gpt-4o-mini", DryRun: true})
	if err != nil || strings.Count(out.String(), "\n") != 2 {
		t.Errorf("Run(dry run, nil Gate) = %v, output %q; want 2 estimates", err, out.String())
	}
}

// A 429 the minute bucket does not explain switches the run to per-second
// pacing, said once on stderr; the retries it pauses then leave one paced
// slot apart, not together when the pause ends.
func TestRefusedPacesAndSaysOnce(t *testing.T) {
	g := gate(budget.Limits{RPM: 600})
	r, clk, logs := testRunner(t, Config{Gate: g})
	ctx := context.Background()
	f := retry.Failure{Status: 429, Limit: budget.MinuteRequests}
	for range 3 {
		if err := r.refused(ctx, f, nil, time.Second); err != nil {
			t.Fatalf("refused = %v", err)
		}
	}
	const said = "the server enforces its request limit per second: pacing at 9.8 a second"
	if n := strings.Count(logs.String(), said); n != 1 {
		t.Errorf("log says %q %d times, want once; log:\n%s", said, n, logs)
	}
	// Ten workers ask at the end of the pause: they leave a paced slot
	// apart.
	end := clk.Now().Add(time.Second)
	var at []time.Time
	for now := end; len(at) < 10; {
		n, wait, _, err := g.Reserve(ctx, now, []budget.Estimate{{Tokens: 1}})
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			at = append(at, now)
			continue
		}
		now = now.Add(wait)
	}
	if span := at[9].Sub(at[0]); span < 900*time.Millisecond {
		t.Errorf("10 retries after the pause left within %v, want them spread over about a second", span)
	}
}
