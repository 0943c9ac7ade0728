package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/openaitest"
	"github.com/gptbatch/gptbatch/internal/tokens"
	"github.com/gptbatch/gptbatch/jsonl"
)

// dyingStore is a MemStore that fails every update after the first left.
type dyingStore struct {
	budget.MemStore
	left atomic.Int64
}

func (s *dyingStore) Update(ctx context.Context, now time.Time, fn func(*budget.State, time.Time) ([]budget.LedgerEntry, error)) error {
	if s.left.Add(-1) < 0 {
		return errors.New("store redis://127.0.0.1:1/0: connection refused")
	}
	return s.MemStore.Update(ctx, now, fn)
}

// A store that fails mid-run stops the run closed: nothing more is sent,
// every line read gets a result (answered, or "not sent" as a budget
// error), and the run fails with exit 1, saying the store failed and why;
// with exit 2, saying nothing was sent, when it failed before anything was.
func TestStoreLostMidRun(t *testing.T) {
	for _, left := range []int64{0, 1, 5, 20} {
		t.Run(fmt.Sprint("after ", left, " updates"), func(t *testing.T) {
			srv := openaitest.New(openaitest.Config{Latency: 5 * time.Millisecond})
			defer srv.Close()
			store := new(dyingStore)
			store.left.Store(left)
			const n = 60
			var in strings.Builder
			for i := range n {
				fmt.Fprintf(&in, "{\"id\":\"%d\",\"prompt\":\"say %d\"}\n", i, i)
			}
			var out bytes.Buffer
			err := Run(context.Background(), strings.NewReader(in.String()), &out, Config{
				Tokens: tokens.Counter{}, Model: "gpt-4o-mini", BaseURL: srv.URL(), Key: "sk-test", Parallel: 4,
				Gate: budget.NewGate(store, budget.Limits{}),
			})
			want, says := ExitFailed, "stopped sending: the shared budget store failed"
			if left == 0 {
				want, says = ExitConfig, "nothing sent: the shared budget store failed"
			}
			var perr *Error
			if !errors.As(err, &perr) || perr.Code != want || !strings.Contains(err.Error(), says) || !strings.Contains(err.Error(), "redis://127.0.0.1:1/0") {
				t.Fatalf("Run with the store failing = %v, want exit %d saying %q and naming the store", err, want, says)
			}
			// The run stops reading when it stops sending: every line it
			// read has its result, in order.
			answered, notSent := 0, 0
			for i, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
				var r jsonl.Result
				if err := json.Unmarshal([]byte(l), &r); err != nil {
					t.Fatalf("output line %q: %v", l, err)
				}
				switch {
				case r.Line != i+1:
					t.Fatalf("result %d is of line %d: a line read has no result", i+1, r.Line)
				case r.Error == nil:
					answered++
				case r.Error.Type == jsonl.ErrInterrupted && strings.Contains(r.Error.Message, "shared budget store failed"):
					notSent++
				default:
					t.Errorf("line %s: error %+v, want an answer or \"not sent: the run stopped: the shared budget store failed\"", r.ID, *r.Error)
				}
			}
			if st := srv.Stats(); st.Succeeded != answered {
				t.Errorf("the server answered %d, the results hold %d answers", st.Succeeded, answered)
			}
			if notSent == 0 {
				t.Error("every line was answered: the store's failure stopped nothing")
			}
		})
	}
}
