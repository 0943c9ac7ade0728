package cli

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/internal/openaitest"
	"github.com/gptbatch/gptbatch/pipeline"
)

// TestInterruptAndResume: a signal stops sending, keeps the results of the
// requests in flight, exits 130; --resume then does each id exactly once.
func TestInterruptAndResume(t *testing.T) {
	t.Parallel()
	hang := make(chan struct{})
	srv := openaitest.New(openaitest.Config{Hang: hang})
	defer srv.Close()
	g := newGB(t, srv.URL())
	var in strings.Builder
	for i := 0; i < 60; i++ {
		in.WriteString(`{"id":"s` + strconv.Itoa(i) + `","prompt":"slow __hang__ ` + strconv.Itoa(i) + `"}` + "\n")
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// The signal arrives while 10 requests hang in flight; they are
		// then let go. A line admitted after the signal is not sent.
		if err := waitServer(srv.WaitInFlight, 10); err == nil {
			cancel()
		}
		close(hang)
	}()
	out, stderr, code := g.run(ctx, in.String(), "--parallel", "10")
	if code != 130 {
		t.Errorf("exit status = %d, want 130; stderr %s", code, stderr)
	}
	first := parseResults(t, out)
	ok := 0
	for _, r := range first {
		if r.Error == nil {
			ok++
		} else if r.Error.Type != "interrupted" {
			t.Errorf("result %s: error %+v, want interrupted", r.ID, r.Error)
		}
	}
	if ok < 10 {
		t.Errorf("%d results kept after the interrupt, want the 10 in flight", ok)
	}
	prev := filepath.Join(g.dir, "out.jsonl")
	if err := os.WriteFile(prev, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	before := srv.Stats().Succeeded
	out2, stderr, code := g.run(context.Background(), in.String(), "--resume", prev)
	if code != 0 {
		t.Errorf("resume: exit status %d: %s", code, stderr)
	}
	done := map[string]int{}
	for _, r := range append(first, parseResults(t, out2)...) {
		if r.Error == nil {
			done[r.ID]++
		}
	}
	for i := 0; i < 60; i++ {
		if n := done["s"+strconv.Itoa(i)]; n != 1 {
			t.Errorf("id s%d succeeded %d times, want once", i, n)
		}
	}
	if sent := srv.Stats().Succeeded - before; sent != 60-ok {
		t.Errorf("resume sent %d requests, want %d", sent, 60-ok)
	}
}

// TestInterruptGivesEveryLineAResult: after a signal the rest of the input
// is read and every line gets a result, the lines not sent an interrupted
// one. It used to stop reading: 216 results for
// 100,000 lines.
func TestInterruptGivesEveryLineAResult(t *testing.T) {
	t.Parallel()
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

// TestKill9: a process killed mid-batch leaves a usage file and ledger the
// next run accepts, and --resume finishes the batch.
func TestKill9(t *testing.T) {
	t.Parallel() // a process of its own: nothing of this one is shared
	srv := openaitest.New(openaitest.Config{Latency: 30 * time.Millisecond})
	defer srv.Close()
	dir := t.TempDir()
	in := prompts(300)
	out := filepath.Join(dir, "out.jsonl")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	cmd := command(t, dir, srv.URL(), in, "--parallel", "8")
	cmd.Stdout = f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := waitServer(srv.WaitArrivals, 60); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	f.Close()
	readState(t, dir)
	before := ledgerLines(t, dir)

	var out2, errb bytes.Buffer
	cmd = command(t, dir, srv.URL(), in, "--parallel", "8", "--resume", out)
	cmd.Stdout, cmd.Stderr = &out2, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("next run: %v: %s", err, errb.String())
	}
	prev, _ := os.ReadFile(out)
	done := map[string]bool{}
	for _, r := range append(parseResultsLoose(string(prev)), parseResults(t, out2.String())...) {
		if r.Error == nil {
			done[r.ID] = true
		}
	}
	if len(done) != 300 {
		t.Errorf("%d ids done after resume, want 300", len(done))
	}
	if n := ledgerLines(t, dir); n <= before {
		t.Errorf("ledger has %d entries after the second run, %d before", n, before)
	}
	readState(t, dir)
}

// TestSIGHUP: a hang-up (a closed terminal, a dropped ssh) is a SIGTERM:
// the requests in flight finish, their answers are written and settled,
// every line gets its result, exit 130. It used to kill the run at once,
// losing answers already paid for.
func TestSIGHUP(t *testing.T) {
	t.Parallel() // a process of its own: nothing of this one is shared
	hang := make(chan struct{})
	srv := openaitest.New(openaitest.Config{Hang: hang})
	defer srv.Close()
	dir := t.TempDir()
	cmd := command(t, dir, srv.URL(), hangPrompts(40, 0), "--parallel", "4", "--batch-tokens", "0")
	var out bytes.Buffer
	errw, said := marked("interrupted")
	cmd.Stdout, cmd.Stderr = &out, errw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := waitServer(srv.WaitInFlight, 4); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitMarked(t, said, "word of the interrupt")
	close(hang)
	_ = cmd.Wait()
	if code := exitCode(cmd); code != 130 {
		t.Errorf("exit status after SIGHUP = %d, want 130; stderr: %s", code, errw.String())
	}
	rs := parseResults(t, out.String())
	ok := 0
	for _, r := range rs {
		switch {
		case r.Error == nil:
			ok++
		case r.Error.Type != "interrupted":
			t.Errorf("result %s: %+v, want interrupted", r.ID, r.Error)
		}
	}
	if len(rs) != 40 || ok != 4 {
		t.Errorf("%d results, %d answers; want 40 results (every line), 4 answers (those in flight)", len(rs), ok)
	}
	st := srv.Stats()
	if es := ledger(t, dir); len(es) != st.Requests || st.Requests != 4 {
		t.Errorf("ledger has %d entries, server saw %d requests; want 4 of each", len(es), st.Requests)
	}
	if s, want := readState(t, dir), st.PromptTokens+st.CompletionTokens; s.TokensWithinDay != want {
		t.Errorf("tokens_within_day = %d, want %d: what the server counted, no reservation left", s.TokensWithinDay, want)
	}
}

// TestClosedStdout: with stdout closed by its reader (| head -1) the run
// stops sending, lets what is in flight finish, settles it and exits
// quietly with the status of a filter killed by SIGPIPE. It used to die of
// SIGPIPE at the first write, leaving the reservations of the calls in
// flight in the day counter and their calls out of the ledger.
func TestClosedStdout(t *testing.T) {
	t.Parallel() // a process of its own: nothing of this one is shared
	hang := make(chan struct{})
	srv := openaitest.New(openaitest.Config{Hang: hang})
	defer srv.Close()
	dir := t.TempDir()
	cmd := command(t, dir, srv.URL(), hangPrompts(500, 1), "--parallel", "4", "--batch-tokens", "0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	first, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.Contains(first, `"id":"p0"`) {
		t.Fatalf("first line %q, %v; want p0's result", first, err)
	}
	stdout.Close() // as head -1 does
	if err := waitServer(srv.WaitInFlight, 4); err != nil {
		t.Fatal(err)
	}
	close(hang)
	_ = cmd.Wait()
	if code := exitCode(cmd); code != 141 || errb.Len() != 0 {
		t.Errorf("exit status %d, stderr %q; want 141 (as SIGPIPE) and nothing said", code, errb.String())
	}
	st := srv.Stats()
	if st.Requests >= 500 {
		t.Errorf("server got all %d requests: sending went on after stdout closed", st.Requests)
	}
	if es := ledger(t, dir); len(es) != st.Requests {
		t.Errorf("ledger has %d entries, server saw %d requests: want each call in the ledger", len(es), st.Requests)
	}
	if s, want := readState(t, dir), st.PromptTokens+st.CompletionTokens; s.TokensWithinDay != want {
		t.Errorf("tokens_within_day = %d, want %d: what the server counted, no reservation left", s.TokensWithinDay, want)
	}
}

// TestSecondSignal: a second signal stops at once, but what reached the API
// is in the ledger, settled at its estimate, and the day counter holds
// nothing more: no reservation of a call that ended.
func TestSecondSignal(t *testing.T) {
	t.Parallel()                               // a process of its own: nothing of this one is shared
	srv := openaitest.New(openaitest.Config{}) // hung requests wait for the client to leave
	defer srv.Close()
	dir := t.TempDir()
	cmd := command(t, dir, srv.URL(), hangPrompts(40, 0), "--parallel", "4", "--batch-tokens", "0")
	var out bytes.Buffer
	errw, said := marked("interrupt again")
	cmd.Stdout, cmd.Stderr = &out, errw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := waitServer(srv.WaitInFlight, 4); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	waitMarked(t, said, "word of the first interrupt")
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if code := exitCode(cmd); code != 130 {
		t.Errorf("exit status %d, want 130; stderr: %s", code, errw.String())
	}
	got := map[string]string{}
	for _, r := range parseResults(t, out.String()) {
		if r.Error == nil {
			t.Errorf("result %s succeeded; nothing was answered", r.ID)
			continue
		}
		got[r.ID] = r.Error.Type
	}
	for i := range 4 {
		if id := "p" + strconv.Itoa(i); got[id] != "interrupted" {
			t.Errorf("in-flight line %s: result %q, want interrupted", id, got[id])
		}
	}
	es := ledger(t, dir)
	if len(es) != 4 {
		t.Fatalf("ledger has %d entries, want the 4 calls that reached the API", len(es))
	}
	for _, e := range es {
		if e.Error != "interrupted" || e.PromptTokens == 0 || e.CompletionTokens == 0 {
			t.Errorf("ledger entry %+v: want an interrupted call settled at its estimate", e)
		}
	}
	if s, want := readState(t, dir), ledgerTokens(es); s.TokensWithinDay != want {
		t.Errorf("tokens_within_day = %d, want %d, the ledger's: no reservation left over", s.TokensWithinDay, want)
	}
}

// TestCommandsClosedStdout: every command whose output is cut short by its
// reader (gptbatch batches | head -1) ends as the main job does: quietly,
// with the status of a filter killed by SIGPIPE, not "broken pipe" and 1.
func TestCommandsClosedStdout(t *testing.T) {
	t.Parallel()
	clk := newStepClock()
	srv := openaitest.New(openaitest.Config{Now: clk.Now, Key: testKey})
	defer srv.Close()
	g := newGB(t, srv.URL())
	g.seams.Clock = clk
	// A batch journalled and a ledger written, so that each command has
	// lines to write.
	if _, stderr, code := g.run(context.Background(), simpleLines(5), "--via", "batch"); code != 0 {
		t.Fatalf("--via batch: exit %d: %s", code, stderr)
	}
	for _, args := range [][]string{{"usage"}, {"usage", "--json"}, {"limits"}, {"limits", "--json"}, {"batches"}, {"batches", "--json"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			r.Close() // the reader has gone, as head has after its line
			defer w.Close()
			var errb bytes.Buffer
			code := Run(context.Background(), append(append([]string{}, g.args...), args...), strings.NewReader(""), w, &errb, g.seams)
			if code != pipeline.ExitBrokenPipe || errb.Len() > 0 {
				t.Errorf("gptbatch %v with stdout closed: exit status %d, stderr %q; want %d and nothing said", args, code, errb.String(), pipeline.ExitBrokenPipe)
			}
		})
	}
}
