package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/internal/openaitest"
)

// TestFlakyServer: 300 prompts against a server that fails 20% of calls in
// every way it can all come back right.
func TestFlakyServer(t *testing.T) {
	srv := openaitest.New(openaitest.Config{FailRate: 0.2, Seed: 7, Jitter: 5 * time.Millisecond})
	defer srv.Close()
	g := newGB(t, srv.URL())
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

// TestInterruptAndResume: a signal stops sending, keeps the results of the
// requests in flight, exits 130; --resume then does each id exactly once.
func TestInterruptAndResume(t *testing.T) {
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

// TestTimeout: a hung connection costs --timeout per attempt, not the batch.
func TestTimeout(t *testing.T) {
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
	for _, unordered := range []bool{false, true} {
		hang := make(chan struct{})
		srv := openaitest.New(openaitest.Config{Hang: hang})
		g := newGB(t, srv.URL())
		in := `"first __hang__"` + "\n" + prompts(2000)
		args := []string{"--parallel", "4", "--batch-tokens", "0", "--rpm", "0", "--tpm", "0"}
		if unordered {
			args = append(args, "--unordered")
		}
		full := make(chan struct{})
		done := make(chan string)
		go func() {
			var out bytes.Buffer
			errb := &watchWriter{marker: "window ahead of it is full", seen: func() { close(full) }}
			run(context.Background(), append(append(append([]string{}, g.args...), args...), "--verbose"), strings.NewReader(in), &out, errb)
			done <- out.String()
		}()
		// Ordered, the run stops sending once the window is full, and says
		// so; unordered, it sends every line past the head.
		if unordered {
			if err := waitServer(srv.WaitArrivals, 2001); err != nil {
				t.Errorf("unordered: %v; %d requests arrived, want 2001", err, srv.Stats().Requests)
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
		if n := len(parseResults(t, out)); n != 2001 {
			t.Errorf("unordered=%v: %d results, want 2001", unordered, n)
		}
		// Ordered: the window (4×4+64 = 80 lines, the head's included);
		// unordered: results are written as they finish, so the head does
		// not hold anything back.
		if !unordered && sent > 100 {
			t.Errorf("ordered: %d requests sent while the head hung, want at most the window (80)", sent)
		}
		if unordered && sent != 2001 {
			t.Errorf("unordered: %d requests sent while the head hung, want all 2001", sent)
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
