package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/openaitest"
	"github.com/gptbatch/gptbatch/internal/tokens"
	"github.com/gptbatch/gptbatch/jsonl"
)

// failingStore is a store in memory that fails every update once broken,
// as a full disk or a read-only directory would.
type failingStore struct {
	budget.MemStore
	broken atomic.Bool
}

func (s *failingStore) Update(ctx context.Context, now time.Time, fn func(*budget.State, time.Time) ([]budget.LedgerEntry, error)) error {
	if s.broken.Load() {
		return errors.New("write usage.md: no space left on device")
	}
	return s.MemStore.Update(ctx, now, fn)
}

// TestSharedStateFailsMidRun: when the shared state cannot be written
// mid-run (a full disk, Redis gone), the run stops sending, finishes and
// writes what is in flight, gives every line read a result and ends with
// exit status 1, never 2, which says nothing was sent.
func TestSharedStateFailsMidRun(t *testing.T) {
	for _, tt := range []struct {
		name string
		// open is the store and the function that breaks it.
		open func(t *testing.T) (budget.Store, func())
	}{
		{"usage file", func(t *testing.T) (budget.Store, func()) {
			s := new(failingStore)
			return s, func() { s.broken.Store(true) }
		}},
		{"redis", func(t *testing.T) (budget.Store, func()) {
			redis.SetLogger(quiet{}) // each failed dial would be logged
			m := miniredis.RunT(t)
			s, err := budget.OpenRedis(context.Background(), "redis://"+m.Addr(), "stop")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s, m.Close
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hang := make(chan struct{})
			srv := openaitest.New(openaitest.Config{Hang: hang})
			defer srv.Close()
			store, breakIt := tt.open(t)
			go func() {
				if err := srv.WaitInFlight(context.Background(), 4); err == nil {
					breakIt()
				}
				close(hang)
			}()
			var in, out strings.Builder
			for i := range 20 {
				fmt.Fprintf(&in, "%q\n", fmt.Sprintf("slow __hang__ %d", i))
			}
			err := Run(context.Background(), strings.NewReader(in.String()), &out, Config{
				Tokens: tokens.Counter{}, Model: "gpt-4o-mini", BaseURL: srv.URL(), Key: "sk-test", Parallel: 4,
				Gate: budget.NewGate(store, budget.Limits{TPD: 1 << 30}),
			})
			var ec interface{ ExitCode() int }
			if !errors.As(err, &ec) || ec.ExitCode() != ExitFailed || !strings.Contains(err.Error(), "shared budget store failed; 4 requests were sent") {
				t.Errorf("Run = %v, want exit status 1 saying the state failed after 4 requests", err)
			}
			rs := readResults(t, out.String())
			if len(rs) != 20 {
				t.Fatalf("%d results, want 20: every line read", len(rs))
			}
			for i, r := range rs {
				switch {
				case r.Line != i+1:
					t.Errorf("result %d is line %d: not in input order", i, r.Line)
				case i < 4 && r.Error != nil:
					t.Errorf("line %d, in flight when the state failed: %+v, want its answer", r.Line, r.Error)
				case i >= 4 && (r.Error == nil || r.Error.Type != jsonl.ErrInterrupted || !strings.Contains(r.Error.Message, "shared budget store failed")):
					t.Errorf("line %d: %+v, want not sent because the state failed", r.Line, r.Error)
				}
			}
			if n := srv.Stats().Requests; n != 4 {
				t.Errorf("server got %d requests, want the 4 in flight", n)
			}
		})
	}
}

// readResults parses result lines.
func readResults(t *testing.T, s string) []jsonl.Result {
	t.Helper()
	var rs []jsonl.Result
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		var r jsonl.Result
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("not a result: %v: %s", err, l)
		}
		rs = append(rs, r)
	}
	return rs
}

// quiet is a go-redis logger that says nothing.
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}
