package pipeline

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/openaitest"
	"github.com/gptbatch/gptbatch/jsonl"
)

func TestSplit(t *testing.T) {
	for _, tt := range []struct {
		total   int64
		weights []int64
		want    []int64
	}{
		{10, []int64{3, 7}, []int64{3, 7}},                  // the API counted as gptbatch did
		{20, []int64{3, 7}, []int64{6, 14}},                 // in proportion
		{10, []int64{1, 1, 1}, []int64{4, 3, 3}},            // the remainder to the largest shares, first first
		{7, []int64{0, 0}, []int64{4, 3}},                   // nothing to go by: even shares
		{100, []int64{5, 10, 20}, []int64{14, 29, 57}},      // 14.28, 28.57, 57.14: the rest to the largest remainder
		{1, []int64{1000, 1, 1}, []int64{1, 0, 0}},          // rounding down, then the leftover
		{5, []int64{2, 2, 2, 2, 2}, []int64{1, 1, 1, 1, 1}}, // fewer tokens than counted
	} {
		got := split(tt.total, tt.weights)
		var sum int64
		for _, n := range got {
			sum += n
		}
		if !slices.Equal(got, tt.want) || sum != tt.total {
			t.Errorf("split(%d, %v) = %v, want %v", tt.total, tt.weights, got, tt.want)
		}
	}
}

// packed is a single-input embeddings line prepared for --pack.
func packed(t *testing.T, r *runner, line int, input string) *item {
	t.Helper()
	req := &jsonl.Request{Line: line, ID: fmt.Sprint(line), Endpoint: jsonl.EndpointEmbeddings, Body: map[string]json.RawMessage{"input": mustJSON(input)}}
	it := r.prepare(req, true)
	if it.result != nil || it.packKey == "" {
		t.Fatalf("prepare(%q) = %+v, want a packable line", input, it.result)
	}
	return it
}

// The pack stage: runs of alike lines in packs of up to --pack, in order;
// other lines in their place; a pack that is not full goes on when the
// input ends or after packLinger.
func TestPackStage(t *testing.T) {
	r, clk, _ := testRunner(t, Config{Model: "text-embedding-3-small", Pack: 3})
	in := make(chan *item, 16)
	out := make(chan *item)
	done := make(chan error, 1)
	go func() { done <- r.pack(context.Background(), in, out) }()

	in <- packed(t, r, 1, "a")
	in <- packed(t, r, 2, "b")
	in <- packed(t, r, 3, "c")
	if p := <-out; len(p.members) != 3 || p.members[2].req.Line != 3 || p.est.Tokens != 3 {
		t.Fatalf("first out = %d members, est %d; want a full pack of 3 lines, 3 tokens", len(p.members), p.est.Tokens)
	}
	in <- packed(t, r, 4, "d")
	// Not full: it lingers until the clock says it has waited. (Each pack
	// set a timer: the first's, then this one's.)
	<-clk.armed
	<-clk.armed
	select {
	case p := <-out:
		t.Fatalf("a pack of %d went on before it lingered", len(p.members))
	default:
	}
	clk.Advance(packLinger)
	if p := <-out; p.members != nil || p.req.Line != 4 {
		t.Fatalf("after lingering: %+v, want line 4 on its own", p)
	}
	// A line unlike the others, and one that is not sent, end a pack.
	in <- packed(t, r, 5, "e")
	odd := packed(t, r, 6, "f")
	odd.packKey = "other"
	in <- odd
	bad := &item{req: &jsonl.Request{Line: 7}, result: &jsonl.Result{Line: 7}}
	in <- bad
	in <- packed(t, r, 8, "g")
	in <- packed(t, r, 9, "h")
	close(in)
	var lines [][]int
	for p := range out {
		var ls []int
		for _, m := range append([]*item{p}, p.members...)[min(1, len(p.members)):] {
			ls = append(ls, m.req.Line)
		}
		lines = append(lines, ls)
	}
	if err := <-done; err != nil || fmt.Sprint(lines) != "[[5] [6] [7] [8 9]]" {
		t.Errorf("pack = %v, %v; want [[5] [6] [7] [8 9]]", lines, err)
	}
}

// A pack never grows past what the gate can ever admit (--tpm here).
func TestPackWithinTPM(t *testing.T) {
	r, _, _ := testRunner(t, Config{Model: "text-embedding-3-small", Pack: 100, Gate: gate(budget.Limits{TPM: 5})})
	in := make(chan *item, 16)
	for i := range 12 {
		in <- packed(t, r, i+1, "x") // one token each
	}
	close(in)
	out := make(chan *item, 16)
	if err := r.pack(context.Background(), in, out); err != nil {
		t.Fatal(err)
	}
	var sizes []int
	for p := range out {
		sizes = append(sizes, max(1, len(p.members)))
	}
	if fmt.Sprint(sizes) != "[5 5 2]" {
		t.Errorf("packs under --tpm 5 = %v, want [5 5 2]", sizes)
	}
}

// A flex request refused for want of capacity is retried with back-off,
// but is no rate-limit signal: the shared state is not paused.
func TestFlexNoCapacity(t *testing.T) {
	srv := openaitest.New(openaitest.Config{FlexUnavailable: 1})
	defer srv.Close()
	store := new(budget.MemStore)
	r, clk, _ := testRunner(t, Config{BaseURL: srv.URL(), Key: "sk-test", Retries: 2, ServiceTier: "flex", Gate: budget.NewGate(store, budget.Limits{RPM: 600})})
	req, err := jsonl.NewReader(strings.NewReader(`"hello"`+"\n"), jsonl.Options{}).Next()
	if err != nil {
		t.Fatal(err)
	}
	it := r.prepare(req, true)
	done := make(chan *jsonl.Result)
	go func() { done <- r.sendLine(context.Background(), it, make(chan budget.Settlement, 10))[0] }()
	res := runUntil(clk, done)
	if res.Error == nil || res.Error.Type != jsonl.ErrRateLimit || res.Attempts != 3 || !strings.Contains(res.Error.Message, "flex") {
		t.Fatalf("sendLine = %+v (attempts %d), want a rate_limit error about flex after 3 attempts", res.Error, res.Attempts)
	}
	if n := r.stats.RateLimited.Load(); n != 0 {
		t.Errorf("RateLimited = %d, want 0", n)
	}
	if p := store.State().PausedUntil; !p.IsZero() {
		t.Errorf("paused_until = %v, want none: flex refusals slow no one", p)
	}
	if st := srv.Endpoint(openaitest.PathChat); st.Flex != 3 {
		t.Errorf("server: %d flex requests, want 3", st.Flex)
	}
}

// appendFloats writes what encoding/json writes for the same float32s.
func TestAppendFloats(t *testing.T) {
	v := []float32{0, 1, -1, 0.1, 1e-7, -3.4e-9, 123456.79, 1e21, 0.015625, float32(math.Pi)}
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	got, err := appendFloats(nil, b)
	want, _ := json.Marshal(v)
	if err != nil || string(got) != string(want) {
		t.Errorf("appendFloats(%v) = %s, %v; want %s", v, got, err, want)
	}
	binary.LittleEndian.PutUint32(b, math.Float32bits(float32(math.NaN())))
	if _, err := appendFloats(nil, b); err == nil {
		t.Error("appendFloats(NaN): no error")
	}
}
