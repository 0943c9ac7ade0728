package cli

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/cache"
	"github.com/gptbatch/gptbatch/internal/openaitest"
	"github.com/gptbatch/gptbatch/internal/redistest"
)

// These tests run gptbatch with --cache against the fake API, and count
// the requests it receives.

// cachedGB is gptbatch sending to a fresh fake API with --cache=PATH, a
// file of the test's, and that path.
func cachedGB(t *testing.T, cfg openaitest.Config) (*gb, *openaitest.Server, string) {
	t.Helper()
	srv := openaitest.New(cfg)
	t.Cleanup(srv.Close)
	g := newGB(t, srv.URL())
	path := filepath.Join(g.dir, "answers.db")
	g.args = append(g.args, "--cache="+path, "--batch-tokens", "0", "--rpm", "0")
	return g, srv, path
}

// mustRun runs g and fails the test unless it exits 0; it returns stdout.
func (g *gb) mustRun(stdin string, args ...string) string {
	g.t.Helper()
	out, stderr, code := g.run(context.Background(), stdin, args...)
	if code != 0 {
		g.t.Fatalf("gptbatch %s: exit status %d: %s", strings.Join(args, " "), code, stderr)
	}
	return out
}

// sent is how many requests the fake received during f.
func sent(srv *openaitest.Server, f func()) int {
	before := srv.Stats().Requests
	f()
	return srv.Stats().Requests - before
}

// lines reads output lines as JSON objects, with the fields a cached
// answer may differ in removed: cached, cost_usd, attempts and
// latency_ms.
func linesBut(t *testing.T, out string) []map[string]any {
	t.Helper()
	var rs []map[string]any
	for i, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("output line %d: %v: %s", i+1, err, l)
		}
		for _, f := range []string{"cached", "cost_usd", "attempts", "latency_ms"} {
			delete(r, f)
		}
		rs = append(rs, r)
	}
	return rs
}

// cachedLines counts the results with "cached": true, "cost_usd": 0 and
// "attempts": 0, and fails on a result that is cached in part.
func cachedLines(t *testing.T, out string) int {
	t.Helper()
	n := 0
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var r struct {
			Cached   bool            `json:"cached"`
			CostUSD  json.RawMessage `json:"cost_usd"`
			Attempts int             `json:"attempts"`
		}
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		if r.Cached {
			n++
			if string(r.CostUSD) != "0" || r.Attempts != 0 {
				t.Errorf("a cached result with cost_usd %s and attempts %d, want 0 and 0: %s", r.CostUSD, r.Attempts, l)
			}
		}
	}
	return n
}

// A batch run again with --cache sends nothing, and its results are the
// first run's but for cached, cost_usd, attempts and latency_ms; with 10
// lines changed, it sends those 10.
func TestCacheRerun(t *testing.T) {
	t.Parallel()
	g, srv, _ := cachedGB(t, openaitest.Config{})
	const n = 1000 // the re-run --cache promises for: four of the cache's blocks of 256
	in := prompts(n)
	var first, second string
	if m := sent(srv, func() { first = g.mustRun(in) }); m != n {
		t.Fatalf("first run: %d requests, want %d", m, n)
	}
	if n := cachedLines(t, first); n != 0 {
		t.Errorf("first run: %d cached results, want 0", n)
	}
	if n := sent(srv, func() { second = g.mustRun(in) }); n != 0 {
		t.Errorf("second run: %d requests, want 0", n)
	}
	if m := cachedLines(t, second); m != n {
		t.Errorf("second run: %d cached results, want %d", m, n)
	}
	if a, b := linesBut(t, first), linesBut(t, second); !reflect.DeepEqual(a, b) {
		for i := range a {
			if !reflect.DeepEqual(a[i], b[i]) {
				t.Fatalf("result %d: first run %v, second %v", i+1, a[i], b[i])
			}
		}
		t.Fatalf("second run: %d results, first %d", len(b), len(a))
	}

	changed := strings.Split(strings.TrimSuffix(in, "\n"), "\n")
	for i := 0; i < n; i += n / 10 {
		changed[i] = fmt.Sprintf(`{"id":"p%d","prompt":"say %d again"}`, i, i)
	}
	var third string
	if n := sent(srv, func() { third = g.mustRun(strings.Join(changed, "\n") + "\n") }); n != 10 {
		t.Errorf("10 lines changed: %d requests, want 10", n)
	}
	if m := cachedLines(t, third); m != n-10 {
		t.Errorf("10 lines changed: %d cached results, want %d", m, n-10)
	}
	rs := parseResults(t, third)
	if len(rs) != n || *rs[100].Content != "answer: say 100 again" || *rs[101].Content != "answer: say 101" {
		t.Errorf("10 lines changed: %d results, line 101 %q, line 102 %q", len(rs), *rs[100].Content, *rs[101].Content)
	}
}

// The key is the request as the API receives it: the same request with
// its keys in another order hits, at any depth, under another id; a change
// to temperature, reasoning_effort, response_format or tools misses.
func TestCacheKeyIsTheRequest(t *testing.T) {
	t.Parallel()
	g, srv, _ := cachedGB(t, openaitest.Config{})
	const base = `{"id":"a","model":"o3-mini","messages":[{"role":"user","content":"hi"}],"temperature":1,"reasoning_effort":"low",` +
		`"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"}}},` +
		`"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]}`
	g.mustRun(base + "\n")
	for _, tc := range []struct {
		name string
		line string
		want int // requests
	}{
		{"keys reordered, nested too, another id", `{"tools":[{"function":{"parameters":{"type":"object"},"name":"f"},"type":"function"}],"response_format":{"json_schema":{"schema":{"type":"object"},"name":"x"},"type":"json_schema"},` +
			`"reasoning_effort":"low","temperature":1,"messages":[{"content":"hi","role":"user"}],"model":"o3-mini","id":"b","metadata":{"k":1}}`, 0},
		{"temperature", strings.Replace(base, `"temperature":1`, `"temperature":0`, 1), 1},
		{"reasoning_effort", strings.Replace(base, `"low"`, `"high"`, 1), 1},
		{"response_format", strings.Replace(base, `"name":"x"`, `"name":"y"`, 1), 1},
		{"tools", strings.Replace(base, `"name":"f"`, `"name":"g"`, 1), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out string
			if n := sent(srv, func() { out = g.mustRun(tc.line + "\n") }); n != tc.want {
				t.Errorf("%d requests, want %d", n, tc.want)
			}
			if got := cachedLines(t, out); got != 1-tc.want {
				t.Errorf("%d cached results, want %d: %s", got, 1-tc.want, out)
			}
		})
	}
}

// Identical requests in one run are sent once: a file of 100 lines of
// which 50 repeat earlier ones sends 50, and each repeat has the answer
// of the line it repeats, under its own id.
func TestCacheDuplicatesSentOnce(t *testing.T) {
	t.Parallel()
	g, srv, _ := cachedGB(t, openaitest.Config{})
	var b strings.Builder
	for i := range 100 {
		fmt.Fprintf(&b, `{"id":"q%d","prompt":"say %d","metadata":{"i":%d}}`+"\n", i, i%50, i)
	}
	var out string
	if n := sent(srv, func() { out = g.mustRun(b.String(), "--parallel", "8") }); n != 50 {
		t.Errorf("%d requests, want 50", n)
	}
	if n := cachedLines(t, out); n != 50 {
		t.Errorf("%d cached results, want 50", n)
	}
	for i, r := range parseResults(t, out) {
		if r.ID != "q"+strconv.Itoa(i) || r.Error != nil || *r.Content != "answer: say "+strconv.Itoa(i%50) || string(r.Metadata) != `{"i":`+strconv.Itoa(i)+`}` {
			t.Errorf("result %d: %+v", i+1, r)
		}
	}
}

// Only complete answers are kept: not errors, not an answer cut off at
// the output cap or by the content filter, not a Responses API answer
// that is incomplete. A refusal is an answer.
func TestCacheKeepsCompleteAnswers(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("word ", 40)
	for _, tc := range []struct {
		name string
		line string
		args []string
		kept bool
	}{
		{"an answer", `{"prompt":"say hi"}`, nil, true},
		{"a refusal", `{"prompt":"__refusal__"}`, nil, true},
		{"an error", `{"prompt":"__status_400__"}`, nil, false},
		{"cut off at the output cap", `{"prompt":"` + long + `","max_tokens":2}`, nil, false},
		{"stopped by the content filter", `{"prompt":"__content_filter__"}`, nil, false},
		{"a response", `{"input":"say hi"}`, []string{"--endpoint", "responses"}, true},
		{"an incomplete response", `{"input":"` + long + `","max_output_tokens":16}`, []string{"--endpoint", "responses"}, false},
		{"an embedding", `{"input":"say hi"}`, []string{"--endpoint", "embeddings"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, srv, _ := cachedGB(t, openaitest.Config{})
			g.run(context.Background(), tc.line+"\n", tc.args...)
			var out string
			n := sent(srv, func() { out, _, _ = g.run(context.Background(), tc.line+"\n", tc.args...) })
			if kept := n == 0; kept != tc.kept {
				t.Errorf("run again: %d requests (kept %v), want kept %v: %s", n, kept, tc.kept, out)
			}
		})
	}
}

// A cache that cannot be opened stops the run before anything is sent,
// exit 2, naming the file and what to do about it.
func TestCacheUnusableAtStart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		spoil func(t *testing.T, path string)
		says  string
	}{
		{"damaged", func(t *testing.T, path string) {
			writeFile(t, filepath.Dir(path), filepath.Base(path), strings.Repeat("garbage ", 1000))
		}, "clear it with `gptbatch cache clear` or delete the file"},
		{"another format version", func(t *testing.T, path string) {
			setFormat(t, path, 1)
		}, "is format version 1, and this gptbatch reads version"},
		{"not writable", func(t *testing.T, path string) {
			writeFile(t, filepath.Dir(path), filepath.Base(path), "")
			if err := os.Mkdir(path+"-journal", 0o700); err != nil { // SQLite cannot make its journal
				t.Fatal(err)
			}
		}, "cannot be written"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, srv, path := cachedGB(t, openaitest.Config{})
			tc.spoil(t, path)
			var stderr string
			var code int
			if n := sent(srv, func() { _, stderr, code = g.run(context.Background(), prompts(3)) }); n != 0 {
				t.Errorf("%d requests, want none", n)
			}
			if code != exitUsage || !strings.Contains(stderr, path) || !strings.Contains(stderr, tc.says) || !strings.Contains(stderr, "nothing sent") {
				t.Errorf("exit %d, %q; want 2, nothing sent, naming %s and saying %q", code, stderr, path, tc.says)
			}
		})
	}
}

// execCache runs query on the cache file at path, made if it is not
// there, and fails unless it changed one row.
func execCache(t *testing.T, path, query string, args ...any) {
	t.Helper()
	f, err := cache.OpenFile(context.Background(), path, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	res, err := db.Exec(query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("%s: %d rows changed, want 1", query, n)
	}
}

// setFormat makes the cache at path one of format version v.
func setFormat(t *testing.T, path string, v int) {
	t.Helper()
	execCache(t, path, "UPDATE meta SET value = ? WHERE name = 'format'", v)
}

// An answer that does not match its key (edited in the file) is never
// served: the request is sent, the run warns, and the fresh answer
// replaces it.
func TestCacheServesNoMismatchedAnswer(t *testing.T) {
	t.Parallel()
	g, srv, path := cachedGB(t, openaitest.Config{})
	g.mustRun(prompts(3))
	execCache(t, path, "UPDATE entries SET body = CAST(replace(CAST(body AS TEXT), 'answer: say 1', 'answer: say 9') AS BLOB) WHERE instr(CAST(body AS TEXT), 'answer: say 1') > 0")
	var out, stderr string
	n := sent(srv, func() {
		var code int
		out, stderr, code = g.loud().run(context.Background(), prompts(3))
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
	})
	if n != 1 || !strings.Contains(stderr, "does not match its key") {
		t.Errorf("%d requests, stderr %q; want 1, warning of the answer that does not match", n, stderr)
	}
	if rs := parseResults(t, out); *rs[1].Content != "answer: say 1" || cachedLines(t, out) != 2 {
		t.Errorf("results %s; want line 2 answered afresh, the others cached", out)
	}
	if n := sent(srv, func() { g.mustRun(prompts(3)) }); n != 0 {
		t.Errorf("third run: %d requests, want 0: the fresh answer replaced the edited one", n)
	}
}

// A dry run counts the lines the cache answers and what they saved, and
// estimates only the rest; it changes nothing in the cache.
func TestCacheDryRun(t *testing.T) {
	t.Parallel()
	g, srv, path := cachedGB(t, openaitest.Config{})
	var firstCost budget.Cost
	for _, r := range parseResults(t, g.mustRun(prompts(10))) {
		firstCost += cost(t, r.CostUSD)
	}
	before := cacheJSON(t, g, "--cache="+path)
	in := prompts(12) // 10 answered, 2 new
	var out, stderr string
	n := sent(srv, func() {
		var code int
		out, stderr, code = g.loud().run(context.Background(), in, "--dry-run")
		if code != 0 {
			t.Fatalf("dry run: exit %d: %s", code, stderr)
		}
	})
	if n != 0 {
		t.Errorf("dry run: %d requests", n)
	}
	var cached, tokens int
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var e struct {
			Line         int             `json:"line"`
			PromptTokens int             `json:"prompt_tokens"`
			EstCostUSD   json.RawMessage `json:"est_cost_usd"`
			Cached       bool            `json:"cached"`
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatal(err)
		}
		if e.Cached != (e.Line <= 10) || e.Cached && string(e.EstCostUSD) != "0" {
			t.Errorf("estimate %s: want cached, at no cost, for lines 1 to 10 alone", l)
		}
		if e.Cached {
			cached++
		} else {
			tokens += e.PromptTokens
		}
	}
	want := fmt.Sprintf("12 lines (10 answered from the cache, $%s saved); %d prompt tokens", firstCost, tokens)
	if cached != 10 || !strings.Contains(stderr, want) {
		t.Errorf("dry run: %d cached, stderr %q; want 10, saying %q", cached, stderr, want)
	}
	if after := cacheJSON(t, g, "--cache="+path); after.Hits != before.Hits || after.Entries != before.Entries {
		t.Errorf("the dry run changed the cache: %+v, then %+v", before, after)
	}
	// A dry run makes no cache.
	none := filepath.Join(g.dir, "none.db")
	if _, stderr, code := g.run(context.Background(), in, "--dry-run", "--cache="+none); code != 0 {
		t.Errorf("dry run with no cache yet: exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(none); !os.IsNotExist(err) {
		t.Errorf("the dry run made %s: %v", none, err)
	}
}

// The lines answered from the cache are reported by the summary and by
// gptbatch usage, with the dollars they saved, and count as spend
// nowhere: not in the day's tokens or dollars, not in usage's tokens or
// cost.
func TestCacheHitsReported(t *testing.T) {
	t.Parallel()
	g, _, _ := cachedGB(t, openaitest.Config{})
	var paid budget.Cost
	for _, r := range parseResults(t, g.mustRun(prompts(10))) {
		paid += cost(t, r.CostUSD)
	}
	day := readState(t, g.dir)
	_, stderr, code := g.loud().run(context.Background(), prompts(10))
	if want := fmt.Sprintf("10 lines: 10 succeeded, 0 failed, 10 answered from the cache ($%s saved); tokens 0 in (0 cached), 0 out; $0", paid); code != 0 || !strings.Contains(stderr, want) {
		t.Errorf("second run: exit %d, stderr %q; want the summary %q", code, stderr, want)
	}
	if st := readState(t, g.dir); st.TokensWithinDay != day.TokensWithinDay || st.CostWithinDay != day.CostWithinDay {
		t.Errorf("the day: %d tokens, $%s after the first run; %d, $%s after the second, answered from the cache", day.TokensWithinDay, day.CostWithinDay, st.TokensWithinDay, st.CostWithinDay)
	}
	out, stderr, code := g.run(context.Background(), "", "usage", "--json")
	if code != 0 {
		t.Fatalf("usage --json: exit %d: %s", code, stderr)
	}
	var rep struct {
		Total budget.Row `json:"total"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if tot := rep.Total; tot.Requests != 10 || tot.CacheHits != 10 || tot.SavedUSD != paid || tot.CostUSD != paid || tot.PromptTokens+tot.CompletionTokens != day.TokensWithinDay {
		t.Errorf("usage: %+v; want 10 requests costing $%s, %d tokens, and 10 hits saving $%s", tot, paid, day.TokensWithinDay, paid)
	}
	if out, _, _ := g.run(context.Background(), "", "usage"); !strings.Contains(out, "CACHE HITS") {
		t.Errorf("usage: %q, want a column of cache hits", out)
	}
}

// sayRange is the lines asking to say from to to-1, ids by number.
func sayRange(from, to int) string {
	var b strings.Builder
	for i := from; i < to; i++ {
		fmt.Fprintf(&b, `{"id":"p%d","prompt":"say %d"}`+"\n", i, i)
	}
	return b.String()
}

// checkSaid fails unless out holds the answers to sayRange(from, to), in
// order.
func checkSaid(t *testing.T, what, out string, from, to int) {
	t.Helper()
	rs := parseResults(t, out)
	if len(rs) != to-from {
		t.Fatalf("%s: %d results, want %d", what, len(rs), to-from)
	}
	for i, r := range rs {
		n := from + i
		if r.ID != "p"+strconv.Itoa(n) || r.Error != nil || r.Content == nil || *r.Content != "answer: say "+strconv.Itoa(n) {
			t.Fatalf("%s: result %d: %+v, want the answer to say %d", what, i+1, r, n)
		}
	}
}

// Four processes at once over overlapping lines share one cache file:
// none fails, every result is right, and a fifth run over all their
// lines sends nothing.
func TestCacheProcessesShareAFile(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{Latency: 2 * time.Millisecond})
	defer srv.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "answers.db")
	args := []string{"--cache=" + path, "--rpm", "0", "--tpm", "0", "--batch-tokens", "0", "--parallel", "8"}
	// Process i: lines 40i to 40i+119, each line asked by up to three.
	// More lines made the fake's work under the race detector most of the
	// suite's time and proved nothing more: the processes share the file
	// from their first lines on.
	const procs, each, step = 4, 120, 40
	var wg sync.WaitGroup
	outs, errs := make([]bytes.Buffer, procs), make([]bytes.Buffer, procs)
	for i := range procs {
		// A budget each: the processes share the cache file alone.
		cmd := command(t, t.TempDir(), srv.URL(), sayRange(i*step, i*step+each), args...)
		cmd.Stdout, cmd.Stderr = &outs[i], &errs[i]
		wg.Go(func() {
			if err := cmd.Run(); err != nil || errs[i].Len() > 0 {
				t.Errorf("process %d: %v: %s", i, err, errs[i].String())
			}
		})
	}
	wg.Wait()
	for i := range procs {
		checkSaid(t, fmt.Sprintf("process %d", i), outs[i].String(), i*step, i*step+each)
	}
	all := (procs-1)*step + each
	if n := srv.Stats().Requests; n < all || n > procs*each {
		t.Errorf("%d requests, want from %d (each line once) to %d", n, all, procs*each)
	}
	var out, errb bytes.Buffer
	cmd := command(t, dir, srv.URL(), sayRange(0, all), args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if n := sent(srv, func() {
		if err := cmd.Run(); err != nil {
			t.Fatalf("fifth run: %v: %s", err, errb.String())
		}
	}); n != 0 {
		t.Errorf("fifth run: %d requests, want 0", n)
	}
	checkSaid(t, "fifth run", out.String(), 0, all)
	if n := cachedLines(t, out.String()); n != all {
		t.Errorf("fifth run: %d cached results, want %d", n, all)
	}
}

// With --pack, each embeddings input is keyed as the request of its own
// it would be: a run again with 10 new lines among 1,000 sends one
// request of the 10 new inputs, and the others' vectors are the first
// run's.
func TestCacheEmbeddingsPack(t *testing.T) {
	t.Parallel()
	g, srv, _ := cachedGB(t, openaitest.Config{})
	// A pack goes when it is full or the input ends, never for having
	// waited (packLinger), however slowly a loaded machine reads.
	g.seams.Clock = stillClock{}
	args := []string{"--endpoint", "embeddings", "--pack", "100"}
	docs := func(changed map[int]bool) string {
		var b strings.Builder
		for i := range 1000 {
			text := fmt.Sprintf("document %d", i)
			if changed[i] {
				text += " revised"
			}
			// Short vectors: 1,536 floats a line, encoded and decoded under the
			// race detector, were most of this test's time and proved nothing more.
			fmt.Fprintf(&b, `{"id":"d%d","input":%q,"dimensions":8}`+"\n", i, text)
		}
		return b.String()
	}
	var first, second string
	if n := sent(srv, func() { first = g.mustRun(docs(nil), args...) }); n != 10 {
		t.Fatalf("first run: %d requests, want 10 packs of 100", n)
	}
	changed := map[int]bool{}
	for i := 37; i < 1000; i += 97 {
		changed[i] = true
	}
	if n := sent(srv, func() { second = g.mustRun(docs(changed), args...) }); n != 1 {
		t.Fatalf("10 new lines: %d requests, want 1", n)
	}
	reqs := srv.Requests()
	var body struct {
		Input []string `json:"input"`
	}
	if err := json.Unmarshal(reqs[len(reqs)-1].Body, &body); err != nil || len(body.Input) != 10 {
		t.Errorf("the request: %v, %d inputs %q; want the 10 new", err, len(body.Input), body.Input)
	}
	a, b := linesBut(t, first), linesBut(t, second)
	for i := range a {
		if got := reflect.DeepEqual(a[i], b[i]); got == changed[i] {
			t.Errorf("line %d: the same result as the first run's %v, changed %v:\n%v\n%v", i+1, got, changed[i], a[i], b[i])
		}
	}
	if n := cachedLines(t, second); n != 990 {
		t.Errorf("%d cached results, want 990", n)
	}
}

// With the budget in Redis, --cache puts the cache beside it: what one
// host paid for, another gets as hits; gptbatch cache and gptbatch usage
// on a third report the answers, the hits and the dollars saved.
func TestCacheRedisHosts(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	url := rs.URL("")
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	args := []string{"--cache", "--rpm", "0", "--batch-tokens", "0"}
	outs := make([]string, 2)
	for i := range outs {
		var out, errb bytes.Buffer
		cmd := host(t, url, srv.URL(), sayRange(0, 100), args...)
		cmd.Stdout, cmd.Stderr = &out, &errb
		n := sent(srv, func() {
			if err := cmd.Run(); err != nil {
				t.Fatalf("host %d: %v: %s", i, err, errb.String())
			}
		})
		if want := []int{100, 0}[i]; n != want {
			t.Errorf("host %d: %d requests, want %d", i, n, want)
		}
		checkSaid(t, fmt.Sprint("host ", i), out.String(), 0, 100)
		outs[i] = out.String()
	}
	if n := cachedLines(t, outs[1]); n != 100 {
		t.Errorf("host 1: %d cached results, want 100", n)
	}
	var paid budget.Cost
	for _, r := range parseResults(t, outs[0]) {
		paid += cost(t, r.CostUSD)
	}

	var out, errb bytes.Buffer
	cmd := host(t, url, srv.URL(), "", "cache", "--json")
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("cache --json: %v: %s", err, errb.String())
	}
	var rep cacheReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if saved, _ := json.Marshal(rep.SavedUSD); rep.Entries != 100 || rep.Hits != 100 || string(saved) != paid.String() || !strings.Contains(rep.Cache, "in redis://") {
		t.Errorf("cache --json on a third host: %+v (saved %s); want 100 answers, 100 hits, $%s saved, in Redis", rep, saved, paid)
	}
	out.Reset()
	cmd = host(t, url, srv.URL(), "", "usage", "--json")
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("usage --json: %v: %s", err, errb.String())
	}
	var usage struct {
		Total budget.Row `json:"total"`
	}
	if err := json.Unmarshal(out.Bytes(), &usage); err != nil {
		t.Fatal(err)
	}
	if tot := usage.Total; tot.Requests != 100 || tot.CacheHits != 100 || tot.SavedUSD != paid || tot.CostUSD != paid {
		t.Errorf("usage on a third host: %+v; want 100 requests and 100 hits, $%s each", tot, paid)
	}
	out.Reset()
	cmd = host(t, url, srv.URL(), "", "cache", "clear")
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil || !strings.Contains(out.String(), "removed 100 answers") {
		t.Errorf("cache clear: %v, %q, %q", err, out.String(), errb.String())
	}
}

// stillClock is the wall clock whose waits never end: a run on it sends a
// pack only when it is full or the input ends. Only for runs that wait
// for nothing else (no limit reached, no retry).
type stillClock struct{}

func (stillClock) Now() time.Time                       { return time.Now() }
func (stillClock) After(time.Duration) <-chan time.Time { return nil }

// With --via batch, the lines the cache answers go in no batch: a batch run
// again creates no batch and uploads no file, and its results are the
// first's but for batch_id, cached, cost_usd, attempts and latency_ms;
// with 10 lines new, one batch of those 10. The two routes share the
// cache: what a synchronous run paid for, a batch run gets as hits, and
// the other way round; a dry run plans batch files for the new lines only.
func TestCacheViaBatch(t *testing.T) {
	t.Parallel()
	clk := newStepClock()
	srv := openaitest.New(openaitest.Config{Now: clk.Now, Key: testKey})
	t.Cleanup(srv.Close)
	g := newGB(t, srv.URL())
	g.seams.Clock = clk
	g.args = append(g.args, "--cache="+filepath.Join(g.dir, "answers.db"), "--batch-tokens", "0", "--rpm", "0")
	batch := []string{"--via", "batch"}
	in := sayRange(0, 200)
	first := g.mustRun(in, batch...)
	if st := srv.BatchStats(); st.Created != 1 || st.Succeeded != 200 {
		t.Fatalf("first run: %d batches, %d lines answered; want 1 and 200", st.Created, st.Succeeded)
	}
	checkSaid(t, "first run", first, 0, 200)
	if n := cachedLines(t, first); n != 0 {
		t.Errorf("first run: %d cached results, want 0", n)
	}

	before := srv.BatchStats()
	var second, stderr string
	n := sent(srv, func() {
		var code int
		second, stderr, code = g.loud().run(context.Background(), in, batch...)
		if code != 0 {
			t.Fatalf("second run: exit %d: %s", code, stderr)
		}
	})
	if st := srv.BatchStats(); n != 0 || st.Created != before.Created || st.Uploads != before.Uploads {
		t.Errorf("second run: %d requests, %d batches and %d files made; want none", n, st.Created-before.Created, st.Uploads-before.Uploads)
	}
	if n := cachedLines(t, second); n != 200 {
		t.Errorf("second run: %d cached results, want 200", n)
	}
	if !strings.Contains(stderr, "200 answered from the cache") {
		t.Errorf("second run: the summary %q does not count the 200 hits", stderr)
	}
	a, b := linesBut(t, first), linesBut(t, second)
	for i := range a {
		delete(a[i], "batch_id")
		if !reflect.DeepEqual(a[i], b[i]) {
			t.Fatalf("result %d: first run %v, second %v", i+1, a[i], b[i])
		}
	}

	// 10 new lines among the 200: one batch of those 10. A dry run plans
	// it first.
	in = sayRange(0, 210)
	dry, stderr, code := g.run(context.Background(), in, "--via", "batch", "--dry-run")
	if code != 0 || strings.Count(dry, `"cached":true`) != 200 || !strings.Contains(stderr, "in 1 batch files:") || !strings.Contains(stderr, ": 10 lines (") {
		t.Errorf("dry run: exit %d, %d cached estimates, stderr %q; want 200 cached and 1 batch file of 10 lines planned", code, strings.Count(dry, `"cached":true`), stderr)
	}
	before = srv.BatchStats()
	third := g.mustRun(in, batch...)
	if st := srv.BatchStats(); st.Created != before.Created+1 || st.Lines != before.Lines+10 {
		t.Errorf("10 new lines: %d batches of %d lines, want 1 of 10", st.Created-before.Created, st.Lines-before.Lines)
	}
	checkSaid(t, "10 new lines", third, 0, 210)
	if n := cachedLines(t, third); n != 200 {
		t.Errorf("10 new lines: %d cached results, want 200", n)
	}

	// One cache for both routes.
	if n := sent(srv, func() { g.mustRun(in) }); n != 0 {
		t.Errorf("a synchronous run of the lines a batch answered: %d requests, want 0", n)
	}
	g.mustRun(sayRange(300, 320))
	before = srv.BatchStats()
	if out := g.mustRun(sayRange(300, 320), batch...); cachedLines(t, out) != 20 || srv.BatchStats().Created != before.Created {
		t.Errorf("a batch run of lines a synchronous run answered: %d cached, %d batches; want 20 and none", cachedLines(t, out), srv.BatchStats().Created-before.Created)
	}
}
