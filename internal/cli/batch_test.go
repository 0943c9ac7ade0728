package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/batchapi"
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

// TestViaBatch: 400 lines of the four input forms go through the Batch
// API in at least three batches, some lines failing on the server's side,
// and come back 400/400 answered in input order at half price, without a
// single synchronous request and never more than one poll a second per
// batch; the ledger shows the batches' tokens.
func TestViaBatch(t *testing.T) {
	t.Parallel()
	clk := newStepClock()
	srv := openaitest.New(openaitest.Config{Now: clk.Now, Seed: 3, Key: testKey, Batch: openaitest.BatchConfig{LineFailRate: 0.1}})
	defer srv.Close()
	g := newGB(t, srv.URL())
	g.seams.Clock = clk
	in, ids, prompts := mixedBatch(400, nil)
	ctx := context.Background()
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
	// The input files are deleted once collected; the output and error
	// files, what was paid for, stay.
	if ids := srv.FileIDs("batch"); len(ids) != 0 || st.FilesDeleted != st.Created {
		t.Errorf("input files left: %v, %d files deleted, want none left and the %d batches' inputs deleted", ids, st.FilesDeleted, st.Created)
	}
	if n := len(srv.FileIDs("batch_output")); n < st.Created {
		t.Errorf("%d output and error files left, want at least one a batch (%d)", n, st.Created)
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
	t.Parallel()
	tests := []struct {
		name  string
		batch openaitest.BatchConfig
		in    string
		args  []string
		hold  int // requests that reach the server before the run\'s clock moves
		code  int
		kept  int // input files left: a refused batch's, for --resume to create again
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
			kept:  1,
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
			g := newGB(t, srv.URL()).loud() // the warnings are checked
			g.seams.Clock = clk
			out, stderr, code := g.run(context.Background(), tt.in, append([]string{"--via", "batch"}, tt.args...)...)
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
			if ids := srv.FileIDs("batch"); len(ids) != tt.kept {
				t.Errorf("input files left = %v, want %d", ids, tt.kept)
			}
		})
	}
}

// TestViaBatchInterruptAndResume: a signal while a batch is in progress
// leaves it running and says how to collect it; the same command with
// --resume then answers every line without submitting anything again, and
// the ledger counts each answer once.
func TestViaBatchInterruptAndResume(t *testing.T) {
	t.Parallel()
	clk := newStepClock()
	srv := openaitest.New(openaitest.Config{Now: clk.Now, Seed: 9, Batch: openaitest.BatchConfig{LinesPerStep: 5}})
	defer srv.Close()
	g := newGB(t, srv.URL())
	g.seams.Clock = clk
	in := simpleLines(40)
	args := []string{"--via", "batch", "--batch-lines", "20"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The signal comes as the second batch is submitted.
	out, stderr, code := g.runUntil(ctx, cancel, in, "chunk=2", append(args, "--verbose")...)
	if code != 130 {
		t.Fatalf("interrupted run: exit status = %d, want 130; stderr: %s", code, stderr)
	}
	rs := parseResults(t, out)
	if len(rs) != 40 {
		t.Fatalf("interrupted run: %d results, want 40", len(rs))
	}
	answered := 0
	for _, r := range rs {
		switch {
		case r.Error == nil:
			answered++
		case r.Error.Type != "interrupted" || !strings.Contains(r.Error.Message, "--resume"):
			t.Errorf("%s: error %+v, want interrupted, saying to --resume", r.ID, r.Error)
		case r.BatchID != "" && !strings.Contains(r.Error.Message, r.BatchID):
			t.Errorf("%s: error %q does not name its batch %s", r.ID, r.Error.Message, r.BatchID)
		}
	}
	if answered == 40 {
		t.Fatalf("every line was answered before the interrupt: the test tested nothing")
	}
	if !strings.Contains(stderr, "--resume") || !strings.Contains(stderr, "usage.batches.jsonl") {
		t.Errorf("stderr does not say how to collect the batches: %s", stderr)
	}
	created := srv.BatchStats().Created

	prev := filepath.Join(g.dir, "out.jsonl")
	if err := os.WriteFile(prev, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	out2, stderr2, code2 := g.run(context.Background(), in, append(args, "--resume", prev)...)
	if code2 != 0 {
		t.Errorf("resumed run: exit status = %d, want 0; stderr: %s", code2, stderr2)
	}
	done := map[string]int{}
	for _, r := range rs {
		if r.Error == nil {
			done[r.ID]++
		}
	}
	for _, r := range parseResults(t, out2) {
		if r.Error != nil {
			t.Errorf("resumed run: %s: error %+v", r.ID, r.Error)
			continue
		}
		done[r.ID]++
	}
	for i := range 40 {
		if id := fmt.Sprint("q", i); done[id] != 1 {
			t.Errorf("%s answered %d times over both runs, want once", id, done[id])
		}
	}
	st := srv.BatchStats()
	if st.Created != created || st.Lines != 40 {
		t.Errorf("after --resume: %d batches created, %d lines answered, want still %d and 40: nothing submitted again", st.Created, st.Lines, created)
	}
	if n, tokens := todayTotal(t, g); n != 40 || tokens != st.PromptTokens {
		t.Errorf("ledger: %d succeeded, %d prompt tokens, want 40 and %d: each answer counted once", n, tokens, st.PromptTokens)
	}
}

// TestViaBatchLostAnswers: when the API makes a batch, or stores an
// upload, and the answer is lost, gptbatch finds what it made, before the
// retry or after the last try, instead of making a second one: a second
// batch's lines would run and be paid for twice, a second file would fill
// the user's file storage. Each line is answered once and counted once,
// and no input file of the run is left behind.
func TestViaBatchLostAnswers(t *testing.T) {
	t.Parallel()
	for _, lost := range []struct {
		name string
		cfg  openaitest.BatchConfig
	}{
		// Every chunk's first create (upload) is made, its answer lost.
		{"creates", openaitest.BatchConfig{LoseCreates: 3}},
		{"uploads", openaitest.BatchConfig{LoseUploads: 3}},
	} {
		for _, tt := range []struct {
			name string
			args []string
		}{
			{"found before the retry", nil},
			{"found after the last try", []string{"--retries", "0"}},
		} {
			t.Run(lost.name+"/"+tt.name, func(t *testing.T) {
				clk := newStepClock()
				srv := openaitest.New(openaitest.Config{Now: clk.Now, Seed: 11, Batch: lost.cfg})
				defer srv.Close()
				g := newGB(t, srv.URL())
				g.seams.Clock = clk
				ctx := context.Background()
				out, stderr, code := g.run(ctx, simpleLines(30), append([]string{"--via", "batch", "--batch-lines", "10"}, tt.args...)...)
				if code != 0 {
					t.Errorf("exit status = %d, want 0; stderr: %s", code, stderr)
				}
				rs := parseResults(t, out)
				if len(rs) != 30 {
					t.Fatalf("%d results, want 30", len(rs))
				}
				made := map[string]bool{}
				for _, id := range srv.BatchIDs() {
					made[id] = true
				}
				for _, r := range rs {
					if r.Error != nil || !made[r.BatchID] {
						t.Errorf("%s: error %+v, batch %q, want an answer from a batch the fake made", r.ID, r.Error, r.BatchID)
					}
				}
				if ids := srv.FileIDs("batch"); len(ids) != 0 {
					t.Errorf("FileIDs(batch) after the run = %v, want none: every input file used, and deleted once collected", ids)
				}
				// A batch made twice would run to its end too.
				srv.FinishBatches()
				st := srv.BatchStats()
				if st.Created != 3 || st.Uploads != 3 || st.Lines != 30 {
					t.Errorf("BatchStats = %d created, %d files uploaded, %d lines answered, want 3, 3 and 30: nothing made twice", st.Created, st.Uploads, st.Lines)
				}
				if n, tokens := todayTotal(t, g); n != 30 || tokens != st.PromptTokens {
					t.Errorf("ledger: %d succeeded, %d prompt tokens, want 30 and %d: each answer counted once", n, tokens, st.PromptTokens)
				}
			})
		}
	}
}

// TestBatchesCommand: `gptbatch batches` lists the journalled batches with
// their live status, and `batches cancel` cancels one.
func TestBatchesCommand(t *testing.T) {
	t.Parallel()
	clk := newStepClock()
	srv := openaitest.New(openaitest.Config{Now: clk.Now, Batch: openaitest.BatchConfig{Advance: openaitest.BatchManual}})
	defer srv.Close()
	g := newGB(t, srv.URL())
	g.seams.Clock = clk
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, stderr, code := g.runUntil(ctx, cancel, simpleLines(30), "chunk=2", "--via", "batch", "--batch-lines", "15", "--verbose")
	if code != 130 {
		t.Fatalf("exit status = %d, want 130: %s", code, stderr)
	}
	ids := srv.BatchIDs()
	if len(ids) != 2 {
		t.Fatalf("%d batches created, want 2", len(ids))
	}
	for st := ""; st != "completed"; st, _ = srv.AdvanceBatch(ids[0]) {
	}

	list := func() []batchRow {
		t.Helper()
		out, stderr, code := g.run(context.Background(), "", "batches", "--json")
		if code != 0 {
			t.Fatalf("batches --json: exit %d: %s", code, stderr)
		}
		var rows []batchRow
		dec := json.NewDecoder(strings.NewReader(out))
		for dec.More() {
			var r batchRow
			if err := dec.Decode(&r); err != nil {
				t.Fatalf("batches --json: %v: %s", err, out)
			}
			rows = append(rows, r)
		}
		return rows
	}
	rows := list()
	if len(rows) != 2 || rows[0].ID != ids[0] || rows[0].Status != "completed" || rows[0].Completed != 15 || rows[0].Lines != 15 || rows[0].Collected || rows[0].Run == "" {
		t.Errorf("batches = %+v, want %s completed 15/15, not collected, with its run", rows, ids[0])
	}
	out, stderr, code := g.run(context.Background(), "", "batches", "cancel", ids[0])
	if code == 0 || !strings.Contains(stderr, "Cannot cancel a batch with status 'completed'") {
		t.Errorf("batches cancel of a completed batch: exit %d, %s %s, want a failure with the API's reason", code, out, stderr)
	}
	out, stderr, code = g.run(context.Background(), "", "batches", "cancel", ids[1])
	if code != 0 || out != ids[1]+" cancelling\n" {
		t.Errorf("batches cancel %s = %q %s (exit %d), want it cancelling", ids[1], out, stderr, code)
	}
	if rows := list(); len(rows) != 2 || rows[1].Status != "cancelling" {
		t.Errorf("batches after cancel = %+v, want %s cancelling", rows, ids[1])
	}
	table, _, code := g.run(context.Background(), "", "batches")
	if code != 0 || !strings.Contains(table, "BATCH") || !strings.Contains(table, ids[1]) {
		t.Errorf("batches table = %q (exit %d), want a header and %s", table, code, ids[1])
	}
}

// TestViaBatchDryRun: a dry run estimates at batch prices and says how the
// lines would be split.
func TestViaBatchDryRun(t *testing.T) {
	t.Parallel()
	g := newGB(t, "http://127.0.0.1:9/v1")
	in := simpleLines(25)
	dry := func(args ...string) ([]map[string]json.RawMessage, string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := g.runStreams(context.Background(), append([]string{"--dry-run", "--usage-file", filepath.Join(g.dir, "usage.md")}, args...), strings.NewReader(in), &out, &errb)
		if code != 0 {
			t.Fatalf("--dry-run %v: exit %d: %s", args, code, errb.String())
		}
		var es []map[string]json.RawMessage
		dec := json.NewDecoder(&out)
		for dec.More() {
			var e map[string]json.RawMessage
			if err := dec.Decode(&e); err != nil {
				t.Fatal(err)
			}
			es = append(es, e)
		}
		return es, errb.String()
	}
	sync, _ := dry()
	batch, summary := dry("--via", "batch", "--batch-lines", "10")
	for i := range sync {
		var s, b budget.Cost
		s.UnmarshalJSON(sync[i]["est_cost_usd"])
		b.UnmarshalJSON(batch[i]["est_cost_usd"])
		if b*2 != s || b == 0 {
			t.Errorf("line %d: est_cost_usd %s via batch, want half of %s", i+1, b, s)
		}
	}
	if !strings.Contains(summary, "in 3 batch files: chat/completions gpt-4o-mini: 10 lines") {
		t.Errorf("dry-run summary does not say how the lines would be split: %s", summary)
	}
}

// TestViaBatchEndpoints: one file mixing Batch API lines for chat,
// embeddings and responses goes through the Batch API, a batch file per
// endpoint, and each line comes back as its endpoint answers it: vectors
// for embeddings, text for chat and responses, at half price.
func TestViaBatchEndpoints(t *testing.T) {
	t.Parallel()
	clk := newStepClock()
	srv := openaitest.New(openaitest.Config{Now: clk.Now, Seed: 7})
	defer srv.Close()
	var in strings.Builder
	for i := range 30 {
		switch i % 3 {
		case 0:
			fmt.Fprintf(&in, `{"custom_id":"c%d","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"chat %d"}]}}`+"\n", i, i)
		case 1:
			fmt.Fprintf(&in, `{"custom_id":"e%d","method":"POST","url":"/v1/embeddings","body":{"model":"text-embedding-3-small","input":"embed %d","dimensions":8}}`+"\n", i, i)
		case 2:
			fmt.Fprintf(&in, `{"custom_id":"r%d","method":"POST","url":"/v1/responses","body":{"model":"gpt-4o-mini","input":"respond %d"}}`+"\n", i, i)
		}
	}
	g := newGB(t, srv.URL())
	g.seams.Clock = clk
	out, stderr, code := g.run(context.Background(), in.String(), "--via", "batch")
	if code != 0 {
		t.Fatalf("exit status = %d, want 0; stderr: %s", code, stderr)
	}
	type res struct {
		ID        string          `json:"id"`
		Content   *string         `json:"content"`
		Embedding json.RawMessage `json:"embedding"`
		BatchID   string          `json:"batch_id"`
		CostUSD   json.RawMessage `json:"cost_usd"`
		Error     json.RawMessage `json:"error"`
	}
	var rs []res
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var r res
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("result %q: %v", l, err)
		}
		if r.ID == "e1" {
			t.Logf("e1: %s", l)
		}
		rs = append(rs, r)
	}
	if len(rs) != 30 {
		t.Fatalf("%d results, want 30", len(rs))
	}
	for _, r := range rs {
		switch {
		case r.Error != nil || r.BatchID == "" || string(r.CostUSD) == "null":
			t.Errorf("%s: error %s, batch %q, cost %s; want an answer from a batch at a known price", r.ID, r.Error, r.BatchID, r.CostUSD)
		case r.ID[0] == 'e':
			var v []float64
			if err := json.Unmarshal(r.Embedding, &v); err != nil || len(v) != 8 {
				t.Errorf("%s: embedding %s, want 8 floats", r.ID, r.Embedding)
			}
		case r.Content == nil || *r.Content == "":
			t.Errorf("%s: no content", r.ID)
		}
	}
	st := srv.BatchStats()
	for _, p := range []string{openaitest.PathChat, openaitest.PathEmbeddings, openaitest.PathResponses} {
		if n := st.LinesByEndpoint[p]; n != 10 {
			t.Errorf("batch lines answered at %s = %d, want 10", p, n)
		}
		if n := srv.Endpoint(p).Requests; n != 0 {
			t.Errorf("%d synchronous requests to %s, want none", n, p)
		}
	}
	if st.Created != 3 {
		t.Errorf("%d batches created, want 3: one a endpoint", st.Created)
	}
}

// TestBatchesThroughLinkedUsageFile: with usage.md a symbolic link, a run
// journals its batches beside the link's target, and `gptbatch batches`
// finds them there.
func TestBatchesThroughLinkedUsageFile(t *testing.T) {
	t.Parallel()
	clk := newStepClock()
	srv := openaitest.New(openaitest.Config{Now: clk.Now})
	defer srv.Close()
	g := newGB(t, srv.URL())
	g.seams.Clock = clk
	target := filepath.Join(g.dir, "shared", "usage.md")
	if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(target, []byte("tokens_within_day = 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(g.dir, "usage.md")); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := g.run(context.Background(), simpleLines(5), "--via", "batch"); code != 0 {
		t.Fatalf("exit status = %d, want 0: %s", code, stderr)
	}
	out, stderr, code := g.run(context.Background(), "", "batches", "--json")
	if code != 0 || strings.Count(out, `"id"`) != 1 {
		t.Errorf("batches --json through the link = %q %s (exit %d), want the run's one batch", out, stderr, code)
	}
}

// TestViaBatchResumeCountsOnce: a batch whose collection broke off after
// half its answers were settled is collected in full on --resume, and the
// budget and the ledger count each answer once: the day's tokens are the
// API's count, not one and a half times it.
func TestViaBatchResumeCountsOnce(t *testing.T) {
	t.Parallel()
	const n = 3000 // answers settle 1,024 at a time: several updates before the cut
	clk := newStepClock()
	srv := openaitest.New(openaitest.Config{Now: clk.Now, Seed: 12, Batch: openaitest.BatchConfig{StepsPerPoll: -1}})
	defer srv.Close()
	g := newGB(t, srv.URL())
	g.seams.Clock = clk
	in := simpleLines(n)
	args := []string{"--via", "batch", "--batch-lines", "5000"}
	// Every download of the output breaks off half way, past the retries.
	srv.CutDownloads(1000, 0.5)
	out, stderr, _ := g.run(context.Background(), in, args...)
	rs := parseResults(t, out)
	if len(rs) != n {
		t.Fatalf("broken run: %d results, want %d; stderr: %s", len(rs), n, stderr)
	}
	answered := 0
	for _, r := range rs {
		switch {
		case r.Error == nil:
			answered++
		case r.Error.Type != "network" || !strings.Contains(r.Error.Message, "--resume"):
			t.Fatalf("%s: error %+v, want network, saying to --resume", r.ID, r.Error)
		}
	}
	if answered < 1100 || answered == n {
		t.Fatalf("broken run: %d of %d answered, want more than one update's 1,024 and not all: the test tests nothing", answered, n)
	}

	srv.CutDownloads(0, 0)
	prev := filepath.Join(g.dir, "out.jsonl")
	if err := os.WriteFile(prev, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	out2, stderr2, code2 := g.run(context.Background(), in, append(args, "--resume", prev)...)
	if code2 != 0 {
		t.Fatalf("resumed run: exit status = %d, want 0; stderr: %s", code2, stderr2)
	}
	if got := len(parseResults(t, out2)); got != n-answered {
		t.Errorf("resumed run: %d results, want the %d not answered before", got, n-answered)
	}
	st := srv.BatchStats()
	if st.Created != 1 || st.Succeeded != n {
		t.Fatalf("the fake: %d batches, %d lines answered, want 1 and %d", st.Created, st.Succeeded, n)
	}
	uout, _, _ := g.run(context.Background(), "", "usage", "--today", "--json")
	var rep struct {
		Total struct {
			Requests         int64 `json:"requests"`
			PromptTokens     int64 `json:"prompt_tokens"`
			CompletionTokens int64 `json:"completion_tokens"`
		} `json:"total"`
	}
	if err := json.Unmarshal([]byte(uout), &rep); err != nil {
		t.Fatalf("usage --json: %v: %s", err, uout)
	}
	if rep.Total.Requests != n || rep.Total.PromptTokens != st.PromptTokens || rep.Total.CompletionTokens != st.CompletionTokens {
		t.Errorf("ledger: %d requests, %d+%d tokens; the API answered %d with %d+%d: each answer counted once",
			rep.Total.Requests, rep.Total.PromptTokens, rep.Total.CompletionTokens, n, st.PromptTokens, st.CompletionTokens)
	}
	fs, err := budget.OpenFile(filepath.Join(g.dir, "usage.md"), budget.Options{})
	if err != nil {
		t.Fatal(err)
	}
	state, err := fs.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tokens, _ := state.DayUsed(clk.Now()); tokens != st.PromptTokens+st.CompletionTokens {
		t.Errorf("usage.md: %d tokens used today, the API counted %d: the reservation and each answer settled once", tokens, st.PromptTokens+st.CompletionTokens)
	}
}

// TestViaBatchHungCalls: a Batch API call that hangs, or a download that
// stalls half way, ends after --timeout without progress and is tried
// again: the run finishes with every line answered, as a cron job must.
func TestViaBatchHungCalls(t *testing.T) {
	t.Parallel()
	clk := newStepClock()
	srv := openaitest.New(openaitest.Config{Now: clk.Now, Seed: 13, Batch: openaitest.BatchConfig{StepsPerPoll: -1}})
	defer srv.Close()
	g := newGB(t, srv.URL())
	g.seams.Clock = clk
	srv.Hang(2, http.MethodGet, "/v1/batches/")
	srv.StallDownloads(1, 0.5)
	// Without the timeout the run hangs on the first call (go test's own
	// timeout ends it).
	out, stderr, code := g.run(context.Background(), simpleLines(200), "--via", "batch", "--timeout", "1s")
	if code != 0 {
		t.Fatalf("exit status = %d, want 0; stderr: %s", code, stderr)
	}
	rs := parseResults(t, out)
	for _, r := range rs {
		if r.Error != nil {
			t.Errorf("%s: error %+v", r.ID, r.Error)
		}
	}
	if len(rs) != 200 || srv.Hung() != 2 || srv.Cut() != 1 {
		t.Errorf("%d results, %d calls hung, %d downloads stalled; want 200, 2 and 1", len(rs), srv.Hung(), srv.Cut())
	}
	if st := srv.BatchStats(); st.Created != 1 {
		t.Errorf("%d batches created, want 1", st.Created)
	}
}

// TestBatchesRecover: a run interrupted while its batches are in progress
// loses its journal; `gptbatch batches recover` rebuilds it from the API's
// batches and their input files, exactly as submission recorded it, so
// that the same command with --resume answers every line once without
// submitting a batch again, and the ledger counts each answer once. A
// batch collected before, whose input file is deleted, is named and not
// rebuilt; a dry run writes nothing; a second recovery recovers nothing;
// a download that drops is taken up again.
func TestBatchesRecover(t *testing.T) {
	t.Parallel()
	clk := newStepClock()
	srv := openaitest.New(openaitest.Config{Now: clk.Now, Seed: 9, Batch: openaitest.BatchConfig{LinesPerStep: 5}})
	defer srv.Close()
	g := newGB(t, srv.URL())
	g.seams.Clock = clk
	journal := filepath.Join(g.dir, "usage.batches.jsonl")

	// An earlier run, collected in full: its input file is deleted.
	const earlier = 3
	var early strings.Builder
	for i := range earlier {
		fmt.Fprintf(&early, `{"id":"e%d","prompt":"an earlier line %d"}`+"\n", i, i)
	}
	if _, stderr, code := g.run(context.Background(), early.String(), "--via", "batch"); code != 0 {
		t.Fatalf("earlier run: exit status = %d, want 0; stderr: %s", code, stderr)
	}

	in := simpleLines(40)
	args := []string{"--via", "batch", "--batch-lines", "20"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, stderr, code := g.runUntil(ctx, cancel, in, "chunk=2", append(args, "--verbose")...)
	if code != 130 {
		t.Fatalf("interrupted run: exit status = %d, want 130; stderr: %s", code, stderr)
	}
	prev := filepath.Join(g.dir, "out.jsonl")
	if err := os.WriteFile(prev, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	created := srv.BatchStats().Created

	// What submission journalled, then the journal is lost.
	journalled, _, err := batchapi.ReadJournal(journal, time.Time{}, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(journalled) != created {
		t.Fatalf("%d batches journalled, the fake made %d", len(journalled), created)
	}
	if err := os.Remove(journal); err != nil {
		t.Fatal(err)
	}
	inputs := map[string]bool{}
	for _, id := range srv.FileIDs("batch") {
		inputs[id] = true
	}
	type submitted struct {
		Event, BatchID, Run, Endpoint, Model, InputFileID string
		Chunk, Lines                                      int
		Items                                             []batchapi.JournalItem
	}
	of := func(b *batchapi.JournalBatch) submitted {
		return submitted{b.Event, b.BatchID, b.Run, b.Endpoint, b.Model, b.InputFileID, b.Chunk, b.Lines, b.Items}
	}
	var want []submitted
	var deleted []string
	for _, b := range journalled {
		if inputs[b.InputFileID] {
			want = append(want, of(b))
		} else {
			deleted = append(deleted, b.BatchID)
		}
	}
	if len(want) == 0 || want[len(want)-1].BatchID != journalled[len(journalled)-1].BatchID || len(deleted) == 0 {
		t.Fatalf("batches with their input file: %v, without: %v; want the last one submitted among the first, the earlier run's among the others", want, deleted)
	}

	// Not through --quiet: the summary is on stderr.
	loud := slices.DeleteFunc(slices.Clone(g.args), func(a string) bool { return a == "--quiet" })
	recoverJournal := func(flags ...string) (string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := Run(context.Background(), slices.Concat(loud, []string{"batches", "recover"}, flags), strings.NewReader(""), &out, &errb, g.seams)
		if code != 0 {
			t.Fatalf("batches recover %v: exit status = %d, want 0; stderr: %s", flags, code, errb.String())
		}
		return out.String(), errb.String()
	}
	ids := func(out string) []string {
		var ids []string
		for l := range strings.Lines(out) {
			ids = append(ids, strings.Fields(l)[0])
		}
		return ids
	}
	var wantIDs []string
	for _, w := range want {
		wantIDs = append(wantIDs, w.BatchID)
	}

	dryOut, dryErr := recoverJournal("--dry-run", "--json", "--since", "720h")
	if _, err := os.Stat(journal); !os.IsNotExist(err) {
		t.Errorf("batches recover --dry-run: the journal exists (%v), want nothing written", err)
	}
	var dry []string
	dec := json.NewDecoder(strings.NewReader(dryOut))
	for dec.More() {
		var r batchRow
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("batches recover --dry-run --json: %v: %s", err, dryOut)
		}
		if r.Lines != 20 || r.Run != want[0].Run || r.Model != "gpt-4o-mini" {
			t.Errorf("batches recover --dry-run --json: %+v, want 20 lines of gpt-4o-mini of %s", r, want[0].Run)
		}
		dry = append(dry, r.ID)
	}
	if !slices.Equal(dry, wantIDs) || !strings.Contains(dryErr, fmt.Sprintf("would recover %s", pipeline.Count(len(want), "batch", "batches"))) {
		t.Errorf("batches recover --dry-run = %v, %q, want %v, and that it would recover them", dry, dryErr, wantIDs)
	}

	// A download that drops half way is taken up again where it broke
	// off, with --retries, as a run's are: the recovery is whole.
	srv.CutDownloads(1, 0.5)
	rout, rerr := recoverJournal()
	if srv.Cut() != 1 {
		t.Errorf("%d downloads cut, want 1", srv.Cut())
	}
	if got := ids(rout); !slices.Equal(got, wantIDs) {
		t.Errorf("batches recover = %v, want %v, oldest first", got, wantIDs)
	}
	summary := fmt.Sprintf("recovered %s into %s; the same command with --resume collects them; %d could not be", pipeline.Count(len(want), "batch", "batches"), journal, len(deleted))
	if !strings.Contains(rerr, summary) {
		t.Errorf("batches recover: stderr %q, want %q", rerr, summary)
	}
	for _, id := range deleted {
		if !strings.Contains(rerr, "batch "+id) || !strings.Contains(rerr, "was deleted") {
			t.Errorf("batches recover: stderr %q does not say %s's input file was deleted", rerr, id)
		}
	}
	rebuilt, _, err := batchapi.ReadJournal(journal, time.Time{}, true)
	if err != nil {
		t.Fatal(err)
	}
	var got []submitted
	for _, b := range rebuilt {
		got = append(got, of(b))
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rebuilt journal = %+v\nwant what was submitted: %+v", got, want)
	}
	written, err := os.ReadFile(journal)
	if err != nil {
		t.Fatal(err)
	}

	out2, err2 := recoverJournal()
	if again, _ := os.ReadFile(journal); out2 != "" || !strings.Contains(err2, "recovered 0 batches") || !bytes.Equal(again, written) {
		t.Errorf("second batches recover = %q, %q, journal changed: %v; want nothing recovered", out2, err2, !bytes.Equal(again, written))
	}

	out3, stderr3, code3 := g.run(context.Background(), in, append(args, "--resume", prev)...)
	if code3 != 0 {
		t.Errorf("resumed run: exit status = %d, want 0; stderr: %s", code3, stderr3)
	}
	done := map[string]int{}
	for _, r := range append(parseResults(t, out), parseResults(t, out3)...) {
		if r.Error == nil {
			done[r.ID]++
		}
	}
	for i := range 40 {
		if id := fmt.Sprint("q", i); done[id] != 1 {
			t.Errorf("%s answered %d times over both runs, want once", id, done[id])
		}
	}
	st := srv.BatchStats()
	if st.Created != created || st.Lines != 40+earlier {
		t.Errorf("after recover and --resume: %d batches created, %d lines answered, want still %d and %d: nothing submitted again", st.Created, st.Lines, created, 40+earlier)
	}
	if n, tokens := todayTotal(t, g); n != 40+earlier || tokens != st.PromptTokens {
		t.Errorf("ledger: %d succeeded, %d prompt tokens, want %d and %d: each answer counted once", n, tokens, 40+earlier, st.PromptTokens)
	}
}

// todayTotal is what `gptbatch usage --today --json` counts: the answers
// that succeeded and their prompt tokens.
func todayTotal(t *testing.T, g *gb) (succeeded, promptTokens int64) {
	t.Helper()
	r := todayUsage(t, g)
	return r.Succeeded, r.PromptTokens
}

// todayUsage is the total row of `gptbatch usage --today --json`.
func todayUsage(t *testing.T, g *gb) budget.Row {
	t.Helper()
	out, stderr, code := g.run(context.Background(), "", "usage", "--today", "--json")
	if code != 0 {
		t.Fatalf("usage --today --json: exit %d: %s", code, stderr)
	}
	var rep struct {
		Total budget.Row `json:"total"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("usage --today --json: %v: %s", err, out)
	}
	return rep.Total
}

// TestViaBatchCreateFails: when no batch can be made of an uploaded file
// (the create hangs past --timeout, with no retries left), its lines get
// their error and the file is deleted: nothing is left in the user's
// file storage.
func TestViaBatchCreateFails(t *testing.T) {
	t.Parallel()
	clk := newStepClock()
	srv := openaitest.New(openaitest.Config{Now: clk.Now, Seed: 14})
	defer srv.Close()
	g := newGB(t, srv.URL())
	g.seams.Clock = clk
	srv.Hang(1, http.MethodPost, "/v1/batches")
	out, stderr, code := g.run(context.Background(), simpleLines(10), "--via", "batch", "--timeout", "1s", "--retries", "0")
	if code == 0 {
		t.Fatalf("exit status 0, want a failure; stderr: %s", stderr)
	}
	rs := parseResults(t, out)
	for _, r := range rs {
		if r.Error == nil || !strings.Contains(r.Error.Message, "could not be created") {
			t.Errorf("%s: %+v, want an error saying the batch could not be created", r.ID, r.Error)
		}
	}
	if len(rs) != 10 || srv.Hung() != 1 || srv.BatchStats().Created != 0 {
		t.Errorf("%d results, %d creates hung, %d batches; want 10, 1 and 0", len(rs), srv.Hung(), srv.BatchStats().Created)
	}
	if ids := srv.FileIDs("batch"); len(ids) != 0 {
		t.Errorf("input files left after the run: %v", ids)
	}
}

// TestKill9ViaBatch: a --via batch run killed once its batches are
// journalled leaves them running; --resume collects them without
// submitting any again, and the budget and the ledger count each answer
// once.
func TestKill9ViaBatch(t *testing.T) {
	t.Parallel() // a process of its own: nothing of this one is shared
	srv := openaitest.New(openaitest.Config{Batch: openaitest.BatchConfig{Advance: openaitest.BatchManual}})
	defer srv.Close()
	dir := t.TempDir()
	in := simpleLines(60)
	args := []string{"--via", "batch", "--batch-lines", "20"}
	out := filepath.Join(dir, "out.jsonl")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	cmd := command(t, dir, srv.URL(), in, args...)
	cmd.Stdout = f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// A batch is polled only once it is journalled.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = srv.Wait(ctx, func() bool {
		ids := srv.BatchIDs()
		for _, id := range ids {
			if len(srv.BatchPolls(id)) == 0 {
				return false
			}
		}
		return len(ids) == 3
	})
	if err != nil {
		t.Fatalf("waiting for 3 batches to be polled: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	f.Close()
	srv.FinishBatches()

	var out2, errb bytes.Buffer
	cmd = command(t, dir, srv.URL(), in, append(args, "--resume", out)...)
	cmd.Stdout, cmd.Stderr = &out2, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("--resume: %v: %s", err, errb.String())
	}
	prev, _ := os.ReadFile(out)
	done := map[string]int{}
	for _, r := range append(parseResultsLoose(string(prev)), parseResults(t, out2.String())...) {
		if r.Error == nil {
			done[r.ID]++
		}
	}
	for i := range 60 {
		if id := fmt.Sprint("q", i); done[id] != 1 {
			t.Errorf("%s answered %d times over both runs, want once", id, done[id])
		}
	}
	st := srv.BatchStats()
	if st.Created != 3 || st.Succeeded != 60 {
		t.Errorf("the fake: %d batches, %d lines answered; want 3 and 60: nothing submitted again", st.Created, st.Succeeded)
	}
	if n := ledgerLines(t, dir); n != 60 {
		t.Errorf("ledger has %d entries, want 60", n)
	}
	if s := readState(t, dir); s.TokensWithinDay != st.PromptTokens+st.CompletionTokens {
		t.Errorf("tokens_within_day = %d, the API counted %d: each answer once, and the reservations given back", s.TokensWithinDay, st.PromptTokens+st.CompletionTokens)
	}
}
