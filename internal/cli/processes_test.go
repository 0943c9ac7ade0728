package cli

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/internal/openaitest"
)

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
