package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/cache"
	"github.com/gptbatch/gptbatch/internal/openaitest"
	"github.com/gptbatch/gptbatch/internal/tokens"
	"github.com/gptbatch/gptbatch/jsonl"
)

// cacheConfig is a run against srv with the cache c, its warnings in logs.
func cacheConfig(srv *openaitest.Server, c cache.Store, logs *strings.Builder) Config {
	return Config{
		Tokens: tokens.Counter{}, Model: "gpt-4o-mini", BaseURL: srv.URL(), Key: "sk-test", Parallel: 4,
		Cache: c, Log: slog.New(slog.NewTextHandler(&syncWriter{b: logs}, nil)),
	}
}

// runResults runs cfg on in and returns its results; the run must succeed.
func runResults(t *testing.T, cfg Config, in string) []jsonl.Result {
	t.Helper()
	var out bytes.Buffer
	if err := Run(context.Background(), strings.NewReader(in), &out, cfg); err != nil {
		t.Fatalf("Run: %v", err)
	}
	var rs []jsonl.Result
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var r jsonl.Result
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("output line %q: %v", l, err)
		}
		rs = append(rs, r)
	}
	return rs
}

func sayLines(from, to int) string {
	var b strings.Builder
	for i := from; i < to; i++ {
		fmt.Fprintf(&b, "{\"id\":\"%d\",\"prompt\":\"say %d\"}\n", i, i)
	}
	return b.String()
}

// breakingFile is a cache file that fails every lookup and store once
// broken, as a full disk or a file removed under it would.
type breakingFile struct {
	*cache.File
	broken atomic.Bool
}

var errDisk = errors.New("disk I/O error")

func (b *breakingFile) GetMany(ctx context.Context, keys []cache.Key) ([]*cache.Entry, error) {
	if b.broken.Load() {
		return nil, fmt.Errorf("cache %s: %w", b, errDisk)
	}
	return b.File.GetMany(ctx, keys)
}

func (b *breakingFile) Put(ctx context.Context, es ...cache.Entry) error {
	if b.broken.Load() {
		return fmt.Errorf("cache %s: %w", b, errDisk)
	}
	return b.File.Put(ctx, es...)
}

// A cache that fails mid-run is one warning: the run goes on without it,
// every line answered, the lines it can no longer answer sent.
func TestCacheFailsMidRun(t *testing.T) {
	for _, tc := range []struct {
		name string
		// open is the cache and what breaks it.
		open func(t *testing.T) (cache.Store, func())
	}{
		{"file", func(t *testing.T) (cache.Store, func()) {
			f, err := cache.OpenFile(context.Background(), filepath.Join(t.TempDir(), "c.db"), cache.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			b := &breakingFile{File: f}
			return b, func() { b.broken.Store(true) }
		}},
		{"redis", func(t *testing.T) (cache.Store, func()) {
			redis.SetLogger(quiet{})
			m := miniredis.RunT(t)
			c := redis.NewClient(&redis.Options{Addr: m.Addr(), MaxRetries: -1})
			t.Cleanup(func() { c.Close() })
			r, err := cache.OpenRedis(context.Background(), c, "t", cache.Options{})
			if err != nil {
				t.Fatal(err)
			}
			return r, m.Close
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := openaitest.New(openaitest.Config{})
			defer srv.Close()
			c, breakIt := tc.open(t)
			logs := new(strings.Builder)
			runResults(t, cacheConfig(srv, c, logs), sayLines(0, 100))
			breakIt()
			before := srv.Stats().Requests
			// Half the lines were answered before; the cache fails at the
			// first lookup: every line is sent, and answered.
			rs := runResults(t, cacheConfig(srv, c, logs), sayLines(50, 150))
			for i, r := range rs {
				if r.Error != nil || r.Cached || r.Line != i+1 {
					t.Fatalf("result %d: %+v, want an answer, not cached", i+1, r)
				}
			}
			if n := srv.Stats().Requests - before; n != 100 {
				t.Errorf("%d requests after the cache failed, want 100", n)
			}
			if n := strings.Count(logs.String(), "going on without the response cache"); n != 1 {
				t.Errorf("%d warnings that the cache failed, want 1:\n%s", n, logs)
			}
		})
	}
}

// The first of identical lines is sent; when it fails, the lines that
// waited for it fail with its error, saying so, and are not sent: an
// identical request would fail the same way.
func TestCacheTwinsOfAFailedLine(t *testing.T) {
	for _, tc := range []struct {
		prompt   string
		typ      string
		requests int
	}{
		{"__status_400__", jsonl.ErrAPI, 1},
		{"__status_500__", jsonl.ErrServer, 2}, // one retry
	} {
		t.Run(tc.prompt, func(t *testing.T) {
			srv := openaitest.New(openaitest.Config{})
			defer srv.Close()
			f, err := cache.OpenFile(context.Background(), filepath.Join(t.TempDir(), "c.db"), cache.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			cfg := cacheConfig(srv, f, new(strings.Builder))
			cfg.Retries, cfg.Jitter = 1, func(time.Duration) time.Duration { return 0 }
			in := strings.Repeat(`{"prompt":"`+tc.prompt+`"}`+"\n", 5) + `{"prompt":"fine"}` + "\n"
			var out bytes.Buffer
			_ = Run(context.Background(), strings.NewReader(in), &out, cfg)
			var rs []jsonl.Result
			for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
				var r jsonl.Result
				if err := json.Unmarshal([]byte(l), &r); err != nil {
					t.Fatal(err)
				}
				rs = append(rs, r)
			}
			if len(rs) != 6 || rs[5].Error != nil {
				t.Fatalf("%d results, the last %+v; want 6, the last answered", len(rs), rs[len(rs)-1])
			}
			for i, r := range rs[:5] {
				if r.Error == nil || r.Error.Type != tc.typ {
					t.Fatalf("line %d: %+v, want a %s error", i+1, r, tc.typ)
				}
				if i > 0 && (r.Attempts != 0 || !strings.Contains(r.Error.Message, fmt.Sprintf("line %d: not sent: the same request as line 1, which failed: ", i+1))) {
					t.Errorf("line %d: %+v, want attempts 0 and the error of line 1", i+1, r)
				}
			}
			if n := srv.Stats().Requests; n != tc.requests+1 {
				t.Errorf("%d requests, want %d for line 1 and 1 for the last", n, tc.requests+1)
			}
		})
	}
}

// Lines identical to a slow one wait for its answer while the lines
// around them go on, within the ordered writer's window and without it:
// nothing deadlocks, every line is answered, the slow request sent once.
func TestCacheTwinsOfASlowLine(t *testing.T) {
	for _, unordered := range []bool{false, true} {
		t.Run(fmt.Sprint("unordered ", unordered), func(t *testing.T) {
			hang := make(chan struct{})
			srv := openaitest.New(openaitest.Config{Hang: hang})
			defer srv.Close()
			f, err := cache.OpenFile(context.Background(), filepath.Join(t.TempDir(), "c.db"), cache.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			cfg := cacheConfig(srv, f, new(strings.Builder))
			cfg.Parallel, cfg.Unordered = 3, unordered
			var in strings.Builder
			for i := range 400 {
				if i%2 == 0 {
					in.WriteString(`{"prompt":"slow __hang__"}` + "\n")
				} else {
					fmt.Fprintf(&in, `{"prompt":"say %d"}`+"\n", i)
				}
			}
			go func() {
				// Release the slow request once the others had their
				// chance: 2 workers are free of it, and its twins.
				_ = srv.WaitArrivals(context.Background(), 2)
				close(hang)
			}()
			rs := runResults(t, cfg, in.String())
			if len(rs) != 400 {
				t.Fatalf("%d results, want 400", len(rs))
			}
			for _, r := range rs {
				want := fmt.Sprintf("say %d", r.Line-1)
				if r.Line%2 == 1 {
					want = "slow __hang__"
				}
				var content string
				if r.Error != nil || json.Unmarshal(r.Content, &content) != nil || content != "answer: "+want {
					t.Fatalf("line %d: %+v, want the answer to %q", r.Line, r, want)
				}
				if r.Cached != (r.Line%2 == 1 && r.Line > 1) {
					t.Errorf("line %d: cached %v", r.Line, r.Cached)
				}
			}
			if n := srv.Stats().Requests; n != 201 {
				t.Errorf("%d requests, want 201: the slow one once, and 200 others", n)
			}
		})
	}
}

// BenchmarkCachedRun is a run again of lines whose every answer is in the
// cache file, through a usage file with the default limits, as the load
// harness's cache-rerun runs it: its time a line is the figure to watch
// (go test -run XXX -bench CachedRun -benchtime 20000x -cpuprofile cpu.out ./pipeline;
// the run again alone: go tool pprof -tagfocus run=again pipeline.test cpu.out).
func BenchmarkCachedRun(b *testing.B) {
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	store, err := budget.OpenFile(filepath.Join(b.TempDir(), "usage.md"), budget.Options{})
	if err != nil {
		b.Fatal(err)
	}
	f, err := cache.OpenFile(context.Background(), filepath.Join(b.TempDir(), "c.db"), cache.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var in strings.Builder
	for i := range b.N {
		fmt.Fprintf(&in, "%q\n", fmt.Sprintf("tell me about the number %d in one short sentence", i))
	}
	cfg := Config{
		Tokens: tokens.Counter{}, Model: "gpt-4o-mini", BaseURL: srv.URL(), Key: "sk-bench", Parallel: 64, Retries: 5,
		Gate:  budget.NewGate(store, budget.Limits{RPM: 500, TPM: 500000, TPD: 1 << 40}),
		Cache: f,
	}
	cfg.Gate.SetSlack(0)
	fill := cfg
	fill.Gate = budget.NewGate(new(budget.MemStore), budget.Limits{})
	if err := Run(context.Background(), strings.NewReader(in.String()), io.Discard, fill); err != nil {
		b.Fatal(err)
	}
	before := srv.Stats().Requests
	b.ResetTimer()
	// Labelled, so that a profile shows the run again alone:
	// go tool pprof -tagfocus run=again pipeline.test cpu.out
	var err2 error
	pprof.Do(context.Background(), pprof.Labels("run", "again"), func(ctx context.Context) {
		err2 = Run(ctx, strings.NewReader(in.String()), io.Discard, cfg)
	})
	if err2 != nil {
		b.Fatal(err2)
	}
	b.StopTimer()
	if n := srv.Stats().Requests - before; n != 0 {
		b.Fatalf("the run again sent %d requests", n)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}
