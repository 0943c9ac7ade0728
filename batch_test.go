package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/openaitest"
	"github.com/gptbatch/gptbatch/pipeline"
)

// stepClock is simulated time for runs that poll batches: waiting moves it
// on at once, so a run's seconds of polling take none.
type stepClock struct {
	mu  sync.Mutex
	now time.Time
	// start, if set, holds every wait until it is closed: a test lets a
	// run submit before anything is polled.
	start <-chan struct{}
}

func newStepClock() *stepClock { return &stepClock{now: time.Now()} }

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	if c.start != nil {
		select {
		case <-c.start:
		default:
			go func() {
				<-c.start
				ch <- c.advance(d)
			}()
			return ch
		}
	}
	ch <- c.advance(d)
	return ch
}

func (c *stepClock) advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d > 0 {
		c.now = c.now.Add(d)
	}
	return c.now
}

// onClock is ctx carrying clk for the runs it is given to.
func onClock(ctx context.Context, clk pipeline.Clock) context.Context {
	return context.WithValue(ctx, clockKey{}, clk)
}

// TestViaBatch: 400 lines of the four input forms go through the Batch
// API in at least three batches, some lines failing on the server's side,
// and come back 400/400 answered in input order at half price, without a
// single synchronous request and never more than one poll a second per
// batch; the ledger shows the batches' tokens.
func TestViaBatch(t *testing.T) {
	clk := newStepClock()
	srv := openaitest.New(openaitest.Config{Now: clk.Now, Seed: 3, Key: testKey, Batch: openaitest.BatchConfig{LineFailRate: 0.1}})
	defer srv.Close()
	g := newGB(t, srv.URL())
	in, ids, prompts := mixedBatch(400, nil)
	ctx := onClock(context.Background(), clk)
	out, stderr, code := g.run(ctx, in, "--via", "batch", "--batch-lines", "150", "--retries", "8")
	if code != 0 {
		t.Errorf("exit status = %d, want 0; stderr: %s", code, stderr)
	}
	rs := parseResults(t, out)
	if len(rs) != 400 {
		t.Fatalf("%d results, want 400", len(rs))
	}
	price, _ := budget.PriceOf("gpt-4o-mini")
	var cost budget.Cost
	batches := map[string]bool{}
	for i, r := range rs {
		if r.ID != ids[i] || r.Error != nil || r.Content == nil || !strings.HasPrefix("answer: "+prompts[i], *r.Content) {
			t.Errorf("result %d = id %q content %v error %+v, want id %q answered %q", i, r.ID, r.Content, r.Error, ids[i], prompts[i])
			continue
		}
		var got budget.Cost
		if err := got.UnmarshalJSON(r.CostUSD); err != nil {
			t.Fatalf("result %d: cost_usd %s: %v", i, r.CostUSD, err)
		}
		u := r.Usage
		if full := price.Cost(u.PromptTokens, u.CachedTokens, u.CompletionTokens); got*2 != full {
			t.Errorf("result %d: cost_usd = %s, want half of %s", i, got, full)
		}
		cost += got
		if r.BatchID == "" {
			t.Errorf("result %d: no batch_id", i)
		}
		batches[r.BatchID] = true
	}
	if len(batches) < 3 {
		t.Errorf("results came from %d batches, want at least 3 (--batch-lines 150)", len(batches))
	}
	if n := srv.Endpoint(openaitest.PathChat).Requests; n != 0 {
		t.Errorf("%d synchronous chat requests, want none", n)
	}
	st := srv.BatchStats()
	if st.Failed == 0 || st.Succeeded != 400 {
		t.Errorf("the fake answered %d lines and failed %d, want 400 answered once each and some failed (LineFailRate)", st.Succeeded, st.Failed)
	}
	for _, id := range srv.BatchIDs() {
		polls := srv.BatchPolls(id)
		for i := 1; i < len(polls); i++ {
			if d := polls[i].Sub(polls[i-1]); d < time.Second {
				t.Errorf("batch %s polled %v after the poll before, want at least 1s", id, d)
			}
		}
	}

	// The ledger has every answer at batch prices; the day's counters
	// hold what the batches used, their estimates given back.
	uout, uerr, ucode := g.run(ctx, "", "usage", "--today", "--json", "--by", "via")
	if ucode != 0 {
		t.Fatalf("usage: exit %d: %s", ucode, uerr)
	}
	var rep struct {
		Rows []struct {
			Key              string      `json:"key"`
			Succeeded        int64       `json:"succeeded"`
			PromptTokens     int64       `json:"prompt_tokens"`
			CompletionTokens int64       `json:"completion_tokens"`
			CostUSD          budget.Cost `json:"cost_usd"`
		} `json:"rows"`
		Limits struct {
			TokensWithinDay int64 `json:"tokens_within_day"`
		} `json:"limits"`
	}
	if err := json.Unmarshal([]byte(uout), &rep); err != nil {
		t.Fatalf("usage --json: %v: %s", err, uout)
	}
	if len(rep.Rows) != 1 || rep.Rows[0].Key != "batch" || rep.Rows[0].Succeeded != 400 || rep.Rows[0].PromptTokens != st.PromptTokens ||
		rep.Rows[0].CompletionTokens != st.CompletionTokens || rep.Rows[0].CostUSD != cost {
		t.Errorf("usage --today --by via = %+v, want one row: batch, 400 succeeded, %d+%d tokens, $%s", rep.Rows, st.PromptTokens, st.CompletionTokens, cost)
	}
	if got, want := rep.Limits.TokensWithinDay, st.PromptTokens+st.CompletionTokens; got != want {
		t.Errorf("tokens_within_day = %d, want the %d tokens the batches used", got, want)
	}
}

// simpleLines is n prompt lines q0..q(n-1).
func simpleLines(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `{"id":"q%d","prompt":"prompt number %d"}`+"\n", i, i)
	}
	return b.String()
}

// TestViaBatchFailures: what the Batch API does wrong reaches each line as
// it should: a 4xx line gets the API's message, a batch that fails
// validation gives its lines its reason, an expired batch's unanswered
// lines go again (only they), and the enqueued-token limit is waited out,
// or with --on-limit fail stops the run.
func TestViaBatchFailures(t *testing.T) {
	tests := []struct {
		name  string
		batch openaitest.BatchConfig
		in    string
		args  []string
		hold  int // requests that reach the server before the run\'s clock moves
		code  int
		check func(t *testing.T, rs []result, stderr string, st openaitest.BatchStats)
	}{
		{
			name: "a 4xx line",
			in:   simpleLines(5) + `{"id":"hot","prompt":"x","temperature":3}` + "\n",
			code: 1,
			check: func(t *testing.T, rs []result, _ string, _ openaitest.BatchStats) {
				for _, r := range rs[:5] {
					if r.Error != nil {
						t.Errorf("%s: error %+v, want an answer", r.ID, r.Error)
					}
				}
				if e := rs[5].Error; e == nil || e.Type != "api" || e.Status != 400 || !strings.Contains(e.Message, "temperature") || rs[5].BatchID == "" {
					t.Errorf("hot: error %+v batch %q, want api 400 with the API's message about temperature, naming its batch", e, rs[5].BatchID)
				}
			},
		},
		{
			name:  "a batch that fails validation",
			batch: openaitest.BatchConfig{MaxLines: 2},
			in:    simpleLines(5),
			code:  1,
			check: func(t *testing.T, rs []result, _ string, _ openaitest.BatchStats) {
				for _, r := range rs {
					if e := r.Error; e == nil || e.Type != "api" || !strings.Contains(e.Message, "failed validation: too_many_requests") {
						t.Errorf("%s: error %+v, want api naming the batch's too_many_requests", r.ID, e)
					}
				}
			},
		},
		{
			name:  "expiry with partial output",
			batch: openaitest.BatchConfig{LinesPerStep: 10, Window: 3 * time.Second},
			in:    simpleLines(20),
			check: func(t *testing.T, rs []result, _ string, st openaitest.BatchStats) {
				if st.Created != 2 || st.Lines != 20 {
					t.Errorf("BatchStats = %d created, %d lines answered, want 2 and 20: the follow-up holds only the expired lines", st.Created, st.Lines)
				}
			},
		},
		{
			// Nothing is polled until the three batches are created.
			name:  "the enqueued-token limit waits for this run's earlier batches",
			batch: openaitest.BatchConfig{QueueTokens: 150},
			hold:  6, // uploads and creations
			in:    simpleLines(30),
			args:  []string{"--batch-lines", "10"},
			check: func(t *testing.T, rs []result, stderr string, st openaitest.BatchStats) {
				if st.Lines != 30 || st.Created <= 3 {
					t.Errorf("BatchStats = %d created, %d lines, want more than 3 (some refused) and each line answered once", st.Created, st.Lines)
				}
				if !strings.Contains(stderr, "token_limit") && !strings.Contains(stderr, "Enqueued token limit") {
					t.Errorf("stderr does not say a batch was refused: %s", stderr)
				}
			},
		},
		{
			name:  "--batch-queue-tokens keeps under the limit",
			batch: openaitest.BatchConfig{QueueTokens: 150},
			in:    simpleLines(30),
			args:  []string{"--batch-queue-tokens", "150"},
			check: func(t *testing.T, rs []result, stderr string, st openaitest.BatchStats) {
				if st.Lines != 30 || strings.Contains(stderr, "refused") {
					t.Errorf("BatchStats = %+v, stderr %s; want 30 lines and no batch refused", st, stderr)
				}
				if st.Created < 3 {
					t.Errorf("%d batches, want the 30 lines split under 150 input tokens each", st.Created)
				}
			},
		},
		{
			name:  "the enqueued-token limit with --on-limit fail",
			batch: openaitest.BatchConfig{QueueTokens: 20},
			in:    simpleLines(5),
			args:  []string{"--on-limit", "fail"},
			code:  3,
			check: func(t *testing.T, rs []result, stderr string, _ openaitest.BatchStats) {
				for _, r := range rs {
					if e := r.Error; e == nil || e.Type != "rate_limit" || !strings.Contains(e.Message, "Enqueued token limit") {
						t.Errorf("%s: error %+v, want rate_limit with the API's message", r.ID, e)
					}
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newStepClock()
			srv := openaitest.New(openaitest.Config{Now: clk.Now, Seed: 5, Batch: tt.batch})
			defer srv.Close()
			if tt.hold > 0 {
				start := make(chan struct{})
				clk.start = start
				go func() {
					defer close(start)
					srv.WaitArrivals(t.Context(), tt.hold)
				}()
			}
			g := newGB(t, srv.URL())
			out, stderr, code := g.run(onClock(context.Background(), clk), tt.in, append([]string{"--via", "batch"}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit status = %d, want %d; stderr: %s", code, tt.code, stderr)
			}
			rs := parseResults(t, out)
			if n := strings.Count(tt.in, "\n"); len(rs) != n {
				t.Fatalf("%d results, want %d", len(rs), n)
			}
			for i, r := range rs {
				if r.Line != i+1 {
					t.Errorf("result %d: line %d, want %d", i, r.Line, i+1)
				}
			}
			tt.check(t, rs, stderr, srv.BatchStats())
		})
	}
}
