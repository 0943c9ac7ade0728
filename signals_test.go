package main

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/openaitest"
)

// hangPrompts is n lines whose requests the fake holds until its Hang
// channel is closed; the first fast of them are answered at once.
func hangPrompts(n, fast int) string {
	var b strings.Builder
	for i := range n {
		p := "say " + strconv.Itoa(i)
		if i >= fast {
			p = "slow __hang__ " + strconv.Itoa(i)
		}
		b.WriteString(`{"id":"p` + strconv.Itoa(i) + `","prompt":"` + p + `"}` + "\n")
	}
	return b.String()
}

// ledger is every entry of the ledger in dir.
func ledger(t *testing.T, dir string) []budget.LedgerEntry {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "usage.ledger.jsonl"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var es []budget.LedgerEntry
	if err := budget.ReadLedger(f, func(e budget.LedgerEntry) error { es = append(es, e); return nil }); err != nil {
		t.Fatal(err)
	}
	return es
}

// ledgerTokens adds up the tokens of the ledger's entries.
func ledgerTokens(es []budget.LedgerEntry) int64 {
	var n int64
	for _, e := range es {
		n += e.PromptTokens + e.CompletionTokens
	}
	return n
}

// exitCode is the exit status of a finished command.
func exitCode(cmd *exec.Cmd) int { return cmd.ProcessState.ExitCode() }

// marked is a writer that closes seen the first time marker is written.
func marked(marker string) (*watchWriter, <-chan struct{}) {
	seen := make(chan struct{})
	return &watchWriter{marker: marker, seen: func() { close(seen) }}, seen
}

// waitMarked waits for seen, failing after a minute.
func waitMarked(t *testing.T, seen <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-seen:
	case <-time.After(time.Minute):
		t.Fatalf("no %s on stderr after a minute", what)
	}
}

// TestSIGHUP: a hang-up (a closed terminal, a dropped ssh) is a SIGTERM:
// the requests in flight finish, their answers are written and settled,
// every line gets its result, exit 130. It used to kill the run at once,
// losing answers already paid for.
func TestSIGHUP(t *testing.T) {
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
