package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/gptbatch/gptbatch/internal/openaitest"
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
	g, srv, _ := cachedGB(t, openaitest.Config{})
	in := prompts(1000)
	var first, second string
	if n := sent(srv, func() { first = g.mustRun(in) }); n != 1000 {
		t.Fatalf("first run: %d requests, want 1000", n)
	}
	if n := cachedLines(t, first); n != 0 {
		t.Errorf("first run: %d cached results, want 0", n)
	}
	if n := sent(srv, func() { second = g.mustRun(in) }); n != 0 {
		t.Errorf("second run: %d requests, want 0", n)
	}
	if n := cachedLines(t, second); n != 1000 {
		t.Errorf("second run: %d cached results, want 1000", n)
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
	for i := 0; i < 1000; i += 100 {
		changed[i] = fmt.Sprintf(`{"id":"p%d","prompt":"say %d again"}`, i, i)
	}
	var third string
	if n := sent(srv, func() { third = g.mustRun(strings.Join(changed, "\n") + "\n") }); n != 10 {
		t.Errorf("10 lines changed: %d requests, want 10", n)
	}
	if n := cachedLines(t, third); n != 990 {
		t.Errorf("10 lines changed: %d cached results, want 990", n)
	}
	rs := parseResults(t, third)
	if len(rs) != 1000 || *rs[100].Content != "answer: say 100 again" || *rs[101].Content != "answer: say 101" {
		t.Errorf("10 lines changed: %d results, line 101 %q, line 102 %q", len(rs), *rs[100].Content, *rs[101].Content)
	}
}

// The key is the request as the API receives it: the same request with
// its keys in another order hits, at any depth, under another id; a change
// to temperature, reasoning_effort, response_format or tools misses.
func TestCacheKeyIsTheRequest(t *testing.T) {
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
