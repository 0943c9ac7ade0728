package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/internal/openaitest"
	"github.com/gptbatch/gptbatch/pipeline"
)

// The Batch API route under faults: a misbehaving API, a journal or a
// store that cannot be written, a process killed at a bad moment. Each
// test drives run as a user would, the fault injected through the fake.

// countIDs counts the results of each id in out.
func countIDs(t *testing.T, out string) map[string]int {
	t.Helper()
	n := map[string]int{}
	for _, r := range parseResults(t, out) {
		n[r.ID]++
	}
	return n
}

// TestViaBatchUnorderedOnce: with --unordered, each line gets exactly one
// result, and a line answered is never submitted again: a line whose
// result was written already is not "missing from the output".
func TestViaBatchUnorderedOnce(t *testing.T) {
	clk := newStepClock()
	srv := openaitest.New(openaitest.Config{Now: clk.Now, Seed: 21, Batch: openaitest.BatchConfig{StepsPerPoll: -1}})
	defer srv.Close()
	g := newGB(t, srv.URL())
	g.seams.Clock = clk
	// A line that fails puts an error file beside each batch's output
	// file: its download gives the writer time to write the answers.
	var in strings.Builder
	for i := range 30 {
		p := fmt.Sprintf("prompt number %d", i)
		if i%10 == 3 {
			p += " __status_500__"
		}
		fmt.Fprintf(&in, `{"id":"q%d","prompt":%q}`+"\n", i, p)
	}
	out, stderr, code := g.run(context.Background(), in.String(), "--via", "batch", "--batch-lines", "10", "--unordered", "--retries", "1")
	if code != 1 {
		t.Errorf("exit status = %d, want 1 (three lines fail); stderr: %s", code, stderr)
	}
	n := countIDs(t, out)
	for i := range 30 {
		if id := fmt.Sprint("q", i); n[id] != 1 {
			t.Errorf("%s has %d results, want 1", id, n[id])
		}
	}
	if len(n) != 30 {
		t.Errorf("results for %d ids, want 30", len(n))
	}
	st := srv.BatchStats()
	// The three failing lines go once more, and fail again.
	if st.Succeeded != 27 || st.Lines != 33 {
		t.Errorf("the fake: %d lines answered, %d succeeded; want 33 and 27: no answered line submitted again", st.Lines, st.Succeeded)
	}
	if got, _ := todayTotal(t, g); got != 27 {
		t.Errorf("ledger: %d succeeded, want 27: each answer paid once", got)
	}
}

// saveOut writes a run's stdout where --resume reads it.
func saveOut(t *testing.T, g *gb, out string) string {
	t.Helper()
	path := filepath.Join(g.dir, "out.jsonl")
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// journalled reads the batch journal beside g's usage file.
func journalled(t *testing.T, g *gb) []*pipeline.JournalBatch {
	t.Helper()
	bs, err := pipeline.ReadJournal(filepath.Join(g.dir, "usage.batches.jsonl"), time.Time{}, false)
	if err != nil {
		t.Fatal(err)
	}
	return bs
}

// TestViaBatchRefusedThenResumedIsCounted: a batch refused for the
// enqueued-token limit, interrupted while it waits to be submitted again,
// is submitted again by --resume, and what the new batch answers is paid
// for and counted: in the ledger, in the day's tokens, and journalled as
// collected.
func TestViaBatchRefusedThenResumedIsCounted(t *testing.T) {
	clk := newStepClock()
	// Another batch of the organisation's fills the queue: every batch is
	// refused until it ends.
	srv := openaitest.New(openaitest.Config{Now: clk.Now, Seed: 22, Batch: openaitest.BatchConfig{QueueTokens: 20}})
	defer srv.Close()
	g := newGB(t, srv.URL()).loud()
	g.seams.Clock = clk
	in := simpleLines(5)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, stderr, code := g.runUntil(ctx, cancel, in, "before submitting it again", "--via", "batch")
	if code != 130 {
		t.Fatalf("interrupted run: exit status = %d, want 130; stderr: %s", code, stderr)
	}
	for _, r := range parseResults(t, out) {
		if r.Error == nil || r.Error.Type != "interrupted" {
			t.Fatalf("interrupted run: %s: %+v, want interrupted", r.ID, r.Error)
		}
	}
	if s := readState(t, g.dir); s.TokensWithinDay != 0 {
		t.Errorf("after the interrupted run: tokens_within_day = %d, want 0: the refused batch ran nothing, and holds no reservation", s.TokensWithinDay)
	}

	srv.SetQueueTokens(0)
	out2, stderr2, code2 := g.run(context.Background(), in, "--via", "batch", "--resume", saveOut(t, g, out))
	if code2 != 0 {
		t.Fatalf("resumed run: exit status = %d, want 0; stderr: %s", code2, stderr2)
	}
	if n := countIDs(t, out2); len(n) != 5 {
		t.Errorf("resumed run: results %v, want one for each of the 5 lines", n)
	}
	st := srv.BatchStats()
	if st.Succeeded != 5 {
		t.Fatalf("the fake answered %d lines, want 5", st.Succeeded)
	}
	if n, tokens := todayTotal(t, g); n != 5 || tokens != st.PromptTokens {
		t.Errorf("ledger: %d succeeded, %d prompt tokens; want 5 and %d: what the new batch answered is counted", n, tokens, st.PromptTokens)
	}
	if s := readState(t, g.dir); s.TokensWithinDay != st.PromptTokens+st.CompletionTokens {
		t.Errorf("tokens_within_day = %d, want the %d tokens the API counted", s.TokensWithinDay, st.PromptTokens+st.CompletionTokens)
	}
	for _, b := range journalled(t, g) {
		if !b.Collected {
			t.Errorf("batch %s is not journalled as collected", b.BatchID)
		}
	}
}
