package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/batchapi"
	"github.com/gptbatch/gptbatch/internal/openaitest"
	"github.com/gptbatch/gptbatch/internal/tokens"
	"github.com/gptbatch/gptbatch/jsonl"
)

// stepClock is simulated time that a wait moves on at once.
type stepClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(max(d, 0))
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

// BenchmarkBatchRun is the whole pipeline --via batch against the fake's
// Batch API on simulated time, through a usage file: lines a second, most
// of it collecting (go test -bench BatchRun -cpuprofile cpu.out ./pipeline).
func BenchmarkBatchRun(b *testing.B) {
	clk := &stepClock{now: time.Now()}
	srv := openaitest.New(openaitest.Config{Now: clk.Now, Batch: openaitest.BatchConfig{StepsPerPoll: -1}})
	defer srv.Close()
	dir := b.TempDir()
	store, err := budget.OpenFile(filepath.Join(dir, "usage.md"), budget.Options{})
	if err != nil {
		b.Fatal(err)
	}
	var in strings.Builder
	for i := range b.N {
		fmt.Fprintf(&in, "%q\n", fmt.Sprintf("tell me about the number %d in one short sentence", i))
	}
	journal, _ := batchapi.JournalPath(store.String())
	cfg := Config{
		Tokens: tokens.Counter{}, Model: "gpt-4o-mini", BaseURL: srv.URL(), Key: "sk-bench", Parallel: 16, Retries: 5, Clock: clk,
		Gate: budget.NewGate(store, budget.Limits{}), Via: ViaBatch, Batch: BatchOptions{Journal: journal, TempDir: dir},
	}
	if err := (tokens.Counter{}).Build("gpt-4o-mini"); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	if err := Run(context.Background(), strings.NewReader(in.String()), io.Discard, cfg); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkSubmitLine is the submitter taking a prepared chat line into
// a batch file: its line of the file and its hash, its record spooled, its
// place in the file. The submitter is one goroutine: ns/op is its CPU a
// line.
func BenchmarkSubmitLine(b *testing.B) {
	dir := b.TempDir()
	cfg := Config{Tokens: tokens.Counter{}, Model: "gpt-4o-mini", Via: ViaBatch, Batch: BatchOptions{TempDir: dir}}
	if err := (tokens.Counter{}).Build(cfg.Model); err != nil {
		b.Fatal(err)
	}
	r := newRunner(context.Background(), cfg)
	records, err := newSpool(dir, "lines")
	if err != nil {
		b.Fatal(err)
	}
	defer records.close()
	its := make([]*item, 4096)
	for i := range its {
		content := fmt.Sprintf("tell me about the number %d in one short sentence", i)
		req := &jsonl.Request{Line: i + 1, ID: fmt.Sprint(i), Body: map[string]json.RawMessage{"messages": mustJSON([]map[string]string{{"role": "user", "content": content}})}}
		if its[i] = r.prepare(req, false); its[i].result != nil {
			b.Fatal(its[i].result.Error)
		}
	}
	s := newSubmitter(r, &batchRun{records: records})
	defer s.discard()
	i := 0
	for b.Loop() {
		if err := s.add(context.Background(), its[i%len(its)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// TestRecordCodec: a line's record goes through the spool unchanged.
func TestRecordCodec(t *testing.T) {
	for _, rec := range []lineRecord{
		{ID: "q1", Line: 17, Model: "gpt-4o-mini", URL: jsonl.URL(jsonl.EndpointChat), Metadata: json.RawMessage(`{"a":1}`), Prompt: 9, EstTokens: 265, EstCost: 123456, Priced: true, Single: true, Floats: true, Hash: "h"},
		{ID: "", Line: 1},
		{ID: "q2", Line: 2, Hash: "h", Held: held{kind: heldOwn, reasks: 2, origAt: 4097, prior: tries{n: 2, usage: jsonl.Usage{PromptTokens: 300, CompletionTokens: 80, TotalTokens: 380, CachedTokens: 128, ReasoningTokens: 64}, cost: 98765}, lastAt: 77}},
	} {
		got, err := parseRecord(appendRecord(nil, &rec))
		if err != nil || !reflect.DeepEqual(got, rec) {
			t.Errorf("parseRecord(appendRecord(%+v)) = %+v, %v", rec, got, err)
		}
	}
}

// TestViaBatchSignalWhileReading: lines read after a signal, more than the
// stages ahead of the submitter hold, each get their interrupted result,
// and the run ends.
func TestViaBatchSignalWhileReading(t *testing.T) {
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	dir := t.TempDir()
	cfg := Config{
		Tokens: tokens.Counter{}, Model: "gpt-4o-mini", BaseURL: srv.URL(), Key: "sk-test", Retries: 1,
		Via: ViaBatch, Batch: BatchOptions{Journal: filepath.Join(dir, "usage.batches.jsonl"), TempDir: dir},
	}
	ctx, signal := context.WithCancel(context.Background())
	defer signal()
	in, feed := io.Pipe()
	const before, after = 2, 500
	go func() {
		for i := range before + after {
			if i == before {
				signal()
			}
			fmt.Fprintf(feed, "%q\n", fmt.Sprintf("prompt %d", i))
		}
		feed.Close()
	}()
	var out bytes.Buffer
	err := Run(ctx, in, &out, cfg)
	if err != ErrInterrupted {
		t.Errorf("Run = %v, want %v", err, ErrInterrupted)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != before+after {
		t.Fatalf("Run wrote %d results, want %d", len(lines), before+after)
	}
	for i, l := range lines {
		var res jsonl.Result
		if err := json.Unmarshal([]byte(l), &res); err != nil {
			t.Fatalf("result %d: %v: %s", i+1, err, l)
		}
		if res.Line != i+1 || res.Error == nil || res.Error.Type != jsonl.ErrInterrupted {
			t.Errorf("result %d = %s, want line %d interrupted", i+1, l, i+1)
		}
	}
}

// TestOrderBatchResults: results that come in an order of their own (a
// batch's output file, batches that end out of turn, lines no batch
// answers), more than wait in memory, are written in input order, each
// once; with --unordered, each once as it comes.
func TestOrderBatchResults(t *testing.T) {
	const n = 3*parkLen + 517
	for _, unordered := range []bool{false, true} {
		t.Run(fmt.Sprintf("unordered=%v", unordered), func(t *testing.T) {
			r, _, _ := testRunner(t, Config{Unordered: unordered})
			// Two batches, the second ending first, each answered in an
			// order of its own; every 97th line has no batch, and line 5
			// is answered twice.
			var batches [2][]int32
			var none []int32
			for seq := int32(0); seq < n; seq++ {
				switch {
				case seq%97 == 0:
					none = append(none, seq)
				case seq < n/2:
					batches[0] = append(batches[0], seq)
				default:
					batches[1] = append(batches[1], seq)
				}
			}
			for i, b := range batches {
				for j := range b {
					k := (j*7919 + i) % len(b)
					b[j], b[k] = b[k], b[j]
				}
			}
			answered := append(append(append([]int32(nil), batches[1]...), batches[0]...), 5)
			unsent, collected := make(chan []done), make(chan []done)
			out := make(chan []*jsonl.Result)
			errc := make(chan error, 1)
			go func() {
				errc <- r.orderBatchResults(context.Background(), t.TempDir(), unsent, collected, out)
			}()
			result := func(seq int32) *jsonl.Result { return &jsonl.Result{ID: fmt.Sprint(seq), Line: int(seq) + 1} }
			go func() {
				for i := 0; i < len(answered); i += 1000 {
					var block []done
					for _, seq := range answered[i:min(i+1000, len(answered))] {
						block = append(block, done{seq, result(seq)})
					}
					collected <- block
				}
				close(collected)
			}()
			go func() {
				for _, seq := range none {
					unsent <- []done{{seq, result(seq)}}
				}
				close(unsent)
			}()
			var got []int
			for block := range out {
				for _, res := range block {
					got = append(got, res.Line)
				}
			}
			if err := <-errc; err != nil {
				t.Fatalf("orderBatchResults: %v", err)
			}
			if len(got) != n {
				t.Fatalf("orderBatchResults wrote %d results, want %d", len(got), n)
			}
			seen := map[int]bool{}
			for i, line := range got {
				if !unordered && line != i+1 {
					t.Fatalf("result %d is line %d, want %d", i+1, line, i+1)
				}
				if seen[line] {
					t.Fatalf("line %d written twice", line)
				}
				seen[line] = true
			}
		})
	}
}

// TestViaBatchHeadsPastTheBound: past the heads a run holds in memory, the
// rest of its lines' heads are read from their records when collected, and
// every line still gets its own id, metadata and answer, as when all are
// held.
func TestViaBatchHeadsPastTheBound(t *testing.T) {
	run := func(bound int) []jsonl.Result {
		t.Helper()
		defer func(was int) { headsMax = was }(headsMax)
		headsMax = bound
		clk := &stepClock{now: time.Now()}
		srv := openaitest.New(openaitest.Config{Now: clk.Now, Batch: openaitest.BatchConfig{StepsPerPoll: -1}})
		defer srv.Close()
		dir := t.TempDir()
		var in strings.Builder
		for i := range 300 {
			fmt.Fprintf(&in, `{"id":"q%d","metadata":{"row":%d},"messages":[{"role":"user","content":"say %d"}]}`+"\n", i, i, i)
		}
		cfg := Config{
			Tokens: tokens.Counter{}, Model: "gpt-4o-mini", BaseURL: srv.URL(), Key: "sk-test", Retries: 1, Clock: clk,
			Via: ViaBatch, Batch: BatchOptions{Journal: filepath.Join(dir, "usage.batches.jsonl"), TempDir: dir, Lines: 100},
		}
		return runResults(t, cfg, in.String())
	}
	held, read := run(headsMax), run(500) // a few lines' heads fit; the rest are read back
	if len(read) != 300 || len(held) != 300 {
		t.Fatalf("%d and %d results, want 300 each", len(held), len(read))
	}
	for i, r := range read {
		h := held[i]
		if r.ID != fmt.Sprintf("q%d", i) || string(r.Metadata) != fmt.Sprintf(`{"row":%d}`, i) || r.Error != nil ||
			len(r.Content) == 0 || string(r.Content) != string(h.Content) || r.Usage == nil || h.Usage == nil || *r.Usage != *h.Usage || r.CostUSD != h.CostUSD {
			t.Fatalf("line %d with heads read back: %+v; with heads held: %+v", i+1, r, h)
		}
	}
}

// TestSubmitterOutlivesCollector: the collect stage may end before the
// submitter (it failed, or the run is ending), closing the channel of what
// it sends back; the submitter then waits for the run's end instead of
// taking the closed channel's zero value for a collected batch, which
// crashed the run with a nil pointer. The submitter's select sees the
// closed channel and the cancelled run at once half the time, so it is
// tried 20 times.
func TestSubmitterOutlivesCollector(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{
		Tokens: tokens.Counter{}, Model: "gpt-4o-mini", BaseURL: "http://127.0.0.1:1", Key: "sk-test", Retries: 1,
		Via: ViaBatch, Batch: BatchOptions{Journal: filepath.Join(dir, "usage.batches.jsonl"), TempDir: dir},
	}
	for try := range 20 {
		r := newRunner(context.Background(), cfg) // no signal
		ctx, cancel := context.WithCancel(context.Background())
		br, err := r.openBatch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		in := make(chan *item)
		back := make(chan collected)
		close(back)
		ended := make(chan error, 1)
		go func() { ended <- r.submitBatches(ctx, br, in, make(chan *tbatch, 1), make(chan []done, 1), back) }()
		cancel()
		if err := <-ended; !errors.Is(err, context.Canceled) {
			t.Errorf("try %d: the submitter ended with %v, want the run's end (%v)", try+1, err, context.Canceled)
		}
		br.close()
	}
}

// TestFollowUpFilesAllKeepTheInputFile: the lines of a collected batch
// asked again in more files than one (here, two lines a file) make every
// one of those files a follow-up of the batch, counted as it is opened,
// so that the batch's input file, from which a lost journal is rebuilt,
// is deleted only once all of them are batches, not once the last is.
func TestFollowUpFilesAllKeepTheInputFile(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{
		Tokens: tokens.Counter{}, Model: "gpt-4o-mini", BaseURL: "http://127.0.0.1:1", Key: "sk-test",
		Via: ViaBatch, Batch: BatchOptions{Lines: 2, Journal: filepath.Join(dir, "usage.batches.jsonl"), TempDir: dir},
	}
	r := newRunner(context.Background(), cfg)
	br, err := r.openBatch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer br.close()
	s := newSubmitter(r, br)
	b := &tbatch{id: "batch_1", inputFile: "file-1", endpoint: "/v1/chat/completions", model: "gpt-4o-mini"}
	var retry []bline
	for i := range 5 {
		body := []byte(fmt.Sprintf(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"line %d"}]}`, i+1))
		rec := lineRecord{Line: i + 1, Model: "gpt-4o-mini", URL: "/v1/chat/completions", Hash: batchapi.LineHash("/v1/chat/completions", body)}
		off, _, err := br.addRecord(&rec, body)
		if err != nil {
			t.Fatal(err)
		}
		retry = append(retry, bline{seq: int32(i), line: int32(i + 1), rec: off, tries: 1})
	}
	if err := s.collected(context.Background(), collected{b: b, retry: retry}); err != nil {
		t.Fatal(err)
	}
	if len(s.ready) != 3 {
		t.Fatalf("%d follow-up files, want 3 (5 lines, 2 a file)", len(s.ready))
	}
	for i, c := range s.ready {
		if c.after != b {
			t.Errorf("follow-up file %d of 3 is not known to follow batch_1", i+1)
		}
		c.f.Close()
	}
	if n := s.followUps[b]; n != 3 {
		t.Errorf("batch_1 waits for %d follow-up files before its input file goes, want 3", n)
	}
}
