package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/openaitest"
)

// binary builds gptbatch once for the tests that run it as processes.
var binary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "gptbatch-test-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "gptbatch")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", &exec.ExitError{Stderr: out}
	}
	return bin, nil
})

func command(t *testing.T, dir, url string, stdin string, args ...string) *exec.Cmd {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin, err := binary()
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	cmd := exec.Command(bin, append([]string{"--base-url", url, "--usage-file", filepath.Join(dir, "usage.md"), "--quiet"}, args...)...)
	cmd.Env = append(os.Environ(), "OPENAI_API_KEY="+testKey)
	cmd.Stdin = strings.NewReader(stdin)
	return cmd
}

func readState(t *testing.T, dir string) budget.State {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "usage.md"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := budget.ParseState(b)
	if err != nil {
		t.Fatalf("usage.md does not parse: %v\n%s", err, b)
	}
	return s
}

func ledgerLines(t *testing.T, dir string) int {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "usage.ledger.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	if err := budget.ReadLedger(f, func(budget.LedgerEntry) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestProcessesShareLimits: four processes at once, one usage file, a
// server enforcing the same rpm: no 429, and the shared counters end exact.
func TestProcessesShareLimits(t *testing.T) {
	srv := openaitest.New(openaitest.Config{RPM: 1200, Latency: 20 * time.Millisecond})
	defer srv.Close()
	dir := t.TempDir()
	var wg sync.WaitGroup
	outs := make([]bytes.Buffer, 4)
	errs := make([]bytes.Buffer, 4)
	codes := make([]int, 4)
	for i := range 4 {
		cmd := command(t, dir, srv.URL(), prompts(330), "--rpm", "1200", "--tpm", "0", "--parallel", "32", "--batch-tokens", "0")
		cmd.Stdout, cmd.Stderr = &outs[i], &errs[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = cmd.Run()
			codes[i] = cmd.ProcessState.ExitCode()
		}()
	}
	wg.Wait()
	for i := range 4 {
		if codes[i] != 0 {
			t.Errorf("process %d: exit status %d: %s", i, codes[i], errs[i].String())
		}
		if n := len(parseResults(t, outs[i].String())); n != 330 {
			t.Errorf("process %d: %d results, want 330", i, n)
		}
	}
	st := srv.Stats()
	if st.RateLimited != 0 || st.Requests != 1320 {
		t.Errorf("server: %d requests, %d 429s; want 1320 and none", st.Requests, st.RateLimited)
	}
	s := readState(t, dir)
	if want := st.PromptTokens + st.CompletionTokens; s.TokensWithinDay != want {
		t.Errorf("tokens_within_day = %d, want %d: an update was lost", s.TokensWithinDay, want)
	}
	if n := ledgerLines(t, dir); n != 1320 {
		t.Errorf("ledger has %d entries, want 1320", n)
	}
}

// TestKill9: a process killed mid-batch leaves a usage file and ledger the
// next run accepts, and --resume finishes the batch.
func TestKill9(t *testing.T) {
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

// parseResultsLoose reads results, skipping a line torn by a kill.
func parseResultsLoose(out string) []result {
	var rs []result
	for _, l := range strings.Split(out, "\n") {
		var r result
		if json.Unmarshal([]byte(l), &r) == nil && r.ID != "" {
			rs = append(rs, r)
		}
	}
	return rs
}

// TestKill9ViaBatch: a --via batch run killed once its batches are
// journalled leaves them running; --resume collects them without
// submitting any again, and the budget and the ledger count each answer
// once.
func TestKill9ViaBatch(t *testing.T) {
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
