package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/internal/openaitest"
	"github.com/gptbatch/gptbatch/pipeline"
)

// TestExitStatus: every error says its exit status through ExitCode,
// however wrapped, and is printed once; one with nothing to say prints
// nothing.
func TestExitStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		err    error
		code   int
		stderr string
	}{
		{"nil", nil, 0, ""},
		{"plain", errors.New("boom"), 1, "gptbatch: boom\n"},
		{"usage", usageError(errors.New("bad flag")), 2, "gptbatch: bad flag\n"},
		{"no message", &pipeline.Error{Code: exitFailed}, 1, ""},
		{"pipeline", &pipeline.Error{Code: pipeline.ExitLimit, Err: errors.New("stopped by the minute request limit")}, 3, "gptbatch: stopped by the minute request limit\n"},
		{"wrapped", fmt.Errorf("run: %w", pipeline.ErrInterrupted), 130, "gptbatch: run: interrupted\n"},
		{"pipeline, nil error", &pipeline.Error{Code: pipeline.ExitFailed}, 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			if got := exitStatus(tt.err, &b); got != tt.code || b.String() != tt.stderr {
				t.Errorf("exitStatus(%v) = %d and %q on stderr, want %d and %q", tt.err, got, b.String(), tt.code, tt.stderr)
			}
		})
	}
}

// TestFlakyServer: 300 prompts against a server that fails 20% of calls in
// every way it can all come back right.
func TestFlakyServer(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{FailRate: 0.2, Seed: 7, Jitter: 5 * time.Millisecond})
	defer srv.Close()
	g := newGB(t, srv.URL())
	g.seams.Clock = newStepClock() // the retries' back-off takes no time
	out, stderr, code := g.run(context.Background(), prompts(300), "--parallel", "32", "--retries", "8", "--timeout", "5s")
	if code != 0 {
		t.Errorf("exit status = %d, want 0; stderr: %s", code, stderr)
	}
	rs := parseResults(t, out)
	if len(rs) != 300 {
		t.Fatalf("%d results, want 300", len(rs))
	}
	retried := 0
	for i, r := range rs {
		if r.Error != nil || r.ID != "p"+strconv.Itoa(i) || r.Content == nil || *r.Content != "answer: say "+strconv.Itoa(i) {
			t.Errorf("result %d = %+v (error %+v)", i, r, r.Error)
		}
		if r.Attempts > 1 {
			retried++
		}
	}
	st := srv.Stats()
	if st.Injected == 0 || retried == 0 {
		t.Errorf("server injected %d failures, %d lines retried: the test tested nothing", st.Injected, retried)
	}
	if st.Succeeded != 300 {
		t.Errorf("server answered %d requests, want each line once: 300 (a line charged twice?)", st.Succeeded)
	}
}

// TestStricterServer: limits far above a server that allows 600 a minute
// in one-second windows cost a few 429s, not a storm.
func TestStricterServer(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("takes 10 s of pacing")
	}
	srv := openaitest.New(openaitest.Config{RPM: 600, Window: time.Second})
	defer srv.Close()
	g := newGB(t, srv.URL())
	out, stderr, code := g.run(context.Background(), prompts(100), "--rpm", "100000", "--tpm", "0", "--parallel", "16", "--verbose")
	if code != 0 {
		t.Errorf("exit status = %d, want 0; stderr: %s", code, stderr)
	}
	if n := len(parseResults(t, out)); n != 100 {
		t.Errorf("%d results, want 100", n)
	}
	if n := srv.Stats().RateLimited; n > 150 {
		t.Errorf("server answered %d 429s, want at most 150", n)
	} else {
		t.Logf("%d 429s for 100 prompts", n)
	}
	if !strings.Contains(stderr, "fewer requests per minute") {
		t.Errorf("stderr does not say the server's limit is lower: %s", stderr)
	}
}

// TestTimeout: a hung connection costs --timeout per attempt, not the batch.
func TestTimeout(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	in := `"fine"` + "\n" + `"this one __hang__"` + "\n" + `"also fine"` + "\n"
	out, stderr, code := g.run(context.Background(), in, "--timeout", "200ms", "--retries", "1")
	if code != 1 {
		t.Errorf("exit status %d, want 1: %s", code, stderr)
	}
	rs := parseResults(t, out)
	if len(rs) != 3 || rs[1].Error == nil || rs[1].Error.Type != "network" || rs[1].Attempts != 2 {
		t.Fatalf("results = %+v; want line 2 a network error after 2 attempts", rs)
	}
	if rs[0].Error != nil || rs[2].Error != nil {
		t.Errorf("the other lines failed: %+v, %+v", rs[0].Error, rs[2].Error)
	}
}

// TestRejectedKey: a wrong key stops the batch at the first 401 and is never
// echoed, whole or masked.
func TestRejectedKey(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{Key: "sk-the-right-key-000000000000"})
	defer srv.Close()
	g := newGB(t, srv.URL())
	out, stderr, code := g.run(context.Background(), prompts(50), "--verbose", "--parallel", "2")
	if code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	rs := parseResults(t, out)
	if len(rs) != 50 {
		t.Fatalf("%d results, want 50", len(rs))
	}
	for _, r := range rs {
		if r.Error == nil || r.Error.Type != "api" || r.Error.Status != 401 {
			t.Fatalf("result %s: %+v, want an api error with status 401", r.ID, r.Error)
		}
	}
	if n := srv.Stats().Requests; n > 2 {
		t.Errorf("server got %d requests after the key was refused, want at most the 2 in flight", n)
	}
	for _, leak := range []string{testKey, testKey[:8], testKey[len(testKey)-4:]} {
		if strings.Contains(out, leak) || strings.Contains(stderr, leak) {
			t.Errorf("output quotes the key (%q)", leak)
		}
	}
}

// TestSlowHeadBoundsWindow: a line that hangs at the head holds back only a
// bounded window of later lines: the fetch stage stops running ahead.
func TestSlowHeadBoundsWindow(t *testing.T) {
	t.Parallel()
	for _, unordered := range []bool{false, true} {
		hang := make(chan struct{})
		srv := openaitest.New(openaitest.Config{Hang: hang})
		g := newGB(t, srv.URL())
		// 200 lines behind the head: more than twice the window, which
		// is all a bound needs; more were the fake's work and no more proof.
		in := `"first __hang__"` + "\n" + prompts(200)
		args := []string{"--parallel", "4", "--batch-tokens", "0", "--rpm", "0", "--tpm", "0"}
		if unordered {
			args = append(args, "--unordered")
		}
		full := make(chan struct{})
		done := make(chan string)
		go func() {
			var out bytes.Buffer
			errb := &watchWriter{marker: "window ahead of it is full", seen: func() { close(full) }}
			g.runStreams(context.Background(), append(append(append([]string{}, g.args...), args...), "--verbose"), strings.NewReader(in), &out, errb)
			done <- out.String()
		}()
		// Ordered, the run stops sending once the window is full, and says
		// so; unordered, it sends every line past the head.
		if unordered {
			if err := waitServer(srv.WaitArrivals, 201); err != nil {
				t.Errorf("unordered: %v; %d requests arrived, want 201", err, srv.Stats().Requests)
			}
		} else {
			select {
			case <-full:
			case <-time.After(time.Minute):
				t.Errorf("ordered: no word of a full window after a minute")
			}
		}
		sent := srv.Stats().Requests
		close(hang)
		out := <-done
		srv.Close()
		if n := len(parseResults(t, out)); n != 201 {
			t.Errorf("unordered=%v: %d results, want 201", unordered, n)
		}
		// Ordered: the window (4×4+64 = 80 lines, the head's included);
		// unordered: results are written as they finish, so the head does
		// not hold anything back.
		if !unordered && sent > 100 {
			t.Errorf("ordered: %d requests sent while the head hung, want at most the window (80)", sent)
		}
		if unordered && sent != 201 {
			t.Errorf("unordered: %d requests sent while the head hung, want all 201", sent)
		}
		t.Logf("unordered=%v: %d requests sent while the head hung", unordered, sent)
	}
}

// waitServer waits with one of the fake server's Wait methods for n, for
// a generous time: a test that would hang fails instead.
func waitServer(wait func(context.Context, int) error, n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := wait(ctx, n); err != nil {
		return fmt.Errorf("waiting for %d: %w", n, err)
	}
	return nil
}

// TestNeverSent: a base URL no request could go to is exit 2 before
// anything is sent; a model go-openai refuses before sending is an
// invalid_input result with no retry, no ledger line and no charge to the
// minute bucket.
func TestNeverSent(t *testing.T) {
	t.Parallel()
	t.Run("base URL", func(t *testing.T) {
		for _, u := range []string{"http//127.0.0.1/v1", "127.0.0.1:8080/v1", "ftp://127.0.0.1/v1", "https:///v1"} {
			g := newGB(t, u)
			_, stderr, code := g.run(context.Background(), prompts(2))
			if code != 2 || !strings.Contains(stderr, "base URL") {
				t.Errorf("--base-url %s: exit status %d, stderr %q; want 2, naming the base URL", u, code, stderr)
			}
			if _, err := os.Stat(filepath.Join(g.dir, "usage.ledger.jsonl")); err == nil {
				t.Errorf("--base-url %s: a ledger was written", u)
			}
		}
	})
	t.Run("model refused locally", func(t *testing.T) {
		srv := openaitest.New(openaitest.Config{})
		defer srv.Close()
		g := newGB(t, srv.URL())
		in := `{"id":"old","prompt":"hi","model":"text-davinci-003"}` + "\n" + `{"id":"new","prompt":"hi"}` + "\n"
		out, stderr, code := g.run(context.Background(), in, "--rpm", "100")
		if code != 1 {
			t.Errorf("exit status %d, want 1; stderr %s", code, stderr)
		}
		rs := parseResults(t, out)
		if len(rs) != 2 || rs[0].Error == nil || rs[0].Error.Type != "invalid_input" || rs[0].Attempts != 0 || rs[1].Error != nil {
			t.Fatalf("results = %+v, want the first invalid_input with no attempt, the second answered", rs)
		}
		es := ledger(t, g.dir)
		if len(es) != 1 || es[0].ID != "new" || srv.Stats().Requests != 1 {
			t.Errorf("ledger = %+v, server %d requests; want only the call sent", es, srv.Stats().Requests)
		}
		if s := readState(t, g.dir); s.RequestsWithinMin > 1.01 {
			t.Errorf("requests_within_min = %v, want at most the one request sent", s.RequestsWithinMin)
		}
	})
}

// TestLostCallSettledAtEstimate: a call that timed out after the server
// took it is settled at its estimate, which the API usually bills, not at
// 0; the ledger says so and the day counter agrees with it.
func TestLostCallSettledAtEstimate(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	in := `"fine"` + "\n" + `{"id":"lost","prompt":"this one __hang__","max_tokens":100}` + "\n"
	_, stderr, code := g.run(context.Background(), in, "--timeout", "200ms", "--retries", "0")
	if code != 1 {
		t.Errorf("exit status %d, want 1; stderr %s", code, stderr)
	}
	es := ledger(t, g.dir)
	var lost int64
	for _, e := range es {
		if e.ID == "lost" {
			lost = e.PromptTokens + e.CompletionTokens
			if e.Error != "network" || e.CompletionTokens != 100 {
				t.Errorf("ledger entry of the lost call = %+v, want a network error at the estimate (100 output tokens)", e)
			}
		}
	}
	if lost == 0 {
		t.Fatalf("ledger = %+v, want the lost call settled at its estimate", es)
	}
	if s := readState(t, g.dir); s.TokensWithinDay != ledgerTokens(es) {
		t.Errorf("tokens_within_day = %d, want the ledger's %d", s.TokensWithinDay, ledgerTokens(es))
	}
}

// TestCancelledRetryNotCounted: a retry the run never made (a
// signal came during the back-off) is not in the summary's retries.
func TestCancelledRetryNotCounted(t *testing.T) {
	t.Parallel()
	// Every request gets a 429 asking to wait a minute.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("retry-after", "60")
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, `{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}`)
	}))
	defer srv.Close()
	g := newGB(t, srv.URL+"/v1").loud()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The signal comes as the retry is logged, before its back-off ends.
	_, stderr, code := g.runUntil(ctx, cancel, prompts(1), "gptbatch: retry", "--verbose")
	if code != 130 {
		t.Errorf("exit status %d, want 130; stderr: %s", code, stderr)
	}
	if !strings.Contains(stderr, "; 0 retries, 1 rate-limited") {
		t.Errorf("stderr = %q, want a summary of 0 retries, 1 rate-limited", stderr)
	}
}
