package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/gptbatch/gptbatch/internal/openaitest"
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
	out, stderr, code := g.run(onClock(context.Background(), clk), in.String(), "--via", "batch", "--batch-lines", "10", "--unordered", "--retries", "1")
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
