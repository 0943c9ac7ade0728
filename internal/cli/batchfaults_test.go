package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/batchapi"
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
	t.Parallel()
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
func journalled(t *testing.T, g *gb) []*batchapi.JournalBatch {
	t.Helper()
	bs, _, err := batchapi.ReadJournal(filepath.Join(g.dir, "usage.batches.jsonl"), time.Time{}, false)
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
	t.Parallel()
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

// child is gptbatch run as g.run runs it, in a process of its own
// (gptbatchProcess) whose files may not grow past fsize bytes
// (RLIMIT_FSIZE, as `ulimit -f` sets it: a disk that fills up), or with
// no such limit if fsize is 0. It is not started.
func child(t *testing.T, g *gb, fsize int64, stdin string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := gptbatchProcess(t, append(append([]string{}, g.args...), args...)...)
	cmd.Dir = g.dir
	cmd.Env = append(cmd.Env, g.environ()...)
	if fsize > 0 {
		cmd.Env = append(cmd.Env, "GPTBATCH_TEST_FSIZE="+strconv.FormatInt(fsize, 10))
	}
	cmd.Stdin = strings.NewReader(stdin)
	return cmd
}

// startChild starts gptbatch in a child process as child does, with its
// stdout written to out.jsonl in g.dir, and returns the command and that
// file's path: what a run killed had written, for --resume to read.
func startChild(t *testing.T, g *gb, stdin string, args ...string) (*exec.Cmd, string) {
	t.Helper()
	out := filepath.Join(g.dir, "out.jsonl")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // the child writes to its own copy
	cmd := child(t, g, 0, stdin, args...)
	cmd.Stdout = f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, out
}

// runLimited runs gptbatch in a child process under a file size limit of
// fsize bytes, and returns its stdout, stderr and exit status.
func runLimited(t *testing.T, g *gb, fsize int64, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := child(t, g, fsize, stdin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("child process: %v", err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// fillJournal makes the batch journal beside g's usage file n bytes of
// blank lines, which readers skip: under a file size limit of n, nothing
// more can be appended to it.
func fillJournal(t *testing.T, g *gb, n int) string {
	t.Helper()
	path := filepath.Join(g.dir, "usage.batches.jsonl")
	if err := os.WriteFile(path, bytes.Repeat([]byte{'\n'}, n), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestViaBatchJournalFull: when the journal cannot record a batch (the
// disk is full), the run stops submitting and every line still gets its
// result. A batch created and not recorded runs on: its lines are
// interrupted, naming it and how to collect it (exit 1); with none
// created, nothing was sent (exit 2). The other lines are not sent. Once
// the journal can be written, `batches recover` and --resume answer every
// line once, submitting nothing twice.
func TestViaBatchJournalFull(t *testing.T) {
	t.Parallel()
	const full = 64 << 10
	for _, tt := range []struct {
		name    string
		room    int64 // bytes the journal may grow by: a creating record's, not a submitted one's
		code    int
		created int
	}{
		{"the creation cannot be recorded", 0, 2, 0},
		{"the batch cannot be recorded", 480, 1, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := openaitest.New(openaitest.Config{Seed: 23})
			defer srv.Close()
			g := newGB(t, srv.URL())
			journal := fillJournal(t, g, full)
			in := simpleLines(30)
			args := []string{"--via", "batch", "--batch-lines", "10"}
			out, stderr, code := runLimited(t, g, full+tt.room, in, args...)
			if code != tt.code {
				t.Errorf("exit status = %d, want %d; stderr: %s", code, tt.code, stderr)
			}
			if !strings.Contains(stderr, "file too large") {
				t.Errorf("stderr does not give the cause: %s", stderr)
			}
			rs := parseResults(t, out)
			if len(rs) != 30 {
				t.Fatalf("%d results, want 30; stderr: %s", len(rs), stderr)
			}
			ids := srv.BatchIDs()
			if len(ids) != tt.created {
				t.Fatalf("batches created: %v, want %d: the run stops submitting", ids, tt.created)
			}
			if tt.created > 0 {
				for _, want := range []string{"batches recover", "--resume"} {
					if !strings.Contains(stderr, want) {
						t.Errorf("stderr does not say %q: %s", want, stderr)
					}
				}
			}
			inBatch := 10 * tt.created
			for i, r := range rs {
				switch {
				case r.Error == nil || r.Error.Type != "interrupted":
					t.Errorf("%s: %+v, want interrupted", r.ID, r.Error)
				case i < inBatch && (r.BatchID != ids[0] || !strings.Contains(r.Error.Message, ids[0]) || !strings.Contains(r.Error.Message, "batches recover")):
					t.Errorf("%s: batch %q, %q, want it to name batch %s and `batches recover`", r.ID, r.BatchID, r.Error.Message, ids[0])
				case i >= inBatch && (r.BatchID != "" || !strings.Contains(r.Error.Message, "not sent")):
					t.Errorf("%s: batch %q, %q, want not sent", r.ID, r.BatchID, r.Error.Message)
				}
			}

			// Room on the disk again.
			if err := os.Truncate(journal, 0); err != nil {
				t.Fatal(err)
			}
			g.seams.Clock = newStepClock()
			if _, stderr, code := g.run(context.Background(), "", "batches", "recover"); code != 0 {
				t.Fatalf("batches recover: exit status = %d; stderr: %s", code, stderr)
			}
			out2, stderr2, code2 := g.run(context.Background(), in, append(args, "--resume", saveOut(t, g, out))...)
			if code2 != 0 {
				t.Fatalf("resumed run: exit status = %d, want 0; stderr: %s", code2, stderr2)
			}
			for i, r := range parseResults(t, out2) {
				if r.Error != nil || i < inBatch && r.BatchID != ids[0] {
					t.Errorf("resumed run: %s: batch %q, %+v, want an answer (from the batch made before for the first %d)", r.ID, r.BatchID, r.Error, inBatch)
				}
			}
			st := srv.BatchStats()
			if st.Created != 3 || st.Lines != 30 {
				t.Errorf("the fake: %d batches, %d lines answered; want 3 and 30: nothing submitted twice", st.Created, st.Lines)
			}
			if n, _ := todayTotal(t, g); n != 30 {
				t.Errorf("ledger: %d succeeded, want 30", n)
			}
		})
	}
}

// TestViaBatchKilledWhileCreating: a run killed while its create call is
// in flight has made a batch it never heard of; --resume finds it by its
// tags and collects it instead of submitting the lines again, and counts
// each answer once, even when the download of the batch's input file, read
// back for its lines, drops half way.
func TestViaBatchKilledWhileCreating(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		cuts int // downloads that drop half way during --resume
	}{
		{"whole", 0},
		{"input file's download dropped", 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			killedWhileCreating(t, tt.cuts)
		})
	}
}

func killedWhileCreating(t *testing.T, cuts int) {
	t.Helper()
	srv := openaitest.New(openaitest.Config{Seed: 24, Batch: openaitest.BatchConfig{StepsPerPoll: -1}})
	defer srv.Close()
	g := newGB(t, srv.URL())
	srv.HoldCreates(1)
	in := simpleLines(10)
	cmd := child(t, g, 0, in, "--via", "batch")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.Wait(ctx, func() bool { return srv.BatchStats().Created == 1 }); err != nil {
		t.Fatalf("waiting for the batch to be created: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	srv.FinishBatches()
	made := srv.BatchIDs()

	srv.CutDownloads(cuts, 0.5)
	g.seams.Clock = newStepClock()
	out, stderr, code := g.run(context.Background(), in, "--via", "batch", "--resume", saveOut(t, g, ""))
	if code != 0 {
		t.Fatalf("--resume: exit status = %d, want 0; stderr: %s", code, stderr)
	}
	if srv.Cut() != cuts {
		t.Errorf("%d downloads dropped, want %d", srv.Cut(), cuts)
	}
	for _, r := range parseResults(t, out) {
		if r.Error != nil || r.BatchID != made[0] {
			t.Errorf("%s: batch %q, %+v; want an answer from %s, the batch the killed run made", r.ID, r.BatchID, r.Error, made[0])
		}
	}
	st := srv.BatchStats()
	if st.Created != 1 || st.Succeeded != 10 {
		t.Errorf("the fake: %d batches, %d lines answered; want 1 and 10: nothing submitted again", st.Created, st.Succeeded)
	}
	if n, tokens := todayTotal(t, g); n != 10 || tokens != st.PromptTokens {
		t.Errorf("ledger: %d succeeded, %d prompt tokens; want 10 and %d", n, tokens, st.PromptTokens)
	}
	if s := readState(t, g.dir); s.TokensWithinDay != st.PromptTokens+st.CompletionTokens {
		t.Errorf("tokens_within_day = %d, want the %d the API counted: the killed run's reservation given back", s.TokensWithinDay, st.PromptTokens+st.CompletionTokens)
	}
}

// fillLedger makes the ledger beside g's usage file n bytes of blank
// lines, which readers skip: under a file size limit of n, no entry can
// be appended to it.
func fillLedger(t *testing.T, g *gb, n int) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(g.dir, "usage.ledger.jsonl"), bytes.Repeat([]byte{'\n'}, n), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestViaBatchStoreLostWhileCollecting: when the ledger cannot be written
// as a batch is collected (the disk is full), the run exits 1 saying how
// many requests were sent, and no answer goes to stdout that the ledger
// does not hold: those lines are interrupted. --resume then collects the
// batch again and the ledger holds each answer once.
func TestViaBatchStoreLostWhileCollecting(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{Seed: 25, Batch: openaitest.BatchConfig{StepsPerPoll: -1}})
	defer srv.Close()
	g := newGB(t, srv.URL())
	const full = 64 << 10
	fillLedger(t, g, full)
	in := simpleLines(10)
	out, stderr, code := runLimited(t, g, full, in, "--via", "batch")
	if code != 1 || !strings.Contains(stderr, "10 requests were sent") || !strings.Contains(stderr, "file too large") {
		t.Errorf("exit status = %d, stderr %q; want 1, saying 10 requests were sent and why the store failed", code, stderr)
	}
	rs := parseResults(t, out)
	if len(rs) != 10 {
		t.Fatalf("%d results, want 10; stderr: %s", len(rs), stderr)
	}
	for _, r := range rs {
		if r.Error == nil || r.Error.Type != "interrupted" || !strings.Contains(r.Error.Message, "--resume") {
			t.Errorf("%s: %+v, want interrupted, not recorded, saying --resume collects it", r.ID, r.Error)
		}
	}

	g.seams.Clock = newStepClock()
	out2, stderr2, code2 := g.run(context.Background(), in, "--via", "batch", "--resume", saveOut(t, g, out))
	if code2 != 0 {
		t.Fatalf("resumed run: exit status = %d, want 0; stderr: %s", code2, stderr2)
	}
	if n := countIDs(t, out2); len(n) != 10 {
		t.Errorf("resumed run: results %v, want an answer for each of the 10 lines", n)
	}
	st := srv.BatchStats()
	if st.Created != 1 {
		t.Errorf("%d batches, want 1: the batch collected again, not submitted again", st.Created)
	}
	if n, tokens := todayTotal(t, g); n != 10 || tokens != st.PromptTokens {
		t.Errorf("ledger: %d succeeded, %d prompt tokens; want 10 and %d: each answer once", n, tokens, st.PromptTokens)
	}
}

// interruptedRun runs in through --via batch in files of batchLines lines
// and interrupts it as the second is submitted: two batches are
// journalled and run on. It returns the run's stdout and the batches the
// fake made.
func interruptedRun(t *testing.T, g *gb, srv *openaitest.Server, in string, args ...string) (string, []string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, stderr, code := g.runUntil(ctx, cancel, in, "chunk=2", append(args, "--verbose")...)
	if code != 130 {
		t.Fatalf("interrupted run: exit status = %d, want 130; stderr: %s", code, stderr)
	}
	return out, srv.BatchIDs()
}

// answeredOnce checks that over outs, each of the n lines of simpleLines
// was answered exactly once.
func answeredOnce(t *testing.T, n int, outs ...string) {
	t.Helper()
	done := map[string]int{}
	for _, out := range outs {
		for _, r := range parseResults(t, out) {
			if r.Error == nil {
				done[r.ID]++
			}
		}
	}
	for i := range n {
		if id := fmt.Sprint("q", i); done[id] != 1 {
			t.Errorf("%s answered %d times over the runs, want once", id, done[id])
		}
	}
}

// TestViaBatchTornJournal: a journal whose last line was torn (a process
// killed mid-append) takes the next record on a line of its own, and
// every reader skips the fragment and says so: the batch recorded after
// it is not lost, and `batches`, `batches recover` and --resume go on
// working, as a nightly cron job needs.
func TestViaBatchTornJournal(t *testing.T) {
	t.Parallel()
	clk := newStepClock()
	srv := openaitest.New(openaitest.Config{Now: clk.Now, Seed: 26, Batch: openaitest.BatchConfig{LinesPerStep: 5}})
	defer srv.Close()
	g := newGB(t, srv.URL()).loud()
	g.seams.Clock = clk
	in := simpleLines(40)
	args := []string{"--via", "batch", "--batch-lines", "20"}
	out, made := interruptedRun(t, g, srv, in, args...)
	journal := filepath.Join(g.dir, "usage.batches.jsonl")
	f, err := os.OpenFile(journal, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"event":"submitted","time":"2026-`); err != nil {
		t.Fatal(err)
	}
	f.Close()

	// Another job journals its batch after the fragment.
	var other strings.Builder
	for i := range 5 {
		fmt.Fprintf(&other, `{"id":"o%d","prompt":"another job's line %d"}`+"\n", i, i)
	}
	if _, stderr, code := g.run(context.Background(), other.String(), "--via", "batch"); code != 0 {
		t.Fatalf("another job: exit status = %d, want 0; stderr: %s", code, stderr)
	}
	ids := srv.BatchIDs()
	if len(ids) != len(made)+1 {
		t.Fatalf("batches made: %v, want %v and the other job's", ids, made)
	}

	lout, lerr, lcode := g.run(context.Background(), "", "batches", "--json")
	if lcode != 0 || !strings.Contains(lerr, "is not a record, skipped") {
		t.Fatalf("batches: exit status = %d, stderr %q; want 0, saying a line was skipped", lcode, lerr)
	}
	for _, id := range ids {
		if !strings.Contains(lout, id) {
			t.Errorf("batches does not list %s: %s", id, lout)
		}
	}
	if _, rerr, rcode := g.run(context.Background(), "", "batches", "recover", "--dry-run"); rcode != 0 {
		t.Errorf("batches recover --dry-run: exit status = %d, want 0; stderr: %s", rcode, rerr)
	}
	out2, stderr2, code2 := g.run(context.Background(), in, append(args, "--resume", saveOut(t, g, out))...)
	if code2 != 0 || !strings.Contains(stderr2, "is not a record, skipped") {
		t.Fatalf("--resume: exit status = %d, want 0, saying a line was skipped; stderr: %s", code2, stderr2)
	}
	answeredOnce(t, 40, out, out2)
	if st := srv.BatchStats(); st.Created != len(ids) {
		t.Errorf("%d batches made, want still %d: nothing submitted again", st.Created, len(ids))
	}
}

// TestViaBatchJournalBadLine: one line of the journal that is not a
// record (edited by hand) is skipped and reported by `batches`, `batches
// recover`, `batches cancel` and --resume, which all go on working; and
// `batches cancel` cancels even with no journal it can read, as it needs
// only the batch's id.
func TestViaBatchJournalBadLine(t *testing.T) {
	t.Parallel()
	clk := newStepClock()
	srv := openaitest.New(openaitest.Config{Now: clk.Now, Seed: 27, Batch: openaitest.BatchConfig{LinesPerStep: 5}})
	defer srv.Close()
	g := newGB(t, srv.URL()).loud()
	g.seams.Clock = clk
	in := simpleLines(20)
	args := []string{"--via", "batch", "--batch-lines", "10"}
	// Nothing is polled before the interrupt: the batches are still
	// running when cancelled.
	hold := make(chan struct{})
	clk.start = hold
	out, made := interruptedRun(t, g, srv, in, args...)
	close(hold)
	if len(made) != 2 {
		t.Fatalf("batches made: %v, want 2", made)
	}
	journal := filepath.Join(g.dir, "usage.batches.jsonl")
	b, err := os.ReadFile(journal)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(journal, append([]byte("edited by hand\n"), b...), 0o600); err != nil {
		t.Fatal(err)
	}
	const said = "line 1 is not a record, skipped"

	for _, cmd := range [][]string{{"batches", "--json"}, {"batches", "recover", "--dry-run"}, {"batches", "cancel", made[1]}} {
		out, stderr, code := g.run(context.Background(), "", cmd...)
		if code != 0 || !strings.Contains(stderr, said) {
			t.Errorf("%v: exit status = %d, stderr %q; want 0, saying %q", cmd, code, stderr, said)
		}
		if cmd[1] != "recover" && !strings.Contains(out, made[1]) {
			t.Errorf("%v: stdout %q does not name %s", cmd, out, made[1])
		}
	}

	// A journal that cannot be read at all: the batch is cancelled all
	// the same, and stderr says the cancellation is not journalled.
	aside := journal + ".aside"
	if err := os.Rename(journal, aside); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(journal, 0o700); err != nil {
		t.Fatal(err)
	}
	cout, cerr, ccode := g.run(context.Background(), "", "batches", "cancel", made[0])
	if ccode != 0 || !strings.Contains(cout, made[0]+" cancelling") || !strings.Contains(cerr, "not journalled") {
		t.Errorf("batches cancel with the journal a directory: exit status = %d, stdout %q, stderr %q; want 0, the batch cancelling, and that it is not journalled", ccode, cout, cerr)
	}
	if err := os.Remove(journal); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(aside, journal); err != nil {
		t.Fatal(err)
	}

	out2, stderr2, code2 := g.run(context.Background(), in, append(args, "--resume", saveOut(t, g, out))...)
	if code2 != 0 || !strings.Contains(stderr2, said) {
		t.Fatalf("--resume: exit status = %d, want 0, saying %q; stderr: %s", code2, said, stderr2)
	}
	answeredOnce(t, 20, out, out2)
}

// TestViaBatchRepeatedCustomID: an output file that repeats a custom_id,
// or gives one both an answer and a 500, counts the first answer of each
// line: one result a line, charged once, and no answered line submitted
// again; the repeats are reported.
func TestViaBatchRepeatedCustomID(t *testing.T) {
	t.Parallel()
	for _, fault := range []string{"repeated answers", "an answer and a 500"} {
		for _, unordered := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/unordered=%v", fault, unordered), func(t *testing.T) {
				clk := newStepClock()
				srv := openaitest.New(openaitest.Config{Now: clk.Now, Seed: 28, Batch: openaitest.BatchConfig{StepsPerPoll: -1}})
				defer srv.Close()
				if fault == "repeated answers" {
					srv.RepeatAnswers(true)
				} else {
					srv.AnswerAndFail(true)
				}
				g := newGB(t, srv.URL()).loud()
				g.seams.Clock = clk
				args := []string{"--via", "batch"}
				if unordered {
					args = append(args, "--unordered")
				}
				out, stderr, code := g.run(context.Background(), simpleLines(3), args...)
				if code != 0 {
					t.Errorf("exit status = %d, want 0; stderr: %s", code, stderr)
				}
				n := countIDs(t, out)
				for _, r := range parseResults(t, out) {
					if r.Error != nil {
						t.Errorf("%s: %+v, want its answer", r.ID, r.Error)
					}
				}
				if len(n) != 3 || n["q0"] != 1 || n["q1"] != 1 || n["q2"] != 1 {
					t.Errorf("results by id = %v, want one for each of q0, q1, q2", n)
				}
				if !strings.Contains(stderr, "3 more answers") {
					t.Errorf("stderr does not report the 3 repeats: %s", stderr)
				}
				st := srv.BatchStats()
				if st.Created != 1 {
					t.Errorf("%d batches, want 1: no answered line submitted again", st.Created)
				}
				if got, tokens := todayTotal(t, g); got != 3 || tokens != st.PromptTokens {
					t.Errorf("ledger: %d succeeded, %d prompt tokens; want 3 and %d: each line charged once", got, tokens, st.PromptTokens)
				}
				if rows := ledgerLines(t, g.dir); rows != 3 {
					t.Errorf("ledger has %d entries, want 3", rows)
				}
			})
		}
	}
}

// TestViaBatchLostCreateListingFails: when the answer to a create is lost
// and the listing that would find the batch fails, the listing is asked
// again, and the batch is found, not made twice. When the batches cannot
// be listed at all, the chunk's lines fail, saying so, rather than make a
// second batch blind; --resume then finds and collects the batch.
func TestViaBatchLostCreateListingFails(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		fails int // listings that fail
		code  int
	}{
		{"once", 1, 0},
		{"past the retries", 1000, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clk := newStepClock()
			srv := openaitest.New(openaitest.Config{Now: clk.Now, Seed: 29, Batch: openaitest.BatchConfig{LoseCreates: 1, StepsPerPoll: -1}})
			defer srv.Close()
			srv.FailLists(tt.fails)
			g := newGB(t, srv.URL())
			g.seams.Clock = clk
			in := simpleLines(10)
			out, stderr, code := g.run(context.Background(), in, "--via", "batch", "--retries", "2")
			if code != tt.code {
				t.Errorf("exit status = %d, want %d; stderr: %s", code, tt.code, stderr)
			}
			if n := srv.BatchStats().Created; n != 1 {
				t.Fatalf("%d batches made, want 1: none made blind", n)
			}
			made := srv.BatchIDs()[0]
			rs := parseResults(t, out)
			if len(rs) != 10 {
				t.Fatalf("%d results, want 10", len(rs))
			}
			for _, r := range rs {
				switch {
				case tt.code == 0 && (r.Error != nil || r.BatchID != made):
					t.Errorf("%s: batch %q, %+v; want an answer from %s", r.ID, r.BatchID, r.Error, made)
				case tt.code != 0 && (r.Error == nil || !strings.Contains(r.Error.Message, "could not be listed") || !strings.Contains(r.Error.Message, "--resume")):
					t.Errorf("%s: %+v; want an error saying the batches could not be listed, and that --resume looks again", r.ID, r.Error)
				}
			}
			if tt.code == 0 {
				return
			}
			srv.FailLists(0)
			out2, stderr2, code2 := g.run(context.Background(), in, "--via", "batch", "--resume", saveOut(t, g, out))
			if code2 != 0 {
				t.Fatalf("--resume: exit status = %d, want 0; stderr: %s", code2, stderr2)
			}
			for _, r := range parseResults(t, out2) {
				if r.Error != nil || r.BatchID != made {
					t.Errorf("--resume: %s: batch %q, %+v; want an answer from %s", r.ID, r.BatchID, r.Error, made)
				}
			}
			if st := srv.BatchStats(); st.Created != 1 || st.Succeeded != 10 {
				t.Errorf("the fake: %d batches, %d answered; want 1 and 10", st.Created, st.Succeeded)
			}
		})
	}
}

// TestViaBatchResumeUnknownBatch: --resume against an API that does not
// know the journalled batches (another key's, another base URL) stops
// with exit 2, naming the batch and the mismatch, and sends nothing: the
// batches may still run and bill where they were made. Submitting their
// lines again is asked for with --resubmit-unknown.
func TestViaBatchResumeUnknownBatch(t *testing.T) {
	t.Parallel()
	clk := newStepClock()
	srv := openaitest.New(openaitest.Config{Now: clk.Now, Seed: 30, Batch: openaitest.BatchConfig{LinesPerStep: 5}})
	defer srv.Close()
	g := newGB(t, srv.URL())
	g.seams.Clock = clk
	in := simpleLines(40)
	args := []string{"--via", "batch", "--batch-lines", "20"}
	out, made := interruptedRun(t, g, srv, in, args...)
	prev := saveOut(t, g, out)

	other := openaitest.New(openaitest.Config{Now: clk.Now, Seed: 31, Batch: openaitest.BatchConfig{StepsPerPoll: -1}})
	defer other.Close()
	out2, stderr2, code2 := g.run(context.Background(), in, append(args, "--resume", prev, "--base-url", other.URL())...)
	named := strings.Contains(stderr2, made[0]) || strings.Contains(stderr2, made[1])
	if code2 != 2 || !named || !strings.Contains(stderr2, "another API key or base URL") || !strings.Contains(stderr2, "--resubmit-unknown") {
		t.Errorf("--resume at another base URL: exit status = %d, stderr %q; want 2, naming a batch of %v, the mismatch and --resubmit-unknown", code2, stderr2, made)
	}
	if st := other.BatchStats(); st.Created != 0 || st.Uploads != 0 {
		t.Errorf("the other API: %d batches, %d uploads; want nothing sent", st.Created, st.Uploads)
	}
	for _, r := range parseResults(t, out2) {
		if r.Error == nil || !strings.Contains(r.Error.Message, "not sent") {
			t.Errorf("%s: %+v, want not sent", r.ID, r.Error)
		}
	}

	out3, stderr3, code3 := g.run(context.Background(), in, append(args, "--resume", prev, "--base-url", other.URL(), "--resubmit-unknown")...)
	if code3 != 0 {
		t.Fatalf("--resume --resubmit-unknown: exit status = %d, want 0; stderr: %s", code3, stderr3)
	}
	answeredOnce(t, 40, out, out3)
	if st := other.BatchStats(); st.Created == 0 {
		t.Errorf("--resubmit-unknown: the other API made no batch")
	}
}

// figures are the tokens and dollars a run's summary (on stderr) says.
type figures struct {
	prompt, completion int64
	cost               budget.Cost
}

// summaryFigures reads the figures from a run's summary.
func summaryFigures(t *testing.T, stderr string) figures {
	t.Helper()
	m := regexp.MustCompile(`tokens (\d+) in \(\d+ cached\), (\d+) out; \$([0-9.]+)`).FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("no summary on stderr: %s", stderr)
	}
	var f figures
	f.prompt, _ = strconv.ParseInt(m[1], 10, 64)
	f.completion, _ = strconv.ParseInt(m[2], 10, 64)
	if err := f.cost.UnmarshalJSON([]byte(m[3])); err != nil {
		t.Fatal(err)
	}
	return f
}

// ledgerFigures are the tokens and dollars the ledger holds for today.
func ledgerFigures(t *testing.T, g *gb) figures {
	t.Helper()
	r := todayUsage(t, g)
	return figures{r.PromptTokens, r.CompletionTokens, r.CostUSD}
}

// TestViaBatchSummaryCountsSettled: the summary's tokens and dollars are
// what the run settled, once each, however often an answer was read: a
// download cut and started over reads its first lines twice, and --resume
// reads again a batch collected before (settled then, so nothing now).
func TestViaBatchSummaryCountsSettled(t *testing.T) {
	t.Parallel()
	clk := newStepClock()
	srv := openaitest.New(openaitest.Config{Now: clk.Now, Seed: 32, Batch: openaitest.BatchConfig{StepsPerPoll: -1}})
	defer srv.Close()
	g := newGB(t, srv.URL()).loud()
	g.seams.Clock = clk
	in := simpleLines(30)
	srv.CutDownloads(1, 0.5)
	_, stderr, code := g.run(context.Background(), in, "--via", "batch")
	if code != 0 || srv.Cut() != 1 {
		t.Fatalf("exit status = %d, %d downloads cut; want 0 and 1; stderr: %s", code, srv.Cut(), stderr)
	}
	settled := ledgerFigures(t, g)
	if got := summaryFigures(t, stderr); got != settled {
		t.Errorf("a download started over: summary says %+v, the ledger %+v", got, settled)
	}

	// The results are lost; --resume reads the collected batch again.
	_, stderr2, code2 := g.run(context.Background(), in, "--via", "batch", "--resume", saveOut(t, g, ""))
	if code2 != 0 {
		t.Fatalf("--resume: exit status = %d, want 0; stderr: %s", code2, stderr2)
	}
	if got := summaryFigures(t, stderr2); got != (figures{}) {
		t.Errorf("--resume reading a collected batch again: summary says %+v, want nothing: it settled nothing", got)
	}
	if got := ledgerFigures(t, g); got != settled {
		t.Errorf("after --resume the ledger holds %+v, want still %+v", got, settled)
	}
}

// TestStoreFailsBeforeSending: a usage file that cannot be written when
// the first reservation is made (the disk is full) stops the run before
// anything is sent, on either route: exit 2, the message saying nothing
// was sent and the real cause, and every line its result.
func TestStoreFailsBeforeSending(t *testing.T) {
	t.Parallel()
	for _, via := range []string{"sync", "batch"} {
		t.Run(via, func(t *testing.T) {
			srv := openaitest.New(openaitest.Config{Seed: 33})
			defer srv.Close()
			g := newGB(t, srv.URL())
			// usage.md, which is rewritten at each reservation, is larger
			// than this; the batch file and the spools of 5 short lines
			// are not.
			out, stderr, code := runLimited(t, g, 900, simpleLines(5), "--via", via)
			if code != 2 || !strings.Contains(stderr, "nothing sent") || !strings.Contains(stderr, "file too large") {
				t.Errorf("exit status = %d, stderr %q; want 2, saying nothing was sent and the cause", code, stderr)
			}
			rs := parseResults(t, out)
			if len(rs) != 5 {
				t.Fatalf("%d results, want 5; stderr: %s", len(rs), stderr)
			}
			for _, r := range rs {
				if r.Error == nil || r.Error.Type != "interrupted" || !strings.Contains(r.Error.Message, "not sent") {
					t.Errorf("%s: %+v, want interrupted, not sent", r.ID, r.Error)
				}
			}
			if n := srv.Stats().Requests; n != 0 && via == "sync" {
				t.Errorf("the API got %d requests, want none", n)
			}
			if st := srv.BatchStats(); st.Created != 0 {
				t.Errorf("%d batches created, want none", st.Created)
			}
		})
	}
}

// TestViaBatchDayLimitFail: a batch file the day's limit cannot take,
// with --on-limit fail, stops the run: exit 3, each line refused, and no
// batch made (the run used to wait for ever).
func TestViaBatchDayLimitFail(t *testing.T) {
	t.Parallel()
	clk := newStepClock()
	srv := openaitest.New(openaitest.Config{Now: clk.Now, Seed: 34, Batch: openaitest.BatchConfig{StepsPerPoll: -1}})
	defer srv.Close()
	g := newGB(t, srv.URL())
	g.seams.Clock = clk
	if _, stderr, code := g.run(context.Background(), simpleLines(10), "--via", "batch"); code != 0 {
		t.Fatalf("first run: exit status = %d; stderr: %s", code, stderr)
	}
	// Room for the 10 lines' estimate alone, not with what the day used.
	in := strings.ReplaceAll(simpleLines(10), "prompt number", "another prompt")
	out, stderr, code := g.run(context.Background(), in, "--via", "batch", "--tpd", "2800", "--on-limit", "fail")
	if code != 3 {
		t.Errorf("exit status = %d, want 3; stderr: %s", code, stderr)
	}
	for _, r := range parseResults(t, out) {
		if r.Error == nil || r.Error.Type != "budget" {
			t.Errorf("%s: %+v, want a budget error", r.ID, r.Error)
		}
	}
	if n := srv.BatchStats().Created; n != 1 {
		t.Errorf("%d batches made, want only the first run's", n)
	}
}

// TestResumeTwins: two lines with one id (line 1's implicit "1" and an
// explicit "1"), one answered and one failed: --resume sends the failed
// twin again, and only it, on either route. A twin the output gives no
// result for (a run killed before it) is sent too.
func TestResumeTwins(t *testing.T) {
	t.Parallel()
	in := `"say one"
{"id":"1","prompt":"fails __status_500__"}
{"id":"q3","prompt":"say three"}
`
	for _, via := range []string{"sync", "batch"} {
		for _, killed := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/killed=%v", via, killed), func(t *testing.T) {
				clk := newStepClock()
				srv := openaitest.New(openaitest.Config{Now: clk.Now, Seed: 35, Batch: openaitest.BatchConfig{StepsPerPoll: -1}})
				defer srv.Close()
				g := newGB(t, srv.URL())
				g.seams.Clock = clk
				args := []string{"--via", via, "--retries", "0"}
				out, stderr, code := g.run(context.Background(), in, args...)
				if code != 1 {
					t.Fatalf("first run: exit status = %d, want 1 (line 2 fails); stderr: %s", code, stderr)
				}
				if killed {
					// The output of a run killed before line 2's result.
					rs := strings.SplitAfter(out, "\n")
					out = rs[0] + rs[2]
				}
				sent := srv.Stats().Requests
				lines := srv.BatchStats().Lines
				out2, stderr2, _ := g.run(context.Background(), in, append(args, "--resume", saveOut(t, g, out))...)
				rs := parseResults(t, out2)
				if len(rs) != 1 || rs[0].Line != 2 {
					t.Fatalf("resumed run: results %+v, want one, for line 2, the twin that failed; stderr: %s", rs, stderr2)
				}
				if via == "sync" {
					if n := srv.Stats().Requests - sent; n != 1 {
						t.Errorf("resumed run sent %d requests, want 1: line 2 again, not line 1", n)
					}
				} else if n := srv.BatchStats().Lines - lines; n != 0 {
					t.Errorf("resumed run: %d batch lines answered, want none: line 2 collected from its batch", n)
				}
			})
		}
	}
}

// TestViaBatchForeignCustomID: a line of an output file whose custom_id
// gptbatch did not write, however much it looks like one of its lines'
// (a line's id with a mangled tail, its number spelt another way), is no
// line's answer. The line it seems to name gets its own answer; the line
// whose answer it stands in place of is missing from the output, so it
// goes again and gets its own; the foreign answer, paid for, is in the
// ledger, and the run says it answered no line.
func TestViaBatchForeignCustomID(t *testing.T) {
	t.Parallel()
	hash := batchapi.LineHash("/v1/chat/completions", []byte(`{}`))
	for _, foreign := range []string{"line-2.x", "line-2.", "line-02", "line-+2", "line-2." + hash + ".0.1.0.9.9.0.0.+5"} {
		t.Run(foreign, func(t *testing.T) {
			clk := newStepClock()
			srv := openaitest.New(openaitest.Config{Now: clk.Now, Seed: 28, Batch: openaitest.BatchConfig{StepsPerPoll: -1}})
			defer srv.Close()
			// The first output file served gives line 1's answer first,
			// under the foreign custom_id.
			var mu sync.Mutex
			mangled := false
			api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/content") {
					srv.Handler().ServeHTTP(w, r)
					return
				}
				rec := httptest.NewRecorder()
				srv.Handler().ServeHTTP(rec, r)
				body := rec.Body.Bytes()
				mu.Lock()
				first := `"custom_id":"line-1"`
				if i := bytes.Index(body, []byte(first)); !mangled && i >= 0 && bytes.Contains(body, []byte(`"response"`)) {
					mangled = true
					start := bytes.LastIndexByte(body[:i], '\n') + 1
					end := start + bytes.IndexByte(body[start:], '\n') + 1
					line := bytes.Replace(body[start:end], []byte(first), []byte(`"custom_id":"`+foreign+`"`), 1)
					body = append(line, append(body[:start:start], body[end:]...)...)
				}
				mu.Unlock()
				w.Header().Set("Content-Type", rec.Header().Get("Content-Type"))
				w.WriteHeader(rec.Code)
				w.Write(body)
			}))
			defer api.Close()
			g := newGB(t, api.URL+"/v1").loud()
			g.seams.Clock = clk
			out, stderr, code := g.run(context.Background(), simpleLines(3), "--via", "batch")
			if code != 0 {
				t.Errorf("exit status = %d, want 0; stderr: %s", code, stderr)
			}
			if !mangled {
				t.Fatal("no output file was served")
			}
			rs := parseResults(t, out)
			if len(rs) != 3 {
				t.Fatalf("%d results, want 3", len(rs))
			}
			for i, r := range rs {
				want := fmt.Sprint("prompt number ", i)
				if r.Error != nil || r.Content == nil || !strings.Contains(*r.Content, want) {
					got, _ := json.Marshal(r)
					t.Errorf("line %d = %s; want the answer to %q", i+1, got, want)
				}
			}
			if !strings.Contains(stderr, strconv.Quote(foreign)+", which gptbatch did not write") {
				t.Errorf("stderr does not name the foreign custom_id %q: %s", foreign, stderr)
			}
			if rs[0].Attempts != 2 {
				t.Errorf("line 1: %d attempts, want 2: its answer was missing from the first batch", rs[0].Attempts)
			}
			if rows := ledgerLines(t, g.dir); rows != 4 {
				t.Errorf("ledger has %d entries, want 4: the three lines' answers and the foreign one", rows)
			}
		})
	}
}
