package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/batchapi"
	"github.com/gptbatch/gptbatch/internal/openaitest"
)

// TestSchemaViaBatchFollowUpRefusedThenMade: a --schema follow-up batch
// the API refuses for the enqueued-token limit, and that is made again
// once the limit has room, counts each line's batches once: a line asked
// again has two answers in the ledger and attempts 2, whether the run
// collects the follow-up or --resume does from the journal.
func TestSchemaViaBatchFollowUpRefusedThenMade(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		resume bool // the run is interrupted once the follow-up is made again; --resume collects it
	}{
		{"collected by the run", false},
		{"collected by --resume", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := openaitest.New(openaitest.Config{Seed: 5, Structured: openaitest.StructuredConfig{InvalidRate: 0.2},
				Batch: openaitest.BatchConfig{Advance: openaitest.BatchManual}})
			defer srv.Close()
			g := newGB(t, srv.URL())
			g.seams.Clock = newStepClock()
			const n = 30
			in := reviews(n)
			args := []string{"--via", "batch", "--schema", tenFields}

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			runCtx, interrupt := context.WithCancel(ctx)
			defer interrupt()
			done := g.start(runCtx, in, args...)
			wait := func(what string, cond func() bool) {
				t.Helper()
				if err := srv.Wait(ctx, cond); err != nil {
					t.Fatalf("waiting for %s: %v", what, err)
				}
			}
			created := func(k int) func() bool { return func() bool { return srv.BatchStats().Created >= k } }
			polled := func(k int) func() bool {
				return func() bool {
					ids := srv.BatchIDs()
					return len(ids) >= k && len(srv.BatchPolls(ids[k-1])) > 0
				}
			}
			// The first batch runs; then the organisation's queue fills,
			// and the follow-up of its invalid answers is refused.
			wait("the first batch", created(1))
			srv.FinishBatches()
			srv.SetQueueTokens(1)
			wait("the follow-up", created(2))
			srv.FinishBatches()
			// The queue has room again: the follow-up is made again.
			srv.SetQueueTokens(0)
			wait("the follow-up made again", polled(3))
			if tt.resume {
				interrupt()
			} else {
				srv.FinishBatches()
			}
			r := <-done
			outs := []string{r.out}
			if tt.resume {
				if r.code != 130 {
					t.Fatalf("interrupted run: exit status %d, want 130: %s", r.code, r.stderr)
				}
				srv.FinishBatches()
				g.seams.Clock = newStepClock()
				out2, stderr2, code := g.run(ctx, in, append(args, "--resume", saveOut(t, g, r.out))...)
				if code != 0 {
					t.Fatalf("--resume: exit status %d: %s", code, stderr2)
				}
				outs = append(outs, out2)
			} else if r.code != 0 {
				t.Fatalf("exit status %d: %s", r.code, r.stderr)
			}
			invalid := someInvalid(t, srv)
			if st := srv.BatchStats(); st.Created != 3 || st.Succeeded != n+invalid {
				t.Fatalf("the fake: %d batches, %d lines answered; want 3 (the follow-up twice) and %d", st.Created, st.Succeeded, n+invalid)
			}
			answered, byLine := parsedOnceWithTries(t, g.dir, n, outs...)
			again := 0
			for _, r := range answered {
				if len(byLine[r.ID]) > 1 {
					again++
				}
			}
			if again == 0 {
				t.Error("no parsed line was asked again: the test tests nothing")
			}
			// The journal's items of the follow-up made again say, as its
			// custom_ids do, one batch before it.
			js, _, err := batchapi.ReadJournal(filepath.Join(g.dir, "usage.batches.jsonl"), time.Time{}, true)
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range js {
				for _, it := range b.Items {
					if it.Tries == nil {
						continue
					}
					var jt batchapi.Tries
					if err := json.Unmarshal(it.Tries, &jt); err != nil {
						t.Fatal(err)
					}
					if jt.Batches != 1 {
						t.Errorf("batch %s (create %d): %s journalled after %d batches, want 1", b.BatchID, b.Create, it.CustomID, jt.Batches)
					}
				}
			}
		})
	}
}

// TestSchemaViaBatchKilledBeforeFollowUpJournalLost: a --via batch
// --schema run killed after its first batch was collected and before the
// follow-up of its invalid answers was made, whose journal is then lost,
// is recovered: the first batch's input file is kept until its follow-up
// is made, so `batches recover` rebuilds the batch from it, and --resume
// reads its answers again (not charged twice) and makes the follow-up,
// rather than buy every line it had not written again. The API answers
// each line once and each invalid answer once more; once the follow-up is
// made, the first batch's input file is deleted.
func TestSchemaViaBatchKilledBeforeFollowUpJournalLost(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{Seed: 5, Structured: openaitest.StructuredConfig{InvalidRate: 0.2},
		Batch: openaitest.BatchConfig{Advance: openaitest.BatchManual}})
	defer srv.Close()
	g := newGB(t, srv.URL())
	const n = 30
	in := reviews(n)
	args := []string{"--via", "batch", "--schema", tenFields}
	cmd, prev := startChild(t, g, in, args...)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wait := func(what string, cond func() bool) {
		t.Helper()
		if err := srv.Wait(ctx, cond); err != nil {
			select {
			case err := <-exited:
				t.Fatalf("waiting for %s: gptbatch ended: %v", what, err)
			default:
			}
			t.Fatalf("waiting for %s: %v", what, err)
		}
	}
	// A batch is polled only once it is journalled.
	wait("the first batch to be polled", func() bool {
		ids := srv.BatchIDs()
		return len(ids) == 1 && len(srv.BatchPolls(ids[0])) > 0
	})
	input := srv.FileIDs("batch")[0]
	// The follow-up's upload hangs: the first batch is collected, and
	// its follow-up not yet made, when the run is killed.
	srv.Hang(1, http.MethodPost, "/v1/files")
	srv.FinishBatches()
	wait("the follow-up's upload", func() bool { return srv.Hung() == 1 })
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	srv.Hang(0, "", "")
	invalid := someInvalid(t, srv)
	first := srv.BatchIDs()[0]
	if _, ok := srv.File(input); !ok {
		t.Errorf("the first batch's input file %s was deleted before its follow-up was made", input)
	}

	// The journal is lost, and rebuilt from the API.
	journal := filepath.Join(g.dir, "usage.batches.jsonl")
	if err := os.Remove(journal); err != nil {
		t.Fatal(err)
	}
	var rout, rerr bytes.Buffer
	if code := Run(ctx, slices.Concat(g.args, []string{"batches", "recover"}), strings.NewReader(""), &rout, &rerr, g.seams); code != 0 {
		t.Fatalf("batches recover: exit status %d: %s", code, rerr.String())
	}
	if rebuilt := journalled(t, g); len(rebuilt) != 1 || rebuilt[0].BatchID != first {
		t.Errorf("rebuilt journal %+v, want the first batch %s: %s", rebuilt, first, rerr.String())
	}

	// Each batch --resume makes runs to its end, as the API's do.
	out2, stderr2, code := resumeFinishing(ctx, g, srv, 2, in, args, prev)
	if code != 0 {
		t.Fatalf("--resume: exit status %d: %s", code, stderr2)
	}
	out1, err := os.ReadFile(prev)
	if err != nil {
		t.Fatal(err)
	}
	parsedOnceWithTries(t, g.dir, n, string(out1), out2)
	st := srv.BatchStats()
	t.Logf("the API: %d batches, %d lines answered; %d invalid first answers", st.Created, st.Succeeded, invalid)
	if st.Created != 2 || st.Succeeded != n+invalid {
		t.Errorf("the fake: %d batches, %d lines answered; want 2 and %d: each line once, and once more each invalid answer", st.Created, st.Succeeded, n+invalid)
	}
	if m := ledgerLines(t, g.dir); m != n+invalid {
		t.Errorf("the ledger has %d entries, want %d: each answer once", m, n+invalid)
	}
	if _, ok := srv.File(input); ok {
		t.Errorf("the first batch's input file %s is kept after its follow-up was made", input)
	}
}

// lineFigures are what a result says of a line's tries: the figures an
// interrupted run resumed must give as a run that was not interrupted.
type lineFigures struct {
	attempts       int
	errType        string
	cost           budget.Cost
	prompt, output int64
}

// retriedRun runs 20 lines and one a 500 always fails through the Batch
// API with --retries 1: the first batch answers 10 lines (the failing one
// among them) and expires, so the other 11 and the failing one go again
// in a follow-up batch. With
// interrupt the run is interrupted once the follow-up is journalled, and
// --resume collects it. It checks each line's result against the ledger,
// and returns their figures and the batches the API made.
func retriedRun(t *testing.T, interrupt bool) (map[string]lineFigures, int) {
	t.Helper()
	srvClk := newStepClock() // the API's clock: moved only to expire the first batch
	srv := openaitest.New(openaitest.Config{Now: srvClk.Now, Seed: 7,
		Batch: openaitest.BatchConfig{Advance: openaitest.BatchManual, LinesPerStep: 10}})
	defer srv.Close()
	g := newGB(t, srv.URL())
	g.seams.Clock = newStepClock()
	in := simpleLines(20) + `{"id":"down","prompt":"__status_500__"}` + "\n"
	args := []string{"--via", "batch", "--retries", "1"}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := g.start(runCtx, in, args...)
	// A batch is polled only once it is journalled.
	polled := func(k int) {
		t.Helper()
		if err := srv.Wait(ctx, func() bool {
			ids := srv.BatchIDs()
			return len(ids) >= k && len(srv.BatchPolls(ids[k-1])) > 0
		}); err != nil {
			t.Fatalf("waiting for batch %d to be polled: %v", k, err)
		}
	}
	polled(1)
	first := srv.BatchIDs()[0]
	srv.AdvanceBatch(first) // in progress
	srv.AdvanceBatch(first) // 10 lines answered
	srvClk.advance(25 * time.Hour)
	if st, _ := srv.AdvanceBatch(first); st != "expired" {
		t.Fatalf("the first batch is %s, want expired", st)
	}
	polled(2)
	if interrupt {
		stop()
	} else {
		srv.FinishBatches()
	}
	r := <-done
	results := map[string]result{}
	for _, res := range parseResults(t, r.out) {
		results[res.ID] = res
	}
	if interrupt {
		if r.code != 130 {
			t.Fatalf("interrupted run: exit status %d, want 130: %s", r.code, r.stderr)
		}
		srv.FinishBatches()
		// A batch --resume makes (none should) runs to its end, as the
		// API's do.
		out2, stderr2, code := resumeFinishing(ctx, g, srv, 3, in, args, saveOut(t, g, r.out))
		if code != 1 {
			t.Fatalf("--resume: exit status %d, want 1 (the line a 500 fails): %s", code, stderr2)
		}
		for _, res := range parseResults(t, out2) {
			results[res.ID] = res
		}
	} else if r.code != 1 {
		t.Fatalf("exit status %d, want 1 (the line a 500 fails): %s", r.code, r.stderr)
	}

	byLine := ledgerByLine(t, g.dir)
	figs := map[string]lineFigures{}
	for id, res := range results {
		u, c, _ := tries(byLine[id])
		f := lineFigures{attempts: res.Attempts}
		if res.Error != nil {
			f.errType = res.Error.Type
		} else {
			f.cost, f.prompt, f.output = cost(t, res.CostUSD), res.Usage.PromptTokens, res.Usage.CompletionTokens
			if f.cost != c || f.prompt != u.PromptTokens || f.output != u.CompletionTokens {
				t.Errorf("%s: cost_usd %s, usage %d+%d; the ledger's tries of it: %s, %d+%d", id, f.cost, f.prompt, f.output, c, u.PromptTokens, u.CompletionTokens)
			}
		}
		if f.attempts != len(byLine[id]) {
			t.Errorf("%s: attempts %d, want the %d batches the ledger has it in", id, f.attempts, len(byLine[id]))
		}
		figs[id] = f
	}
	if len(figs) != 21 {
		t.Errorf("%d lines have a result, want 21", len(figs))
	}
	return figs, srv.BatchStats().Created
}

// TestViaBatchRetriedLinesResumed: lines a batch left unanswered when it
// expired, and one a 500 fails, go again in a follow-up batch; when the
// run is interrupted while the follow-up runs and --resume collects it,
// each line's result is the same as when the run collects it: attempts
// counts every batch the line was in (as the ledger does), cost_usd and
// usage are the ledger's, and the failing line goes in no more batches
// than --retries allow.
func TestViaBatchRetriedLinesResumed(t *testing.T) {
	t.Parallel()
	whole, wholeBatches := retriedRun(t, false)
	resumed, resumedBatches := retriedRun(t, true)
	if wholeBatches != 2 || resumedBatches != 2 {
		t.Errorf("the API made %d batches for the run, %d for the run resumed; want 2 each: the first and its follow-up", wholeBatches, resumedBatches)
	}
	again := 0
	for id, w := range whole {
		if w.attempts > 1 {
			again++
		}
		if r := resumed[id]; r != w {
			t.Errorf("%s: resumed %+v, want %+v as the run not interrupted", id, r, w)
		}
	}
	if again != 12 {
		t.Errorf("%d lines went again, want 12: the 11 the expiry left and the one a 500 fails", again)
	}
}
