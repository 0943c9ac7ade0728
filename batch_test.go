package main

import (
	"context"
	"encoding/json"
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
}

func newStepClock() *stepClock { return &stepClock{now: time.Now()} }

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d > 0 {
		c.now = c.now.Add(d)
	}
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
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
